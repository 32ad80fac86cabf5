"""Workloads of the correlation family (spec/performance.md): FlowNetC and k3-p9 spatial correlation.

Peer: spatial-correlation-sampler (CUDA C++) when importable, else the pure-torch shift-multiply-sum
expression; the pure-torch peer also has rows of its own.  Every workload checks gpuops against its
peer run in float64 on the same random inputs before timing.  Backward rows time the backward pass alone (the
peer's autograd graph is built once and replayed with ``retain_graph``).
"""
from benchmarks.runner import workload

FLOWNETC = dict(shape=(4, 256, 48, 64), kernel_size=1, patch_size=21, padding=0, dilation_patch=2)
K3P9 = dict(shape=(16, 64, 64, 64), kernel_size=3, patch_size=9, padding=1, dilation_patch=1)
_TOL = {"float32": 1e-4, "float16": 2e-3, "bfloat16": 2e-2}


def _sampler():
    try:
        from spatial_correlation_sampler import spatial_correlation_sample
        return spatial_correlation_sample
    except ImportError:
        return None


def torch_sample(a, b, kernel_size, patch_size, padding, dilation_patch):
    """Pure-torch spatial_correlation_sample (stride 1, dilation 1): shift, multiply, sum, box-sum."""
    import torch
    import torch.nn.functional as F
    p, k, dp = patch_size, kernel_size, dilation_patch
    m = (p - 1) // 2 * dp + (p - 1) % 2 * dp
    H, W = a.shape[-2:]
    bp = F.pad(b, (m, m, m, m))
    ones = torch.ones(1, 1, k, k, dtype=a.dtype, device=a.device)
    outs = []
    for ph in range(p):
        for pw in range(p):
            sy, sx = (ph - (p - 1) // 2) * dp, (pw - (p - 1) // 2) * dp
            prod = (a * bp[..., m + sy:m + sy + H, m + sx:m + sx + W]).sum(1, keepdim=True)
            outs.append(prod[:, 0] if k == 1 and padding == 0 else F.conv2d(prod, ones, padding=padding)[:, 0])
    o = torch.stack(outs, 1)
    return o.view(a.shape[0], p, p, *o.shape[-2:])


def _relerr(x, y):
    return ((x.float() - y.float()).abs().max() / y.float().abs().max().clamp_min(1e-30)).item()


def _case(cfg, dtype, backward, peer_kind):
    import torch

    import gpuops
    dt = getattr(torch, dtype)
    shape = cfg["shape"]
    kw = {k: v for k, v in cfg.items() if k != "shape"}
    torch.manual_seed(0)
    a = torch.randn(shape, device="cuda", dtype=dt)
    b = torch.randn(shape, device="cuda", dtype=dt)
    sampler = _sampler() if peer_kind == "sampler" else None
    if sampler is not None:
        peer_name = "spatial-correlation-sampler"

        def peer_fwd(x, y):
            return sampler(x, y, **kw)
    else:
        peer_name = "pure torch shift-multiply-sum"

        def peer_fwd(x, y):
            return torch_sample(x, y, **kw)
    out = gpuops.spatial_correlation_sample(a, b, **kw)
    N, C, H, W = shape
    el = a.element_size()
    if not backward:
        def check():
            # against the peer run in float64: a 16-bit peer accumulates in 16 bits and is itself off
            return _relerr(out, peer_fwd(a.double(), b.double()).view(out.shape)) < _TOL[dtype]
        return dict(gpuops=lambda: gpuops.spatial_correlation_sample(a, b, **kw), peer=lambda: peer_fwd(a, b),
                    peer_name=peer_name, check=check, bytes=(2 * a.numel() + out.numel()) * el)
    g = torch.randn_like(out)
    ar, br = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    po = peer_fwd(ar, br).view(out.shape)

    def peer_bwd():
        return torch.autograd.grad(po, (ar, br), g, retain_graph=True)

    def check():
        ga, gb = gpuops.spatial_correlation_sample_backward(g, a, b, **kw)
        ad, bd = a.double().requires_grad_(True), b.double().requires_grad_(True)
        ea, eb = torch.autograd.grad(peer_fwd(ad, bd).view(out.shape), (ad, bd), g.double())
        return max(_relerr(ga, ea), _relerr(gb, eb)) < _TOL[dtype]
    return dict(gpuops=lambda: gpuops.spatial_correlation_sample_backward(g, a, b, **kw), peer=peer_bwd,
                peer_name=peer_name, check=check, bytes=(g.numel() + 4 * a.numel()) * el)


def _register(name, cfg, dtype, backward, peer_kind):
    label = f"{name} {'bwd' if backward else 'fwd'}" + (" vs pure torch" if peer_kind == "torch" else "")
    workload("spatial_correlation_sample", label, dtype)(
        lambda: _case(cfg, dtype, backward, peer_kind))


_FLOWNETC = "FlowNetC B4 C256 48x64 k1 p21 dp2"
_K3P9 = "B16 C64 64x64 k3 p9 pad1"
for _dtype in ("float32", "float16", "bfloat16"):
    for _bwd in (False, True):
        _register(_FLOWNETC, FLOWNETC, _dtype, _bwd, "sampler")
for _bwd in (False, True):
    _register(_K3P9, K3P9, "float32", _bwd, "sampler")
for _bwd in (False, True):
    _register(_FLOWNETC, FLOWNETC, "float32", _bwd, "torch")
    _register(_K3P9, K3P9, "float32", _bwd, "torch")
