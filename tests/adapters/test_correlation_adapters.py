"""Tier 4: torch and JAX adapters of spatial_correlation_sample / correlation on CPU."""
import numpy as np
import pytest

import gpuops

torch = pytest.importorskip("torch")
import gpuops.torch as gt  # noqa: E402

SAMPLER = dict(kernel_size=3, patch_size=3, padding=1, dilation_patch=2)
CORR = dict(pad_size=2, kernel_size=1, max_displacement=2, stride1=1, stride2=2)


def _inputs(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 3, 6, 7, generator=g, dtype=dtype), torch.randn(2, 3, 6, 7, generator=g, dtype=dtype))


def _shift_reference(a, b):
    """FlowNet correlation for k=1 from spec §8 as shift-multiply-mean (float64, differentiable)."""
    R, D, s2 = CORR["max_displacement"] // CORR["stride2"], 2 * (CORR["max_displacement"] // CORR["stride2"]) + 1, 2
    pad = CORR["pad_size"]
    md = CORR["max_displacement"]
    pa, pb = torch.nn.functional.pad(a, (pad,) * 4), torch.nn.functional.pad(b, (pad,) * 4)
    H, W = a.shape[2] + 2 * pad - 2 * md, a.shape[3] + 2 * pad - 2 * md
    outs = []
    for p in range(-R, R + 1):
        for o in range(-R, R + 1):
            y0, x0 = md + p * s2, md + o * s2
            outs.append((pa[:, :, md:md + H, md:md + W] * pb[:, :, y0:y0 + H, x0:x0 + W]).mean(1))
    assert len(outs) == D * D
    return torch.stack(outs, 1)


def test_torch_values_gradients_opcheck_compile():
    a, b = (t.requires_grad_() for t in _inputs())
    y = gt.correlation(a, b, **CORR)
    ref = _shift_reference(a, b)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, (a, b), g), torch.autograd.grad(ref, (a, b), g))
    assert torch.autograd.gradcheck(lambda x, z: gt.spatial_correlation_sample(x, z, **SAMPLER), (a, b))
    a32, b32 = (t.detach().float().requires_grad_() for t in (a, b))
    torch.library.opcheck(torch.ops.gpuops.spatial_correlation_sample.default,
                          (a32, b32, [3, 3], [3, 3], [1, 1], [1, 1], [1, 1], [2, 2]))
    torch.library.opcheck(torch.ops.gpuops.correlation.default, (a32, b32, 2, 1, 2, 1, 2))
    torch._dynamo.reset()
    f = torch.compile(lambda x, z: gt.Correlation(**CORR)(x, z).square().sum(), fullgraph=True)
    torch.testing.assert_close(f(a, b), ref.square().sum())


def test_torch_modules_and_16bit():
    a, b = _inputs(torch.bfloat16)
    m = gt.SpatialCorrelationSampler(**SAMPLER)
    assert "patch_size=(3, 3)" in repr(m)
    y = m(a, b)
    assert y.dtype == torch.bfloat16 and y.shape == (2, 3, 3, 6, 7)
    expected = gpuops.spatial_correlation_sample(a.double().numpy(), b.double().numpy(), **SAMPLER)
    np.testing.assert_allclose(y.double().numpy(), expected, rtol=3e-2, atol=6e-2)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        gt.correlation(a, b, kernel_size=2)


def test_jax_jit_grad_vmap():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import gpuops.jax as gj
    a, b = (jnp.asarray(t.numpy()) for t in _inputs())
    y = jax.jit(lambda x, z: gj.correlation(x, z, **CORR))(a, b)
    np.testing.assert_allclose(y, _shift_reference(*_inputs()).numpy(), rtol=1e-12)
    ga, gb = jax.grad(lambda x, z: gj.spatial_correlation_sample(x, z, **SAMPLER).sum(), argnums=(0, 1))(a, b)
    ra, rb = gpuops.spatial_correlation_sample_backward(np.ones((2, 3, 3, 6, 7)), np.asarray(a), np.asarray(b),
                                                        **SAMPLER)
    np.testing.assert_allclose(ga, ra, rtol=1e-12)
    np.testing.assert_allclose(gb, rb, rtol=1e-12)
    batch_a, batch_b = jnp.stack([a, -a]), jnp.stack([b, 2 * b])
    v = jax.vmap(lambda x, z: gj.correlation(x, z, **CORR))(batch_a, batch_b)
    np.testing.assert_allclose(v[1], gpuops.correlation(np.asarray(-a), np.asarray(2 * b), **CORR), rtol=1e-12)
    with pytest.raises(ValueError, match="input2 must have the shape of input1"):
        gj.correlation(a, b[:, :2])
