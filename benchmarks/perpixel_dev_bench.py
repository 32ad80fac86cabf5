"""Developer sweep of the per-pixel kernels' tile sizes (gpuops._constants PERPIXEL_*), on a GPU:

    PYTHONPATH=$PWD NUMBA_CACHE_DIR=/tmp/cache-A python3 -m benchmarks.perpixel_dev_bench [NAME=VALUE ...]

The constants are set before gpuops is imported (host plans and kernels both read them at import); give each
setting its own NUMBA_CACHE_DIR, since numba's cache does not see changed globals.  Checks every kernel against
`gpuops.reference` (float64, small odd shapes, both kernel forms), then prints one line: the setting and the
per-kernel GPU time (torch.profiler, mean of 5 calls) of the involution row (B32 C256 56², K7,
G16) and the KPN gather rows (1×3×1080×1920, K5 and K21), float32.  ``--compile`` only checks (compiles).
"""
import sys

from gpuops import _constants

SETTINGS = [a for a in sys.argv[1:] if "=" in a]
for _arg in SETTINGS:
    _name, _value = _arg.split("=")
    if not hasattr(_constants, _name):
        sys.exit(f"unknown constant {_name}")
    setattr(_constants, _name, int(_value))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import gpuops  # noqa: E402
from benchmarks.kernel_times import profiled  # noqa: E402
from gpuops import reference  # noqa: E402


def _check():
    rng = np.random.default_rng(0)
    for C, G, K, H, W in ((32, 2, 7, 13, 11), (3, 1, 5, 17, 9), (3, 1, 21, 23, 25), (20, 4, 3, 9, 10)):
        x = rng.standard_normal((2, C, H, W))
        w = rng.standard_normal((2, G, K, K, H, W))
        g = rng.standard_normal((2, C, H, W))
        t = [torch.tensor(a, device="cuda", dtype=torch.float32) for a in (x, w, g)]
        got = [gpuops.involution(t[0], t[1], padding=K // 2), *gpuops.involution_backward(t[2], t[0], t[1], padding=K // 2)]
        want = [reference.involution(x, w, padding=K // 2), *reference.involution_backward(g, x, w, padding=K // 2)]
        for a, b in zip(got, want):
            err = np.linalg.norm(a.double().cpu().numpy() - b) / np.linalg.norm(b)
            if not err < 1e-5:
                raise SystemExit(f"WRONG: {SETTINGS} C{C} G{G} K{K}: relative error {err:.3g}")


def _rows():
    B, C, H, W, K, G = 32, 256, 56, 56, 7, 16
    x = torch.randn(B, C, H, W, device="cuda")
    w = torch.randn(B, G, K, K, H, W, device="cuda")
    g = torch.randn_like(x)
    yield "inv fwd", lambda: gpuops.involution(x, w, padding=K // 2)
    yield "inv bwd", lambda: gpuops.involution_backward(g, x, w, padding=K // 2)
    for k in (5, 21):
        xk = torch.randn(1, 3, 1080, 1920, device="cuda")
        wk = torch.randn(1, k * k, 1080, 1920, device="cuda")
        gk = torch.randn_like(xk)
        yield f"K{k} fwd", lambda xk=xk, wk=wk: gpuops.weighted_filter(xk, wk)
        yield f"K{k} bwd", lambda xk=xk, wk=wk, gk=gk: gpuops.weighted_filter_backward(gk, xk, wk)


def main():
    _check()
    if "--compile" in sys.argv:
        print(f"compiled {' '.join(SETTINGS) or 'defaults'}")
        return
    parts = []
    for name, fn in _rows():
        kernels = {e.key.split("[")[0].split("::")[-1]: e.device_time_total / e.count / 1000
                   for e in profiled(fn).key_averages() if e.device_time_total > 0 and "pp_" in e.key}
        parts.append(f"{name}: " + " ".join(f"{k} {v:.3f}" for k, v in kernels.items()))
    print(f"{' '.join(SETTINGS) or 'defaults':60} | " + " | ".join(parts), flush=True)


if __name__ == "__main__":
    main()
