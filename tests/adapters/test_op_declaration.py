"""The op declaration's less common shapes, on two small ops declared here with CPU-only core functions:
an op with several outputs (``multi_output``) and an op taking a sequence of arrays (``"xs*"``), through
`gpuops.torch.register` and `gpuops.jax.register` (what gpuops does at import for its own ops)."""
import numpy as np
import pytest

from gpuops import _core, _ops
from gpuops._ops import OpSpec, Param

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import gpuops.jax as gj  # noqa: E402
import gpuops.torch as gt  # noqa: E402
from gpuops.adapters import torch as torch_adapter  # noqa: E402


def scaled_pair(x, *, factor=2.0, out=None, stream=None):
    """(x·f, x·f²): two outputs."""
    x = _core.floating("x", x)
    out_a, out_b = _core.out_tuple(out, ("first", "second"))
    first, second = _core.output(out_a, x, x.shape), _core.output(out_b, x, x.shape)
    with _core.cpu_views([x], [first, second]) as ((xv,), (a, b)):
        a[...] = xv * factor
        b[...] = xv * factor ** 2
    return first.obj, second.obj


def scaled_pair_backward(grad_out, x, *, factor=2.0, out=None, stream=None):
    g1, g2 = (_core.floating(f"grad_out[{i}]", g) for i, g in enumerate(grad_out))
    x = _core.floating("x", x)
    grad_x = _core.output(out, x, x.shape)
    with _core.cpu_views([g1, g2], [grad_x]) as ((a, b), (r,)):
        r[...] = a * factor + b * factor ** 2
    return grad_x.obj


def ranked_sum(xs, w, *, out=None, stream=None):
    """Σ_i (i + 1)·xs[i]·w: a sequence argument."""
    w = _core.floating("w", w)
    xs = [_core.floating(f"xs[{i}]", x) for i, x in enumerate(xs)]
    _ranked_shapes(xs, w)                         # the core runs the checks its declaration states
    res = _core.output(out, w, w.shape)
    with _core.cpu_views([*xs, w], [res]) as (views, (r,)):
        r[...] = sum((i + 1) * v for i, v in enumerate(views[:-1])) * views[-1]
    return res.obj


def ranked_sum_backward(grad_out, xs, w, *, out=None, stream=None):
    g, w = _core.floating("grad_out", grad_out), _core.floating("w", w)
    xs = [_core.floating(f"xs[{i}]", x) for i, x in enumerate(xs)]
    out_xs, out_w = _core.out_tuple(out, ("grad_xs", "grad_w"))
    out_xs = out_xs or (None,) * len(xs)
    grad_xs = [_core.output(o, w, w.shape) for o in out_xs]
    grad_w = _core.output(out_w, w, w.shape)
    with _core.cpu_views([g, *xs, w], [*grad_xs, grad_w]) as (ins, outs):
        for i, o in enumerate(outs[:-1]):
            o[...] = (i + 1) * ins[0] * ins[-1]
        outs[-1][...] = sum((i + 1) * v for i, v in enumerate(ins[1:-1])) * ins[0]
    return tuple(a.obj for a in grad_xs), grad_w.obj


SCALED_PAIR = OpSpec(name="test_scaled_pair", forward=scaled_pair, backward=scaled_pair_backward, arrays=("x",),
                     params=(Param("factor", "float", 2.0),), multi_output=True,
                     shapes=lambda x, factor: [_core.floating("x", x).shape] * 2)


def _ranked_shapes(xs, w):
    w = _core.floating("w", w)
    for x in xs:
        _core.same_shape(w, _core.floating(x.name, x))
    return w.shape


RANKED_SUM = OpSpec(name="test_ranked_sum", forward=ranked_sum, backward=ranked_sum_backward, arrays=("xs*", "w"),
                    shapes=_ranked_shapes)

torch_pair, jax_pair = gt.register(SCALED_PAIR), gj.register(SCALED_PAIR)
torch_ranked, jax_ranked = gt.register(RANKED_SUM), gj.register(RANKED_SUM)


def _t(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_declare_refuses_what_the_adapters_cannot_batch():
    with pytest.raises(ValueError, match="vmap='sequential'"):
        _ops.declare(OpSpec(name="bad", forward=scaled_pair, backward=scaled_pair_backward, arrays=("x",),
                            multi_output=True, vmap="fold", shapes=SCALED_PAIR.shapes))


def test_torch_several_outputs():
    x = _t(3, 4).requires_grad_()
    a, b = torch_pair(x, factor=3.0)
    torch.testing.assert_close(a, 3 * x)
    torch.testing.assert_close(b, 9 * x)
    assert torch.autograd.gradcheck(lambda t: torch_pair(t, factor=1.5), (x,))
    (g,) = torch.autograd.grad(b.sum(), x)               # the unused first output gets a zero gradient
    torch.testing.assert_close(g, torch.full_like(x, 9.0))
    torch.library.opcheck(torch.ops.gpuops.test_scaled_pair.default, (x, 2.0))
    compiled = torch.compile(lambda t: sum(o.sum() for o in torch_pair(t)), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), (2 * x + 4 * x).sum())


def test_torch_sequence_argument():
    xs = [_t(2, 3, seed=i).requires_grad_() for i in range(3)]
    w = _t(2, 3, seed=9).requires_grad_()
    y = torch_ranked(xs, w)
    torch.testing.assert_close(y, (xs[0] + 2 * xs[1] + 3 * xs[2]) * w)
    assert torch.autograd.gradcheck(lambda a, b, c, v: torch_ranked([a, b, c], v), (*xs, w))
    torch.library.opcheck(torch.ops.gpuops.test_ranked_sum.default, ([x.detach() for x in xs], w.detach()))
    grads = torch_adapter.test_ranked_sum_backward(torch.ones(2, 3, dtype=torch.float64), [x.detach() for x in xs], w.detach())
    assert isinstance(grads[0], tuple) and len(grads[0]) == 3
    with pytest.raises(ValueError, match=r"xs\[1\] must have the shape of w"):
        torch_ranked([xs[0], _t(3, 3)], w)


def test_jax_several_outputs_and_sequences():
    x = jnp.asarray(np.linspace(-1, 1, 6).reshape(2, 3))
    a, b = jax.jit(lambda t: jax_pair(t, factor=3.0))(x)
    np.testing.assert_allclose(b, 9 * np.asarray(x))
    g = jax.grad(lambda t: jax_pair(t, factor=3.0)[1].sum())(x)          # one output unused
    np.testing.assert_allclose(g, np.full((2, 3), 9.0))
    xs = tuple(jnp.asarray(np.random.default_rng(i).uniform(-1, 1, (2, 3))) for i in range(3))
    w = jnp.asarray(np.random.default_rng(7).uniform(-1, 1, (2, 3)))
    y = jax.jit(jax_ranked)(xs, w)
    np.testing.assert_allclose(y, (xs[0] + 2 * xs[1] + 3 * xs[2]) * w)
    gxs, gw = jax.grad(lambda s, v: jax_ranked(s, v).sum(), argnums=(0, 1))(xs, w)
    assert isinstance(gxs, tuple) and len(gxs) == 3
    np.testing.assert_allclose(gxs[2], 3 * np.asarray(w))
    np.testing.assert_allclose(gw, np.asarray(xs[0] + 2 * xs[1] + 3 * xs[2]))
    batched = jax.vmap(jax_ranked)(tuple(jnp.stack([e, -e]) for e in xs), jnp.stack([w, w]))
    np.testing.assert_allclose(batched[1], -np.asarray(y))
    with pytest.raises(TypeError, match="xs must be a sequence of arrays"):
        jax_ranked(w, w)


def test_torch_eager_autograd_path_records_without_the_dispatcher():
    """Eager calls with inputs requiring grad take the declaration's torch.autograd.Function (no dispatcher
    trip); they give the registered op's values and gradients, and double backward still raises."""
    import torch
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    y = gt.conv2d_depthwise(x, w, padding=1)
    assert type(y.grad_fn).__name__ == "conv2d_depthwise_eagerBackward"
    ref = torch.ops.gpuops.conv2d_depthwise.default(x, w, None, [1, 1], [1, 1], [1, 1])
    assert "eager" not in type(ref.grad_fn).__name__
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(ref, (x, w), g)):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda a, b: gt.conv2d_depthwise(a, b, padding=1), (x, w))
    gx, = torch.autograd.grad(gt.conv2d_depthwise(x, w, padding=1).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        gx.sum().backward()
    with torch.no_grad():                               # nothing to record: the core directly
        assert gt.conv2d_depthwise(x, w, padding=1).grad_fn is None
