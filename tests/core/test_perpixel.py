"""Tier 1: the per-pixel family (involution, weighted_filter) on the CPU path, against independent
references written from spec/ops.md §6 and §11 with torch CPU (F.unfold / F.fold, the originals' own
oracles), float64 gradients from torch.autograd, the identities between the two ops, and every bad-input
rule."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gpuops
import gpuops.perpixel as pp

RNG = np.random.default_rng(2024)


def _rand(*shape, dtype=np.float64):
    return RNG.uniform(-1, 1, shape).astype(dtype)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_()


def _window(size, k, p, d, s):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


# ---------------------------------------------------------------------------------------------
# torch references (the official involution_naive and layerdenoise's unfold/fold oracles)


def torch_involution(x, w, stride, padding, dilation):
    N, C = x.shape[:2]
    _, G, kh, kw, Ho, Wo = w.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)
    cols = cols.view(N, G, C // G, kh * kw, Ho, Wo)
    return (w.reshape(N, G, 1, kh * kw, Ho, Wo) * cols).sum(3).reshape(N, C, Ho, Wo)


def torch_weighted_filter(x, w, bias, splat):
    N, C, H, W = x.shape
    K = int(round(w.shape[1] ** 0.5))
    if splat:
        out = F.fold((x[:, :, None] * w[:, None]).reshape(N, C * K * K, H * W), (H, W), K, padding=K // 2)
    else:
        out = (F.unfold(x, K, padding=K // 2).view(N, C, K * K, H, W) * w[:, None]).sum(2)
    return out if bias is None else out + bias.view(1, C, 1, 1)


def _torch_grads(fn, arrays, g):
    tensors = [None if a is None else _t(a) for a in arrays]
    y = fn(*tensors)
    y.backward(torch.from_numpy(g))
    return y.detach().numpy(), [None if t is None else t.grad.numpy() for t in tensors]


# ---------------------------------------------------------------------------------------------
# involution

INVOLUTION_CASES = [
    # N, C, G, H, W, (kh, kw), stride, padding, dilation
    (2, 4, 2, 7, 6, (3, 3), 1, 1, 1),
    (1, 6, 3, 9, 8, (3, 3), 2, 1, 1),                # stride 2, H odd
    (2, 4, 1, 8, 9, (2, 3), (2, 1), (1, 2), (1, 2)),  # even, non-square kernel; pairs
    (1, 3, 3, 10, 7, (5, 5), (1, 3), 2, (2, 1)),      # one channel per group
    (1, 2, 1, 5, 5, (1, 1), 1, 0, 1),
    (1, 4, 2, 12, 11, (7, 7), 1, 3, 1),
    (2, 32, 2, 9, 8, (7, 7), 1, 3, 1),              # RedNet's 16 channels per group
    (1, 40, 1, 7, 9, (3, 5), (2, 1), (1, 2), (1, 2)),  # one group of 40
]


@pytest.mark.parametrize("case", INVOLUTION_CASES, ids=[str(i) for i in range(len(INVOLUTION_CASES))])
def test_involution_forward_and_backward_float64(case):
    N, C, G, H, W, (kh, kw), s, p, d = case
    (sh, sw), (ph, pw), (dh, dw) = _pair(s), _pair(p), _pair(d)
    Ho, Wo = _window(H, kh, ph, dh, sh), _window(W, kw, pw, dw, sw)
    x, w = _rand(N, C, H, W), _rand(N, G, kh, kw, Ho, Wo)
    params = dict(stride=s, padding=p, dilation=d)
    y = gpuops.involution(x, w, **params)
    g = _rand(*y.shape)
    ry, (rgx, rgw) = _torch_grads(lambda a, b: torch_involution(a, b, s, p, d), (x, w), g)
    assert y.shape == (N, C, Ho, Wo) and y.dtype == np.float64
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    gx, gw = gpuops.involution_backward(g, x, w, **params)
    np.testing.assert_allclose(gx, rgx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, rgw, rtol=1e-12, atol=1e-12)


def test_involution_float32_and_16_bit_torch():
    x, w = _rand(2, 4, 9, 8), _rand(2, 2, 3, 3, 9, 8)
    ref = torch_involution(torch.from_numpy(x), torch.from_numpy(w), 1, 1, 1).numpy()
    y32 = gpuops.involution(x.astype(np.float32), w.astype(np.float32), padding=1)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, ref, rtol=1e-5, atol=1e-5)
    for dtype, tol in ((torch.bfloat16, 5e-2), (torch.float16, 5e-3)):
        xt, wt = torch.from_numpy(x).to(dtype), torch.from_numpy(w).to(dtype)
        y = gpuops.involution(xt, wt, padding=1)
        expected = torch_involution(xt.double(), wt.double(), 1, 1, 1)
        assert y.dtype == dtype
        torch.testing.assert_close(y.double(), expected, rtol=tol, atol=tol)


def test_involution_backward_takes_any_grad_strides():
    x, w = _rand(1, 2, 5, 5), _rand(1, 1, 3, 3, 5, 5)
    g = torch.ones(1, 1, 1, 1, dtype=torch.float64).expand(1, 2, 5, 5)        # stride 0, as .sum().backward()
    gx, gw = gpuops.involution_backward(g, torch.from_numpy(x), torch.from_numpy(w), padding=1)
    ex, ew = gpuops.involution_backward(np.ones((1, 2, 5, 5)), x, w, padding=1)
    np.testing.assert_array_equal(gx.numpy(), ex)
    np.testing.assert_array_equal(gw.numpy(), ew)


def test_involution_empty_batch():
    y = gpuops.involution(np.zeros((0, 2, 4, 4)), np.zeros((0, 1, 3, 3, 2, 2)))
    assert y.shape == (0, 2, 2, 2)


# ---------------------------------------------------------------------------------------------
# weighted_filter

FILTER_CASES = [
    # N, C, H, W, K, bias
    (2, 3, 7, 6, 3, True),
    (1, 2, 9, 11, 5, False),
    (1, 1, 4, 3, 7, True),       # the kernel is larger than the image
    (2, 2, 5, 5, 1, True),
]


@pytest.mark.parametrize("splat", [False, True], ids=["gather", "splat"])
@pytest.mark.parametrize("case", FILTER_CASES, ids=[str(i) for i in range(len(FILTER_CASES))])
def test_weighted_filter_forward_and_backward_float64(case, splat):
    N, C, H, W, K, with_bias = case
    x, w = _rand(N, C, H, W), _rand(N, K * K, H, W)
    b = _rand(C) if with_bias else None
    y = gpuops.weighted_filter(x, w, b, splat=splat)
    g = _rand(*y.shape)
    ry, (rgx, rgw, rgb) = _torch_grads(lambda *t: torch_weighted_filter(*t, splat), (x, w, b), g)
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    gx, gw, gb = gpuops.weighted_filter_backward(g, x, w, b, splat=splat)
    np.testing.assert_allclose(gx, rgx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, rgw, rtol=1e-12, atol=1e-12)
    if with_bias:
        np.testing.assert_allclose(gb, rgb, rtol=1e-12, atol=1e-12)
    else:
        assert gb is None


def test_gather_is_an_involution_with_one_group():
    N, C, H, W, K = 2, 3, 6, 7, 5
    x, w = _rand(N, C, H, W), _rand(N, K * K, H, W)
    as_involution = gpuops.involution(x, w.reshape(N, 1, K, K, H, W), padding=K // 2)
    np.testing.assert_array_equal(gpuops.weighted_filter(x, w), as_involution)


def test_splat_is_the_adjoint_of_gather():
    """<gather(x), y> = <x, splat(y)> for the same per-pixel kernels."""
    N, C, H, W, K = 1, 2, 6, 5, 3
    x, y, w = _rand(N, C, H, W), _rand(N, C, H, W), _rand(N, K * K, H, W)
    lhs = (gpuops.weighted_filter(x, w) * y).sum()
    rhs = (x * gpuops.weighted_filter(y, w, splat=True)).sum()
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


def test_splat_conserves_mass_with_normalised_kernels_inside():
    """Splatting with kernels that sum to 1 keeps the sum of an image whose support stays inside."""
    x = np.zeros((1, 1, 9, 9))
    x[0, 0, 3:6, 3:6] = _rand(3, 3)
    w = np.abs(_rand(1, 9, 9, 9))
    w /= w.sum(1, keepdims=True)
    np.testing.assert_allclose(gpuops.weighted_filter(x, w, splat=True).sum(), x.sum(), rtol=1e-12)


def test_weighted_filter_float32_torch_and_bias_gradient():
    x, w, b = (torch.from_numpy(a).float() for a in (_rand(1, 3, 8, 8), _rand(1, 9, 8, 8), _rand(3)))
    y = gpuops.weighted_filter(x, w, b, splat=True)
    torch.testing.assert_close(y.double(), torch_weighted_filter(x.double(), w.double(), b.double(), True),
                               rtol=1e-5, atol=1e-5)
    g = torch.ones_like(y)
    gb = gpuops.weighted_filter_backward(g, x, w, b, splat=True)[2]
    torch.testing.assert_close(gb, torch.full((3,), 64.0))


# ---------------------------------------------------------------------------------------------
# bad input: a clear error naming the argument


def _involution_args():
    return _rand(1, 4, 5, 5), _rand(1, 2, 3, 3, 5, 5)


@pytest.mark.parametrize("change,error,match", [
    (lambda x, w, p: (x[0], w, p), ValueError, "x must be 4-D"),
    (lambda x, w, p: (x, w[:, :, 0], p), ValueError, "weight must be 6-D"),
    (lambda x, w, p: (x, w[..., :4, :], p), ValueError, r"weight must have the output size \(Ho, Wo\) = \(5, 5\)"),
    (lambda x, w, p: (x, w, dict(p, stride=2)), ValueError, r"weight must have the output size \(Ho, Wo\) = \(3, 3\)"),
    (lambda x, w, p: (x, np.concatenate([w, w[:, :1]], 1), p), ValueError, "must divide C = x.shape\\[1\\] = 4"),
    (lambda x, w, p: (x, np.concatenate([w, w]), p), ValueError, "batch size N = 1"),
    (lambda x, w, p: (x[:, :0], w, p), ValueError, "at least one channel"),
    (lambda x, w, p: (x, w.astype(np.float32), p), TypeError, "weight must have the dtype of x"),
    (lambda x, w, p: (x.astype(np.int64), w, p), TypeError, "x must have a floating dtype"),
    (lambda x, w, p: (x, w, dict(p, stride=0)), ValueError, "stride must be >= 1"),
    (lambda x, w, p: (x, w, dict(p, padding=-1)), ValueError, "padding must be >= 0"),
    (lambda x, w, p: (x, w, dict(p, padding=0, dilation=3)), ValueError, "output height"),
    (lambda x, w, p: (x, w, dict(p, stride=1.5)), TypeError, "stride must be an int"),
    (lambda x, w, p: (x, [[1.0]], p), TypeError, "weight must be an array"),
])
def test_involution_bad_input(change, error, match):
    x, w = _involution_args()
    x, w, params = change(x, w, dict(padding=1))
    with pytest.raises(error, match=match):
        gpuops.involution(x, w, **params)


def test_involution_backward_bad_grad_out():
    x, w = _involution_args()
    with pytest.raises(ValueError, match=r"grad_out must have shape \[1, 4, 5, 5\]"):
        gpuops.involution_backward(np.zeros((1, 4, 4, 5)), x, w, padding=1)
    with pytest.raises(TypeError, match="grad_out must have the dtype of x"):
        gpuops.involution_backward(np.zeros((1, 4, 5, 5), np.float32), x, w, padding=1)


@pytest.mark.parametrize("change,error,match", [
    (lambda x, w, b: (x, w[:, :4], b), ValueError, r"odd kernel size K .*got 4"),          # even K = 2
    (lambda x, w, b: (x, w[:, :8], b), ValueError, r"odd kernel size K .*got 8"),          # not a square
    (lambda x, w, b: (x, w[:, :0], b), ValueError, r"odd kernel size K .*got 0"),
    (lambda x, w, b: (x, w[..., :4], b), ValueError, r"weight must have shape \(N, K², H, W\) = \[1, 9, 5, 5\]"),
    (lambda x, w, b: (x, np.concatenate([w, w]), b), ValueError, r"weight must have shape \(N, K², H, W\)"),
    (lambda x, w, b: (x, w[0], b), ValueError, "weight must be 4-D"),
    (lambda x, w, b: (x[None], w, b), ValueError, "x must be 4-D"),
    (lambda x, w, b: (x, w, b[:2]), ValueError, r"bias must have shape \[3\]"),
    (lambda x, w, b: (x, w, b[None]), ValueError, "bias must be 1-D"),
    (lambda x, w, b: (x, w, b.astype(np.float32)), TypeError, "bias must have the dtype of x"),
    (lambda x, w, b: (x, w.astype(np.float32), b), TypeError, "weight must have the dtype of x"),
    (lambda x, w, b: (x.astype(np.complex128), w, b), TypeError, "x must have a floating dtype"),
])
def test_weighted_filter_bad_input(change, error, match):
    x, w, b = change(_rand(1, 3, 5, 5), _rand(1, 9, 5, 5), _rand(3))
    with pytest.raises(error, match=match):
        gpuops.weighted_filter(x, w, b)
    with pytest.raises(error, match=match):
        gpuops.weighted_filter_backward(np.zeros((1, 3, 5, 5)), x, w, b, splat=True)


def test_weighted_filter_splat_must_be_a_bool():
    x, w = _rand(1, 1, 3, 3), _rand(1, 1, 3, 3)
    with pytest.raises(TypeError, match="splat must be a bool, got str"):
        gpuops.weighted_filter(x, w, splat="yes")
    with pytest.raises(TypeError, match="splat must be a bool, got int"):
        gpuops.weighted_filter(x, w, splat=1)
    assert pp.kernel_size_of(49) == 7


def test_launch_plan_covers_every_item():
    """The host's work-item count is what the CUDA kernels walk: (image, group, chunk, strip, column); groups
    of at most PERPIXEL_FEW channels take the _FEW kernels; the channel tile is dtype-dependent."""
    from gpuops import _core
    f32, bf16, f64 = (_core.meta("x", (1,), d) for d in ("float32", "bfloat16", "float64"))
    assert pp._items(2, 16, 2, 56, 56, 4) == 2 * 16 * 2 * 14 * 56
    assert pp._items(1, 1, 1, 5, 7, 4) == 2 * 7
    assert pp._plan(16, f32) == ("", pp._ROWS, -(-16 // pp._CHUNK))
    assert pp._plan(16, bf16) == ("", pp._ROWS, -(-16 // pp._CHUNK))
    assert pp._plan(16, f64) == ("", pp._ROWS, -(-16 // pp._CHUNK_F64))
    assert pp._plan(3, f32) == ("_few", pp._FEW_ROWS, 1)
    assert pp._plan(pp._FEW, f64) == ("_few", pp._FEW_ROWS, -(-pp._FEW // pp._FEW_F64))
    assert pp._plan(pp._FEW + 1, f32)[0] == ""
