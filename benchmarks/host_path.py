"""CPU-only estimate of the host path of a small CUDA gsmelu call:  python -m benchmarks.host_path [prof]

torch CPU tensors pretend to be on cuda:0 and kernels are not compiled.  Where a C compiler is
available the script re-runs itself over a do-nothing ``libcuda.so.1`` (every driver entry point
returns CUDA_SUCCESS at once), so the launch goes through the real cuda.bindings / cuda.core Python
layers (argument packing, ``cuLaunchKernel`` / ``cuda.core.launch`` wrappers) and only the driver's own
work is missing; without one, the final launch call is stubbed out.  Either way the numbers leave out
the driver (≈2–3 µs per launch on an H200) and torch's CUDA allocator (≈1 µs over the CPU one), and
are in µs per call on this machine's CPU.  ``prof`` adds a cProfile of the core call.

Rows: the core function (packed launch, cuda.core launch, out=, backward), the torch adapter (direct eager
path for gsmelu and ncrelu, and the registered op for a tensor that requires grad) and torch references.
"""
import os
import shutil
import subprocess
import sys
import tempfile

_STUB = r"""
typedef int CUresult;
static CUresult noop(void) { return 0; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return 0; }
CUresult cuDeviceGetCount(int *c) { *c = 1; return 0; }
CUresult cuInit(unsigned f) { return 0; }
static int same(const char *a, const char *b) { while (*a && *a == *b) { a++; b++; } return *a == *b; }
static void *lookup(const char *s) {
  if (same(s, "cuDriverGetVersion")) return (void *)cuDriverGetVersion;
  if (same(s, "cuDeviceGetCount")) return (void *)cuDeviceGetCount;
  return (void *)noop;
}
CUresult cuGetProcAddress_v2(const char *s, void **p, int v, unsigned long long f, int *st) {
  *p = lookup(s); if (st) *st = 0; return 0; }
CUresult cuGetProcAddress(const char *s, void **p, int v, unsigned long long f) { *p = lookup(s); return 0; }
"""


def _fake_driver_dir():
    """A directory holding the do-nothing libcuda.so.1, built on first use; None without a compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    folder = os.path.join(tempfile.gettempdir(), "gpuops-fake-libcuda")
    lib = os.path.join(folder, "libcuda.so.1")
    if not os.path.exists(lib):
        os.makedirs(folder, exist_ok=True)
        src = os.path.join(folder, "stub.c")
        with open(src, "w") as f:
            f.write(_STUB)
        if subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", lib, src]).returncode:
            return None
    return folder


if __name__ == "__main__" and "GPUOPS_FAKE_DRIVER" not in os.environ:
    folder = _fake_driver_dir()
    if folder is not None:
        env = dict(os.environ, GPUOPS_FAKE_DRIVER="1",
                   LD_LIBRARY_PATH=os.pathsep.join(filter(None, [folder, os.environ.get("LD_LIBRARY_PATH")])))
        sys.exit(subprocess.run([sys.executable, "-m", "benchmarks.host_path", *sys.argv[1:]], env=env).returncode)

import cProfile  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import gpuops  # noqa: E402
import gpuops._core as core  # noqa: E402
import gpuops._launch as L  # noqa: E402
import gpuops.cuda.elementwise as ce  # noqa: E402
import gpuops.torch as gt  # noqa: E402

FAKE = os.environ.get("GPUOPS_FAKE_DRIVER") == "1"

orig_wrap = core._Torch.wrap


def wrap(self, obj, name):
    a = orig_wrap(self, obj, name)
    a.device = 0
    return a


core._Torch.wrap = wrap
core._Torch.stream = lambda self, arr: 0

if FAKE:
    from cuda.core import ObjectCode
    kernel = ObjectCode.from_cubin(b"\0" * 64).get_kernel("k")     # a handle the no-op driver accepts
else:
    L._core_launch = lambda *a: None
    L._make_current = lambda d: setattr(L._THREAD, "device", d)
    L._core_stream = lambda h: None
    L._launch_config = lambda g, b, s: None
    L._cu_launch = lambda *a: (L._CU_SUCCESS,)
    kernel = type("FakeKernel", (), {"handle": 1})()

from numba.cuda import types as nt  # noqa: E402

for k in (ce.GSMELU_FORWARD, ce.GSMELU_FORWARD_WORDS, ce.GSMELU_BACKWARD_WORDS, ce.NCRELU_FORWARD):
    sig = tuple(k.signature("float32"))
    conv = tuple(None if isinstance(t, nt.Array) else L._SCALAR_TYPES[t] for t in sig)
    k._compiled[("float32", 0)] = L._Compiled(kernel, conv, True, sig)
assert ce.GSMELU_FORWARD._compiled[("float32", 0)].pack is not None, "packed launch not set up"


def bench(fn, n=20000):
    for _ in range(500):
        fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return best


class FakeXlaBuffer:
    """Stands in for a jax buffer_callback Buffer on cuda:0 (host memory behind it)."""

    def __init__(self, tensor):
        self.tensor, self.shape, self.dtype = tensor, tuple(tensor.shape), np.dtype("float32")

    def __dlpack_device__(self):
        return (2, 0)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": "<f4", "data": (self.tensor.data_ptr(), False), "strides": None,
                "version": 3}


core.register_kind(FakeXlaBuffer, core.XLA)

x = torch.randn(1024)
out = torch.empty(1024)
xb, outb = FakeXlaBuffer(x), FakeXlaBuffer(out)
xg = torch.randn(1024, requires_grad=True)
x4 = x.view(4, 16, 4, 4)
print(f"driver: {'no-op libcuda (cuda.bindings/cuda.core layers run)' if FAKE else 'launch call stubbed'}")
rows = {
    "core gsmelu (packed launch)": lambda: gpuops.gsmelu(x),
    "core gsmelu out= (packed launch)": lambda: gpuops.gsmelu(x, out=out),
    "gpuops.torch.gsmelu (direct path)": lambda: gt.gsmelu(x),
    "gpuops.torch.gsmelu, requires_grad (op)": lambda: gt.gsmelu(xg),
    "core gsmelu on XLA buffers (jax callback)": lambda: gpuops.gsmelu(xb, out=outb, stream=7),
    "core gsmelu_backward (packed launch)": lambda: gpuops.gsmelu_backward(out, x),
    "gpuops.torch.ncrelu (direct path)": lambda: gt.ncrelu(x4),
    "torch.mul (CPU)": lambda: torch.mul(x, 2.0),
    "torch.empty_like (CPU)": lambda: torch.empty_like(x),
}
for name, fn in rows.items():
    print(f"{name:42s} {bench(fn):6.2f} us")
with L.use_launcher("core"):
    print(f"{'core gsmelu (cuda.core launch)':42s} {bench(lambda: gpuops.gsmelu(x)):6.2f} us")
    print(f"{'gpuops.torch.gsmelu (cuda.core launch)':42s} {bench(lambda: gt.gsmelu(x)):6.2f} us")

if len(sys.argv) > 1:
    p = cProfile.Profile()
    p.enable()
    for _ in range(20000):
        gt.gsmelu(x)
    p.disable()
    pstats.Stats(p).sort_stats("tottime").print_stats(18)
