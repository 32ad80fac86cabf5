"""Tier 1: the correlation family (spec/ops.md §7, §8) on the CPU path against torch formulations written
independently of gpuops.reference (§7 here as shift-multiply-sum and a box filter, §8 as
helpers.torch_correlation), against gpuops.reference, the correlation ⇔ spatial_correlation_sample
identity of §8, float64 gradients against torch.autograd on the torch formulations, every parameter
variant, non-contiguous and 16-bit inputs, and every bad-input rule."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gpuops.correlations as gc
from gpuops import reference as R
from helpers import torch_correlation


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _shift(t, sy, sx):
    """result[..., y, x] = t[..., y + sy, x + sx], zero outside."""
    m = max(abs(sy), abs(sx))
    H, W = t.shape[-2:]
    tp = F.pad(t, (m, m, m, m))
    return tp[..., m + sy:m + sy + H, m + sx:m + sx + W]


def ref_sample(in1, in2, kernel_size=1, patch_size=1, stride=1, padding=0, dilation=1, dilation_patch=1):
    """spec §7 via shift-multiply-sum over channels, then a box filter of the window (zero outside)."""
    k, p, s = _pair(kernel_size), _pair(patch_size), _pair(stride)
    pad, dil, dp = _pair(padding), _pair(dilation), _pair(dilation_patch)
    ones = torch.ones(1, 1, *k, dtype=in1.dtype)
    rows = []
    for ph in range(p[0]):
        cols = []
        for pw in range(p[1]):
            sy, sx = (ph - (p[0] - 1) // 2) * dp[0], (pw - (p[1] - 1) // 2) * dp[1]
            prod = (in1 * _shift(in2, sy, sx)).sum(1, keepdim=True)
            cols.append(F.conv2d(prod, ones, stride=s, padding=pad, dilation=dil)[:, 0])
        rows.append(torch.stack(cols, 1))
    return torch.stack(rows, 1)


def _inputs(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype))


SAMPLE_CASES = [
    dict(),
    dict(patch_size=3),
    dict(kernel_size=3, patch_size=3),
    dict(kernel_size=3, patch_size=5, padding=1, stride=2),
    dict(patch_size=4, dilation_patch=2),                      # even patch, shift (ph − 1)·2
    dict(patch_size=(2, 4), dilation_patch=(3, 2)),
    dict(kernel_size=(1, 3), patch_size=(3, 2), stride=(2, 1), padding=(0, 2), dilation=(1, 2),
         dilation_patch=(1, 3)),
    dict(kernel_size=3, patch_size=5, dilation=2, padding=2, dilation_patch=2),
    dict(kernel_size=2, patch_size=3, stride=3, padding=1),
    dict(patch_size=7, dilation_patch=2),                      # shifts beyond the image
]


@pytest.mark.parametrize("params", SAMPLE_CASES, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "defaults")
def test_sample_forward_matches_reference(params):
    a, b = _inputs((2, 3, 7, 9))
    got = gc.spatial_correlation_sample(a, b, **params)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64 and got.is_contiguous()
    torch.testing.assert_close(got, ref_sample(a, b, **params), rtol=1e-12, atol=1e-12)


def test_sample_forward_matches_reference_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((1, 2, 5, 6)), rng.standard_normal((1, 2, 5, 6))
    p = dict(kernel_size=(3, 2), patch_size=(4, 3), stride=(2, 1), padding=(1, 2), dilation=(1, 2),
             dilation_patch=(2, 1))
    got = gc.spatial_correlation_sample(a, b, **p)
    assert isinstance(got, np.ndarray) and got.dtype == np.float64
    np.testing.assert_allclose(got, R.spatial_correlation_sample(a, b, **p), rtol=1e-12, atol=1e-12)


def test_sample_even_patch_shift_definition():
    # patch 4, dilation_patch 2: shifts {-2, 0, 2, 4} (spec §7), not the CUDA original's {-3, -1, 1, 3}
    a = torch.zeros(1, 1, 1, 9, dtype=torch.float64)
    b = torch.zeros_like(a)
    a[0, 0, 0, 4] = 1.0
    b[0, 0, 0, :] = torch.arange(9, dtype=torch.float64) + 1
    got = gc.spatial_correlation_sample(a, b, patch_size=(1, 4), dilation_patch=2)
    assert got[0, 0, :, 0, 4].tolist() == [3.0, 5.0, 7.0, 9.0]


@pytest.mark.parametrize("params", SAMPLE_CASES, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "defaults")
def test_sample_backward_matches_autograd(params):
    a, b = _inputs((2, 3, 6, 7), seed=2)
    a.requires_grad_(True)
    b.requires_grad_(True)
    out = ref_sample(a, b, **params)
    g = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ea, eb = torch.autograd.grad(out, (a, b), g)
    ga, gb = gc.spatial_correlation_sample_backward(g, a.detach(), b.detach(), **params)
    torch.testing.assert_close(ga, ea, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(gb, eb, rtol=1e-11, atol=1e-11)


CORR_CASES = [
    dict(),
    dict(pad_size=2, max_displacement=2),
    dict(pad_size=4, max_displacement=4, stride2=2),
    dict(pad_size=2, kernel_size=3, max_displacement=2),
    dict(pad_size=3, kernel_size=3, max_displacement=2, stride1=2, stride2=2),
    dict(pad_size=0, kernel_size=3, max_displacement=1, stride1=2),          # pad < md: negative padding
    dict(pad_size=1, kernel_size=1, max_displacement=3, stride1=3, stride2=2),
]


@pytest.mark.parametrize("params", CORR_CASES, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "defaults")
def test_correlation_forward_and_backward(params):
    a, b = _inputs((2, 3, 8, 9), seed=4)
    got = gc.correlation(a, b, **params)
    a.requires_grad_(True)
    b.requires_grad_(True)
    want = torch_correlation(a, b, **params)
    torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
    g = torch.randn(want.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ea, eb = torch.autograd.grad(want, (a, b), g)
    ga, gb = gc.correlation_backward(g, a.detach(), b.detach(), **params)
    torch.testing.assert_close(ga, ea, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(gb, eb, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("pad,k,md,s1,s2", [(20, 1, 20, 1, 2), (3, 3, 2, 1, 1), (5, 3, 4, 2, 2), (2, 1, 2, 3, 1)])
def test_correlation_equals_sampler_identity(pad, k, md, s1, s2):
    a, b = _inputs((1, 4, 23, 25), seed=6)
    D = 2 * (md // s2) + 1
    corr = gc.correlation(a, b, pad_size=pad, kernel_size=k, max_displacement=md, stride1=s1, stride2=s2)
    samp = gc.spatial_correlation_sample(a, b, kernel_size=k, patch_size=D, stride=s1, padding=pad - md,
                                         dilation=1, dilation_patch=s2)
    torch.testing.assert_close(corr, samp.reshape(1, D * D, *samp.shape[-2:]) / (k * k * 4), rtol=1e-12, atol=1e-12)


def test_flownetc_channel_count():
    a, b = _inputs((1, 2, 5, 6))
    assert gc.correlation(a, b, pad_size=20, kernel_size=1, max_displacement=20, stride1=1, stride2=2).shape == (
        1, 441, 5, 6)


def test_numpy_in_numpy_out_and_out_argument():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((1, 2, 4, 5)).astype(np.float32), rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    out = np.empty((1, 3, 3, 4, 5), np.float32)
    res = gc.spatial_correlation_sample(a, b, patch_size=3, out=out)
    assert res is out and res.dtype == np.float32
    np.testing.assert_allclose(res, R.spatial_correlation_sample(a, b, patch_size=3), rtol=1e-5, atol=1e-5)
    g = np.ones_like(res)
    outs = (np.empty_like(a), np.empty_like(b))
    ga, gb = gc.spatial_correlation_sample_backward(g, a, b, patch_size=3, out=outs)
    assert ga is outs[0] and gb is outs[1]


def test_non_contiguous_inputs_and_stride0_grad():
    a, _ = _inputs((2, 8, 7, 3), seed=8)
    a_nc = a.transpose(1, 3)                                             # (2, 3, 7, 8), permuted
    b_nc = torch.randn(2, 3, 7, 16, dtype=torch.float64)[..., ::2]     # (2, 3, 7, 8), strided
    assert not a_nc.is_contiguous() and not b_nc.is_contiguous()
    params = dict(kernel_size=3, patch_size=3, padding=1)
    got = gc.spatial_correlation_sample(a_nc, b_nc, **params)
    torch.testing.assert_close(got, ref_sample(a_nc.contiguous(), b_nc.contiguous(), **params), rtol=1e-12, atol=1e-12)
    g = torch.ones(()).double().expand(got.shape)                         # stride-0 gradient
    ga, gb = gc.spatial_correlation_sample_backward(g, a_nc, b_nc, **params)
    ea, eb = gc.spatial_correlation_sample_backward(g.contiguous(), a_nc.contiguous(), b_nc.contiguous(), **params)
    torch.testing.assert_close(ga, ea, rtol=0, atol=0)
    torch.testing.assert_close(gb, eb, rtol=0, atol=0)
    an = a_nc.numpy()
    assert not an.flags.c_contiguous
    np.testing.assert_allclose(gc.correlation(an, b_nc.numpy(), pad_size=1, max_displacement=1),
                               torch_correlation(a_nc, b_nc, pad_size=1, max_displacement=1).numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_torch_cpu(dtype):
    a, b = _inputs((1, 5, 6, 7), dtype=torch.float32, seed=9)
    a, b = a.to(dtype), b.to(dtype)
    params = dict(kernel_size=3, patch_size=3, padding=1, dilation_patch=2)
    got = gc.spatial_correlation_sample(a, b, **params)
    assert got.dtype == dtype
    want = ref_sample(a.double(), b.double(), **params)
    tol = {torch.float16: 2e-2, torch.bfloat16: 1e-1, torch.float32: 1e-5}[dtype]
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
    g = torch.randn(got.shape).to(dtype)
    ga, gb = gc.spatial_correlation_sample_backward(g, a, b, **params)
    assert ga.dtype == gb.dtype == dtype
    ea, eb = gc.spatial_correlation_sample_backward(g.double(), a.double(), b.double(), **params)
    torch.testing.assert_close(ga.double(), ea, rtol=tol, atol=tol * 4)
    torch.testing.assert_close(gb.double(), eb, rtol=tol, atol=tol * 4)
    c = gc.correlation(a, b, pad_size=2, kernel_size=3, max_displacement=2, stride2=2)
    assert c.dtype == dtype
    torch.testing.assert_close(c.double(), torch_correlation(a.double(), b.double(), 2, 3, 2, 1, 2), rtol=tol, atol=tol)


def test_empty_channels_and_batch():
    a = torch.zeros(2, 0, 4, 5, dtype=torch.float64)
    out = gc.spatial_correlation_sample(a, a, patch_size=3)
    assert out.shape == (2, 3, 3, 4, 5) and not out.any()
    a = torch.zeros(0, 2, 4, 5, dtype=torch.float64)
    assert gc.spatial_correlation_sample(a, a, patch_size=3).shape == (0, 3, 3, 4, 5)
    ga, gb = gc.spatial_correlation_sample_backward(torch.zeros(0, 3, 3, 4, 5, dtype=torch.float64), a, a, patch_size=3)
    assert ga.shape == gb.shape == a.shape


# ---------------------------------------------------------------------------------------------
# bad input


def _pair_arrays():
    return np.zeros((1, 2, 5, 5)), np.zeros((1, 2, 5, 5))


def test_shape_mismatch():
    a, _ = _pair_arrays()
    with pytest.raises(ValueError, match="input2"):
        gc.spatial_correlation_sample(a, np.zeros((1, 2, 5, 6)))
    with pytest.raises(ValueError, match="input2"):
        gc.correlation(a, np.zeros((1, 3, 5, 5)))
    with pytest.raises(ValueError, match="input1"):
        gc.spatial_correlation_sample(np.zeros((2, 5, 5)), np.zeros((2, 5, 5)))


def test_dtype_and_kind_errors():
    a, b = _pair_arrays()
    with pytest.raises(TypeError, match="input1"):
        gc.spatial_correlation_sample(a.astype(np.int32), b.astype(np.int32))
    with pytest.raises(TypeError, match="input2"):
        gc.correlation(a, b.astype(np.float32))
    with pytest.raises(TypeError, match="input2"):
        gc.spatial_correlation_sample(a, torch.from_numpy(b))
    with pytest.raises(TypeError, match="input1"):
        gc.correlation([[1.0]], b)
    with pytest.raises(TypeError, match="grad_out"):
        gc.spatial_correlation_sample_backward(np.zeros((1, 1, 1, 5, 5), np.float32), a, b)
    with pytest.raises(TypeError, match="kernel_size"):
        gc.spatial_correlation_sample(a, b, kernel_size=1.5)
    with pytest.raises(TypeError, match="pad_size"):
        gc.correlation(a, b, pad_size=1.0)


@pytest.mark.parametrize("name", ["kernel_size", "patch_size", "stride", "dilation", "dilation_patch"])
@pytest.mark.parametrize("value", [0, -1, (1, 0)])
def test_sampler_non_positive_params(name, value):
    a, b = _pair_arrays()
    with pytest.raises(ValueError, match=name):
        gc.spatial_correlation_sample(a, b, **{name: value})
    with pytest.raises(ValueError, match=name):
        gc.spatial_correlation_sample_backward(np.zeros((1, 1, 1, 5, 5)), a, b, **{name: value})


def test_sampler_negative_padding_and_bad_pair():
    a, b = _pair_arrays()
    with pytest.raises(ValueError, match="padding"):
        gc.spatial_correlation_sample(a, b, padding=-1)
    with pytest.raises(ValueError, match="stride"):
        gc.spatial_correlation_sample(a, b, stride=(1, 2, 3))


@pytest.mark.parametrize("name,value", [("kernel_size", 0), ("stride1", 0), ("stride2", 0), ("pad_size", -1),
                                        ("max_displacement", -1)])
def test_correlation_bad_params(name, value):
    a, b = _pair_arrays()
    with pytest.raises(ValueError, match=name):
        gc.correlation(a, b, **{name: value})
    with pytest.raises(ValueError, match=name):
        gc.correlation_backward(np.zeros((1, 1, 5, 5)), a, b, **{name: value})


def test_correlation_even_kernel():
    a, b = _pair_arrays()
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        gc.correlation(a, b, kernel_size=2, pad_size=1)


def test_output_too_small():
    a, b = _pair_arrays()
    with pytest.raises(ValueError, match="output size"):
        gc.spatial_correlation_sample(a, b, kernel_size=7)
    with pytest.raises(ValueError, match="output size"):
        gc.spatial_correlation_sample(a, b, kernel_size=3, dilation=3)
    with pytest.raises(ValueError, match="output height"):
        gc.correlation(a, b, max_displacement=3)
    with pytest.raises(ValueError, match="output width"):
        gc.correlation(np.zeros((1, 2, 9, 5)), np.zeros((1, 2, 9, 5)), kernel_size=3, max_displacement=2)


def test_grad_out_shape_checked():
    a, b = _pair_arrays()
    with pytest.raises(ValueError, match="grad_out"):
        gc.spatial_correlation_sample_backward(np.zeros((1, 3, 3, 5, 5)), a, b, patch_size=1)
    with pytest.raises(ValueError, match="grad_out"):
        gc.correlation_backward(np.zeros((1, 9, 5, 5)), a, b)
    with pytest.raises(ValueError, match="out"):
        gc.spatial_correlation_sample(a, b, out=np.zeros((1, 1, 1, 5, 4)))
