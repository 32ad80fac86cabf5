"""The reference backend (gpuops.reference, used by the main job and the benchmarks) agrees with
PyTorch's own operators and with autograd, in float64."""
import numpy as np
import pytest

from gpuops import reference as R
from helpers import torch_correlation

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _t(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64,
                       requires_grad=True)


def test_conv2d_depthwise_and_gradients():
    x, w, b = _t(2, 3, 9, 8), _t(6, 1, 3, 2, seed=1), _t(6, seed=2)
    p = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    y = F.conv2d(x, w, b, groups=3, **p)
    np.testing.assert_allclose(R.conv2d_depthwise(x.detach(), w.detach(), b.detach(), **p), y.detach(), rtol=1e-12)
    g = torch.randn_like(y)
    expected = torch.autograd.grad(y, (x, w, b), g)
    for got, want in zip(R.conv2d_depthwise_backward(g, x.detach(), w.detach(), b.detach(), **p), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_im2col_col2im():
    x = _t(2, 3, 9, 8)
    p = dict(stride=2, padding=1, dilation=(1, 2))
    cols = F.unfold(x, 3, **p)
    Ho, Wo = 5, 3
    np.testing.assert_allclose(R.im2col(x.detach(), 3, **p), cols.detach().view(2, 3, 3, 3, Ho, Wo))
    c = torch.randn_like(cols)
    np.testing.assert_allclose(R.col2im(c.view(2, 3, 3, 3, Ho, Wo), 3, input_size=(9, 8), **p),
                               F.fold(c, (9, 8), 3, **p), rtol=1e-12)


def test_diag():
    a, x = _t(4, 5), _t(5, seed=1)
    np.testing.assert_allclose(R.dgmm(a.detach(), x.detach()), (a @ torch.diag(x)).detach())
    g = torch.randn(4, 5, dtype=torch.float64)
    want = torch.autograd.grad(a @ torch.diag(x), (a, x), g)
    for got, w in zip(R.dgmm_backward(g, a.detach(), x.detach()), want):
        np.testing.assert_allclose(got, w, rtol=1e-12)


def test_correlation_matches_the_torch_formulation_and_autograd():
    a, b = _t(2, 4, 7, 9), _t(2, 4, 7, 9, seed=1)
    params = dict(pad_size=2, kernel_size=1, max_displacement=2, stride1=1, stride2=1)
    ref = torch_correlation(a, b, **params)
    np.testing.assert_allclose(R.correlation(a.detach(), b.detach(), **params), ref.detach(), rtol=1e-12)
    g = torch.randn_like(ref)
    for got, want in zip(R.correlation_backward(g, a.detach(), b.detach(), **params),
                         torch.autograd.grad(ref, (a, b), g)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
