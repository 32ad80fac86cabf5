"""Tier 2: every RAFT kernel under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) against the CPU mirror, in
float32 and bfloat16 (float64 once).

Simulated device arrays take the CUDA path of the core: LOOKUP_FORWARD, ZERO_FILL, POOL_FEATURES,
POOL_LEVEL, LOOKUP_GRAD_BASE, LOOKUP_GRAD_COORDS_PARTIAL/SUM, BUCKET_CLEAR/COUNT/SCAN/PLACE/SORT,
LOOKUP_GRAD_MAP and LOOKUP_GRAD_MAP_POOLED.  The simulator runs CUDA threads as OS threads, so the
integer atomics of the bucketing really race: bit-identical repeats check that the sort makes the
map gradient deterministic.  Shapes are tiny (one OS thread per CUDA thread).
"""
import ml_dtypes
import numpy as np
import pytest

from gpuops._toolchain import SIMULATOR

pytestmark = pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run in its own process)")

if SIMULATOR:
    from numba import cuda

    import gpuops

DTYPES = {"float32": (np.float32, 1e-5), "bfloat16": (ml_dtypes.bfloat16, 2e-2), "float64": (np.float64, 1e-12)}


def _dev(a):
    return cuda.to_device(a)


def _host(a):
    return np.asarray(a.copy_to_host(), np.float64)


def _close(got, want, tol):
    want = np.asarray(want, np.float64)
    np.testing.assert_allclose(_host(got), want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))


def _coords(rng, shape, low, high):
    return rng.integers(low, high, shape) + rng.uniform(0.2, 0.8, shape)


def _patch_arrays(dtype, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((2, 3, 3, 4))
    inp = rng.standard_normal((2, 3, 5, 6))
    coords = _coords(rng, (2, 3, 4, 2), -3, 8)
    coords[0, 1, 2, 0] = np.nan          # invalid query
    coords[1, 2, 3] = [40.5, -1e9]       # far outside
    coords[1, 0, :2] = [2.25, 1.5]       # two queries in one cell
    storage = DTYPES[dtype][0]
    return [a.astype(storage) for a in (base, inp, coords)]


def _check_both(fwd, bwd, arrays, params, dtype, radius_channels, variant=None):
    tol = DTYPES[dtype][1]
    want = fwd(*arrays, **params)                                     # CPU mirror
    got = fwd(*[_dev(a) for a in arrays], **params, variant=variant)  # CUDA kernels, simulated
    assert type(got).__module__.startswith("numba.cuda.simulator")
    _close(got, want, tol)
    g = np.random.default_rng(1).standard_normal(want.shape).astype(arrays[0].dtype)
    wants = bwd(g, *arrays, **params)
    gots = bwd(_dev(g), *[_dev(a) for a in arrays], **params, variant=variant)
    for a, b in zip(gots, wants):
        _close(a, b, tol * radius_channels)
    again = bwd(_dev(g), *[_dev(a) for a in arrays], **params, variant=variant)
    for a, b in zip(gots, again):
        np.testing.assert_array_equal(a.copy_to_host(), b.copy_to_host())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("l1,variant", [(False, "window"), (False, "direct"), (True, "direct")])
def test_patch_correlate_kernels(dtype, l1, variant):
    _check_both(gpuops.patch_correlate, gpuops.patch_correlate_backward, _patch_arrays(dtype), dict(radius=1, l1=l1),
                dtype, 4, variant)


def test_l1_has_no_window_form():
    arrays = [_dev(a) for a in _patch_arrays("float32")]
    with pytest.raises(ValueError, match="variant 'window' cannot run this call: L1 lookups"):
        gpuops.patch_correlate(*arrays, radius=1, l1=True, variant="window")


@pytest.mark.parametrize("variant", ["window", "direct"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
def test_corr_lookup_kernels_three_levels(dtype, variant):
    # 6x5 -> 3x2 -> 1x1: both pool kernels, both map-gradient kernels, the pooling adjoint
    rng = np.random.default_rng(2)
    f1 = rng.standard_normal((1, 2, 6, 5))
    f2 = rng.standard_normal((1, 2, 6, 5))
    coords = _coords(rng, (1, 2, 6, 5), -2, 7)
    coords[0, :, 2, 2] = [np.inf, 1.5]
    arrays = [a.astype(DTYPES[dtype][0]) for a in (f1, f2, coords)]
    _check_both(gpuops.corr_lookup, gpuops.corr_lookup_backward, arrays, dict(radius=1, num_levels=3), dtype, 4,
                variant)


def test_radius_zero_and_empty_grid():
    arrays = _patch_arrays("float32", seed=3)
    for variant in ("window", "direct"):
        _check_both(gpuops.patch_correlate, gpuops.patch_correlate_backward, arrays, dict(radius=0), "float32", 1,
                    variant)
    base, inp, coords = arrays
    empty = [base[:, :, :0], inp, coords[:, :0]]                       # no queries: ZERO_FILL for grad_input
    y = gpuops.patch_correlate(*[_dev(a) for a in empty], radius=1)
    assert y.shape == (2, 9, 0, 4)
    grads = gpuops.patch_correlate_backward(_dev(np.zeros(y.shape, np.float32)), *[_dev(a) for a in empty], radius=1)
    assert grads[1].shape == inp.shape and not np.any(grads[1].copy_to_host())


@pytest.mark.parametrize("map_warps", [1, 72])
def test_window_map_gradient_cell_ranges(map_warps, monkeypatch):
    # one range per pixel, and ranges that do not divide the (2r+2)² = 16 cells evenly: 72 warps give the
    # 24 level-0 pixels 3 ranges (6, 6, 4 cells) and the 6 level-1 pixels 12 (2 cells each, the last four empty)
    from gpuops import _constants
    monkeypatch.setattr(_constants, "RAFT_WINDOW_MAP_WARPS", map_warps)
    rng = np.random.default_rng(4)
    f1, f2 = rng.standard_normal((1, 3, 4, 6)), rng.standard_normal((1, 3, 4, 6))
    coords = _coords(rng, (1, 2, 4, 6), -2, 6)
    arrays = [a.astype(np.float32) for a in (f1, f2, coords)]
    _check_both(gpuops.corr_lookup, gpuops.corr_lookup_backward, arrays, dict(radius=1, num_levels=2), "float32", 4,
                "window")


def test_window_kernels_read_channel_quads():
    # C a multiple of 4: the window kernels read 4 adjacent channels at once (load4; the work buffers are float32
    # for every 16-bit dtype too); with 132 channels a lane's pass covers channels 4·lane .. 4·lane + 3 and, for
    # lane 0 only, 128 .. 131
    dtype = "float32"
    rng = np.random.default_rng(5)
    f1, f2 = rng.standard_normal((1, 132, 3, 3)), rng.standard_normal((1, 132, 3, 3))
    coords = _coords(rng, (1, 2, 3, 3), -2, 4)
    arrays = [a.astype(DTYPES[dtype][0]) for a in (f1, f2, coords)]
    _check_both(gpuops.corr_lookup, gpuops.corr_lookup_backward, arrays, dict(radius=1, num_levels=2), dtype, 4,
                "window")
    storage = DTYPES[dtype][0]
    coords = _patch_arrays(dtype, seed=6)[2]
    base, inp = (rng.standard_normal(shape).astype(storage) for shape in ((2, 8, 3, 4), (2, 8, 5, 6)))
    _check_both(gpuops.patch_correlate, gpuops.patch_correlate_backward, [base, inp, coords], dict(radius=1), dtype,
                4, "window")
