"""Tier 4: gpuops.jax.CorrBlock (RAFT's CorrBlock for JAX and Flax) on CPU: values and gradients against the
float64 reference (gpuops.reference.corr_lookup, itself checked against RAFT's torch formulation in
tests/core), both modes, under jax.jit and jax.grad, as a pytree argument of a jitted function, in RAFT's
refinement loop, inside a Flax module; 16-bit maps; bad arguments at construction."""
import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import gpuops.jax as gj  # noqa: E402
from gpuops import reference as R  # noqa: E402


def _inputs(N=2, C=3, H=8, W=10, seed=0):
    rng = np.random.default_rng(seed)
    f1, f2 = rng.standard_normal((N, C, H, W)), rng.standard_normal((N, C, H, W))
    grid = np.stack(np.meshgrid(np.arange(W), np.arange(H))).astype(np.float64)      # (x, y) planes
    coords = grid[None] + rng.uniform(-3, 3, (N, 2, H, W))
    return f1, f2, coords


def _close(a, b, tol=1e-10):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=tol, atol=tol)


@pytest.mark.parametrize("alternate", [False, True])
def test_values_and_gradients_under_jit_and_grad(alternate):
    f1, f2, coords = _inputs()
    fn = jax.jit(lambda a, b, c: gj.CorrBlock(a, b, num_levels=3, radius=2, alternate=alternate)(c))
    out = fn(f1, f2, coords)
    assert out.shape == (2, 3 * 25, 8, 10) and out.dtype == jnp.float32
    _close(out, R.corr_lookup(f1, f2, coords, radius=2, num_levels=3), 1e-5)
    # the float32 output's cotangent reaches the float64 op rounded to float32: g is taken so
    g = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    grads = jax.grad(lambda a, b, c: (gj.CorrBlock(a, b, 3, 2, alternate)(c) * g).sum(), argnums=(0, 1, 2))(
        f1, f2, coords)
    for a, b in zip(grads, R.corr_lookup_backward(g.astype(np.float64), f1, f2, coords, radius=2, num_levels=3)):
        assert a.dtype == jnp.float64
        _close(a, b)


def test_the_block_is_a_pytree_built_once_and_looked_up_in_a_loop():
    f1, f2, coords = _inputs(N=1, C=4, H=8, W=8, seed=2)
    block = gj.CorrBlock(f1, f2, num_levels=4, radius=1)
    assert len(block.pyramid) == 4 and [p.shape for p in block.pyramid] == [(1, 8, 8, 8 >> i, 8 >> i)
                                                                           for i in range(4)]
    leaves, tree = jax.tree_util.tree_flatten(block)
    assert len(leaves) == 4 and jax.tree_util.tree_unflatten(tree, leaves).radius == 1
    lookup = jax.jit(lambda b, c: b(c))
    _close(lookup(block, coords), R.corr_lookup(f1, f2, coords, radius=1, num_levels=4), 1e-6)

    def refine(a, b, c):                # RAFT's update loop: several lookups of one pyramid, one gradient
        corr = gj.CorrBlock(a, b, num_levels=2, radius=1)
        total = 0.0
        for step in range(3):
            total = total + (corr(c + 0.5 * step) ** 2).sum()
        return total

    grads = jax.jit(jax.grad(refine, argnums=(0, 1)))(f1, f2, coords)
    want = [np.zeros_like(f1), np.zeros_like(f2)]
    for step in range(3):
        c = coords + 0.5 * step
        y = R.corr_lookup(f1, f2, c, radius=1, num_levels=2).astype(np.float32).astype(np.float64)
        for w, d in zip(want, R.corr_lookup_backward(2 * y, f1, f2, c, radius=1, num_levels=2)[:2]):
            w += d
    for a, b in zip(grads, want):
        _close(a, b, 1e-5)


def test_inside_a_flax_module_and_16_bit_maps():
    nn = pytest.importorskip("flax.linen")

    class Refine(nn.Module):
        @nn.compact
        def __call__(self, f1, f2, coords):
            feats = nn.Conv(4, (1, 1), name="encode")
            # NCHW maps through an NHWC convolution, then the correlation block
            f1, f2 = (jnp.transpose(feats(jnp.transpose(f, (0, 2, 3, 1))), (0, 3, 1, 2)) for f in (f1, f2))
            return gj.CorrBlock(f1, f2, num_levels=2, radius=1)(coords)

    f1, f2, coords = _inputs(N=1, C=3, H=6, W=6, seed=3)
    model = Refine()
    params = model.init(jax.random.PRNGKey(0), f1, f2, coords)
    out = jax.jit(model.apply)(params, f1, f2, coords)
    assert out.shape == (1, 18, 6, 6)
    grads = jax.grad(lambda p: model.apply(p, f1, f2, coords).sum())(params)
    assert np.all(np.isfinite(jax.tree_util.tree_leaves(grads)[0]))
    half = gj.CorrBlock(jnp.asarray(f1, jnp.float16), jnp.asarray(f2, jnp.bfloat16), num_levels=2, radius=1)
    assert half.pyramid[0].dtype == jnp.float32
    f1h, f2b = (np.asarray(jnp.asarray(f, d).astype(jnp.float64)) for f, d in ((f1, jnp.float16), (f2, jnp.bfloat16)))
    _close(half(coords), R.corr_lookup(f1h, f2b, coords, radius=1, num_levels=2), 1e-5)


def test_bad_arguments_raise_at_construction():
    f1, f2, _ = _inputs(N=1, C=2, H=4, W=6)
    with pytest.raises(ValueError, match="num_levels=4 would pool the 4x6 feature maps to an empty level 3"):
        gj.CorrBlock(f1, f2)
    with pytest.raises(ValueError, match="radius must be >= 0"):
        gj.CorrBlock(f1, f2, num_levels=2, radius=-1)
    with pytest.raises(ValueError, match="fmap2 must have the shape of fmap1"):
        gj.CorrBlock(f1, f2[..., :4], num_levels=2)
    with pytest.raises(TypeError, match="alternate must be a bool"):
        gj.CorrBlock(f1, f2, num_levels=2, alternate=1)
    with pytest.raises(TypeError, match="fmap1 must be an array"):
        gj.CorrBlock([1.0], f2, num_levels=2)
    with pytest.raises(ValueError, match=r"coords must have shape \[N, 2, H, W\]"):
        gj.CorrBlock(f1, f2, num_levels=2)(np.zeros((1, 4, 6, 2)))
