"""Tier 2: every per-pixel kernel (gpuops.cuda.perpixel) under the CUDA simulator against the CPU mirror.

Simulated device arrays take the CUDA path of the core; shapes are tiny (one OS thread per CUDA thread).
The involution case has strides, padding, dilation and two groups; the filter cases cover gather and splat
(with a bias, so the staged bias sum runs), and one plane large enough for the bias sum's middle stage.
"""
import ml_dtypes
import numpy as np
import pytest

from gpuops._toolchain import SIMULATOR

pytestmark = pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run in its own process)")

if SIMULATOR:
    from numba import cuda

    import gpuops.perpixel as pp

DTYPES = {"float32": (np.float32, 1e-5), "bfloat16": (ml_dtypes.bfloat16, 2e-2)}
RNG = np.random.default_rng(11)


def _dev(a):
    return None if a is None else cuda.to_device(a)


def _close(got, want, tol):
    assert (got is None) == (want is None)
    if want is None:
        return
    want = np.asarray(want, np.float64)
    got = np.asarray(got.copy_to_host(), np.float64)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))


def _rand(shape, dtype):
    return RNG.uniform(-1, 1, shape).astype(dtype)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_involution_kernels_match_mirror(dtype):
    np_dtype, tol = DTYPES[dtype]
    params = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    x = _rand((1, 4, 6, 5), np_dtype)
    # Ho = (6 + 2 - 1 - 1) // 2 + 1 = 4, Wo = (5 + 4 - 4 - 1) + 1 = 5
    w = _rand((1, 2, 2, 3, 4, 5), np_dtype)
    y = pp.involution(x, w, **params)
    _close(pp.involution(_dev(x), _dev(w), **params), y, tol)
    g = _rand(y.shape, np_dtype)
    want = pp.involution_backward(g, x, w, **params)
    got = pp.involution_backward(_dev(g), _dev(x), _dev(w), **params)
    for a, b in zip(got, want):
        _close(a, b, tol)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("splat", [False, True], ids=["gather", "splat"])
def test_weighted_filter_kernels_match_mirror(dtype, splat):
    np_dtype, tol = DTYPES[dtype]
    x, w, b = _rand((2, 2, 5, 4), np_dtype), _rand((2, 9, 5, 4), np_dtype), _rand((2,), np_dtype)
    y = pp.weighted_filter(x, w, b, splat=splat)
    _close(pp.weighted_filter(_dev(x), _dev(w), _dev(b), splat=splat), y, tol)
    g = _rand(y.shape, np_dtype)
    want = pp.weighted_filter_backward(g, x, w, b, splat=splat)
    got = pp.weighted_filter_backward(_dev(g), _dev(x), _dev(w), _dev(b), splat=splat)
    for a, c in zip(got, want):
        _close(a, c, tol)


def test_bias_sum_middle_stage(monkeypatch):
    """More segments than the last stage takes: PP_BIAS_PARTIAL_SUMS runs (thresholds shrunk for the simulator)."""
    monkeypatch.setattr(pp, "_BIAS_THREADS", 64)
    monkeypatch.setattr(pp, "_BIAS_LANES", 4)
    x, w, b = _rand((1, 2, 4, 5), np.float32), _rand((1, 1, 4, 5), np.float32), _rand((2,), np.float32)
    g = _rand(x.shape, np.float32)
    want = pp.weighted_filter_backward(g, x, w, b)
    got = pp.weighted_filter_backward(_dev(g), _dev(x), _dev(w), _dev(b))
    for a, c in zip(got, want):
        _close(a, c, 1e-5)
    np.testing.assert_allclose(want[2], g.astype(np.float64).sum((0, 2, 3)), rtol=1e-5)


def test_empty_batch_on_device():
    x, w, b = (np.zeros((0, 2, 3, 3), np.float32), np.zeros((0, 1, 3, 3), np.float32), _rand((2,), np.float32))
    got = pp.weighted_filter_backward(_dev(x), _dev(x), _dev(w), _dev(b), splat=True)
    assert got[0].shape == x.shape and got[1].shape == w.shape
    np.testing.assert_array_equal(got[2].copy_to_host(), 0)
