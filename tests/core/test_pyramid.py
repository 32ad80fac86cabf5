"""Tier 1: the RAFT pyramid family (docs/ops.md §10: corr_pyramid, corr_pyramid_lookup) on the CPU path.

References written here, independently of gpuops: the volume as an einsum and the pooling as a reshape
mean; the lookup as a Python loop over queries and offsets; gradients by torch.autograd of RAFT's own
formulation (matmul volume, F.avg_pool2d pyramid, F.grid_sample lookups) in float64 and by finite
differences.  Then: pyramid + lookup equals `gpuops.corr_lookup` (and gpuops.reference's), values and
gradients; coordinates far outside, NaN and ±Inf; radius 0; levels down to 1×1; empty inputs; 16-bit
inputs; repeat determinism; the GEMM variants; every bad-input rule.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gpuops
from gpuops import pyramid as family
from gpuops import reference as R


def _close(a, b, tol=1e-11):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol)


def _off_integer(rng, low, high, shape):
    """Fractional parts in [0.2, 0.8]: finite differences stay off the bilinear kinks at integers."""
    return rng.integers(low, high, shape) + rng.uniform(0.2, 0.8, shape)


def _maps(N=2, C=3, H=6, W=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, C, H, W)), rng.standard_normal((N, C, H, W))


def _coords(N, H, W, seed=1, low=-2, high=8):
    return _off_integer(np.random.default_rng(seed), low, high, (N, 2, H, W))


# ---------------------------------------------------------------------------------------------
# references written from the spec


def pyramid_ref(f1, f2, num_levels):
    """Level 0 = Σ_c f1·f2 / √C as an einsum; each next level the mean of 2×2 blocks (odd rows/columns dropped)."""
    levels = [np.einsum("nchw,ncyx->nhwyx", f1, f2) / math.sqrt(f1.shape[1])]
    for _ in range(1, num_levels):
        v = levels[-1]
        Hl, Wl = v.shape[3] // 2, v.shape[4] // 2
        v = v[..., :2 * Hl, :2 * Wl].reshape(v.shape[:3] + (Hl, 2, Wl, 2))
        levels.append(v.mean(axis=(4, 6)))
    return levels


def lookup_ref(pyramid, coords, radius):
    """A loop per query, level and offset: bilinear on the query's own plane, corners outside are 0, non-finite
    coordinates sample 0."""
    N, H, W = pyramid[0].shape[:3]
    L = 2 * radius + 1
    out = np.zeros((N, len(pyramid) * L * L, H, W))
    for n in range(N):
        for h in range(H):
            for w in range(W):
                for i, vol in enumerate(pyramid):
                    x, y = coords[n, 0, h, w] / 2 ** i, coords[n, 1, h, w] / 2 ** i
                    if not (np.isfinite(x) and np.isfinite(y)):
                        continue
                    plane = vol[n, h, w]
                    x0, y0 = math.floor(x), math.floor(y)
                    fx, fy = x - x0, y - y0

                    def at(yy, xx):
                        inside = 0 <= yy < plane.shape[0] and 0 <= xx < plane.shape[1]
                        return plane[yy, xx] if inside else 0.0
                    for dx in range(-radius, radius + 1):
                        for dy in range(-radius, radius + 1):
                            yy, xx = y0 + dy, x0 + dx
                            s = ((1 - fy) * ((1 - fx) * at(yy, xx) + fx * at(yy, xx + 1))
                                 + fy * ((1 - fx) * at(yy + 1, xx) + fx * at(yy + 1, xx + 1)))
                            out[n, i * L * L + (dx + radius) * L + dy + radius, h, w] = s
    return out


def raft_corr_block(fmap1, fmap2, coords, num_levels, radius):
    """RAFT core/corr.py CorrBlock in torch (levels wider and taller than 1 pixel: grid_sample divides by W − 1)."""
    N, C, H, W = fmap1.shape
    corr = torch.matmul(fmap1.reshape(N, C, H * W).transpose(1, 2), fmap2.reshape(N, C, H * W)) / math.sqrt(C)
    corr = corr.reshape(N * H * W, 1, H, W)
    d = torch.linspace(-radius, radius, 2 * radius + 1, dtype=coords.dtype)
    delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), -1).view(1, 2 * radius + 1, 2 * radius + 1, 2)
    centroid = coords.permute(0, 2, 3, 1).reshape(N * H * W, 1, 1, 2)
    outs = []
    for i in range(num_levels):
        lvl = centroid / 2 ** i + delta
        Hl, Wl = corr.shape[-2:]
        grid = torch.cat([2 * lvl[..., :1] / (Wl - 1) - 1, 2 * lvl[..., 1:] / (Hl - 1) - 1], -1)
        outs.append(F.grid_sample(corr, grid, align_corners=True).view(N, H, W, -1))
        corr = F.avg_pool2d(corr, 2, stride=2)
    return torch.cat(outs, -1).permute(0, 3, 1, 2)


def torch_pyramid(fmap1, fmap2, num_levels):
    """The pyramid as RAFT builds it, differentiable: (N, H, W, Hl, Wl) levels."""
    N, C, H, W = fmap1.shape
    corr = torch.einsum("nchw,ncyx->nhwyx", fmap1, fmap2) / math.sqrt(C)
    levels = [corr]
    for _ in range(1, num_levels):
        v = levels[-1]
        levels.append(F.avg_pool2d(v.reshape(N * H * W, 1, *v.shape[3:]), 2, stride=2).reshape(N, H, W, *(
            s // 2 for s in v.shape[3:])))
    return levels


# ---------------------------------------------------------------------------------------------
# corr_pyramid


@pytest.mark.parametrize("shape,num_levels", [((2, 3, 6, 5), 3), ((1, 4, 8, 8), 4), ((1, 2, 7, 9), 2),
                                              ((2, 1, 1, 1), 1), ((1, 5, 3, 16), 2)])
def test_pyramid_matches_the_reference(shape, num_levels):
    f1, f2 = _maps(*shape, seed=num_levels)
    got = gpuops.corr_pyramid(f1, f2, num_levels=num_levels)
    want = pyramid_ref(f1, f2, num_levels)
    assert isinstance(got, tuple) and len(got) == num_levels
    N, _, H, W = shape
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.shape == (N, H, W, H >> i, W >> i) and a.dtype == np.float64
        _close(a, b)
    for a, b in zip(got, R.corr_pyramid(f1, f2, num_levels)):
        _close(a, b)


def test_levels_down_to_one_pixel_and_float32():
    f1, f2 = _maps(1, 3, 8, 8, seed=4)
    got = gpuops.corr_pyramid(f1.astype(np.float32), f2.astype(np.float32), num_levels=4)
    assert [a.shape[3:] for a in got] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert all(a.dtype == np.float32 for a in got)
    for a, b in zip(got, pyramid_ref(f1, f2, 4)):
        _close(a, b, 1e-5)
    # the 1x1 level is the mean of the whole (8x8) plane
    _close(got[3][..., 0, 0], got[0].mean(axis=(3, 4)), 1e-5)


def test_pyramid_backward_matches_torch_autograd():
    f1, f2 = _maps(2, 3, 7, 6, seed=5)                  # odd rows: the pooling crops one
    levels = gpuops.corr_pyramid(f1, f2, num_levels=3)
    rng = np.random.default_rng(6)
    g = tuple(rng.standard_normal(a.shape) for a in levels)
    t1, t2 = (torch.from_numpy(a).requires_grad_() for a in (f1, f2))
    want = torch.autograd.grad(torch_pyramid(t1, t2, 3), (t1, t2), [torch.from_numpy(a) for a in g])
    got = gpuops.corr_pyramid_backward(g, f1, f2, num_levels=3)
    for a, b in zip(got, want):
        _close(a, b.numpy())
    for a, b in zip(got, R.corr_pyramid_backward(g, f1, f2, 3)):
        _close(a, b)


def test_pyramid_backward_takes_strided_gradients_and_one_level():
    f1, f2 = _maps(1, 2, 4, 4, seed=7)
    g = np.random.default_rng(8).standard_normal((1, 4, 4, 4, 4))
    strided = np.swapaxes(np.swapaxes(g, 3, 4).copy(), 3, 4)
    assert not strided.flags.c_contiguous
    for a, b in zip(gpuops.corr_pyramid_backward((strided,), f1, f2, num_levels=1),
                    R.corr_pyramid_backward((g,), f1, f2, 1)):
        _close(a, b)
    expanded = np.broadcast_to(np.ones((1, 1, 1, 2, 2)), (1, 4, 4, 2, 2))      # stride-0 axes
    got = gpuops.corr_pyramid_backward((np.zeros(g.shape), expanded), f1, f2, num_levels=2)
    for a, b in zip(got, R.corr_pyramid_backward((np.zeros(g.shape), np.ones((1, 4, 4, 2, 2))), f1, f2, 2)):
        _close(a, b)


def test_pyramid_finite_differences():
    f1, f2 = _maps(1, 2, 4, 5, seed=9)
    rng = np.random.default_rng(10)
    g = tuple(rng.standard_normal(a.shape) for a in gpuops.corr_pyramid(f1, f2, num_levels=2))
    grads = gpuops.corr_pyramid_backward(g, f1, f2, num_levels=2)
    eps = 1e-6

    def loss(a, b):
        return sum((lvl * w).sum() for lvl, w in zip(gpuops.corr_pyramid(a, b, num_levels=2), g))
    for which, grad in enumerate(grads):
        for idx in [(0, 0, 0, 0), (0, 1, 3, 4), (0, 1, 2, 1)]:
            plus, minus = [f1.copy(), f2.copy()], [f1.copy(), f2.copy()]
            plus[which][idx] += eps
            minus[which][idx] -= eps
            assert abs((loss(*plus) - loss(*minus)) / (2 * eps) - grad[idx]) < 1e-6


def test_pyramid_16_bit_torch_and_empty_inputs():
    f1, f2 = _maps(1, 4, 6, 6, seed=11)
    for dtype, tol in ((torch.float16, 1e-2), (torch.bfloat16, 5e-2)):
        t1, t2 = (torch.from_numpy(a).to(dtype) for a in (f1, f2))
        got = gpuops.corr_pyramid(t1, t2, num_levels=2)
        assert all(a.dtype == dtype for a in got)
        for a, b in zip(got, pyramid_ref(t1.double().numpy(), t2.double().numpy(), 2)):
            _close(a.double().numpy(), b, tol)
        grads = gpuops.corr_pyramid_backward(tuple(torch.ones_like(a) for a in got), t1, t2, num_levels=2)
        assert all(a.dtype == dtype for a in grads)
    empty = gpuops.corr_pyramid(f1[:0], f2[:0], num_levels=2)
    assert [a.shape for a in empty] == [(0, 6, 6, 6, 6), (0, 6, 6, 3, 3)]
    grads = gpuops.corr_pyramid_backward(empty, f1[:0], f2[:0], num_levels=2)
    assert grads[0].shape == (0, 4, 6, 6)
    grid = gpuops.corr_pyramid(f1[:, :, :0], f2[:, :, :0], num_levels=3)        # an empty grid: any levels
    assert [a.shape for a in grid] == [(1, 0, 6, 0, 6), (1, 0, 6, 0, 3), (1, 0, 6, 0, 1)]


def test_pyramid_out_and_gemm_variants():
    f1, f2 = _maps(1, 2, 4, 4, seed=12)
    want = gpuops.corr_pyramid(f1, f2, num_levels=2)
    out = tuple(np.full_like(a, np.nan) for a in want)
    got = gpuops.corr_pyramid(f1, f2, num_levels=2, out=out, variant="numpy")
    assert all(a is b for a, b in zip(got, out))
    for a, b in zip(out, want):
        np.testing.assert_array_equal(a, b)
    for name in ("torch", "cupy", "numba"):
        with pytest.raises(ValueError, match=f"variant '{name}' cannot run this call"):
            gpuops.corr_pyramid(f1, f2, num_levels=2, variant=name)
    with pytest.raises(ValueError, match="variant must be one of"):
        gpuops.corr_pyramid_backward(want, f1, f2, num_levels=2, variant="blas")
    with pytest.raises(TypeError, match="out must be None or a tuple"):
        gpuops.corr_pyramid(f1, f2, num_levels=2, out=out[:1])


# ---------------------------------------------------------------------------------------------
# corr_pyramid_lookup


def _pyramid_case(N=2, C=3, H=6, W=5, levels=3, seed=0):
    f1, f2 = _maps(N, C, H, W, seed)
    return f1, f2, gpuops.corr_pyramid(f1, f2, num_levels=levels)


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_lookup_matches_the_loop_reference(radius):
    _, _, pyr = _pyramid_case(seed=radius)
    coords = _coords(2, 6, 5, seed=radius, low=-4, high=10)
    coords[0, :, 0, 0] = [2.0, 3.0]                     # an integer position
    got = gpuops.corr_pyramid_lookup(pyr, coords, radius=radius)
    L = 2 * radius + 1
    assert got.shape == (2, 3 * L * L, 6, 5) and got.dtype == np.float64
    _close(got, lookup_ref(pyr, coords, radius))
    _close(got, R.corr_pyramid_lookup(pyr, coords, radius))


@pytest.mark.parametrize("radius,num_levels", [(2, 3), (0, 2), (1, 1), (4, 4)])
def test_lookup_equals_corr_lookup_values_and_gradients(radius, num_levels):
    """The fast path (pyramid once, lookup) and the memory-light path give the same values, and the same
    gradients once the pyramid's backward takes the lookup's."""
    f1, f2, pyr = _pyramid_case(2, 4, 8, 9, num_levels, seed=num_levels)
    coords = _coords(2, 8, 9, seed=3, low=-3, high=12)
    y = gpuops.corr_pyramid_lookup(pyr, coords, radius=radius)
    _close(y, gpuops.corr_lookup(f1, f2, coords, radius=radius, num_levels=num_levels))
    _close(y, R.corr_lookup(f1, f2, coords, radius=radius, num_levels=num_levels))
    g = np.random.default_rng(4).standard_normal(y.shape)
    level_grads, grad_coords = gpuops.corr_pyramid_lookup_backward(g, pyr, coords, radius=radius)
    grad_f1, grad_f2 = gpuops.corr_pyramid_backward(level_grads, f1, f2, num_levels=num_levels)
    for a, b in zip((grad_f1, grad_f2, grad_coords),
                    gpuops.corr_lookup_backward(g, f1, f2, coords, radius=radius, num_levels=num_levels)):
        _close(a, b, 1e-10)


def test_lookup_and_pyramid_match_raft_corr_block_with_autograd():
    f1, f2 = _maps(2, 5, 8, 12, seed=13)
    coords = _coords(2, 8, 12, seed=14, low=-2, high=13)
    t = [torch.from_numpy(a.copy()).requires_grad_() for a in (f1, f2, coords)]
    want = raft_corr_block(*t, 3, 2)
    g = torch.randn(want.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(15))
    want_grads = torch.autograd.grad(want, t, g)
    pyr = gpuops.corr_pyramid(f1, f2, num_levels=3)
    y = gpuops.corr_pyramid_lookup(pyr, coords, radius=2)
    _close(y, want.detach().numpy())
    level_grads, gc = gpuops.corr_pyramid_lookup_backward(g.numpy(), pyr, coords, radius=2)
    for a, b in zip((*gpuops.corr_pyramid_backward(level_grads, f1, f2, num_levels=3), gc), want_grads):
        _close(a, b.numpy(), 1e-10)


def test_lookup_backward_matches_the_reference_and_finite_differences():
    _, _, pyr = _pyramid_case(1, 2, 5, 4, 2, seed=16)
    coords = _coords(1, 5, 4, seed=17, low=-2, high=6)
    g = np.random.default_rng(18).standard_normal((1, 18, 5, 4))
    level_grads, gc = gpuops.corr_pyramid_lookup_backward(g, pyr, coords, radius=1)
    want_levels, want_coords = R.corr_pyramid_lookup_backward(g, pyr, coords, 1)
    for a, b in zip(level_grads, want_levels):
        _close(a, b)
    _close(gc, want_coords)
    eps = 1e-6

    def loss(levels, c):
        return (gpuops.corr_pyramid_lookup(levels, c, radius=1) * g).sum()
    for level in range(2):
        for idx in [(0, 0, 0, 0, 0), (0, 2, 1, 1, 1), (0, 4, 3, 1, 0)]:
            plus, minus = [a.copy() for a in pyr], [a.copy() for a in pyr]
            plus[level][idx] += eps
            minus[level][idx] -= eps
            assert abs((loss(plus, coords) - loss(minus, coords)) / (2 * eps) - level_grads[level][idx]) < 1e-6
    for idx in [(0, 0, 0, 0), (0, 1, 4, 3), (0, 0, 2, 1)]:
        plus, minus = coords.copy(), coords.copy()
        plus[idx] += eps
        minus[idx] -= eps
        assert abs((loss(pyr, plus) - loss(pyr, minus)) / (2 * eps) - gc[idx]) < 1e-6


def test_integer_coordinates_take_the_right_hand_derivative():
    _, _, pyr = _pyramid_case(1, 2, 5, 5, 1, seed=19)
    coords = np.array([[[[1.0, 2.0], [3.0, 0.0]], [[2.0, 2.0], [4.0, -1.0]]]])          # (1, 2, 2, 2)
    pyr = tuple(a[:, :2, :2] for a in pyr)
    g = np.random.default_rng(20).standard_normal((1, 9, 2, 2))
    gc = gpuops.corr_pyramid_lookup_backward(g, pyr, coords, radius=1)[1]
    h = 1e-7
    for axis in (0, 1):
        moved = coords.copy()
        moved[:, axis] += h
        right = ((gpuops.corr_pyramid_lookup(pyr, moved, radius=1)
                  - gpuops.corr_pyramid_lookup(pyr, coords, radius=1)) * g).sum(1) / h
        _close(gc[:, axis], right, 1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e30, -3e12])
def test_nonfinite_and_huge_coordinates_sample_zeros(bad):
    _, _, pyr = _pyramid_case(seed=21)
    coords = _coords(2, 6, 5, seed=22)
    coords[0, 0, 1, 2] = bad            # x of one query
    coords[1, 1, 0, 0] = bad            # y of another
    y = gpuops.corr_pyramid_lookup(pyr, coords, radius=1)
    assert np.all(np.isfinite(y))
    assert not np.any(y[0, :, 1, 2]) and not np.any(y[1, :, 0, 0])
    g = np.random.default_rng(23).standard_normal(y.shape)
    level_grads, gc = gpuops.corr_pyramid_lookup_backward(g, pyr, coords, radius=1)
    assert all(np.all(np.isfinite(a)) for a in (*level_grads, gc))
    assert not np.any(gc[0, :, 1, 2]) and not np.any(gc[1, :, 0, 0])
    # the invalid queries' planes get no gradient on any level
    assert all(not np.any(a[0, 1, 2]) and not np.any(a[1, 0, 0]) for a in level_grads)
    want_levels, want_coords = R.corr_pyramid_lookup_backward(g, pyr, coords, 1)
    for a, b in zip((*level_grads, gc), (*want_levels, want_coords)):
        _close(a, b)


def test_coordinates_far_outside_give_zeros_and_no_gradient():
    _, _, pyr = _pyramid_case(seed=24)
    coords = _coords(2, 6, 5, seed=25, low=40, high=90)
    y = gpuops.corr_pyramid_lookup(pyr, coords, radius=2)
    assert not np.any(y)
    level_grads, gc = gpuops.corr_pyramid_lookup_backward(np.ones_like(y), pyr, coords, radius=2)
    assert not any(np.any(a) for a in (*level_grads, gc))


def test_radius_zero_is_the_sample_itself():
    _, _, pyr = _pyramid_case(1, 2, 4, 4, 1, seed=26)
    coords = np.zeros((1, 2, 4, 4))
    coords[0, 0] = 1.5                  # x
    coords[0, 1] = 2.25                 # y
    y = gpuops.corr_pyramid_lookup(pyr, coords, radius=0)
    assert y.shape == (1, 1, 4, 4)
    v = pyr[0][0]
    want = 0.75 * 0.5 * (v[..., 2, 1] + v[..., 2, 2]) + 0.25 * 0.5 * (v[..., 3, 1] + v[..., 3, 2])
    _close(y[0, 0], want)


def test_lookup_backward_is_deterministic_with_many_queries_on_one_spot():
    _, _, pyr = _pyramid_case(1, 3, 8, 8, 2, seed=27)
    coords = np.full((1, 2, 8, 8), 3.3)
    g = np.random.default_rng(28).standard_normal((1, 2 * 25, 8, 8))
    first = gpuops.corr_pyramid_lookup_backward(g, pyr, coords, radius=2)
    again = gpuops.corr_pyramid_lookup_backward(g, pyr, coords, radius=2)
    for a, b in zip((*first[0], first[1]), (*again[0], again[1])):
        np.testing.assert_array_equal(a, b)


def test_lookup_16_bit_torch_empty_levels_and_out():
    _, _, pyr = _pyramid_case(1, 2, 4, 6, 2, seed=29)
    coords = _coords(1, 4, 6, seed=30)
    want = gpuops.corr_pyramid_lookup(pyr, coords, radius=1)
    for dtype, tol in ((torch.float16, 1e-2), (torch.bfloat16, 6e-2)):
        t = tuple(torch.from_numpy(a).to(dtype) for a in pyr)
        c = torch.from_numpy(coords).to(dtype)
        y = gpuops.corr_pyramid_lookup(t, c, radius=1)
        assert y.dtype == dtype
        _close(y.double().numpy(), lookup_ref([a.double().numpy() for a in t], c.double().numpy(), 1), tol)
        level_grads, gc = gpuops.corr_pyramid_lookup_backward(torch.ones_like(y), t, c, radius=1)
        assert all(a.dtype == dtype for a in (*level_grads, gc))
    # an empty level (a map pooled to 0 rows) samples zeros; empty query grids give empty results
    thin = (pyr[0][..., :1, :], pyr[1][..., :0, :])
    y = gpuops.corr_pyramid_lookup(thin, coords, radius=1)
    assert not np.any(y[:, 9:])
    empty = gpuops.corr_pyramid_lookup(tuple(a[:, :0] for a in pyr), coords[:, :, :0], radius=1)
    assert empty.shape == (1, 18, 0, 6)
    level_grads, gc = gpuops.corr_pyramid_lookup_backward(empty, tuple(a[:, :0] for a in pyr), coords[:, :, :0],
                                                          radius=1)
    assert gc.shape == (1, 2, 0, 6) and level_grads[1].shape == (1, 0, 6, 2, 3)
    # out= with Nones
    gc_out = np.full(coords.shape, np.nan)
    got = gpuops.corr_pyramid_lookup_backward(np.ones_like(want), pyr, coords, radius=1, out=(None, gc_out))
    assert got[1] is gc_out
    _close(gc_out, R.corr_pyramid_lookup_backward(np.ones_like(want), pyr, coords, 1)[1])
    levels_out = tuple(np.full(a.shape, np.nan) for a in pyr)
    got = gpuops.corr_pyramid_lookup_backward(np.ones_like(want), pyr, coords, radius=1, out=(levels_out, None))
    assert all(a is b for a, b in zip(got[0], levels_out))
    with pytest.raises(ValueError, match=r"out must not share memory with pyramid\[1\]"):
        gpuops.corr_pyramid_lookup(pyr, coords, radius=0, out=pyr[1].reshape(-1)[:48].reshape(1, 2, 4, 6))


# ---------------------------------------------------------------------------------------------
# bad input


def _bad_pyramid_cases():
    f1, f2 = (a.astype(np.float32) for a in _maps(2, 3, 8, 6))
    return [
        ((f1.astype(np.int32), f2), {}, TypeError, "fmap1 must have a floating dtype"),
        ((f1, f2.astype(np.float64)), {}, TypeError, "fmap2 must have the dtype of fmap1"),
        ((f1, f2.astype(np.complex64)), {}, TypeError, "fmap2 must have a floating dtype"),
        ((f1[0], f2), {}, ValueError, "fmap1 must be 4-D"),
        ((f1, f2[..., :4]), {}, ValueError, "fmap2 must have the shape of fmap1"),
        ((f1[:, :0], f2[:, :0]), {}, ValueError, "fmap1 must have at least one channel"),
        ((f1, f2), dict(num_levels=0), ValueError, "num_levels must be >= 1"),
        ((f1, f2), dict(num_levels=4), ValueError, r"num_levels=4 would pool the 8x6 feature maps to an empty "
                                                   r"level 3 \(1x0\)"),
        ((f1[:, :, :0], f2[:, :, :0]), dict(num_levels=40), ValueError, "num_levels=40 would pool"),
        ((f1, f2), dict(num_levels=2.0), TypeError, "num_levels must be an int"),
        ((f1, f2), dict(num_levels=True), TypeError, "num_levels must be an int"),
        (([1.0], f2), {}, TypeError, "fmap1 must be an array"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_pyramid_cases())))
def test_pyramid_bad_inputs(case):
    arrays, params, error, message = _bad_pyramid_cases()[case]
    with pytest.raises(error, match=message):
        gpuops.corr_pyramid(*arrays, **params)
    with pytest.raises(error, match=message):          # the arguments are checked before grad_out
        gpuops.corr_pyramid_backward((np.zeros((2, 8, 6, 8, 6), np.float32),), *arrays, **params)


def test_pyramid_backward_bad_gradients():
    f1, f2 = (a.astype(np.float32) for a in _maps(2, 3, 8, 6))
    levels = gpuops.corr_pyramid(f1, f2, num_levels=2)
    with pytest.raises(TypeError, match="grad_out must be a sequence of 2 arrays"):
        gpuops.corr_pyramid_backward(levels[0], f1, f2, num_levels=2)
    with pytest.raises(ValueError, match=r"grad_out must hold one array per level \(2\), got 1"):
        gpuops.corr_pyramid_backward(levels[:1], f1, f2, num_levels=2)
    with pytest.raises(ValueError, match=r"grad_out\[1\] must have shape \[2, 8, 6, 4, 3\]"):
        gpuops.corr_pyramid_backward((levels[0], levels[0]), f1, f2, num_levels=2)
    with pytest.raises(TypeError, match=r"grad_out\[0\] must have the dtype of fmap1"):
        gpuops.corr_pyramid_backward((levels[0].astype(np.float64), levels[1]), f1, f2, num_levels=2)


def _bad_lookup_cases():
    _, _, pyr = _pyramid_case(2, 3, 6, 5, 3)
    pyr = tuple(a.astype(np.float32) for a in pyr)
    c = _coords(2, 6, 5).astype(np.float32)
    return [
        ((pyr[0], c), {}, TypeError, "pyramid must be a sequence of arrays"),
        (((), c), {}, ValueError, "pyramid must hold at least one level"),
        (((pyr[0].astype(np.int32),), c), {}, TypeError, r"pyramid\[0\] must have a floating dtype"),
        (((pyr[0], pyr[1].astype(np.float64)), c), {}, TypeError, r"pyramid\[1\] must have the dtype of pyramid\[0\]"),
        ((pyr, c.astype(np.float64)), {}, TypeError, r"coords must have the dtype of pyramid\[0\]"),
        (((pyr[0][0],), c), {}, ValueError, r"pyramid\[0\] must be 5-D"),
        (((pyr[0], pyr[2]), c), {}, ValueError, r"pyramid\[1\] must have shape \[2, 6, 5, 3, 2\]"),
        (((pyr[0], pyr[1][:, :3]), c), {}, ValueError, r"pyramid\[1\] must have shape \[2, 6, 5, 3, 2\]"),
        (((pyr[0], pyr[1], pyr[1]), c), {}, ValueError, r"pyramid\[2\] must have shape \[2, 6, 5, 1, 1\]"),
        ((pyr, c.transpose(0, 2, 3, 1)), {}, ValueError, r"coords must have shape \[N, 2, H, W\] = \[2, 2, 6, 5\]"),
        ((pyr, c[:1]), {}, ValueError, r"coords must have shape \[N, 2, H, W\]"),
        ((pyr, c[:, :1]), {}, ValueError, r"coords must have shape \[N, 2, H, W\]"),
        ((pyr, c), dict(radius=-1), ValueError, "radius must be >= 0"),
        ((pyr, c), dict(radius=1.5), TypeError, "radius must be an int"),
        ((pyr, [[1.0]]), {}, TypeError, "coords must be an array"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_lookup_cases())))
def test_lookup_bad_inputs(case):
    arrays, params, error, message = _bad_lookup_cases()[case]
    with pytest.raises(error, match=message):
        gpuops.corr_pyramid_lookup(*arrays, **params)
    with pytest.raises(error, match=message):
        gpuops.corr_pyramid_lookup_backward(np.zeros((2, 27, 6, 5), np.float32), *arrays, **params)


def test_lookup_grad_out_must_have_the_output_shape():
    _, _, pyr = _pyramid_case(2, 3, 6, 5, 2)
    c = _coords(2, 6, 5)
    with pytest.raises(ValueError, match=r"grad_out must have shape \[2, 18, 6, 5\]"):
        gpuops.corr_pyramid_lookup_backward(np.zeros((2, 9, 6, 5)), pyr, c, radius=1)
    with pytest.raises(TypeError, match=r"grad_out must have the dtype of coords"):
        gpuops.corr_pyramid_lookup_backward(np.zeros((2, 18, 6, 5), np.float32), pyr, c, radius=1)


# ---------------------------------------------------------------------------------------------
# the accumulating lookup backward (gpuops.torch.CorrBlock's training path)


def test_lookup_backward_add_sums_the_reference_over_lookups():
    _, _, pyr = _pyramid_case(1, 2, 5, 4, 3, seed=20)
    rng = np.random.default_rng(21)
    buffers = [np.zeros_like(level) for level in pyr]
    want = [np.zeros_like(level) for level in pyr]
    for k in range(3):
        coords = _coords(1, 5, 4, seed=22 + k, low=-3, high=7)
        coords[0, :, 1, 1] = [np.nan, 2.0] if k == 0 else [1e30, 2.0]        # an invalid query
        g = rng.standard_normal((1, 27, 5, 4))
        got, gc = family.corr_pyramid_lookup_backward_add(g, pyr, coords, radius=1, out=(buffers, None))
        assert got[0] is buffers[0]
        ref_levels, ref_coords = R.corr_pyramid_lookup_backward(g, pyr, coords, 1)
        for w, r in zip(want, ref_levels):
            w += r
        for a, b in zip(buffers, want):
            _close(a, b)
        _close(gc, ref_coords)
        if k == 0:                                  # on zeros: the plain backward's values, bit for bit
            for a, b in zip(buffers, gpuops.corr_pyramid_lookup_backward(g, pyr, coords, radius=1)[0]):
                np.testing.assert_array_equal(a, b)
    assert family.corr_pyramid_lookup_backward_add(g, pyr, coords, radius=1, out=(buffers, None),
                                                   coords_grad=False)[1] is None
    # no buffers: the coordinates' gradient alone
    levels, gc = family.corr_pyramid_lookup_backward_add(g, pyr, coords, radius=1, out=(None, None))
    assert levels is None
    _close(gc, ref_coords)


def test_lookup_backward_add_refuses_bad_buffers():
    _, _, pyr = _pyramid_case(1, 2, 4, 4, 2)
    c = _coords(1, 4, 4)
    g = np.zeros((1, 18, 4, 4))
    good = [np.zeros_like(level) for level in pyr]
    add = family.corr_pyramid_lookup_backward_add
    with pytest.raises(TypeError, match=r"out must be \(grad_pyramid, grad_coords or None\)"):
        add(g, pyr, c, radius=1, out=good[0])
    with pytest.raises(ValueError, match=r"out\[0\] \(grad_pyramid\) must be a sequence of 2 arrays"):
        add(g, pyr, c, radius=1, out=(good[:1], None))
    with pytest.raises(ValueError, match=r"grad_pyramid\[1\] must have shape \[1, 4, 4, 2, 2\]"):
        add(g, pyr, c, radius=1, out=([good[0], np.zeros((1, 4, 4, 2, 3))], None))
    with pytest.raises(TypeError, match=r"grad_pyramid\[0\] must have the dtype of coords"):
        add(g, pyr, c, radius=1, out=([good[0].astype(np.float32), good[1]], None))
    with pytest.raises(TypeError, match=r"grad_pyramid\[0\] must be float32 or float64"):
        add(g.astype(np.float16), [p.astype(np.float16) for p in pyr], c.astype(np.float16), radius=1,
            out=([b.astype(np.float16) for b in good], None))
    frozen = good[0].copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"grad_pyramid\[0\] must be a writable C-contiguous"):
        add(g, pyr, c, radius=1, out=([frozen, good[1]], None))
    with pytest.raises(ValueError, match=r"grad_pyramid\[0\] must be a writable C-contiguous"):
        add(g, pyr, c, radius=1, out=([np.zeros((1, 4, 4, 4, 8))[..., ::2], good[1]], None))
    with pytest.raises(ValueError, match="out must not share memory with pyramid"):
        add(g, pyr, c, radius=1, out=(list(pyr), None))
    with pytest.raises(ValueError, match=r"out must not share memory with grad_pyramid\[0\]"):
        add(g, pyr, c, radius=1, out=([good[0], good[0][:, :, :, :2, :2]], None))
    with pytest.raises(ValueError, match=r"out must not share memory with grad_pyramid"):
        add(g, pyr, c, radius=1, out=(good, good[0][:, :2, 0, 0, 0].reshape(1, 2, 1, 1)))
    with pytest.raises(ValueError, match=r"out\[1\] \(grad_coords\) was given with coords_grad=False"):
        add(g, pyr, c, radius=1, out=(good, np.zeros_like(c)), coords_grad=False)


def test_family_lists_its_gemm_variants():
    assert [v.name for v in family.GEMM_VARIANTS] == ["numpy", "torch", "cupy", "numba"]
    assert gpuops.corr_pyramid is family.corr_pyramid and "corr_pyramid_lookup_backward" in gpuops.__all__
