"""Where the host time of a small gpuops call goes (run on a GPU machine):
`python -m benchmarks.profile_launch`.  Prints µs per call of each layer and a cProfile of the core call."""
import cProfile
import pstats
import time

import torch

import gpuops
import gpuops.torch as gt
from gpuops import _core


def per_call_us(fn, calls=5000):
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    us = (time.perf_counter() - t0) / calls * 1e6
    torch.cuda.synchronize()
    return us


def main():
    x = torch.randn(1024, device="cuda")
    xa = _core.wrap("x", x)
    out = torch.empty_like(x)
    layers = {
        "torch.mul(x, 2)": lambda: torch.mul(x, 2.0),
        "torch.empty_like": lambda: torch.empty_like(x),
        "gpuops.torch.gsmelu (registered op)": lambda: gt.gsmelu(x),
        "torch.ops.gpuops.gsmelu.default": lambda: torch.ops.gpuops.gsmelu.default(x, 1.0, 0.01, 0.1, 0.1, 0.0),
        "gpuops.gsmelu (core)": lambda: gpuops.gsmelu(x),
        "gpuops.gsmelu (core, out=)": lambda: gpuops.gsmelu(x, out=out),
        "_core.wrap": lambda: _core.wrap("x", x),
        "_core.stream_for": lambda: _core.stream_for(xa, None),
        "_core.kernel_arg": lambda: _core.kernel_arg(xa, (1024,)),
    }
    for name, fn in layers.items():
        print(f"{name:45s} {per_call_us(fn):7.2f} µs")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(20000):
        gpuops.gsmelu(x, out=out)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(14)


if __name__ == "__main__":
    main()
