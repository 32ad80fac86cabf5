"""Tier 1: the RAFT family (spec/ops.md §9, §10) on the CPU path.

References written independently of gpuops: §9 per offset with ``F.grid_sample(padding_mode="zeros",
align_corners=True)`` (the oracle of originals.md §3), §10 as RAFT computes it (all-pairs volume by
``torch.matmul``, ``F.avg_pool2d`` pyramid, grid_sample lookups), gradients by torch.autograd on them
in float64; plus gpuops.reference (plain numpy), one-sided finite differences at integer coordinates,
non-finite and far-away coordinates, radius 0, levels of size 1, determinism of the bucketed map
gradient, and every bad-input rule.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gpuops
from gpuops import reference as R


def _grid_sample_pixels(img, x, y):
    """Bilinear samples of img (N, C, H, W) at pixel coordinates x, y (N, h, w), zeros outside (H, W > 1)."""
    H, W = img.shape[-2:]
    grid = torch.stack([2 * x / (W - 1) - 1, 2 * y / (H - 1) - 1], -1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def torch_patch_correlate(base, inp, coords, radius, l1=False):
    """spec §9 with grid_sample: x-offset-major channels (dx + r)·L + (dy + r)."""
    C = base.shape[1]
    outs = []
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            s = _grid_sample_pixels(inp, coords[..., 0] + dx, coords[..., 1] + dy)
            outs.append((base - s).abs().sum(1) / C if l1 else (base * s).sum(1) / math.sqrt(C))
    return torch.stack(outs, 1)


def raft_corr_block(fmap1, fmap2, coords, radius, num_levels):
    """RAFT's CorrBlock as its code computes it: volume, avg_pool2d pyramid, grid_sample lookups
    (delta = stack(meshgrid(dy, dx)) added to (x, y): x-offset-major)."""
    N, C, H, W = fmap1.shape
    corr = torch.matmul(fmap1.reshape(N, C, H * W).transpose(1, 2), fmap2.reshape(N, C, H * W)) / math.sqrt(C)
    corr = corr.reshape(N * H * W, 1, H, W)
    r = radius
    d = torch.linspace(-r, r, 2 * r + 1, dtype=coords.dtype)
    delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), -1).view(1, 2 * r + 1, 2 * r + 1, 2)
    centroid = coords.permute(0, 2, 3, 1).reshape(N * H * W, 1, 1, 2)
    outs = []
    for i in range(num_levels):
        lvl = centroid / 2 ** i + delta
        Hl, Wl = corr.shape[-2:]
        grid = torch.cat([2 * lvl[..., :1] / (Wl - 1) - 1, 2 * lvl[..., 1:] / (Hl - 1) - 1], -1)
        outs.append(F.grid_sample(corr, grid, align_corners=True).view(N, H, W, -1))
        corr = F.avg_pool2d(corr, 2, stride=2)
    return torch.cat(outs, -1).permute(0, 3, 1, 2)


def _off_integer(rng, low, high, shape):
    return rng.integers(low, high, shape) + rng.uniform(0.2, 0.8, shape)


def _patch_case(N=2, C=3, Hg=3, Wg=4, H2=5, W2=6, seed=0, low=-3, high=8):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, C, Hg, Wg)), rng.standard_normal((N, C, H2, W2)),
            _off_integer(rng, low, high, (N, Hg, Wg, 2)))


def _torch_grads(fn, arrays, g):
    tensors = [torch.from_numpy(a.copy()).requires_grad_() for a in arrays]
    y = fn(*tensors)
    grads = torch.autograd.grad(y, tensors, torch.from_numpy(g))
    return y.detach().numpy(), [t.numpy() for t in grads]


def _close(a, b, tol=1e-11):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------
# patch_correlate


@pytest.mark.parametrize("radius", [0, 1, 2])
@pytest.mark.parametrize("l1", [False, True])
def test_patch_correlate_matches_grid_sample_and_autograd(radius, l1):
    arrays = _patch_case(seed=radius)
    y = gpuops.patch_correlate(*arrays, radius=radius, l1=l1)
    g = np.random.default_rng(5).standard_normal(y.shape)
    want, want_grads = _torch_grads(lambda b, i, c: torch_patch_correlate(b, i, c, radius, l1), arrays, g)
    assert y.shape == (2, (2 * radius + 1) ** 2, 3, 4) and y.dtype == np.float64
    _close(y, want)
    for got, exp in zip(gpuops.patch_correlate_backward(g, *arrays, radius=radius, l1=l1), want_grads):
        _close(got, exp)
    _close(y, R.patch_correlate(*arrays, radius=radius, l1=l1))


def test_patch_correlate_float32_and_16_bit_torch():
    arrays = _patch_case(seed=3)
    want = R.patch_correlate(*arrays, radius=2)
    got = gpuops.patch_correlate(*[a.astype(np.float32) for a in arrays], radius=2)
    assert got.dtype == np.float32
    _close(got, want, 1e-5)
    for dtype, tol in ((torch.float16, 2e-2), (torch.bfloat16, 6e-2)):
        t = [torch.from_numpy(a).to(dtype) for a in arrays]
        y = gpuops.patch_correlate(*t, radius=2)
        assert y.dtype == dtype
        ref = R.patch_correlate(*[x.double().numpy() for x in t], radius=2)
        _close(y.double().numpy(), ref, tol)
        grads = gpuops.patch_correlate_backward(torch.ones_like(y), *t, radius=2)
        assert all(gr.dtype == dtype for gr in grads)


def test_finite_differences_of_the_core_backward():
    arrays = _patch_case(N=1, C=2, Hg=2, Wg=2, H2=4, W2=3, seed=7)
    g = np.random.default_rng(8).standard_normal((1, 9, 2, 2))
    grads = gpuops.patch_correlate_backward(g, *arrays, radius=1, l1=True)
    eps = 1e-6
    for which, (arr, grad) in enumerate(zip(arrays, grads)):
        for idx in [(0,) * arr.ndim, tuple(s - 1 for s in arr.shape)]:
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[which][idx] += eps
            minus[which][idx] -= eps
            num = ((gpuops.patch_correlate(*plus, radius=1, l1=True)
                    - gpuops.patch_correlate(*minus, radius=1, l1=True)) * g).sum() / (2 * eps)
            assert abs(num - grad[idx]) < 1e-6, (which, idx)


def test_integer_coordinates_take_the_right_hand_derivative():
    base, inp, _ = _patch_case(N=1, C=2, Hg=2, Wg=3, H2=5, W2=5, seed=2)
    coords = np.array([[[[1.0, 2.0], [3.0, 0.0], [0.0, 4.0]], [[2.0, 2.0], [4.0, 1.0], [-1.0, 3.0]]]])
    g = np.random.default_rng(3).standard_normal((1, 9, 2, 3))
    grad_coords = gpuops.patch_correlate_backward(g, base, inp, coords, radius=1)[2]
    h = 1e-7
    for axis in (0, 1):
        moved = coords.copy()
        moved[..., axis] += h
        right = ((gpuops.patch_correlate(base, inp, moved, radius=1)
                  - gpuops.patch_correlate(base, inp, coords, radius=1)) * g).reshape(1, 9, 6).sum(1) / h
        _close(grad_coords[..., axis].reshape(1, 6), right, 1e-6)
    _close(grad_coords, R.patch_correlate_backward(g, base, inp, coords, radius=1)[2])


def test_l1_sign_of_zero_is_zero():
    # base equals the sampled value wherever the sample is inside: those terms have no base gradient
    base = np.full((1, 1, 2, 2), 0.5)
    inp = np.full((1, 1, 3, 3), 0.5)
    coords = np.array([[[[0.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [1.0, 2.0]]]])
    g = np.ones((1, 9, 2, 2))
    grad_base, grad_inp, _ = gpuops.patch_correlate_backward(g, base, inp, coords, radius=1, l1=True)
    want = R.patch_correlate_backward(g, base, inp, coords, radius=1, l1=True)
    _close(grad_base, want[0])
    _close(grad_inp, want[1])
    # query (1, 1) at (1, 1): all 9 samples inside, every sign 0
    assert grad_base[0, 0, 0, 1] == 0.0
    # query (0, 0) at (0, 0): 5 of 9 samples outside (s = 0, sign(0.5) = 1): 5 · 1/C
    assert grad_base[0, 0, 0, 0] == 5.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e30, -3e12])
@pytest.mark.parametrize("l1", [False, True])
def test_nonfinite_and_far_coordinates_sample_zeros(bad, l1):
    base, inp, coords = _patch_case(seed=4)
    coords[0, 1, 2, 0] = bad            # x of one query
    coords[1, 0, 0, 1] = bad            # y of another
    y = gpuops.patch_correlate(base, inp, coords, radius=1, l1=l1)
    assert np.all(np.isfinite(y))
    for n, h, w in ((0, 1, 2), (1, 0, 0)):
        expected = np.abs(base[n, :, h, w]).mean() if l1 else 0.0
        _close(y[n, :, h, w], np.full(9, expected))
    g = np.random.default_rng(1).standard_normal(y.shape)
    grads = gpuops.patch_correlate_backward(g, base, inp, coords, radius=1, l1=l1)
    assert all(np.all(np.isfinite(a)) for a in grads)
    assert np.all(grads[2][0, 1, 2] == 0) and np.all(grads[2][1, 0, 0] == 0)
    # the invalid queries add nothing to grad_input: the same as with those grad_out entries zeroed
    g_masked = g.copy()
    g_masked[0, :, 1, 2] = 0
    g_masked[1, :, 0, 0] = 0
    _close(grads[1], gpuops.patch_correlate_backward(g_masked, base, inp, coords, radius=1, l1=l1)[1])
    want = R.patch_correlate_backward(g, base, inp, coords, radius=1, l1=l1)
    for a, b in zip(grads, want):
        _close(a, b)


def test_coordinates_far_outside_give_zero_and_no_map_gradient():
    base, inp, coords = _patch_case(seed=6, low=20, high=40)
    y = gpuops.patch_correlate(base, inp, coords, radius=2)
    assert not np.any(y)
    grads = gpuops.patch_correlate_backward(np.ones_like(y), base, inp, coords, radius=2)
    assert not np.any(grads[0]) and not np.any(grads[1]) and not np.any(grads[2])


def test_many_queries_in_one_cell_and_determinism():
    # every query at nearly the same position: one bucket holds them all (the sort's worst case)
    base, inp, coords = _patch_case(N=1, Hg=5, Wg=6, seed=9)
    coords[...] = [2.3, 1.6]
    coords[0, 2, 3] = [2.4, 1.7]
    g = np.random.default_rng(2).standard_normal((1, 25, 5, 6))
    first = gpuops.patch_correlate_backward(g, base, inp, coords, radius=2)
    again = gpuops.patch_correlate_backward(g, base, inp, coords, radius=2)
    for a, b, c in zip(first, again, R.patch_correlate_backward(g, base, inp, coords, radius=2)):
        np.testing.assert_array_equal(a, b)
        _close(a, c)


def test_empty_grid_and_empty_map():
    base, inp, coords = _patch_case()
    y = gpuops.patch_correlate(base[:, :, :0], inp, coords[:, :0], radius=1)
    assert y.shape == (2, 9, 0, 4)
    grads = gpuops.patch_correlate_backward(y, base[:, :, :0], inp, coords[:, :0], radius=1)
    assert grads[1].shape == inp.shape and not np.any(grads[1])
    y = gpuops.patch_correlate(base, inp[:, :, :, :0], coords, radius=1, l1=True)
    _close(y, np.broadcast_to(np.abs(base).mean(1, keepdims=True), y.shape))
    grads = gpuops.patch_correlate_backward(np.ones_like(y), base, inp[:, :, :, :0], coords, radius=1, l1=True)
    _close(grads[0], 9 * np.sign(base) / 3)
    assert grads[1].shape == (2, 3, 5, 0) and not np.any(grads[2])


# ---------------------------------------------------------------------------------------------
# corr_lookup


def _lookup_case(N=2, C=4, H=8, W=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((N, C, H, W)), rng.standard_normal((N, C, H, W)),
            _off_integer(rng, -2, max(H, W) + 2, (N, 2, H, W)))


@pytest.mark.parametrize("radius,num_levels", [(2, 3), (0, 2), (1, 1)])
def test_corr_lookup_matches_raft_corr_block(radius, num_levels):
    arrays = _lookup_case(W=9, seed=num_levels)           # levels 8x9, 4x4, 2x2
    y = gpuops.corr_lookup(*arrays, radius=radius, num_levels=num_levels)
    L = 2 * radius + 1
    assert y.shape == (2, num_levels * L * L, 8, 9)
    g = np.random.default_rng(1).standard_normal(y.shape)
    want, want_grads = _torch_grads(lambda a, b, c: raft_corr_block(a, b, c, radius, num_levels), arrays, g)
    _close(y, want)
    for got, exp in zip(gpuops.corr_lookup_backward(g, *arrays, radius=radius, num_levels=num_levels), want_grads):
        _close(got, exp)


def test_corr_lookup_levels_down_to_one_pixel():
    # 8x4 -> 4x2 -> 2x1 -> 1x0 would be empty; 8x8 with 4 levels ends at 1x1
    for shape, levels in (((1, 3, 8, 4), 3), ((1, 3, 8, 8), 4), ((1, 2, 1, 1), 1)):
        arrays = _lookup_case(*shape, seed=levels)
        y = gpuops.corr_lookup(*arrays, radius=1, num_levels=levels)
        _close(y, R.corr_lookup(*arrays, radius=1, num_levels=levels))
        g = np.random.default_rng(2).standard_normal(y.shape)
        for a, b in zip(gpuops.corr_lookup_backward(g, *arrays, radius=1, num_levels=levels),
                        R.corr_lookup_backward(g, *arrays, radius=1, num_levels=levels)):
            _close(a, b)


def test_corr_lookup_is_patch_correlate_per_level():
    f1, f2, coords = _lookup_case(N=1, H=7, W=5, seed=3)        # odd sizes: pooling floors
    y = gpuops.corr_lookup(f1, f2, coords, radius=1, num_levels=2)
    pooled = F.avg_pool2d(torch.from_numpy(f2), 2, stride=2).numpy()
    nhwc = np.ascontiguousarray(coords.transpose(0, 2, 3, 1))
    _close(y[:, :9], gpuops.patch_correlate(f1, f2, nhwc, radius=1))
    _close(y[:, 9:], gpuops.patch_correlate(f1, pooled, nhwc / 2, radius=1))


def test_corr_lookup_nonfinite_coordinates_and_determinism():
    f1, f2, coords = _lookup_case(N=1, seed=4)
    coords[0, 0, 3, 3] = np.nan
    coords[0, 1, 5, 1] = np.inf
    y = gpuops.corr_lookup(f1, f2, coords, radius=1, num_levels=3)
    assert not np.any(y[0, :, 3, 3]) and not np.any(y[0, :, 5, 1]) and np.all(np.isfinite(y))
    g = np.random.default_rng(3).standard_normal(y.shape)
    first = gpuops.corr_lookup_backward(g, f1, f2, coords, radius=1, num_levels=3)
    again = gpuops.corr_lookup_backward(g, f1, f2, coords, radius=1, num_levels=3)
    for a, b, c in zip(first, again, R.corr_lookup_backward(g, f1, f2, coords, radius=1, num_levels=3)):
        np.testing.assert_array_equal(a, b)
        _close(a, c)
    assert not np.any(first[2][0, :, 3, 3]) and not np.any(first[2][0, :, 5, 1])


# ---------------------------------------------------------------------------------------------
# bad input


def _bad_patch_cases():
    b, i, c = (a.astype(np.float32) for a in _patch_case())
    return [
        ((b.astype(np.int32), i, c), {}, TypeError, "base must have a floating dtype"),
        ((b, i.astype(np.float64), c), {}, TypeError, "input must have the dtype of base"),
        ((b, i, c.astype(np.float64)), {}, TypeError, "coords must have the dtype of base"),
        ((b, i, c.astype(np.complex64)), {}, TypeError, "coords must have a floating dtype"),
        ((b[0], i, c), {}, ValueError, "base must be 4-D"),
        ((b, i[0], c), {}, ValueError, "input must be 4-D"),
        ((b, i, c[..., 0]), {}, ValueError, "coords must be 4-D"),
        ((b, i[:1], c), {}, ValueError, "input must have the batch size and channels of base"),
        ((b, i[:, :2], c), {}, ValueError, "input must have the batch size and channels of base"),
        ((b, i, c[:, :2]), {}, ValueError, r"coords must have shape \[N, Hg, Wg, 2\]"),
        ((b, i, np.concatenate([c, c], -1)), {}, ValueError, r"coords must have shape \[N, Hg, Wg, 2\]"),
        ((b[:, :0], i[:, :0], c), {}, ValueError, "base must have at least one channel"),
        ((b, i, c), dict(radius=-1), ValueError, "radius must be >= 0"),
        ((b, i, c), dict(radius=1.5), TypeError, "radius must be an int"),
        ((b, i, c), dict(radius=True), TypeError, "radius must be an int"),
        ((b, i, c), dict(l1=1), TypeError, "l1 must be a bool"),
        ((b, i, c), dict(l1="yes"), TypeError, "l1 must be a bool"),
        (([1.0], i, c), {}, TypeError, "base must be an array"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_patch_cases())))
def test_patch_correlate_bad_inputs(case):
    arrays, params, error, message = _bad_patch_cases()[case]
    with pytest.raises(error, match=message):
        gpuops.patch_correlate(*arrays, **params)
    with pytest.raises(error, match=message):
        gpuops.patch_correlate_backward(np.zeros((2, 9, 3, 4), np.float32), *arrays, **params)


def _bad_lookup_cases():
    f1, f2, c = (a.astype(np.float32) for a in _lookup_case(H=8, W=6))
    return [
        ((f1.astype(np.int64), f2, c), {}, TypeError, "fmap1 must have a floating dtype"),
        ((f1, f2.astype(np.float16), c), {}, TypeError, "fmap2 must have the dtype of fmap1"),
        ((f1, f2, c.astype(np.float64)), {}, TypeError, "coords must have the dtype of fmap1"),
        ((f1[0], f2, c), {}, ValueError, "fmap1 must be 4-D"),
        ((f1, f2[:, :, :4], c), {}, ValueError, "fmap2 must have the shape of fmap1"),
        ((f1, f2, c.transpose(0, 2, 3, 1)), {}, ValueError, r"coords must have shape \[N, 2, H, W\]"),
        ((f1, f2, c[:1]), {}, ValueError, r"coords must have shape \[N, 2, H, W\]"),
        ((f1[:, :0], f2[:, :0], c), {}, ValueError, "fmap1 must have at least one channel"),
        ((f1, f2, c), dict(num_levels=0), ValueError, "num_levels must be >= 1"),
        ((f1, f2, c), dict(num_levels=4), ValueError, r"num_levels=4 would pool the 8x6 feature maps to an "
                                                      r"empty level 3 \(1x0\)"),
        ((f1, f2, c), dict(radius=-2), ValueError, "radius must be >= 0"),
        ((f1, f2, c), dict(num_levels=2.0), TypeError, "num_levels must be an int"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_lookup_cases())))
def test_corr_lookup_bad_inputs(case):
    arrays, params, error, message = _bad_lookup_cases()[case]
    with pytest.raises(error, match=message):
        gpuops.corr_lookup(*arrays, **params)
    with pytest.raises(error, match=message):
        gpuops.corr_lookup_backward(np.zeros((2, 81, 8, 6), np.float32), *arrays, **params)


def test_grad_out_must_have_the_output_shape():
    b, i, c = _patch_case()
    with pytest.raises(ValueError, match=r"grad_out must have shape \[2, 9, 3, 4\]"):
        gpuops.patch_correlate_backward(np.zeros((2, 25, 3, 4)), b, i, c, radius=1)
    with pytest.raises(TypeError, match="grad_out must have the dtype of base"):
        gpuops.patch_correlate_backward(np.zeros((2, 9, 3, 4), np.float32), b, i, c, radius=1)
    f1, f2, coords = _lookup_case(H=4, W=4)
    with pytest.raises(ValueError, match=r"grad_out must have shape \[2, 18, 4, 4\]"):
        gpuops.corr_lookup_backward(np.zeros((2, 9, 4, 4)), f1, f2, coords, radius=1, num_levels=2)


def test_out_tuple_with_nones_and_overlap():
    b, i, c = _patch_case()
    g = np.ones((2, 9, 3, 4))
    gi = np.full(i.shape, np.nan)
    got = gpuops.patch_correlate_backward(g, b, i, c, radius=1, out=(None, gi, None))
    assert got[1] is gi
    _close(gi, R.patch_correlate_backward(g, b, i, c, radius=1)[1])
    with pytest.raises(ValueError, match="out must not share memory with base"):
        gpuops.patch_correlate(b, i, c, radius=0, out=b[:, :1])
