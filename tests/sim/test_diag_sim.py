"""Tier 2: every diag kernel under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) against the CPU mirror,
on tiny shapes: SCALE (forward; backward with its segmented sums) and SUM_SEGMENTS, side right and
left, one and several segments of the reduced axis; real data, real pairs and complex dtypes."""
import ml_dtypes
import numpy as np
import pytest

from gpuops._toolchain import SIMULATOR

pytestmark = pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run in its own process)")

if SIMULATOR:
    from numba import cuda

    import gpuops.diag as dg

RNG = np.random.default_rng(3)
TOL = {np.float32: 1e-5, ml_dtypes.bfloat16: 2e-2, np.float64: 1e-12, np.complex64: 1e-5, np.complex128: 1e-12}


def _close(got, want, tol):
    got = got.copy_to_host()
    if got.dtype == ml_dtypes.bfloat16 or want.dtype == ml_dtypes.bfloat16:
        got, want = got.astype(np.float64), want.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())))


# (M, K, len(x), side): several rows per block (right and left), square auto, a column stretch, and
# several segments of the reduced axis (3 and 9 row segments right, 2 column segments left); rows of whole
# 64-bit words take SCALE_WORDS (e.g. K = 4, 6, 1100 in float32), the others SCALE
CASES = [(40, 3, 3, "auto"), (5, 6, 5, "left"), (4, 4, 4, "auto"), (3, 37, 37, "right"), (600, 3, 3, "right"),
         (2, 1100, 2, "left"), (600, 4, 4, "right"), (2100, 3, 3, "right")]


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
@pytest.mark.parametrize("case", CASES)
def test_dgmm(case, dtype):
    M, K, L, side = case
    a, x, g = (RNG.standard_normal(s).astype(dtype) for s in ((M, K), (L,), (M, K)))
    d = cuda.to_device
    _close(dg.dgmm(d(a), d(x), side=side), dg.dgmm(a, x, side=side), TOL[dtype])
    for got, want in zip(dg.dgmm_backward(d(g), d(a), d(x), side=side), dg.dgmm_backward(g, a, x, side=side)):
        _close(got, want, TOL[dtype])


@pytest.mark.parametrize("case,kernels", [((5, 6, 5, "left"), ["scale_sum_to_gx"]),
                                          ((2100, 4, 4, "right"), ["scale_words_sum", "sum_segments"]),
                                          ((40, 4, 4, "right"), ["scale_words_sum_to_gx"])])
def test_16bit_gradient_of_one_segment_is_written_by_the_sum_kernel(case, kernels, monkeypatch):
    """One segment: SCALE(_WORDS)_SUM_TO_GX stores the sums in bfloat16 itself; several: SUM_SEGMENTS adds them."""
    from gpuops import _core
    launched, run = [], _core.run
    monkeypatch.setattr(_core, "run", lambda family, kernel, *a, **k: (launched.append(kernel), run(family, kernel, *a, **k)))
    M, K, L, side = case
    a, x, g = (RNG.standard_normal(s).astype(ml_dtypes.bfloat16) for s in ((M, K), (L,), (M, K)))
    d = cuda.to_device
    got = dg.dgmm_backward(d(g), d(a), d(x), side=side)
    assert launched == kernels
    for got_one, want in zip(got, dg.dgmm_backward(g, a, x, side=side)):
        _close(got_one, want, TOL[ml_dtypes.bfloat16])


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.complex64, np.complex128])
@pytest.mark.parametrize("case", CASES[:2] + CASES[3:])
def test_cdgmm(case, dtype):
    M, K, L, side = case
    if np.dtype(dtype).kind == "c":
        def make(*s):
            return (RNG.standard_normal(s) + 1j * RNG.standard_normal(s)).astype(dtype)
        a, x, g = make(M, K), make(L), make(M, K)
    else:
        a, x, g = (RNG.standard_normal(s).astype(dtype) for s in ((M, K, 2), (L, 2), (M, K, 2)))
    d = cuda.to_device
    _close(dg.cdgmm(d(a), d(x), side=side), dg.cdgmm(a, x, side=side), TOL[dtype])
    for got, want in zip(dg.cdgmm_backward(d(g), d(a), d(x), side=side), dg.cdgmm_backward(g, a, x, side=side)):
        _close(got, want, TOL[dtype])


@pytest.mark.parametrize("segments", [1, 5, 8, 37, 64, 70, 130])
def test_sum_segments_matches_mirror_and_numpy(segments):
    """SUM_SEGMENTS alone: groups of every 8th segment, eight loads a step, remainders included."""
    from gpuops import _core
    from gpuops._core import In, Out
    from gpuops.cpu.diag import sum_segments as mirror

    n = 45                                             # two blocks of 32 outputs, the second partly idle
    partial = RNG.standard_normal(segments * n).astype(np.float32)
    gx = cuda.device_array(n, np.float32)
    like = _core.wrap("a", gx)
    _core.run("diag", "sum_segments", (In(_core.wrap("p", cuda.to_device(partial))), Out(like), segments),
              like=like, grid=(2,), block=(256,))
    want = np.zeros(n, np.float32)
    mirror(partial, want, segments)
    np.testing.assert_array_equal(gx.copy_to_host(), want)          # the same order, bit for bit
    np.testing.assert_allclose(want, partial.reshape(segments, n).sum(0, dtype=np.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["words", "elements"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_every_scale_variant_forced(variant, side):
    """Both scale kernels (gpuops.diag.SCALE_VARIANTS), forced with ``variant=``, forward and backward, on
    rows of whole 64-bit words (float32, K = 6), against the CPU mirror."""
    assert variant in [v.name for v in dg.SCALE_VARIANTS]
    a, g = RNG.standard_normal((5, 6)).astype(np.float32), RNG.standard_normal((5, 6)).astype(np.float32)
    x = RNG.standard_normal(6 if side == "right" else 5).astype(np.float32)
    _close(dg.dgmm(cuda.to_device(a), cuda.to_device(x), side=side, variant=variant), dg.dgmm(a, x, side=side),
           1e-5)
    got = dg.dgmm_backward(cuda.to_device(g), cuda.to_device(a), cuda.to_device(x), side=side, variant=variant)
    for o, w in zip(got, dg.dgmm_backward(g, a, x, side=side)):
        _close(o, w, 1e-5)
