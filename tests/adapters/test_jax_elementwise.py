"""Tier 4: the JAX adapter for gsmelu / ncrelu on CPU beyond the contract battery (test_op_battery.py: jit,
grad, vmap, eval_shape): eager calls, jit of a composition, vmap∘grad under jit, 16-bit dtypes, a Flax
module, errors."""
import numpy as np
import pytest

from gpuops import reference as R

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import gpuops.jax as gj  # noqa: E402

PARAMS = dict(slope=1.2, neg_slope=0.1, alpha=0.3, beta=0.2, delta_t=0.05)

X = jnp.asarray(np.random.default_rng(0).uniform(-0.6, 0.6, (3, 4, 5)))


def test_eager_and_jit():
    np.testing.assert_allclose(gj.gsmelu(X, **PARAMS), R.gsmelu(X, **PARAMS), rtol=1e-12)
    f = jax.jit(lambda t: gj.gsmelu(t * 2, **PARAMS) + 1)
    np.testing.assert_allclose(f(X), R.gsmelu(X * 2, **PARAMS) + 1, rtol=1e-12)
    np.testing.assert_allclose(gj.ncrelu(X), R.ncrelu(X))


def test_vmap_of_grad_under_jit():
    batch = jnp.stack([X, -X, 2 * X])
    weights = jnp.arange(8.0)[None, :, None]
    g = jax.jit(jax.vmap(jax.grad(lambda t: (gj.ncrelu(t) * weights).sum())))(batch)
    expected = [R.ncrelu_backward(np.broadcast_to(weights, (3, 8, 5)), t) for t in batch]
    np.testing.assert_allclose(g, np.stack(expected))
    g2 = jax.jit(jax.vmap(jax.grad(lambda t: gj.gsmelu(t, **PARAMS).sum())))(batch)
    np.testing.assert_allclose(g2, R.gsmelu_backward(np.ones(batch.shape), batch, **PARAMS), rtol=1e-10)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dtypes(dtype):
    x = X.astype(dtype)
    y = jax.jit(gj.gsmelu)(x)
    assert y.dtype == dtype
    np.testing.assert_allclose(np.asarray(y, np.float64), R.gsmelu(x.astype(jnp.float64)), rtol=2e-2, atol=2e-2)


def test_flax_module():
    nn = pytest.importorskip("flax.linen")

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(6, param_dtype=jnp.float64)(x)
            return gj.ncrelu(gj.gsmelu(h, **PARAMS)[:, :, None])[:, :, 0].sum(-1)

    model = Block()
    x = jnp.ones((4, 3))
    params = model.init(jax.random.PRNGKey(0), x)
    grads = jax.jit(jax.grad(lambda p: model.apply(p, x).sum()))(params)
    dense = params["params"]["Dense_0"]
    h = np.asarray(x @ dense["kernel"] + dense["bias"])
    s = R.gsmelu(h, **PARAMS)[:, :, None]
    np.testing.assert_allclose(model.apply(params, x), R.ncrelu(s)[:, :, 0].sum(-1), rtol=1e-12)
    # the chain rule by hand: d/dh of Σ ncrelu(gsmelu(h)), then through the Dense layer
    dh = R.gsmelu_backward(R.ncrelu_backward(np.ones((4, 12, 1)), s)[:, :, 0], h, **PARAMS)
    np.testing.assert_allclose(grads["params"]["Dense_0"]["kernel"], np.asarray(x).T @ dh, rtol=1e-10)


def test_errors():
    with pytest.raises(TypeError, match="floating dtype"):
        gj.gsmelu(jnp.arange(3))
    with pytest.raises(ValueError, match="alpha \\+ beta"):
        gj.gsmelu(X, alpha=0.0, beta=0.0)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        gj.ncrelu(jnp.ones(3))
