"""Tier 1: the conv family (conv2d_depthwise, im2col, col2im) on the CPU path, against independent
references written from spec/ops.md §4–§5 (torch CPU: F.conv2d(groups=C), F.unfold, F.fold),
float64 gradient checks against torch.autograd, and every bad-input rule."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gpuops.conv as cv

RNG = np.random.default_rng(1234)


def _rand(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


# ---------------------------------------------------------------------------------------------
# conv2d_depthwise

DW_CASES = [
    # N, C, m, H, W, (kh, kw), stride, padding, dilation, bias
    (2, 3, 1, 9, 11, (3, 3), 1, 1, 1, True),
    (1, 4, 1, 8, 8, (3, 3), 1, 0, 1, False),
    (2, 2, 2, 10, 7, (2, 3), (2, 1), (1, 2), (1, 2), True),       # depth multiplier, non-square
    (1, 3, 3, 12, 13, (3, 5), 2, 2, 2, True),
    (2, 2, 1, 40, 37, (7, 7), 1, 3, 1, True),                    # several tiles, 7×7
    (1, 1, 1, 5, 5, (1, 1), 1, 0, 1, False),
    (1, 2, 1, 6, 9, (5, 1), (3, 2), (2, 0), (1, 3), False),
]


def _dw_reference(x, w, b, stride, padding, dilation, g):
    C = x.shape[1]
    xr, wr = _t(x).requires_grad_(), _t(w).requires_grad_()
    br = None if b is None else _t(b).requires_grad_()
    y = F.conv2d(xr, wr, br, stride, padding, dilation, groups=C)
    y.backward(_t(g))
    return (y.detach().numpy(), xr.grad.numpy(), wr.grad.numpy(), None if br is None else br.grad.numpy())


@pytest.mark.parametrize("case", DW_CASES, ids=[str(i) for i in range(len(DW_CASES))])
def test_depthwise_forward_and_backward_float64(case):
    N, C, m, H, W, k, s, p, d, with_bias = case
    x, w = _rand(N, C, H, W), _rand(C * m, 1, *k)
    b = _rand(C * m) if with_bias else None
    y = cv.conv2d_depthwise(x, w, b, stride=s, padding=p, dilation=d)
    g = _rand(*y.shape)
    ry, rgx, rgw, rgb = _dw_reference(x, w, b, s, p, d, g)
    assert y.shape == ry.shape and y.dtype == np.float64
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    gx, gw, gb = cv.conv2d_depthwise_backward(g, x, w, b, stride=s, padding=p, dilation=d)
    np.testing.assert_allclose(gx, rgx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, rgw, rtol=1e-12, atol=1e-11)
    if with_bias:
        np.testing.assert_allclose(gb, rgb, rtol=1e-12, atol=1e-11)
    else:
        assert gb is None


def test_depthwise_finite_differences():
    """The backward is the derivative of the forward (central differences, float64)."""
    x, w, b = _rand(1, 2, 5, 6), _rand(4, 1, 2, 3), _rand(4)
    kw = dict(stride=(2, 1), padding=1, dilation=(1, 2))
    g = _rand(*cv.conv2d_depthwise(x, w, b, **kw).shape)
    gx, gw, gb = cv.conv2d_depthwise_backward(g, x, w, b, **kw)
    eps = 1e-6
    for arr, grad in ((x, gx), (w, gw), (b, gb)):
        for idx in [tuple(RNG.integers(0, n) for n in arr.shape) for _ in range(5)]:
            old = arr[idx]
            arr[idx] = old + eps
            up = (cv.conv2d_depthwise(x, w, b, **kw) * g).sum()
            arr[idx] = old - eps
            down = (cv.conv2d_depthwise(x, w, b, **kw) * g).sum()
            arr[idx] = old
            assert abs((up - down) / (2 * eps) - grad[idx]) < 1e-6


def test_depthwise_float32_numpy_and_torch():
    x, w, b = _rand(2, 3, 9, 10, dtype=np.float32), _rand(3, 1, 3, 3, dtype=np.float32), _rand(3, dtype=np.float32)
    y = cv.conv2d_depthwise(x, w, b, padding=1)
    assert y.dtype == np.float32
    ref = F.conv2d(_t(x), _t(w), _t(b), 1, 1, 1, 3).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    yt = cv.conv2d_depthwise(_t(x), _t(w), _t(b), padding=1)
    assert isinstance(yt, torch.Tensor) and yt.dtype == torch.float32
    np.testing.assert_allclose(yt.numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_depthwise_16bit_torch_cpu(dtype):
    x, w, b = (torch.randn(2, 3, 8, 9).to(dtype), torch.randn(6, 1, 3, 3).to(dtype), torch.randn(6).to(dtype))
    y = cv.conv2d_depthwise(x, w, b, padding=1)
    assert y.dtype == dtype
    ref = F.conv2d(x.float(), w.float(), b.float(), 1, 1, 1, 3)
    torch.testing.assert_close(y, ref.to(dtype), rtol=2e-2, atol=2e-2)
    g = torch.randn_like(y)
    gx, gw, gb = cv.conv2d_depthwise_backward(g, x, w, b, padding=1)
    assert gx.dtype == gw.dtype == gb.dtype == dtype
    _, rgx, rgw, rgb = _dw_reference(x.double().numpy(), w.double().numpy(), b.double().numpy(), 1, 1, 1,
                                     g.double().numpy())
    for got, ref in ((gx, rgx), (gw, rgw), (gb, rgb)):
        np.testing.assert_allclose(got.double().numpy(), ref, rtol=3e-2, atol=3e-2 * max(1, np.abs(ref).max()))


def test_depthwise_non_contiguous_and_expanded_grad():
    x = torch.randn(2, 9, 3, 10, dtype=torch.float64).permute(0, 2, 1, 3)       # (2, 3, 9, 10), strided
    w = torch.randn(3, 1, 3, 6, dtype=torch.float64)[..., ::2]                     # non-contiguous taps
    assert not x.is_contiguous() and not w.is_contiguous()
    y = cv.conv2d_depthwise(x, w, padding=1)
    torch.testing.assert_close(y, F.conv2d(x, w, None, 1, 1, 1, 3))
    g = torch.ones((), dtype=torch.float64).expand(y.shape)                       # stride-0 gradient
    assert 0 in g.stride()
    gx, gw, gb = cv.conv2d_depthwise_backward(g, x, w, padding=1)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    F.conv2d(xr, wr, None, 1, 1, 1, 3).sum().backward()
    torch.testing.assert_close(gx, xr.grad)
    torch.testing.assert_close(gw, wr.grad)
    assert gb is None


def test_depthwise_empty_batch():
    x, w, b = np.zeros((0, 2, 5, 5)), _rand(2, 1, 3, 3), _rand(2)
    assert cv.conv2d_depthwise(x, w, b).shape == (0, 2, 3, 3)
    gx, gw, gb = cv.conv2d_depthwise_backward(np.zeros((0, 2, 3, 3)), x, w, b)
    assert gx.shape == x.shape and not gw.any() and not gb.any()


def test_depthwise_out_argument():
    x, w = _rand(1, 2, 5, 5), _rand(2, 1, 3, 3)
    out = np.empty((1, 2, 3, 3))
    assert cv.conv2d_depthwise(x, w, out=out) is out
    np.testing.assert_allclose(out, F.conv2d(_t(x), _t(w), None, 1, 0, 1, 2).numpy())
    with pytest.raises(ValueError, match="out"):
        cv.conv2d_depthwise(x, w, out=np.empty((1, 2, 4, 4)))


@pytest.mark.parametrize("kwargs,match", [
    (dict(stride=0), "stride"), (dict(stride=(1, 0)), "stride"), (dict(padding=-1), "padding"),
    (dict(dilation=0), "dilation"), (dict(stride=(1, 2, 3)), "stride"), (dict(padding=(1,)), "padding"),
])
def test_depthwise_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cv.conv2d_depthwise(_rand(1, 2, 5, 5), _rand(2, 1, 3, 3), **kwargs)


def test_depthwise_bad_parameter_types():
    with pytest.raises(TypeError, match="stride"):
        cv.conv2d_depthwise(_rand(1, 2, 5, 5), _rand(2, 1, 3, 3), stride=1.5)
    with pytest.raises(TypeError, match="padding"):
        cv.conv2d_depthwise(_rand(1, 2, 5, 5), _rand(2, 1, 3, 3), padding=True)


def test_depthwise_bad_inputs():
    x, w = _rand(1, 2, 5, 5), _rand(2, 1, 3, 3)
    with pytest.raises(ValueError, match="output"):
        cv.conv2d_depthwise(_rand(1, 2, 2, 5), w)                              # output height < 1
    with pytest.raises(ValueError, match="output"):
        cv.conv2d_depthwise(x, w, dilation=3)
    with pytest.raises(ValueError, match="weight"):
        cv.conv2d_depthwise(x, _rand(3, 1, 3, 3))                              # C·m not a multiple of C
    with pytest.raises(ValueError, match="weight"):
        cv.conv2d_depthwise(x, _rand(2, 2, 3, 3))                              # not depthwise
    with pytest.raises(ValueError, match="weight"):
        cv.conv2d_depthwise(x, _rand(2, 3, 3))                                 # 3-D weight
    with pytest.raises(ValueError, match="x"):
        cv.conv2d_depthwise(_rand(2, 5, 5), w)
    with pytest.raises(ValueError, match="bias"):
        cv.conv2d_depthwise(x, w, _rand(3))
    with pytest.raises(TypeError, match="weight"):
        cv.conv2d_depthwise(x, w.astype(np.float32))                            # mixed dtypes
    with pytest.raises(TypeError, match="bias"):
        cv.conv2d_depthwise(x, w, _rand(2, dtype=np.float32))
    with pytest.raises(TypeError, match="x"):
        cv.conv2d_depthwise(np.ones((1, 2, 5, 5), np.int32), w)                 # integer input
    with pytest.raises(TypeError, match="weight"):
        cv.conv2d_depthwise(x, _t(w))                                          # mixed numpy / torch
    with pytest.raises(TypeError, match="x"):
        cv.conv2d_depthwise([[1.0]], w)                                        # not an array
    with pytest.raises(TypeError, match="x"):
        cv.conv2d_depthwise(x.astype(np.complex128), w)
    y = cv.conv2d_depthwise(x, w)
    with pytest.raises(ValueError, match="grad_out"):
        cv.conv2d_depthwise_backward(_rand(1, 2, 4, 4), x, w)
    with pytest.raises(TypeError, match="grad_out"):
        cv.conv2d_depthwise_backward(y.astype(np.float32), x, w)


# ---------------------------------------------------------------------------------------------
# conv2d_depthwise, channels-last: the general NHWC kernels' CPU mirrors (forced with variant="nhwc") and the
# layout rule


@pytest.mark.parametrize("case", DW_CASES, ids=[str(i) for i in range(len(DW_CASES))])
def test_depthwise_nhwc_mirrors_float64(case):
    """The channels-last mirrors (forced) equal F.conv2d and its gradients; their results are channels-last."""
    N, C, m, H, W, k, s, p, d, with_bias = case
    x, w = _rand(N, C, H, W), _rand(C * m, 1, *k)
    b = _rand(C * m) if with_bias else None
    kw = dict(stride=s, padding=p, dilation=d)
    y = cv.conv2d_depthwise(x, w, b, variant="nhwc", **kw)
    g = _rand(*y.shape)
    ry, rgx, rgw, rgb = _dw_reference(x, w, b, s, p, d, g)
    assert y.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_allclose(y, ry, rtol=1e-12, atol=1e-12)
    gx, gw, gb = cv.conv2d_depthwise_backward(g, x, w, b, variant="nhwc", weight_variant="nhwc", **kw)
    assert gx.transpose(0, 2, 3, 1).flags.c_contiguous and gw.flags.c_contiguous
    np.testing.assert_allclose(gx, rgx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, rgw, rtol=1e-12, atol=1e-11)
    if with_bias:
        np.testing.assert_allclose(gb, rgb, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_depthwise_nhwc_mirrors_torch_channels_last(dtype):
    """torch tensors stored channels-last, through the channels-last mirrors: read in place, results
    channels-last; grad_out of any layout (contiguous, expanded)."""
    x = torch.randn(2, 4, 7, 6).to(dtype).to(memory_format=torch.channels_last)
    w, b = torch.randn(4, 1, 3, 3).to(dtype), torch.randn(4).to(dtype)
    y = cv.conv2d_depthwise(x, w, b, padding=1, variant="nhwc")
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    ref = F.conv2d(x.double(), w.double(), b.double(), 1, 1, 1, 4)
    torch.testing.assert_close(y.double(), ref, rtol=2e-2, atol=2e-2)
    for g in (torch.randn(y.shape).to(dtype), torch.ones((), dtype=dtype).expand(y.shape)):
        gx, gw, gb = cv.conv2d_depthwise_backward(g, x, w, b, padding=1, variant="nhwc", weight_variant="nhwc")
        assert gx.is_contiguous(memory_format=torch.channels_last) and gw.is_contiguous()
        xr, wr, br = (t.double().requires_grad_() for t in (x, w, b))
        F.conv2d(xr, wr, br, 1, 1, 1, 4).backward(g.double())
        for got, want in ((gx, xr.grad), (gw, wr.grad), (gb, br.grad)):
            torch.testing.assert_close(got.double(), want, rtol=2e-2, atol=3e-2 * max(1.0, want.abs().max().item()))


def test_depthwise_layout_rule():
    """Torch tensors stored channels-last (CPU or CUDA) take the channels-last path by themselves (documented
    in gpuops/conv.py), numpy keeps NCHW, a forced variant decides, and forced variants must agree."""
    from gpuops import _core
    x = torch.randn(2, 4, 5, 6)
    xl = x.to(memory_format=torch.channels_last)
    assert _core.channels_last(_core.wrap("x", xl)) and not _core.channels_last(_core.wrap("x", x))
    assert not _core.channels_last(_core.wrap("x", torch.randn(2, 1, 5, 6).to(memory_format=torch.channels_last)))
    assert not _core.channels_last(_core.wrap("x", xl.numpy()))          # numpy keeps NCHW
    assert cv.channels_last_output(xl) and not cv.channels_last_output(x)
    fake_cuda = _core.Arr(xl, _core.TORCH, xl.shape, "float32", 0, "x")  # the rule as a CUDA tensor sees it
    assert cv._takes_channels_last(fake_cuda)
    w = torch.randn(4, 1, 3, 3)
    y = cv.conv2d_depthwise(xl, w, padding=1)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    torch.testing.assert_close(y, F.conv2d(xl, w, None, 1, 1, 1, 4))
    assert cv.conv2d_depthwise(x, w, padding=1).is_contiguous()
    with pytest.raises(ValueError, match="different layouts"):
        cv.conv2d_depthwise_backward(torch.randn(2, 4, 5, 6), x, w, padding=1, variant="tile", weight_variant="nhwc")
    with pytest.raises(ValueError, match="variant must be one of"):
        cv.conv2d_depthwise(x, w, variant="nhwc_typo_is_not_a_variant")


def test_depthwise_nhwc_out_argument():
    x, w = _rand(1, 2, 5, 5), _rand(2, 1, 3, 3)
    out = np.empty((1, 3, 3, 2)).transpose(0, 3, 1, 2)                   # channels-last (N, C, H, W)
    assert cv.conv2d_depthwise(x, w, out=out, variant="nhwc") is out
    np.testing.assert_allclose(out, F.conv2d(_t(x), _t(w), None, 1, 0, 1, 2).numpy())
    with pytest.raises(ValueError, match="out must be channels-last"):
        cv.conv2d_depthwise(x, w, out=np.empty((1, 2, 3, 3)), variant="nhwc")


# ---------------------------------------------------------------------------------------------
# im2col / col2im

IM_CASES = [
    # shape, kernel, stride, padding, dilation
    ((2, 3, 9, 8), (2, 3), (2, 1), 1, (1, 2)),
    ((3, 7, 7), 3, 1, 1, 1),
    ((1, 2, 10, 11), (3, 2), 3, (0, 2), 2),
    ((2, 1, 5, 5), 1, 1, 0, 1),
    ((1, 2, 6, 5), 4, 2, 3, 1),
]


def _unfold_ref(x, k, s, p, d):
    batched = x.ndim == 4
    t = _t(x) if batched else _t(x)[None]
    kh, kw = (k, k) if isinstance(k, int) else k
    cols = F.unfold(t, k, d, p, s)
    H, W = t.shape[-2:]
    sh, sw = (s, s) if isinstance(s, int) else s
    ph, pw = (p, p) if isinstance(p, int) else p
    dh, dw = (d, d) if isinstance(d, int) else d
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = cols.view(t.shape[0], t.shape[1], kh, kw, Ho, Wo).numpy()
    return out if batched else out[0]


@pytest.mark.parametrize("case", IM_CASES, ids=[str(i) for i in range(len(IM_CASES))])
def test_im2col_col2im_float64(case):
    shape, k, s, p, d = case
    x = _rand(*shape)
    cols = cv.im2col(x, k, stride=s, padding=p, dilation=d)
    ref = _unfold_ref(x, k, s, p, d)
    assert cols.shape == ref.shape
    np.testing.assert_array_equal(cols, ref)
    # col2im = F.fold (the adjoint), with the input size given
    c = _rand(*cols.shape)
    H, W = shape[-2:]
    back = cv.col2im(c, k, stride=s, padding=p, dilation=d, input_size=(H, W))
    ct = _t(c) if c.ndim == 6 else _t(c)[None]
    fold = F.fold(ct.reshape(ct.shape[0], -1, ct.shape[-2] * ct.shape[-1]), (H, W), k, d, p, s).numpy()
    np.testing.assert_allclose(back, fold if c.ndim == 6 else fold[0], rtol=1e-12, atol=1e-12)
    # adjointness: <im2col(x), c> == <x, col2im(c)>
    assert abs((cols * c).sum() - (x * back).sum()) < 1e-9
    # the backward functions
    np.testing.assert_array_equal(cv.im2col_backward(c, (H, W), k, stride=s, padding=p, dilation=d), back)
    np.testing.assert_array_equal(cv.im2col_backward(c, shape, k, stride=s, padding=p, dilation=d), back)
    np.testing.assert_array_equal(cv.col2im_backward(x, k, stride=s, padding=p, dilation=d), cols)


def test_col2im_default_size_and_gradients():
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    cols = cv.im2col(x.detach(), 3, stride=2, padding=1)
    # default size: smallest image producing (Ho, Wo) = (5, 5): (5-1)*2 - 2 + 2 + 1 = 9
    back = cv.col2im(cols, 3, stride=2, padding=1)
    assert back.shape == (2, 3, 9, 9)
    # im2col backward == torch.autograd of the unfold reference
    g = torch.randn(cols.shape, dtype=torch.float64)
    ref = F.unfold(x, 3, 1, 1, 2).view(cols.shape)
    ref.backward(g)
    torch.testing.assert_close(cv.im2col_backward(g, (9, 9), 3, stride=2, padding=1), x.grad)
    # col2im backward == autograd of F.fold
    c = torch.randn(cols.shape, dtype=torch.float64, requires_grad=True)
    y = F.fold(c.reshape(2, 27, 25), (9, 9), 3, 1, 1, 2)
    gy = torch.randn_like(y)
    y.backward(gy)
    torch.testing.assert_close(cv.col2im_backward(gy, 3, stride=2, padding=1), c.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_im2col_col2im_torch_dtypes(dtype):
    x = torch.randn(2, 3, 6, 7).to(dtype)
    cols = cv.im2col(x, (2, 3), padding=1)
    assert cols.dtype == dtype and isinstance(cols, torch.Tensor)
    torch.testing.assert_close(cols, F.unfold(x.float(), (2, 3), 1, 1, 1).view(cols.shape).to(dtype))
    back = cv.col2im(cols, (2, 3), padding=1, input_size=(6, 7))
    assert back.dtype == dtype
    ref = F.fold(cols.float().reshape(2, 18, -1), (6, 7), (2, 3), 1, 1, 1)
    torch.testing.assert_close(back.float(), ref, rtol=2e-2, atol=2e-2)


def test_im2col_non_contiguous():
    x = torch.randn(3, 8, 2, 9, dtype=torch.float64).transpose(1, 2)
    cols = cv.im2col(x, 3, padding=1)
    torch.testing.assert_close(cols, F.unfold(x, 3, 1, 1, 1).view(cols.shape))
    back = cv.col2im(cols.transpose(-1, -2).contiguous().transpose(-1, -2), 3, padding=1, input_size=(8, 9))
    torch.testing.assert_close(back, F.fold(cols.reshape(3, 18, -1), (8, 9), 3, 1, 1, 1))


def test_im2col_col2im_bad_inputs():
    x = _rand(1, 2, 5, 5)
    with pytest.raises(ValueError, match="kernel_size"):
        cv.im2col(x, 0)
    with pytest.raises(ValueError, match="kernel_size"):
        cv.im2col(x, (1, 2, 3))
    with pytest.raises(ValueError, match="stride"):
        cv.im2col(x, 2, stride=0)
    with pytest.raises(ValueError, match="padding"):
        cv.im2col(x, 2, padding=-2)
    with pytest.raises(ValueError, match="dilation"):
        cv.im2col(x, 2, dilation=0)
    with pytest.raises(ValueError, match="output"):
        cv.im2col(x, 6)
    with pytest.raises(ValueError, match="x"):
        cv.im2col(_rand(5, 5), 2)
    with pytest.raises(TypeError, match="x"):
        cv.im2col(np.ones((1, 2, 5, 5), np.int64), 2)
    cols = cv.im2col(x, 2)
    with pytest.raises(ValueError, match="cols"):
        cv.col2im(_rand(2, 2, 4, 4), 2)
    with pytest.raises(ValueError, match="kernel_size"):
        cv.col2im(cols, 3)
    with pytest.raises(ValueError, match="input_size"):
        cv.col2im(cols, 2, input_size=(9, 9))                                  # inconsistent with (Ho, Wo)
    with pytest.raises(ValueError, match="input_size"):
        cv.col2im(cols, 2, input_size=0)
    with pytest.raises(ValueError, match="input_size"):
        cv.col2im(_rand(1, 1, 1, 1, 1), 1, padding=3)                            # implied size < 1
    with pytest.raises(TypeError, match="cols"):
        cv.col2im(cols.astype(np.int32), 2)
    with pytest.raises(ValueError, match="input_size"):
        cv.im2col_backward(cols, (2, 2, 5, 5), 2)
