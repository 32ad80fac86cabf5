"""Workloads of the per-pixel family (spec/performance.md): involution (B32 C256 56×56, K7, G16) and the KPN
weighted filter (1×3×1080×1920, K = 5 / 11 / 21, gather and splat), float32 and bfloat16.

Peers, each a row of its own:

* the official unfold-based pure-torch forms (always): d-li14's ``involution_naive`` for involution,
  layerdenoise's unfold + sum (gather) and fold (splat) oracles for the filter, autograd for the backward;
* the official involution CuPy kernels (``_involution`` of d-li14's ``involution_cuda.py``, read from
  ``.peer/involution_peer``), rows "vs CuPy", float32 only (the kernels know float and double), when cupy
  is installed.  The file imports mmcv's ConvModule, which its kernels do not use: it is loaded with a
  stand-in ``mmcv.cnn`` module.  CuPy 13 removed ``cupy.cuda.compile_with_cache``; there the same kernel
  text is compiled with ``cupy.RawModule`` instead (`_load_kernel`);
* layerdenoise's WeightedFilter CUDA extension (``torch_utils_cpp``, float32 only), rows "vs layerdenoise",
  when it imports.  It is built on the GPU machine, e.g.
  ``cd .peer/layerdenoise_peer/torch_utils && python3 -m pip install --no-build-isolation --no-deps
  --target /tmp/peer .``; /tmp/peer is put on sys.path when it exists.

Every workload checks gpuops against its peer (the 16-bit rows: against float32 on the same rounded inputs)
before timing.  ``bytes`` is the least device-memory traffic (each input read once, each output written once)
for the floor; the runner reports each side's peak memory too.  Nothing here touches CUDA at import:
whether a peer's rows exist is decided from files and module specs; a peer that is found but fails to load
leaves its rows comparing against the pure-torch form, saying why in the peer's name.
"""
import importlib.util
import os
import pathlib
import sys

from benchmarks.runner import workload

B, C, H, W, K, G = 32, 256, 56, 56, 7, 16
KPN = (1, 3, 1080, 1920)
_TOL = {"float32": 1e-4, "bfloat16": 5e-2, "float64": 1e-10}

REPO = pathlib.Path(__file__).resolve().parent.parent
INVOLUTION_PEER_FILE = REPO / ".peer" / "involution_peer" / "cls" / "mmcls" / "models" / "utils" / "involution_cuda.py"
PEER_DIR = "/tmp/peer"          # where the GPU machine's peer builds go


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


# ---------------------------------------------------------------------------------------------
# the compiled peers


def _use_peer_dir():
    if os.path.isdir(PEER_DIR) and PEER_DIR not in sys.path:
        sys.path.append(PEER_DIR)


def involution_peer_found() -> bool:
    """The official CuPy involution could load here (no import: file and module spec only)."""
    return INVOLUTION_PEER_FILE.is_file() and importlib.util.find_spec("cupy") is not None


def layerdenoise_peer_found() -> bool:
    _use_peer_dir()
    return importlib.util.find_spec("torch_utils_cpp") is not None


_KERNELS = {}


def _load_kernel(kernel_name, code, **kwargs):
    """The peer's ``load_kernel`` for CuPy >= 13 (no ``cupy.cuda.compile_with_cache``): the same kernel text,
    compiled by ``cupy.RawModule``, launched as the peer launches (``block=, grid=, args=, stream=``)."""
    import string

    import cupy
    import numpy as np
    key = (kernel_name, code, tuple(sorted(kwargs.items())), cupy.cuda.runtime.getDevice())
    fn = _KERNELS.get(key)
    if fn is None:
        raw = cupy.RawModule(code=string.Template(code).substitute(**kwargs)).get_function(kernel_name)

        def fn(block, grid, args, stream):
            with cupy.cuda.ExternalStream(stream.ptr):
                raw(grid, block, tuple(np.uint64(a) if isinstance(a, int) else a for a in args))
        _KERNELS[key] = fn
    return fn


_PEERS = {}


def involution_peer():
    """``(function, why)``: ``function(x, weight, stride, padding, dilation)`` is the official CuPy involution
    (the autograd Function ``_involution``; float32 and float64 CUDA tensors), or None and the reason."""
    if "involution" not in _PEERS:
        _PEERS["involution"] = _load_involution_peer()
    return _PEERS["involution"]


def _load_involution_peer():
    if not involution_peer_found():
        return None, f"needs cupy and {INVOLUTION_PEER_FILE}"
    import types
    saved = {name: sys.modules.get(name) for name in ("mmcv", "mmcv.cnn")}
    try:
        try:
            import mmcv.cnn  # noqa: F401
        except ImportError:             # the kernels do not use ConvModule: a stand-in lets the file import
            mmcv = types.ModuleType("mmcv")
            mmcv.cnn = types.ModuleType("mmcv.cnn")
            mmcv.cnn.ConvModule = None
            sys.modules.update({"mmcv": mmcv, "mmcv.cnn": mmcv.cnn})
        spec = importlib.util.spec_from_file_location("gpuops_peer_involution_cuda", INVOLUTION_PEER_FILE)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except Exception as err:           # a CuPy without what the file needs at import, ...
        return None, f"the official involution_cuda.py does not load: {type(err).__name__}: {err}"[:200]
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    if not hasattr(mod.cupy.cuda, "compile_with_cache"):
        mod.load_kernel = _load_kernel
    from torch.nn.modules.utils import _pair

    def function(x, weight, stride=1, padding=0, dilation=1):
        return mod._involution.apply(x, weight, _pair(stride), _pair(padding), _pair(dilation))
    return function, None


def layerdenoise_peer():
    """``(module, why)``: layerdenoise's ``torch_utils_cpp`` (``weighted_filter_forward(x, w, K, splat)``,
    ``weighted_filter_backward(grad_out, x, w, K, splat) -> [grad_x, grad_w]``; float32, no bias), or None."""
    if "layerdenoise" not in _PEERS:
        if not layerdenoise_peer_found():
            _PEERS["layerdenoise"] = None, ("layerdenoise's torch_utils_cpp is not built (see benchmarks/perpixel.py; "
                                            f"looked on sys.path and in {PEER_DIR})")
        else:
            try:
                import torch  # noqa: F401  (the extension links against it)
                import torch_utils_cpp
                _PEERS["layerdenoise"] = torch_utils_cpp, None
            except Exception as err:
                _PEERS["layerdenoise"] = None, f"torch_utils_cpp does not import: {type(err).__name__}: {err}"[:200]
    return _PEERS["layerdenoise"]


# ---------------------------------------------------------------------------------------------
# involution


def _unfold_involution(x, w, k, padding):
    """d-li14's involution_naive: unfold (N, C·K², H·W), then the per-group kernel and a sum over the taps."""
    import torch.nn.functional as F
    N, Cc, Hh, Ww = x.shape
    groups = w.shape[1]
    cols = F.unfold(x, k, padding=padding).view(N, groups, Cc // groups, k * k, Hh, Ww)
    return (w.reshape(N, groups, 1, k * k, Hh, Ww) * cols).sum(3).view(N, Cc, Hh, Ww)


def _involution_case(dtype, backward, peer_kind="torch"):
    import torch

    import gpuops
    dt = getattr(torch, dtype)
    x = torch.randn(B, C, H, W, device="cuda", dtype=dt)
    w = torch.randn(B, G, K, K, H, W, device="cuda", dtype=dt) / K
    item = x.element_size()
    p = (K - 1) // 2
    peer_fwd, peer_name = (lambda a, b: _unfold_involution(a, b, K, p)), "unfold-based torch (involution_naive)"
    reference = peer_fwd                # what the check compares with: float32 unfold, or the CuPy peer itself
    if peer_kind == "cupy":
        fn, why = involution_peer()
        if fn is not None:
            peer_fwd = reference = (lambda a, b: fn(a, b, 1, p, 1))
            peer_name = "official CuPy kernels (d-li14)"
        else:
            peer_name += f" [CuPy peer unavailable: {why}]"
    if not backward:
        def ours():
            return gpuops.involution(x, w, padding=p)

        def check():
            return _rel(ours(), reference(x.float(), w.float())) < _TOL[dtype]
        return dict(gpuops=ours, peer=lambda: peer_fwd(x, w), peer_name=peer_name, check=check,
                    bytes=(2 * x.numel() + w.numel()) * item)
    g = torch.randn(B, C, H, W, device="cuda", dtype=dt)
    xq, wq = (t.detach().requires_grad_() for t in (x, w))
    out = peer_fwd(xq, wq)

    def ours():
        return gpuops.involution_backward(g, x, w, padding=p)

    def peer():
        return torch.autograd.grad(out, (xq, wq), g, retain_graph=True)

    def check():
        xr, wr = (t.detach().float().requires_grad_() for t in (x, w))
        refs = torch.autograd.grad(reference(xr, wr), (xr, wr), g.float())
        return all(_rel(o, r) < _TOL[dtype] for o, r in zip(ours(), refs))
    # read g, x, w; write grad_x, grad_w
    return dict(gpuops=ours, peer=peer, peer_name=peer_name + " autograd", check=check,
                bytes=(3 * x.numel() + 2 * w.numel()) * item)


def _involution_name(backward, peer_kind):
    return f"B{B} C{C} {H}x{W} K{K} G{G} {'bwd' if backward else 'fwd'}" + (" vs CuPy" if peer_kind == "cupy" else "")


for _dtype in ("float32", "bfloat16"):
    for _bwd in (False, True):
        workload("involution", _involution_name(_bwd, "torch"), _dtype)(
            lambda dtype=_dtype, bwd=_bwd: _involution_case(dtype, bwd))
if involution_peer_found():
    for _bwd in (False, True):
        workload("involution", _involution_name(_bwd, "cupy"), "float32")(
            lambda bwd=_bwd: _involution_case("float32", bwd, "cupy"))


# ---------------------------------------------------------------------------------------------
# weighted_filter


def _torch_filter(x, w, k, splat):
    """layerdenoise's oracles: unfold + sum over the taps (gather), fold of the per-pixel products (splat)."""
    import torch.nn.functional as F
    N, Cc, Hh, Ww = x.shape
    if splat:
        return F.fold((x[:, :, None] * w[:, None]).reshape(N, Cc * k * k, Hh * Ww), (Hh, Ww), k, padding=k // 2)
    return (F.unfold(x, k, padding=k // 2).view(N, Cc, k * k, Hh, Ww) * w[:, None]).sum(2)


def _filter_case(k, splat, backward, dtype="float32", peer_kind="torch"):
    import torch

    import gpuops
    N, Cc, Hh, Ww = KPN
    dt = getattr(torch, dtype)
    x = torch.randn(N, Cc, Hh, Ww, device="cuda", dtype=dt)
    w = (torch.rand(N, k * k, Hh, Ww, device="cuda") / (k * k)).to(dt)
    item = x.element_size()
    ext = None
    peer_name = f"torch {'fold' if splat else 'unfold + sum'}"
    if peer_kind == "layerdenoise":
        ext, why = layerdenoise_peer()
        peer_name = "layerdenoise WeightedFilter (CUDA)" if ext is not None else (
            peer_name + f" [layerdenoise unavailable: {why}]")
    if not backward:
        def ours():
            return gpuops.weighted_filter(x, w, splat=splat)

        def peer():
            if ext is not None:
                return ext.weighted_filter_forward(x, w, k, splat)
            return _torch_filter(x, w, k, splat)

        def check():
            ref = peer() if ext is not None else _torch_filter(x.float(), w.float(), k, splat)
            return _rel(ours(), ref) < _TOL[dtype]
        return dict(gpuops=ours, peer=peer, peer_name=peer_name, check=check,
                    bytes=(2 * x.numel() + w.numel()) * item)
    g = torch.randn_like(x)

    def ours():
        return gpuops.weighted_filter_backward(g, x, w, splat=splat)[:2]

    if ext is not None:
        def peer():
            return ext.weighted_filter_backward(g, x, w, k, splat)
    else:
        xq, wq = (t.detach().requires_grad_() for t in (x, w))
        out = _torch_filter(xq, wq, k, splat)

        def peer():
            return torch.autograd.grad(out, (xq, wq), g, retain_graph=True)
        peer_name += " autograd"

    def check():
        if ext is not None:
            refs = peer()
        else:
            xr, wr = (t.detach().float().requires_grad_() for t in (x, w))
            refs = torch.autograd.grad(_torch_filter(xr, wr, k, splat), (xr, wr), g.float())
        return all(_rel(o, r) < _TOL[dtype] for o, r in zip(ours(), refs))
    return dict(gpuops=ours, peer=peer, peer_name=peer_name, check=check,
                bytes=(3 * x.numel() + 2 * w.numel()) * item)


def _filter_name(k, splat, backward, peer_kind):
    return (f"KPN 1x3x1080x1920 K{k} {'splat' if splat else 'gather'} {'bwd' if backward else 'fwd'}"
            + (" vs layerdenoise" if peer_kind == "layerdenoise" else ""))


_FILTER_PEERS = ("torch", "layerdenoise") if layerdenoise_peer_found() else ("torch",)
for _dtype in ("float32", "bfloat16"):
    for _peer in _FILTER_PEERS:
        if _peer == "layerdenoise" and _dtype != "float32":
            continue                   # the extension is float32 only
        for _k in (5, 11, 21):
            for _splat in (False, True):
                for _bwd in (False, True):
                    workload("weighted_filter", _filter_name(_k, _splat, _bwd, _peer), _dtype)(
                        lambda k=_k, splat=_splat, bwd=_bwd, dtype=_dtype, peer=_peer:
                        _filter_case(k, splat, bwd, dtype, peer))
