"""Tier 2: every RAFT kernel under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) against the CPU mirror, in
float32 and bfloat16 (float64 once).

Simulated device arrays take the CUDA path of the core: LOOKUP_FORWARD, ZERO_FILL, POOL_FEATURES,
POOL_LEVEL, LOOKUP_GRAD_BASE, LOOKUP_GRAD_COORDS_PARTIAL/SUM, BUCKET_CLEAR/COUNT/SCAN/PLACE/SORT,
LOOKUP_GRAD_MAP and LOOKUP_GRAD_MAP_POOLED, the window kernels, and the tiled window forward
(WINDOW_TILED_FORWARD, WINDOW_TILED_FORWARD64, WINDOW_TILED_REST) against the float64 reference.  The
simulator runs CUDA threads as OS threads, so the
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


# the tiled window forward (variant "window_tiled"): forward only, against the float64 reference


def _flow(rng, N, H, W, spread):
    """RAFT-like coordinates (N, 2, H, W): the query grid plus a random flow."""
    grid = np.stack(np.meshgrid(np.arange(W), np.arange(H)))[None].astype(np.float64)
    return grid + rng.standard_normal((N, 2, H, W)) * spread


@pytest.fixture
def fallback_calls(monkeypatch):
    """The queries WINDOW_TILED_REST computed (the simulator resolves the device function at run time)."""
    from gpuops.cuda import raft as raft_cuda
    calls = []
    window_level = raft_cuda._window_level

    def counted(*args):
        live, n, q, level = args[7], args[8], args[9], args[17]
        if live:
            calls.append((int(n), int(q), int(level)))       # once per lane
        return window_level(*args)
    monkeypatch.setattr(raft_cuda, "_window_level", counted)
    return calls


def _tiled(fn, ref, arrays, params, tol):
    got = fn(*[_dev(a) for a in arrays], **params, variant="window_tiled")
    want = ref(*[np.asarray(a, np.float64) for a in arrays], **params)       # the values the kernels saw
    _close(got, want, tol)


@pytest.mark.parametrize("dtype,N,C,radius", [("float32", 2, 12, 1), ("bfloat16", 1, 8, 2), ("float64", 1, 12, 2)])
def test_window_tiled_boxes_that_fit(dtype, N, C, radius, fallback_calls):
    # 5x9 queries: two 8x8 tiles, mostly dead queries; C = 12 is a full and a partial channel chunk; a NaN, an
    # Inf and a far query sample zeros (and do not widen their tile's box)
    from gpuops import reference
    rng = np.random.default_rng(7)
    f1, f2 = rng.standard_normal((N, C, 5, 9)), rng.standard_normal((N, C, 5, 9))
    coords = _flow(rng, N, 5, 9, 0.7)
    coords[0, :, 1, 2] = [np.nan, 1.0]
    coords[0, :, 4, 8] = [2.0, np.inf]
    coords[-1, :, 3, 4] = [1e6, 2.0]
    arrays = [a.astype(DTYPES[dtype][0]) for a in (f1, f2, coords)]
    _tiled(gpuops.corr_lookup, reference.corr_lookup, arrays, dict(radius=radius, num_levels=2), DTYPES[dtype][1])
    assert not fallback_calls


def test_window_tiled_falls_back_per_level(monkeypatch, fallback_calls):
    # a shared buffer of 800 float32: the first tile's level-0 box (about 10x13 pixels x 8 channels) does not fit
    # and takes the warp per query of WINDOW_TILED_REST; the second tile (column 8) and level 1 fit, and their
    # window sums go through the buffer in two passes (800 // 16 = 50 of the 64 queries, then 14)
    from gpuops import _constants, reference
    monkeypatch.setattr(_constants, "RAFT_WINDOW_TILED_SHARED_BYTES", 800 * 4)
    rng = np.random.default_rng(8)
    f1, f2 = rng.standard_normal((1, 8, 5, 9)), rng.standard_normal((1, 8, 5, 9))
    coords = _flow(rng, 1, 5, 9, 0.7)
    coords[0, :, 2, 3] = [np.nan, np.nan]
    arrays = [a.astype(np.float32) for a in (f1, f2, coords)]
    _tiled(gpuops.corr_lookup, reference.corr_lookup, arrays, dict(radius=1, num_levels=2), 1e-5)
    assert sorted(set(fallback_calls)) == [(0, 9 * h + w, 0) for h in range(5) for w in range(8)]


def test_window_tiled_scattered_flow(fallback_calls):
    # queries of one tile sampling all over a 24x24 map: their box (about 30x30 pixels) does not fit the 4096
    # float64 values of the shared buffer (float64: a small map does it)
    from gpuops import reference
    rng = np.random.default_rng(9)
    base, inp = rng.standard_normal((1, 8, 3, 5)), rng.standard_normal((1, 8, 24, 24))
    coords = rng.uniform(-4, 28, (1, 3, 5, 2))
    coords[0, 1, 1] = [np.inf, np.nan]
    coords[0, 2, 4] = [-1e9, 3.0]
    _tiled(gpuops.patch_correlate, reference.patch_correlate, [base, inp, coords], dict(radius=1), 1e-12)
    assert sorted(set(fallback_calls)) == [(0, q, 0) for q in range(3 * 5)]


@pytest.mark.parametrize("params,reason", [(dict(radius=1, l1=True), "L1 lookups"), (dict(radius=5), "radius 5 > 4")])
def test_window_tiled_refuses(params, reason):
    arrays = [_dev(a) for a in _patch_arrays("float32")]
    with pytest.raises(ValueError, match=f"variant 'window_tiled' cannot run this call: {reason}"):
        gpuops.patch_correlate(*arrays, **params, variant="window_tiled")
