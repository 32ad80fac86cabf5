"""Tier 2: every kernel of the RAFT pyramid family under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) against the
CPU path, in float32, bfloat16 and float64 (float16 for the GEMM's narrow kernel).

Simulated device arrays take the CUDA path of the core: GEMM (the numba fallback: simulated arrays are
neither torch tensors nor CuPy arrays, so `_gemm` picks it), POOL, UNPOOL, UNPOOL_FINAL, LOOKUP_LEVEL,
LOOKUP_GRAD_LEVEL, LOOKUP_GRAD_LEVEL_ADD, LOOKUP_GRAD_COORDS_PARTIAL and LOOKUP_GRAD_COORDS_SUM.  The CPU side is
numpy's BLAS for the GEMM and the mirrors for the rest.  Shapes are tiny (one OS thread per CUDA thread) but the GEMM's are
ragged (more than one 32 × 32 tile and more than one K step), and repeats must be bit-identical.
"""
import ml_dtypes
import numpy as np
import pytest

from gpuops._toolchain import SIMULATOR

pytestmark = pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run in its own process)")

if SIMULATOR:
    from numba import cuda

    import gpuops
    from gpuops import pyramid
    from gpuops import pyramid as pyramid_family

DTYPES = {"float32": (np.float32, 1e-5), "bfloat16": (ml_dtypes.bfloat16, 2e-2), "float64": (np.float64, 1e-12),
          "float16": (np.float16, 2e-3)}


def _dev(a):
    return tuple(cuda.to_device(e) for e in a) if isinstance(a, tuple) else cuda.to_device(a)


def _host(a):
    return np.asarray(a.copy_to_host(), np.float64)


def _close(got, want, tol):
    want = np.asarray(want, np.float64)
    np.testing.assert_allclose(_host(got), want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))


def _same(a, b):
    np.testing.assert_array_equal(a.copy_to_host(), b.copy_to_host())


def _maps(dtype, N=1, C=3, H=6, W=5, seed=0):
    rng = np.random.default_rng(seed)
    storage = DTYPES[dtype][0]
    return rng.standard_normal((N, C, H, W)).astype(storage), rng.standard_normal((N, C, H, W)).astype(storage)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_pyramid_kernels_three_levels(dtype):
    # 6x5 -> 3x2 -> 1x1: POOL twice, UNPOOL with and without a coarser level, UNPOOL_FINAL, both GEMM layouts
    tol = DTYPES[dtype][1]
    f1, f2 = _maps(dtype)
    want = gpuops.corr_pyramid(f1, f2, num_levels=3)                          # BLAS + CPU mirrors
    got = gpuops.corr_pyramid(_dev(f1), _dev(f2), num_levels=3)               # numba GEMM + kernels, simulated
    assert type(got[0]).__module__.startswith("numba.cuda.simulator")
    for a, b in zip(got, want):
        _close(a, b, tol)
    rng = np.random.default_rng(1)
    g = tuple(rng.standard_normal(w.shape).astype(f1.dtype) for w in want)
    wants = gpuops.corr_pyramid_backward(g, f1, f2, num_levels=3)
    gots = gpuops.corr_pyramid_backward(_dev(g), _dev(f1), _dev(f2), num_levels=3)
    for a, b in zip(gots, wants):
        _close(a, b, 4 * tol)
    for a, b in zip(gots, gpuops.corr_pyramid_backward(_dev(g), _dev(f1), _dev(f2), num_levels=3)):
        _same(a, b)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_gemm_ragged_tiles_and_k_steps(dtype):
    # H·W = 35 queries (two 32-row tiles), C = 40 (two K steps of 32), batch 2; one level: the GEMMs alone
    tol = DTYPES[dtype][1] * 4
    f1, f2 = _maps(dtype, N=2, C=40, H=7, W=5, seed=3)
    want = gpuops.corr_pyramid(f1, f2, num_levels=1)[0]
    got = gpuops.corr_pyramid(_dev(f1), _dev(f2), num_levels=1, variant="numba")[0]
    _close(got, want, tol)
    g = np.random.default_rng(4).standard_normal(want.shape).astype(f1.dtype)
    for a, b in zip(gpuops.corr_pyramid_backward((_dev(g),), _dev(f1), _dev(f2), num_levels=1),
                    gpuops.corr_pyramid_backward((g,), f1, f2, num_levels=1)):
        _close(a, b, tol)


def _lookup_arrays(dtype, seed=0):
    rng = np.random.default_rng(seed)
    storage = DTYPES[dtype][0]
    pyramid = tuple(rng.standard_normal((2, 3, 4, 6 >> i, 5 >> i)).astype(storage) for i in range(3))
    coords = rng.integers(-3, 8, (2, 2, 3, 4)) + rng.uniform(0.2, 0.8, (2, 2, 3, 4))
    coords[0, 0, 1, 2] = np.nan             # invalid query
    coords[1, :, 2, 3] = [40.5, -1e9]       # far outside
    coords[1, :, 0, 0] = [2.0, 1.0]         # integer position (right-hand derivative)
    return pyramid, coords.astype(storage)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("radius", [0, 1])
def test_lookup_kernels(dtype, radius):
    tol = DTYPES[dtype][1]
    pyramid, coords = _lookup_arrays(dtype, seed=radius)
    want = gpuops.corr_pyramid_lookup(pyramid, coords, radius=radius)
    got = gpuops.corr_pyramid_lookup(_dev(pyramid), _dev(coords), radius=radius)
    _close(got, want, tol)
    g = np.random.default_rng(2).standard_normal(want.shape).astype(coords.dtype)
    want_levels, want_coords = gpuops.corr_pyramid_lookup_backward(g, pyramid, coords, radius=radius)
    got_levels, got_coords = gpuops.corr_pyramid_lookup_backward(_dev(g), _dev(pyramid), _dev(coords), radius=radius)
    for a, b in zip(got_levels, want_levels):
        _close(a, b, tol)
    _close(got_coords, want_coords, 4 * tol)
    again_levels, again_coords = gpuops.corr_pyramid_lookup_backward(_dev(g), _dev(pyramid), _dev(coords),
                                                                     radius=radius)
    for a, b in zip((*got_levels, got_coords), (*again_levels, again_coords)):
        _same(a, b)


def test_pyramid_then_lookup_equals_corr_lookup():
    # the whole fast path on the simulated device against corr_lookup's own kernels there
    f1, f2 = _maps("float32", N=1, C=2, H=4, W=4, seed=5)
    coords = (np.random.default_rng(6).uniform(-2, 6, (1, 2, 4, 4))).astype(np.float32)
    levels = gpuops.corr_pyramid(_dev(f1), _dev(f2), num_levels=2)
    got = gpuops.corr_pyramid_lookup(levels, _dev(coords), radius=1)
    _close(got, _host(gpuops.corr_lookup(_dev(f1), _dev(f2), _dev(coords), radius=1, num_levels=2)), 1e-5)


def test_gemm_variants_on_simulated_arrays():
    f1, f2 = _maps("float32", N=1, C=2, H=2, W=2)
    for name in ("numpy", "torch", "cupy"):
        with pytest.raises(ValueError, match=f"variant '{name}' cannot run this call"):
            gpuops.corr_pyramid(_dev(f1), _dev(f2), num_levels=1, variant=name)
    assert [v.name for v in pyramid.GEMM_VARIANTS] == ["numpy", "torch", "cupy", "numba"]


def test_lookup_gradient_planes_in_several_passes(monkeypatch):
    # LOOKUP_GRAD_LEVEL: blocks of 32 threads walk a 35-element plane (7 × 5) and 4 blocks the 30 queries'
    # planes, so that both its loops (over a plane, over the queries) take several passes
    from gpuops import _constants
    monkeypatch.setattr(pyramid, "_THREADS", 32)
    monkeypatch.setattr(_constants, "MAX_GRID_X", 4)
    rng = np.random.default_rng(5)
    levels = (rng.standard_normal((1, 6, 5, 7, 5)).astype(np.float32),
              rng.standard_normal((1, 6, 5, 3, 2)).astype(np.float32))
    coords = (rng.integers(-2, 7, (1, 2, 6, 5)) + rng.uniform(0.2, 0.8, (1, 2, 6, 5))).astype(np.float32)
    g = rng.standard_normal((1, 2 * 9, 6, 5)).astype(np.float32)
    want_levels, want_coords = gpuops.corr_pyramid_lookup_backward(g, levels, coords, radius=1)
    got_levels, got_coords = gpuops.corr_pyramid_lookup_backward(_dev(g), _dev(levels), _dev(coords), radius=1)
    for a, b in zip(got_levels, want_levels):
        _close(a, b, 1e-5)
    _close(got_coords, want_coords, 4e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("radius", [0, 1])
def test_lookup_gradient_added_on_footprints(dtype, radius):
    # LOOKUP_GRAD_LEVEL_ADD: two lookups (an invalid query, one far outside, one at an integer position) added
    # into one set of device buffers equal the CPU path's sum of the plain backwards; the first add on zeros is
    # LOOKUP_GRAD_LEVEL's value bit for bit
    pyramid, coords = _lookup_arrays(dtype, seed=radius)
    coords2 = (coords + np.asarray(0.375, coords.dtype)).astype(coords.dtype)
    rng = np.random.default_rng(3)
    shape = gpuops.corr_pyramid_lookup(pyramid, coords, radius=radius).shape
    g1, g2 = (rng.standard_normal(shape).astype(coords.dtype) for _ in range(2))
    plain1, want_coords = gpuops.corr_pyramid_lookup_backward(g1, pyramid, coords, radius=radius)
    plain2, _ = gpuops.corr_pyramid_lookup_backward(g2, pyramid, coords2, radius=radius)
    buffers = tuple(cuda.to_device(np.zeros_like(level)) for level in pyramid)
    dev_pyramid = _dev(pyramid)
    _, got_coords = pyramid_family.corr_pyramid_lookup_backward_add(_dev(g1), dev_pyramid, _dev(coords),
                                                                    radius=radius, out=(buffers, None))
    for got, dense in zip(buffers, gpuops.corr_pyramid_lookup_backward(_dev(g1), dev_pyramid, _dev(coords),
                                                                       radius=radius)[0]):
        _same(got, dense)
    _close(got_coords, want_coords, 4 * DTYPES[dtype][1])
    _, none = pyramid_family.corr_pyramid_lookup_backward_add(_dev(g2), dev_pyramid, _dev(coords2), radius=radius,
                                                              out=(buffers, None), coords_grad=False)
    assert none is None
    for got, a, b in zip(buffers, plain1, plain2):
        _close(got, np.asarray(a, np.float64) + b, DTYPES[dtype][1])
