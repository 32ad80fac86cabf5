"""Tier 4: the JAX adapter for gsmelu / ncrelu on CPU: jit, grad, vmap, vmap∘grad, a Flax module."""
import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import gpuops.jax as gj  # noqa: E402

PARAMS = dict(slope=1.2, neg_slope=0.1, alpha=0.3, beta=0.2, delta_t=0.05)


def gsmelu_ref(x, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1, delta_t=0.0):
    h = jnp.where(x <= -alpha, 0.0, jnp.where(x <= beta, (x + alpha) ** 2 / (2 * (alpha + beta)),
                                              x + (alpha - beta) / 2))
    return neg_slope * x + delta_t + (slope - neg_slope) * h


def ncrelu_ref(x):
    return jnp.concatenate([jnp.where(x >= 0, x, 0.0), jnp.where(x >= 0, 0.0, x)], axis=1)


X = jnp.asarray(np.random.default_rng(0).uniform(-0.6, 0.6, (3, 4, 5)))


def test_eager_and_jit():
    np.testing.assert_allclose(gj.gsmelu(X, **PARAMS), gsmelu_ref(X, **PARAMS), rtol=1e-12)
    f = jax.jit(lambda t: gj.gsmelu(t * 2, **PARAMS) + 1)
    np.testing.assert_allclose(f(X), gsmelu_ref(X * 2, **PARAMS) + 1, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(gj.ncrelu)(X), ncrelu_ref(X))


def test_grad_matches_reference():
    loss = lambda fn: lambda t: (fn(t) ** 2).sum()  # noqa: E731
    np.testing.assert_allclose(jax.grad(loss(lambda t: gj.gsmelu(t, **PARAMS)))(X),
                               jax.grad(loss(lambda t: gsmelu_ref(t, **PARAMS)))(X), rtol=1e-10)
    np.testing.assert_allclose(jax.grad(loss(gj.ncrelu))(X), jax.grad(loss(ncrelu_ref))(X), rtol=1e-12)
    np.testing.assert_allclose(jax.jit(jax.grad(loss(gj.ncrelu)))(X), 2 * X, rtol=1e-12)


def test_vmap_and_vmap_of_grad():
    batch = jnp.stack([X, -X, 2 * X])
    np.testing.assert_allclose(jax.vmap(lambda t: gj.gsmelu(t, **PARAMS))(batch), gsmelu_ref(batch, **PARAMS),
                               rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(gj.ncrelu)(batch), jax.vmap(ncrelu_ref)(batch))
    g = jax.vmap(jax.grad(lambda t: (gj.ncrelu(t) * jnp.arange(8.0)[None, :, None]).sum()))(batch)
    gr = jax.vmap(jax.grad(lambda t: (ncrelu_ref(t) * jnp.arange(8.0)[None, :, None]).sum()))(batch)
    np.testing.assert_allclose(g, gr)
    g2 = jax.jit(jax.vmap(jax.grad(lambda t: gj.gsmelu(t, **PARAMS).sum())))(batch)
    np.testing.assert_allclose(g2, jax.vmap(jax.grad(lambda t: gsmelu_ref(t, **PARAMS).sum()))(batch), rtol=1e-10)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dtypes(dtype):
    x = X.astype(dtype)
    y = jax.jit(gj.gsmelu)(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(np.asarray(y, np.float64), gsmelu_ref(x.astype(jnp.float64)), rtol=2e-2, atol=2e-2)


def test_flax_module():
    nn = pytest.importorskip("flax.linen")

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(6)(x)
            return gj.ncrelu(gj.gsmelu(h, **PARAMS)[:, :, None])[:, :, 0].sum(-1)

    model = Block()
    x = jnp.ones((4, 3))
    params = model.init(jax.random.PRNGKey(0), x)
    grads = jax.jit(jax.grad(lambda p: model.apply(p, x).sum()))(params)
    kernel_grad = grads["params"]["Dense_0"]["kernel"]

    class Reference(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(6)(x)
            return ncrelu_ref(gsmelu_ref(h, **PARAMS)[:, :, None])[:, :, 0].sum(-1)

    expected = jax.grad(lambda p: Reference().apply(p, x).sum())(params)
    np.testing.assert_allclose(kernel_grad, expected["params"]["Dense_0"]["kernel"], rtol=1e-10)
    np.testing.assert_allclose(model.apply(params, x), Reference().apply(params, x), rtol=1e-12)


def test_errors():
    with pytest.raises(TypeError, match="floating dtype"):
        gj.gsmelu(jnp.arange(3))
    with pytest.raises(ValueError, match="alpha \\+ beta"):
        gj.gsmelu(X, alpha=0.0, beta=0.0)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        gj.ncrelu(jnp.ones(3))
