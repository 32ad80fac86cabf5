"""The contract battery: every check below runs for every declared op (`gpuops._ops.REGISTRY`), on the
declaration's own small example, so a new op is tested on every layer by declaring it.

Values are compared with `gpuops.reference` (plain numpy, float64); gradients are checked in float64.
"""
import numpy as np
import pytest

import gpuops
from gpuops import _ops

from tests.helpers import FLOAT_DTYPES, assert_close, rounded, to_f64, to_kind

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import gpuops.jax as gj  # noqa: E402
import gpuops.torch as gt  # noqa: E402

SPECS = list(_ops.ops().values())
WITH_BACKWARD = [s for s in SPECS if s.backward is not None]
ADJOINT = [s for s in SPECS if s.adjoint is not None]


def ids(specs):
    return [s.name for s in specs]


def example(spec, batch=2, seed=0):
    arrays, params = spec.example(np.random.default_rng(seed), batch)
    return list(arrays), params


def _tuple(y):
    return tuple(y) if isinstance(y, tuple) else (y,)


def _grad_out(spec, arrays, params, seed=1):
    shape = spec.output_shape([gpuops._core.wrap(n, a) for n, a in zip(spec.array_names, arrays)], params)
    return np.random.default_rng(seed).uniform(-1, 1, shape)


def _torch_params(params):
    return [list(v) if isinstance(v, tuple) else v for v in params.values()]


# ---------------------------------------------------------------------------------------------
# the core (numpy)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_core_matches_reference(spec):
    arrays, params = example(spec)
    assert_close(spec.forward(*arrays, **params), spec.reference(*arrays, **params), "float64")
    assert getattr(gpuops, spec.name) is spec.forward
    if spec.backward is not None:
        g = _grad_out(spec, arrays, params)
        got, expected = _tuple(spec.backward(g, *arrays, **params)), _tuple(spec.reference_backward(g, *arrays, **params))
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert_close(a, b, "float64")


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_every_dtype_torch_cpu(spec, dtype):
    arrays, params = example(spec)
    y = getattr(gt, spec.name)(*[to_kind(a, "torch", dtype) for a in arrays], **params)
    assert str(y.dtype) == f"torch.{dtype}"
    expected = spec.reference(*[rounded(a, dtype) for a in arrays], **params)
    assert_close(y, expected, dtype, scale=max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_empty_input(spec):
    arrays, params = example(spec, batch=0)
    y = spec.forward(*arrays, **params)
    assert y.size == 0 and y.shape == spec.output_shape([gpuops._core.wrap("a", a) for a in arrays], params)
    if spec.backward is not None:
        grads = _tuple(spec.backward(np.zeros(y.shape), *arrays, **params))
        for g, a in zip(grads, arrays):
            assert g.shape == a.shape and not np.any(g)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_out_argument(spec):
    arrays, params = example(spec)
    expected = spec.forward(*arrays, **params)
    out = np.full_like(expected, np.nan)
    assert spec.forward(*arrays, **params, out=out) is out
    np.testing.assert_array_equal(out, expected)
    if spec.backward is not None:
        g = _grad_out(spec, arrays, params)
        expected = _tuple(spec.backward(g, *arrays, **params))
        outs = tuple(np.full_like(e, np.nan) for e in expected)
        got = _tuple(spec.backward(g, *arrays, **params, out=outs if len(outs) > 1 else outs[0]))
        for o, r, e in zip(outs, got, expected):
            assert r is o
            np.testing.assert_array_equal(o, e)


def _sharing(array, shape):
    """``array``'s values in a buffer, and an array of ``shape`` over the start of the same buffer."""
    buffer = np.zeros(max(array.size, int(np.prod(shape))) + 1)
    view = buffer[:array.size].reshape(array.shape)
    view[...] = array
    return view, buffer[1:1 + int(np.prod(shape))].reshape(shape)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_out_overlapping_an_input_raises(spec):
    arrays, params = example(spec)
    shape = spec.forward(*arrays, **params).shape
    for i, name in enumerate(spec.array_names[:len(arrays)]):
        shared, out = _sharing(arrays[i], shape)
        with pytest.raises(ValueError, match=f"out must not share memory with {name}"):
            spec.forward(*arrays[:i], shared, *arrays[i + 1:], **params, out=out)
    if spec.backward is not None:
        g = _grad_out(spec, arrays, params)
        shared, out = _sharing(g, arrays[0].shape)
        outs = (out,) + (None,) * (len(spec.arrays) - 1)
        with pytest.raises(ValueError, match="out must not share memory with grad_out"):
            spec.backward(shared, *arrays, **params, out=outs if len(outs) > 1 else out)


def _non_contiguous(t):
    if t.ndim >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return torch.stack([t, t], -1)[..., 0]


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_non_contiguous_input(spec):
    arrays, params = example(spec)
    tensors = [torch.from_numpy(a) for a in arrays]
    strided = [_non_contiguous(t) for t in tensors]
    assert all(not s.is_contiguous() for s in strided if s.ndim >= 1 and s.numel() > 1)
    fn = getattr(gt, spec.name)
    torch.testing.assert_close(fn(*strided, **params), fn(*tensors, **params), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# the torch adapter


def _requiring_grad(arrays):
    return [torch.from_numpy(a.copy()).requires_grad_() for a in arrays]


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_torch_opcheck(spec):
    arrays, params = example(spec)
    tensors = _requiring_grad(arrays)
    forward = getattr(torch.ops.gpuops, spec.name).default
    torch.library.opcheck(forward, (*tensors, *_torch_params(params)))
    if spec.backward is not None:
        g = torch.from_numpy(_grad_out(spec, arrays, params))
        backward = getattr(torch.ops.gpuops, f"{spec.name}_backward").default
        torch.library.opcheck(backward, (g, *[t.detach() for t in tensors], *_torch_params(params)))


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_torch_gradcheck(spec):
    arrays, params = example(spec)
    fn = getattr(gt, spec.name)
    assert torch.autograd.gradcheck(lambda *t: fn(*t, **params), _requiring_grad(arrays))


@pytest.mark.parametrize("spec", WITH_BACKWARD, ids=ids(WITH_BACKWARD))
def test_torch_double_backward_raises(spec):
    """A gradient of a gradient through an op without a derivative of its backward must raise, not be 0."""
    arrays, params = example(spec)
    tensors = _requiring_grad(arrays)
    y = getattr(gt, spec.name)(*tensors, **params)
    grads = torch.autograd.grad(y.square().sum(), tensors, create_graph=True)
    penalty = sum(g.square().sum() for g in grads)
    with pytest.raises(RuntimeError, match="double backward"):
        penalty.backward()


@pytest.mark.parametrize("spec", ADJOINT, ids=ids(ADJOINT))
def test_torch_gradgradcheck_linear_ops(spec):
    arrays, params = example(spec)
    fn = getattr(gt, spec.name)
    assert torch.autograd.gradgradcheck(lambda *t: fn(*t, **params), _requiring_grad(arrays))


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_torch_compile_fullgraph(spec):
    arrays, params = example(spec)
    fn = getattr(gt, spec.name)
    torch._dynamo.reset()
    compiled = torch.compile(lambda *t: fn(*t, **params).square().sum(), fullgraph=True, backend="aot_eager")
    tensors, eager = _requiring_grad(arrays), _requiring_grad(arrays)
    compiled(*tensors).backward()
    fn(*eager, **params).square().sum().backward()
    for a, b in zip(tensors, eager):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
@pytest.mark.parametrize("grad", [False, True])
def test_torch_jit_trace_records_the_op(spec, grad):
    arrays, params = example(spec)
    fn = getattr(gt, spec.name)
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(lambda *t: fn(*t, **params), tuple(torch.from_numpy(a) for a in arrays))
    assert f"gpuops::{spec.name}" in str(traced.graph)
    other, _ = example(spec, seed=7)
    other = [torch.from_numpy(a) for a in other]
    torch.testing.assert_close(traced(*other), fn(*other, **params))


# ---------------------------------------------------------------------------------------------
# the JAX adapter


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_jax_jit_grad_vmap(spec):
    arrays, params = example(spec)
    fn = getattr(gj, spec.name)
    inputs = [jnp.asarray(a) for a in arrays]
    y = jax.jit(lambda *t: fn(*t, **params))(*inputs)
    assert_close(y, spec.reference(*arrays, **params), "float64")
    g = _grad_out(spec, arrays, params)
    grads = jax.grad(lambda *t: (fn(*t, **params) * g).sum(), argnums=tuple(range(len(inputs))))(*inputs)
    if spec.backward is not None:
        expected = _tuple(spec.reference_backward(g, *arrays, **params))
    else:
        t = _requiring_grad(arrays)
        expected = torch.autograd.grad(getattr(gt, spec.name)(*t, **params), t, torch.from_numpy(g))
    for a, b in zip(grads, expected):
        assert_close(a, to_f64(b), "float64")
    other, _ = example(spec, seed=3)
    batched = [jnp.stack([jnp.asarray(a), jnp.asarray(b)]) for a, b in zip(arrays, other)]
    v = jax.vmap(lambda *t: fn(*t, **params))(*batched)
    assert_close(v[1], spec.reference(*other, **params), "float64")


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_jax_eval_shape(spec):
    arrays, params = example(spec)
    shapes = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays]
    out = jax.eval_shape(lambda *t: getattr(gj, spec.name)(*t, **params), *shapes)
    assert out.shape == spec.forward(*arrays, **params).shape


# ---------------------------------------------------------------------------------------------
# bad input: one error, worded once, from numpy, torch and JAX (under jit, at trace time)


def _errors(spec, arrays, params):
    """The exception each entry point raises for these arguments."""
    found = []
    for call in (lambda: spec.forward(*arrays, **params),
                 lambda: getattr(gt, spec.name)(*[torch.from_numpy(a) for a in arrays], **params),
                 lambda: jax.jit(lambda *t: getattr(gj, spec.name)(*t, **params))(*[jnp.asarray(a) for a in arrays])):
        try:
            call()
            found.append(None)
        except (TypeError, ValueError) as e:
            found.append((type(e), str(e)))
    return found


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_bad_dtype_same_error_everywhere(spec):
    arrays, params = example(spec)
    found = _errors(spec, [arrays[0].astype(np.int32)] + arrays[1:], params)
    assert found[0][0] is TypeError and spec.array_names[0] in found[0][1]
    assert found[1] == found[0] and found[2] == found[0]
    if len(arrays) > 1:
        found = _errors(spec, arrays[:1] + [a.astype(np.float32) for a in arrays[1:]], params)
        assert found[0][0] is TypeError and found[1] == found[0] and found[2] == found[0]


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_bad_rank_same_error_everywhere(spec):
    arrays, params = example(spec)
    found = _errors(spec, [arrays[0].reshape(-1)[:1]] + arrays[1:], params)
    assert found[0] is None and spec.vmap == "elementwise" or found[0][0] is ValueError
    assert found[1] == found[0] and found[2] == found[0]


def test_huge_parameters_raise_at_trace_time_in_jax():
    """An output no allocator can hold must be refused before XLA tries (it aborts the process)."""
    x = jnp.ones((1, 1, 4, 4))
    with pytest.raises(ValueError, match="output would have shape"):
        jax.eval_shape(lambda t: gj.spatial_correlation_sample(t, t, patch_size=10**9), x)
    with pytest.raises(ValueError, match="output would have shape"):
        jax.jit(lambda t: gj.conv2d_depthwise(t, jnp.ones((1, 1, 1, 1)), padding=10**9))(x)


def test_non_arrays_raise_type_errors():
    with pytest.raises(TypeError, match="x must be an array"):
        gj.gsmelu([1.0, 2.0])
    with pytest.raises(TypeError, match="missing required argument 'weight'"):
        gj.conv2d_depthwise(jnp.ones((1, 1, 3, 3)))
    with pytest.raises(TypeError, match="stride must be an int"):
        gj.conv2d_depthwise(jnp.ones((1, 1, 3, 3)), jnp.ones((1, 1, 1, 1)), stride=None)
