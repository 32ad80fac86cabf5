"""Tier 1: the diag family (dgmm, cdgmm) on the CPU path, against gpuops.reference (spec/ops.md §3), float64
gradients against torch.autograd of the torch products (and of the matrix-product definition), and every
bad-input rule."""
import numpy as np
import pytest
import torch

import gpuops.diag as dg
from gpuops import reference as R
from helpers import to_f64

RNG = np.random.default_rng(99)

SHAPES = [(5, 7), (300, 3), (3, 300), (4, 4), (1, 1), (33, 65)]


def _sides(M, K):
    out = [("auto", K), ("right", K), ("left", M)]
    if M != K:
        out.append(("auto", M))
    return out


def _is_right(side, M, K, L):
    return side == "right" or (side == "auto" and L == K)


def _product(a, x, right):
    """The torch expression whose autograd the backwards are checked against."""
    return a * x[None, :] if right else x[:, None] * a


@pytest.mark.parametrize("shape", SHAPES)
def test_dgmm_float64_against_autograd(shape):
    M, K = shape
    for side, L in _sides(M, K):
        a = torch.randn(M, K, dtype=torch.float64, requires_grad=True)
        x = torch.randn(L, dtype=torch.float64, requires_grad=True)
        right = _is_right(side, M, K, L)
        ref = _product(a, x, right)
        y = dg.dgmm(a.detach().numpy(), x.detach().numpy(), side=side)
        np.testing.assert_array_equal(y, ref.detach().numpy())
        g = torch.randn(M, K, dtype=torch.float64)
        ref.backward(g)
        ga, gx = dg.dgmm_backward(g.numpy(), a.detach().numpy(), x.detach().numpy(), side=side)
        np.testing.assert_allclose(ga, a.grad.numpy(), rtol=1e-13)
        np.testing.assert_allclose(gx, x.grad.numpy(), rtol=1e-12, atol=1e-12)
        # the matrix-product definition
        D = np.diag(x.detach().numpy())
        np.testing.assert_allclose(y, a.detach().numpy() @ D if right else D @ a.detach().numpy(), rtol=1e-13)


def test_dgmm_square_auto_scales_columns():
    a, x = np.arange(9.0).reshape(3, 3), np.array([1.0, 10.0, 100.0])
    np.testing.assert_array_equal(dg.dgmm(a, x), R.dgmm(a, x, side="right"))
    np.testing.assert_array_equal(dg.dgmm(a, x, side="left"), R.dgmm(a, x, side="left"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dgmm_torch_dtypes(dtype):
    a, x = torch.randn(6, 9).to(dtype), torch.randn(9).to(dtype)
    y = dg.dgmm(a, x)
    assert isinstance(y, torch.Tensor) and y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    np.testing.assert_allclose(to_f64(y), R.dgmm(to_f64(a), to_f64(x)), rtol=tol, atol=tol)
    g = torch.randn(6, 9).to(dtype)
    for v, side in ((x, "right"), (torch.randn(6).to(dtype), "left")):
        ga, gx = dg.dgmm_backward(g, a, v, side=side)
        assert ga.dtype == gx.dtype == dtype
        for got, want in zip((ga, gx), R.dgmm_backward(*map(to_f64, (g, a, v)), side=side)):
            np.testing.assert_allclose(to_f64(got), want, rtol=tol, atol=tol * 4)


def test_dgmm_non_contiguous_and_expanded_grad():
    a = torch.randn(8, 5, dtype=torch.float64).t()            # (5, 8), strided
    x = torch.randn(16, dtype=torch.float64)[::2]
    np.testing.assert_allclose(dg.dgmm(a, x), R.dgmm(a, x))
    g = torch.ones(()).double().expand(5, 8)
    for got, want in zip(dg.dgmm_backward(g, a, x), R.dgmm_backward(g, a, x)):
        np.testing.assert_allclose(got, want)


def test_dgmm_out_and_empty():
    a, x = RNG.standard_normal((3, 4)), RNG.standard_normal(4)
    out = np.empty((3, 4))
    assert dg.dgmm(a, x, out=out) is out
    np.testing.assert_array_equal(out, R.dgmm(a, x))
    ga, gx = dg.dgmm_backward(np.zeros((0, 4)), np.zeros((0, 4)), x)
    assert ga.shape == (0, 4) and gx.shape == (4,) and not gx.any()


def test_dgmm_bad_inputs():
    a, x = RNG.standard_normal((3, 4)), RNG.standard_normal(4)
    with pytest.raises(ValueError, match="x"):
        dg.dgmm(a, RNG.standard_normal(5))
    with pytest.raises(ValueError, match="x"):
        dg.dgmm(a, x, side="left")
    with pytest.raises(ValueError, match="x"):
        dg.dgmm(a, RNG.standard_normal(3), side="right")
    with pytest.raises(ValueError, match="side"):
        dg.dgmm(a, x, side="up")
    with pytest.raises(ValueError, match="a"):
        dg.dgmm(RNG.standard_normal((3, 4, 1)), x)
    with pytest.raises(ValueError, match="x"):
        dg.dgmm(a, RNG.standard_normal((4, 1)))
    with pytest.raises(TypeError, match="x"):
        dg.dgmm(a, x.astype(np.float32))
    with pytest.raises(TypeError, match="a"):
        dg.dgmm(a.astype(np.int64), x)
    with pytest.raises(TypeError, match="x"):
        dg.dgmm(a, torch.from_numpy(x))
    with pytest.raises(TypeError, match="a"):
        dg.dgmm(a.astype(np.complex128), x)
    with pytest.raises(ValueError, match="grad_out"):
        dg.dgmm_backward(RNG.standard_normal((4, 3)), a, x)
    with pytest.raises(TypeError, match="grad_out"):
        dg.dgmm_backward(a.astype(np.float32), a, x)


# ---------------------------------------------------------------------------------------------
# cdgmm


def _complex(shape, dtype=torch.complex128):
    return torch.randn(shape, dtype=dtype)


@pytest.mark.parametrize("shape", SHAPES)
def test_cdgmm_complex_dtype_against_autograd(shape):
    M, K = shape
    for side, L in _sides(M, K):
        a = _complex((M, K)).requires_grad_()
        x = _complex((L,)).requires_grad_()
        right = _is_right(side, M, K, L)
        ref = _product(a, x, right)
        y = dg.cdgmm(a.detach().numpy(), x.detach().numpy(), side=side)
        assert y.dtype == np.complex128
        np.testing.assert_allclose(y, ref.detach().numpy(), rtol=1e-13, atol=1e-14)
        g = _complex((M, K))
        ref.backward(g)
        ga, gx = dg.cdgmm_backward(g.numpy(), a.detach().numpy(), x.detach().numpy(), side=side)
        # torch's complex gradient convention: grad_a = g · conj(x), grad_x = Σ g · conj(a)
        np.testing.assert_allclose(ga, a.grad.numpy(), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(gx, x.grad.numpy(), rtol=1e-11, atol=1e-12)
        # torch tensors in, torch tensors out
        yt = dg.cdgmm(a.detach(), x.detach(), side=side)
        assert isinstance(yt, torch.Tensor) and yt.dtype == torch.complex128
        torch.testing.assert_close(yt, ref.detach())


@pytest.mark.parametrize("shape", [(5, 7), (4, 4), (40, 3)])
def test_cdgmm_real_pairs_float64(shape):
    M, K = shape
    for side, L in _sides(M, K):
        a = _complex((M, K)).requires_grad_()
        x = _complex((L,)).requires_grad_()
        right = _is_right(side, M, K, L)
        ref = _product(a, x, right)
        ap, xp = torch.view_as_real(a.detach()).numpy(), torch.view_as_real(x.detach()).numpy()
        y = dg.cdgmm(ap, xp, side=side)
        assert y.shape == (M, K, 2)
        np.testing.assert_allclose(y, torch.view_as_real(ref.detach()).numpy(), rtol=1e-13, atol=1e-14)
        g = _complex((M, K))
        ref.backward(g)
        ga, gx = dg.cdgmm_backward(torch.view_as_real(g).numpy(), ap, xp, side=side)
        assert ga.shape == (M, K, 2) and gx.shape == (L, 2)
        np.testing.assert_allclose(ga, torch.view_as_real(a.grad).numpy(), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(gx, torch.view_as_real(x.grad).numpy(), rtol=1e-11, atol=1e-12)


def test_cdgmm_finite_differences_real_pairs():
    """grad of L = Σ <g, cdgmm(a, x)> (real inner product of the pairs) by central differences."""
    a, x, g = RNG.standard_normal((3, 4, 2)), RNG.standard_normal((4, 2)), RNG.standard_normal((3, 4, 2))
    ga, gx = dg.cdgmm_backward(g, a, x)
    eps = 1e-6
    for arr, grad in ((a, ga), (x, gx)):
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = (dg.cdgmm(a, x) * g).sum()
            arr[idx] = old - eps
            down = (dg.cdgmm(a, x) * g).sum()
            arr[idx] = old
            assert abs((up - down) / (2 * eps) - grad[idx]) < 1e-7


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cdgmm_real_pairs_torch_dtypes(dtype):
    a, x = torch.randn(5, 6, 2).to(dtype), torch.randn(6, 2).to(dtype)
    y = dg.cdgmm(a, x)
    assert y.dtype == dtype and y.shape == (5, 6, 2)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    np.testing.assert_allclose(to_f64(y), R.cdgmm(to_f64(a), to_f64(x)), rtol=tol, atol=tol)
    g = torch.randn(5, 6, 2).to(dtype)
    ga, gx = dg.cdgmm_backward(g, a, x)
    assert ga.dtype == gx.dtype == dtype
    for got, want in zip((ga, gx), R.cdgmm_backward(*map(to_f64, (g, a, x)))):
        np.testing.assert_allclose(to_f64(got), want, rtol=tol, atol=tol * 4)


def test_cdgmm_complex64_torch_and_non_contiguous():
    a = _complex((9, 4), torch.complex64).t()                # (4, 9), strided
    x = _complex((18,), torch.complex64)[::2]
    y = dg.cdgmm(a, x)
    assert y.dtype == torch.complex64
    close = dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, R.cdgmm(a, x), **close)
    g = _complex((4, 9), torch.complex64)
    for v, side in ((x, "auto"), (_complex((4,), torch.complex64), "left")):
        for got, want in zip(dg.cdgmm_backward(g, a, v, side=side), R.cdgmm_backward(g, a, v, side=side)):
            np.testing.assert_allclose(got, want, **close)


def test_cdgmm_bad_inputs():
    a, x = RNG.standard_normal((3, 4, 2)), RNG.standard_normal((4, 2))
    ac, xc = a[..., 0] + 1j * a[..., 1], x[:, 0] + 1j * x[:, 1]
    with pytest.raises(ValueError, match="a"):
        dg.cdgmm(RNG.standard_normal((3, 4, 3)), x)
    with pytest.raises(ValueError, match="x"):
        dg.cdgmm(a, RNG.standard_normal((4, 3)))
    with pytest.raises(ValueError, match="x"):
        dg.cdgmm(a, RNG.standard_normal((5, 2)))
    with pytest.raises(ValueError, match="a"):
        dg.cdgmm(RNG.standard_normal((3, 4)), x)
    with pytest.raises(ValueError, match="x"):
        dg.cdgmm(ac, xc[:, None])
    with pytest.raises(ValueError, match="a"):
        dg.cdgmm(ac[None], xc)
    with pytest.raises(TypeError, match="x"):
        dg.cdgmm(ac, x)                                      # complex a, real-pair x
    with pytest.raises(TypeError, match="x"):
        dg.cdgmm(a, xc)                                      # real-pair a, complex x
    with pytest.raises(TypeError, match="x"):
        dg.cdgmm(ac, xc.astype(np.complex64))                # mixed complex dtypes
    with pytest.raises(TypeError, match="x"):
        dg.cdgmm(a, x.astype(np.float32))
    with pytest.raises(TypeError, match="a"):
        dg.cdgmm(a.astype(np.int32), x)
    with pytest.raises(TypeError, match="x"):
        dg.cdgmm(a, torch.from_numpy(x))
    with pytest.raises(TypeError, match="a"):
        dg.cdgmm(torch.randn(3, 4, dtype=torch.complex32), torch.randn(4, dtype=torch.complex32))
    with pytest.raises(ValueError, match="side"):
        dg.cdgmm(a, x, side="both")
    with pytest.raises(ValueError, match="grad_out"):
        dg.cdgmm_backward(RNG.standard_normal((4, 3, 2)), a, x)
    with pytest.raises(TypeError, match="grad_out"):
        dg.cdgmm_backward(ac, a, x)
