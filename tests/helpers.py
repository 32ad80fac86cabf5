"""Shared test helpers: the dtype × device × array-kind matrix, conversions and tolerances.

Every op's tests build inputs as float64 numpy arrays, convert them with `to_kind`, run gpuops, and
compare `to_f64(result)` with `gpuops.reference` (float64).  The torch formulations written independently
of gpuops.reference that several files check against live here too (one copy each).
"""
import importlib.util

import numpy as np
import pytest

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
CPU_NUMPY_DTYPES = ("float32", "float64")

#: (rtol, atol) for comparing a result in this dtype with a float64 reference
TOLERANCE = {"float16": (2e-3, 2e-3), "bfloat16": (1.6e-2, 1.6e-2), "float32": (1e-5, 1e-6),
             "float64": (1e-12, 1e-13)}


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def cuda_available() -> bool:
    if not has_module("torch"):
        return False
    import torch
    return torch.cuda.is_available()


def to_kind(a: np.ndarray, kind: str, dtype: str, device: str = "cpu"):
    """Convert a float64 numpy array into ``kind`` ('numpy', 'torch', 'cupy', 'numba', 'simulated')."""
    if kind == "numpy":
        if dtype == "bfloat16":
            import ml_dtypes
            return a.astype(ml_dtypes.bfloat16)
        return a.astype(dtype)
    if kind == "torch":
        import torch
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=getattr(torch, dtype))
    if kind == "cupy":
        import cupy
        return cupy.asarray(a.astype(dtype))
    if kind in ("numba", "simulated"):
        from numba import cuda
        if dtype == "bfloat16":
            import ml_dtypes
            return cuda.to_device(a.astype(ml_dtypes.bfloat16))
        return cuda.to_device(a.astype(dtype))
    raise ValueError(kind)


def to_f64(x) -> np.ndarray:
    """Any array gpuops returns, as a float64 numpy array."""
    if x is None:
        return None
    mod = type(x).__module__
    if mod.startswith("torch"):
        return x.detach().cpu().double().numpy()
    if mod.startswith("cupy"):
        return x.get().astype(np.float64)
    if hasattr(x, "copy_to_host"):
        return np.asarray(x.copy_to_host()).astype(np.float64)
    return np.asarray(x).astype(np.float64)


def assert_close(actual, expected, dtype: str, scale: float = 1.0):
    rtol, atol = TOLERANCE[dtype]
    np.testing.assert_allclose(to_f64(actual), np.asarray(expected, dtype=np.float64), rtol=rtol,
                               atol=atol * scale, equal_nan=True)


def rounded(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype`` and back to float64 (so references see the inputs the op saw)."""
    return to_f64(to_kind(a, "numpy", dtype))


def cpu_matrix():
    """(kind, dtype) pairs the CPU path supports: numpy in float32/64, torch CPU in all four."""
    cases = [("numpy", d) for d in CPU_NUMPY_DTYPES]
    if has_module("torch"):
        cases += [("torch", d) for d in FLOAT_DTYPES]
    return pytest.mark.parametrize("kind,dtype", cases, ids=[f"{k}-{d}" for k, d in cases])


def gpu_matrix():
    """(kind, dtype) pairs on a GPU: torch in all four dtypes, CuPy and numba without bfloat16."""
    cases = [("torch", d) for d in FLOAT_DTYPES]
    cases += [("cupy", d) for d in ("float16", "float32", "float64")]
    cases += [("numba", d) for d in ("float16", "float32", "float64")]
    return pytest.mark.parametrize("kind,dtype", cases, ids=[f"{k}-{d}" for k, d in cases])


def sim_dtypes():
    return pytest.mark.parametrize("dtype", FLOAT_DTYPES)


def torch_correlation(in1, in2, pad_size=0, kernel_size=1, max_displacement=0, stride1=1, stride2=1):
    """FlowNet correlation (spec §8) written independently of gpuops.reference: zero-pad both inputs, slice
    the window taps, mean over k²·C, y-displacement-major channels.  Torch, differentiable."""
    import math

    import torch
    import torch.nn.functional as F
    N, C, H, W = in1.shape
    k, md, s1, s2 = kernel_size, max_displacement, stride1, stride2
    kr, R = (k - 1) // 2, md // s2
    Ho = math.ceil((H + 2 * pad_size - 2 * (md + kr)) / s1)
    Wo = math.ceil((W + 2 * pad_size - 2 * (md + kr)) / s1)
    P1, P2 = F.pad(in1, (pad_size,) * 4), F.pad(in2, (pad_size,) * 4)
    chans = []
    for p in range(-R, R + 1):
        for o in range(-R, R + 1):
            acc = 0
            for i in range(k):
                for j in range(k):
                    y0, x0 = md + i, md + j
                    a = P1[:, :, y0:y0 + (Ho - 1) * s1 + 1:s1, x0:x0 + (Wo - 1) * s1 + 1:s1]
                    y2, x2 = y0 + p * s2, x0 + o * s2
                    b = P2[:, :, y2:y2 + (Ho - 1) * s1 + 1:s1, x2:x2 + (Wo - 1) * s1 + 1:s1]
                    acc = acc + (a * b).sum(1)
            chans.append(acc / (k * k * C))
    return torch.stack(chans, 1)
