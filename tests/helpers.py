"""Shared test helpers: the dtype × device × array-kind matrix, conversions and tolerances.

Every op's tests build inputs as float64 numpy arrays, convert them with `to_kind`, run gpuops, and
compare `to_f64(result)` with a float64 reference written from spec/ops.md.
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
