"""The main job: ``python -m gpuops`` checks every op on the present device against the reference
backend (gpuops.reference) and prints op, backend, dtype, max error and time per call.

Uses the GPU when torch sees one (torch CUDA tensors), else the CPU mirrors (numpy and torch CPU).
Exit status 1 if any op disagrees with its reference.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import gpuops
from gpuops import reference

#: max |error| relative to the largest |reference| value (sums over many terms round in 16 bits)
TOLERANCE = {"float16": 5e-3, "bfloat16": 3e-2, "float32": 2e-5, "float64": 1e-12}


def _cases(rng):
    """(op name, gpuops call, reference call, float64 inputs); shapes sized for a laptop CPU."""
    u = lambda *shape: rng.uniform(-1, 1, shape)  # noqa: E731
    x, g2 = u(8, 16, 32, 32), u(8, 32, 32, 32)
    p = dict(slope=1.2, neg_slope=0.05, alpha=0.2, beta=0.3, delta_t=0.1)
    conv = dict(stride=1, padding=1, dilation=1)
    img, w, b = u(4, 32, 28, 28), u(64, 1, 3, 3), u(64)
    cols = u(4, 32, 3, 3, 28, 28)
    a, d = u(512, 256), u(256)
    f1, f2 = u(2, 32, 24, 32), u(2, 32, 24, 32)
    sampler = dict(kernel_size=1, patch_size=9, dilation_patch=2)
    flownet = dict(pad_size=4, kernel_size=1, max_displacement=4, stride1=1, stride2=2)
    return [
        ("gsmelu", lambda t: gpuops.gsmelu(t, **p), lambda t: reference.gsmelu(t, **p), (x,)),
        ("gsmelu_backward", lambda gr, t: gpuops.gsmelu_backward(gr, t, **p),
         lambda gr, t: reference.gsmelu_backward(gr, t, **p), (u(*x.shape), x)),
        ("ncrelu", gpuops.ncrelu, reference.ncrelu, (x,)),
        ("ncrelu_backward", gpuops.ncrelu_backward, reference.ncrelu_backward, (g2, x)),
        ("conv2d_depthwise", lambda t, k, c: gpuops.conv2d_depthwise(t, k, c, **conv),
         lambda t, k, c: reference.conv2d_depthwise(t, k, c, **conv), (img, w, b)),
        ("conv2d_depthwise_backward", lambda gr, t, k, c: gpuops.conv2d_depthwise_backward(gr, t, k, c, **conv),
         lambda gr, t, k, c: reference.conv2d_depthwise_backward(gr, t, k, c, **conv), (u(4, 64, 28, 28), img, w, b)),
        ("im2col", lambda t: gpuops.im2col(t, 3, padding=1), lambda t: reference.im2col(t, 3, padding=1), (img,)),
        ("col2im", lambda c: gpuops.col2im(c, 3, padding=1), lambda c: reference.col2im(c, 3, padding=1), (cols,)),
        ("dgmm", gpuops.dgmm, reference.dgmm, (a, d)),
        ("dgmm_backward", gpuops.dgmm_backward, reference.dgmm_backward, (u(512, 256), a, d)),
        ("spatial_correlation_sample", lambda s, t: gpuops.spatial_correlation_sample(s, t, **sampler),
         lambda s, t: reference.spatial_correlation_sample(s, t, **sampler), (f1, f2)),
        ("spatial_correlation_sample_backward",
         lambda gr, s, t: gpuops.spatial_correlation_sample_backward(gr, s, t, **sampler),
         lambda gr, s, t: reference.spatial_correlation_sample_backward(gr, s, t, **sampler),
         (u(2, 9, 9, 24, 32), f1, f2)),
        ("correlation", lambda s, t: gpuops.correlation(s, t, **flownet),
         lambda s, t: reference.correlation(s, t, **flownet), (f1, f2)),
        ("correlation_backward", lambda gr, s, t: gpuops.correlation_backward(gr, s, t, **flownet),
         lambda gr, s, t: reference.correlation_backward(gr, s, t, **flownet), (u(2, 25, 24, 32), f1, f2)),
    ]


def _backends():
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        return [(f"cuda ({name})", "torch-cuda", ("float16", "bfloat16", "float32", "float64"))]
    backends = [("cpu", "numpy", ("float32", "float64"))]
    if torch is not None:
        backends.append(("cpu", "torch-cpu", ("bfloat16", "float32")))
    return backends


def _convert(a, kind, dtype):
    if kind == "numpy":
        return a.astype(dtype)
    import torch
    device = "cuda" if kind == "torch-cuda" else "cpu"
    return torch.from_numpy(a).to(device=device, dtype=getattr(torch, dtype))


def _host(y):
    """float64 numpy of one result, or of a tuple of results stacked flat (backward ops)."""
    if isinstance(y, tuple):
        return np.concatenate([_host(part).ravel() for part in y if part is not None])
    if hasattr(y, "detach"):
        return y.detach().double().cpu().numpy()
    return np.asarray(y, np.float64)


def _time_ms(fn, kind):
    """Median wall time of single calls (synchronised on a GPU)."""
    sync = lambda: None  # noqa: E731
    if kind == "torch-cuda":
        import torch
        sync = torch.cuda.synchronize
    times = []
    for _ in range(25):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gpuops", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run ops whose name contains this")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"gpuops {gpuops.__version__}")
    print(f"{'op':36s} {'backend':24s} {'kind':10s} {'dtype':9s} {'max error':>10s} {'ms/call':>9s}  ok")
    failed = 0
    for device, kind, dtypes in _backends():
        for name, op, ref, inputs in _cases(rng):
            if args.only and args.only not in name:
                continue
            for dtype in dtypes:
                arrays = [_convert(a, kind, dtype) for a in inputs]
                expected = _host(ref(*[_host(a) for a in arrays]))  # the reference sees the rounded inputs
                got = _host(op(*arrays))
                scale = max(1.0, float(np.nanmax(np.abs(expected))))
                error = float(np.nanmax(np.abs(got - expected))) / scale
                ok = error <= TOLERANCE[dtype]
                failed += not ok
                ms = _time_ms(lambda: op(*arrays), kind)
                print(f"{name:36s} {device:24s} {kind:10s} {dtype:9s} {error:10.2e} {ms:9.3f}  "
                      f"{'yes' if ok else 'NO'}", flush=True)
    print("all ops agree with the reference" if not failed else f"{failed} checks FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
