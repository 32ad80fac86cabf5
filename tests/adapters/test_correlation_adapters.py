"""Tier 4: torch and JAX adapters of spatial_correlation_sample / correlation on CPU beyond the contract
battery (test_op_battery.py runs each op's own example): the torch formulation of FlowNet correlation,
sampler parameters other than the battery's (kernel 3, padding), the modules under torch.compile, 16 bits."""
import numpy as np
import pytest

from gpuops import reference as R
from helpers import torch_correlation

torch = pytest.importorskip("torch")
import gpuops.torch as gt  # noqa: E402

SAMPLER = dict(kernel_size=3, patch_size=3, padding=1, dilation_patch=2)
CORR = dict(pad_size=2, kernel_size=1, max_displacement=2, stride1=1, stride2=2)


def _inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 3, 6, 7, generator=g, dtype=dtype), torch.randn(2, 3, 6, 7, generator=g, dtype=dtype))


def test_torch_values_gradients_opcheck_compile():
    a, b = (t.requires_grad_() for t in _inputs())
    y = gt.correlation(a, b, **CORR)
    ref = torch_correlation(a, b, **CORR)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, (a, b), g), torch.autograd.grad(ref, (a, b), g))
    assert torch.autograd.gradcheck(lambda x, z: gt.spatial_correlation_sample(x, z, **SAMPLER), (a, b))
    a32, b32 = (t.detach().float().requires_grad_() for t in (a, b))
    torch.library.opcheck(torch.ops.gpuops.spatial_correlation_sample.default,
                          (a32, b32, [3, 3], [3, 3], [1, 1], [1, 1], [1, 1], [2, 2]))
    torch._dynamo.reset()
    f = torch.compile(lambda x, z: gt.Correlation(**CORR)(x, z).square().sum(), fullgraph=True)
    torch.testing.assert_close(f(a, b), ref.square().sum())


def test_torch_modules_and_16bit():
    a, b = _inputs(torch.bfloat16)
    m = gt.SpatialCorrelationSampler(**SAMPLER)
    assert "patch_size=(3, 3)" in repr(m)
    y = m(a, b)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 3, 3, 6, 7)
    expected = R.spatial_correlation_sample(a.double(), b.double(), **SAMPLER)
    np.testing.assert_allclose(y.double().numpy(), expected, rtol=3e-2, atol=6e-2)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        gt.correlation(a, b, kernel_size=2)


def test_jax_sampler_grad_and_errors():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import gpuops.jax as gj
    a, b = (jnp.asarray(t.numpy()) for t in _inputs())
    ga, gb = jax.grad(lambda x, z: gj.spatial_correlation_sample(x, z, **SAMPLER).sum(), argnums=(0, 1))(a, b)
    ra, rb = R.spatial_correlation_sample_backward(np.ones((2, 3, 3, 6, 7)), a, b, **SAMPLER)
    np.testing.assert_allclose(ga, ra, rtol=1e-12)
    np.testing.assert_allclose(gb, rb, rtol=1e-12)
    with pytest.raises(ValueError, match="input2 must have the shape of input1"):
        gj.correlation(a, b[:, :2])
