"""CPU-only estimate of the Python host path of a CUDA gsmelu call: torch CPU tensors pretend to be on
cuda:0, kernel compilation and the final cuda.core launch are stubbed out.  Measures what the host
overhead target depends on without a GPU:  python -m benchmarks.host_path [prof]"""
import time, cProfile, pstats, sys
import torch
import gpuops, gpuops._core as core, gpuops._launch as L
import gpuops.cuda.elementwise as ce

orig_wrap = core._Torch.wrap
def wrap(self, obj, name):
    a = orig_wrap(self, obj, name); a.device = 0; return a
core._Torch.wrap = wrap
core._Torch.stream = lambda self, arr: 0
L._core_launch = lambda *a: None
L._make_current = lambda d: setattr(L._THREAD, "device", d)
L._core_stream = lambda h: None
L._launch_config = lambda g, b, s: None
import numpy as np
from numba.cuda import types as nt
for k in (ce.GSMELU_FORWARD, ce.GSMELU_FORWARD_WORDS):
    sig = k.signature("float32")
    conv = tuple(None if isinstance(t, nt.Array) else L._SCALAR_TYPES[t] for t in sig)
    k._compiled[("float32", 0)] = L._Compiled(object(), conv, True)
x = torch.randn(1024)
def bench(fn, n=20000):
    for _ in range(500): fn()
    t = time.perf_counter()
    for _ in range(n): fn()
    return (time.perf_counter() - t) / n * 1e6
print("core gsmelu us", round(bench(lambda: gpuops.gsmelu(x)), 2))
out = torch.empty(1024)
print("core gsmelu out= us", round(bench(lambda: gpuops.gsmelu(x, out=out)), 2))
print("torch.empty_like us", round(bench(lambda: torch.empty_like(x)), 2))
if len(sys.argv) > 1:
    p = cProfile.Profile(); p.enable()
    for _ in range(20000): gpuops.gsmelu(x)
    p.disable(); pstats.Stats(p).sort_stats("tottime").print_stats(18)
