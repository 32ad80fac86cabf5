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

TOLERANCE = {"float16": 5e-3, "bfloat16": 3e-2, "float32": 1e-5, "float64": 1e-12}


def _cases(rng):
    """(op name, gpuops call, reference call, float64 inputs)."""
    x = rng.uniform(-1, 1, (8, 16, 32, 32))
    g = rng.uniform(-1, 1, x.shape)
    g2 = rng.uniform(-1, 1, (8, 32, 32, 32))
    p = dict(slope=1.2, neg_slope=0.05, alpha=0.2, beta=0.3, delta_t=0.1)
    return [
        ("gsmelu", lambda a: gpuops.gsmelu(a, **p), lambda a: reference.gsmelu(a, **p), (x,)),
        ("gsmelu_backward", lambda a, b: gpuops.gsmelu_backward(a, b, **p),
         lambda a, b: reference.gsmelu_backward(a, b, **p), (g, x)),
        ("ncrelu", gpuops.ncrelu, reference.ncrelu, (x,)),
        ("ncrelu_backward", gpuops.ncrelu_backward, reference.ncrelu_backward, (g2, x)),
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
    print(f"{'op':18s} {'backend':28s} {'kind':10s} {'dtype':9s} {'max error':>10s} {'ms/call':>9s}  ok")
    failed = 0
    for device, kind, dtypes in _backends():
        for name, op, ref, inputs in _cases(rng):
            if args.only and args.only not in name:
                continue
            for dtype in dtypes:
                arrays = [_convert(a, kind, dtype) for a in inputs]
                expected = ref(*[_host(a) for a in arrays])       # the reference sees the rounded inputs
                got = _host(op(*arrays))
                scale = max(1.0, float(np.nanmax(np.abs(expected))))
                error = float(np.nanmax(np.abs(got - expected))) / scale
                ok = error <= TOLERANCE[dtype]
                failed += not ok
                ms = _time_ms(lambda: op(*arrays), kind)
                print(f"{name:18s} {device:28s} {kind:10s} {dtype:9s} {error:10.2e} {ms:9.3f}  "
                      f"{'yes' if ok else 'NO'}", flush=True)
    print("all ops agree with the reference" if not failed else f"{failed} checks FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
