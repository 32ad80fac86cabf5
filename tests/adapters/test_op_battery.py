"""The contract battery: every check below runs for every declared op (`gpuops._ops.REGISTRY`), on the
declaration's own small example, so a new op is tested on every layer by declaring it.

Values are compared with `gpuops.reference` (plain numpy, float64); gradients are checked in float64.
Sequence arguments (``"xs*"``, a tuple of arrays) and several outputs (``multi_output``) go through
`_map` (an array or a nested tuple of them, structure kept) and `_leaves` (flattened).
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


def _map(fn, a):
    """``fn`` of every array of an argument or result (a sequence of arrays stays a tuple)."""
    return tuple(_map(fn, e) for e in a) if isinstance(a, (tuple, list)) else fn(a)


def _leaves(a):
    """The arrays of an argument or result, sequences flattened."""
    return [x for e in a for x in _leaves(e)] if isinstance(a, (tuple, list)) else [a]


def _regroup(flat, like):
    """``like``'s structure (a list of arguments, each an array or a tuple of them) over the arrays ``flat``."""
    flat, out = list(flat), []
    for a in like:
        n = len(a) if isinstance(a, (tuple, list)) else None
        out.append(flat.pop(0) if n is None else tuple(flat.pop(0) for _ in range(n)))
    return out


def _close_all(actual, expected, dtype, scale=1.0):
    actual, expected = _leaves(actual), _leaves(expected)
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        assert_close(a, b, dtype, scale)


def _metas(spec, arrays):
    return [_map(lambda a, n=n: gpuops._core.wrap(n, a), a) for n, a in zip(spec.array_names, arrays)]


def _grad_out(spec, arrays, params, seed=1):
    shape = spec.output_shape(_metas(spec, arrays), params)
    rng = np.random.default_rng(seed)
    return tuple(rng.uniform(-1, 1, s) for s in shape) if spec.multi_output else rng.uniform(-1, 1, shape)


def _torch(a):
    """torch tensors of a numpy argument (a list for a sequence argument, as the Tensor[] schema takes)."""
    t = _map(torch.from_numpy, a)
    return list(t) if isinstance(t, tuple) else t


def _loss(y):
    return sum(o.square().sum() for o in _leaves(y))


def _torch_params(params):
    return [list(v) if isinstance(v, tuple) else v for v in params.values()]


# ---------------------------------------------------------------------------------------------
# the core (numpy)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_core_matches_reference(spec):
    arrays, params = example(spec)
    _close_all(spec.forward(*arrays, **params), spec.reference(*arrays, **params), "float64")
    assert getattr(gpuops, spec.name) is spec.forward
    if spec.backward is not None:
        g = _grad_out(spec, arrays, params)
        got, expected = _tuple(spec.backward(g, *arrays, **params)), _tuple(spec.reference_backward(g, *arrays, **params))
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            _close_all(a, b, "float64")


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_every_dtype_torch_cpu(spec, dtype):
    arrays, params = example(spec)
    y = getattr(gt, spec.name)(*[_map(lambda a: to_kind(a, "torch", dtype), a) for a in arrays], **params)
    assert all(str(o.dtype) == f"torch.{dtype}" for o in _leaves(y))
    expected = spec.reference(*[_map(lambda a: rounded(a, dtype), a) for a in arrays], **params)
    scale = max(1.0, max(float(np.abs(e).max()) for e in _leaves(expected)))
    _close_all(y, expected, dtype, scale=scale)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_empty_input(spec):
    arrays, params = example(spec, batch=0)
    y = spec.forward(*arrays, **params)
    shape = spec.output_shape(_metas(spec, arrays), params)
    assert [o.shape for o in _leaves(y)] == (shape if spec.multi_output else [shape])
    assert all(o.size == 0 for o in _leaves(y))
    if spec.backward is not None:
        grads = _tuple(spec.backward(_map(lambda o: np.zeros(o.shape), y), *arrays, **params))
        for g, a in zip(grads, arrays):
            for gl, al in zip(_leaves(g), _leaves(a), strict=True):
                assert gl.shape == al.shape and not np.any(gl)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_out_argument(spec):
    arrays, params = example(spec)
    expected = spec.forward(*arrays, **params)
    out = _map(lambda e: np.full_like(e, np.nan), expected)
    got = spec.forward(*arrays, **params, out=out)
    assert got is out if not spec.multi_output else all(r is o for r, o in zip(got, out, strict=True))
    for o, e in zip(_leaves(out), _leaves(expected)):
        np.testing.assert_array_equal(o, e)
    if spec.backward is not None:
        g = _grad_out(spec, arrays, params)
        expected = _tuple(spec.backward(g, *arrays, **params))
        outs = tuple(_map(lambda e: np.full_like(e, np.nan), e) for e in expected)
        got = _tuple(spec.backward(g, *arrays, **params, out=outs if len(outs) > 1 else outs[0]))
        for o, r, e in zip(_leaves(outs), _leaves(got), _leaves(expected), strict=True):
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
    y = spec.forward(*arrays, **params)
    shape = _leaves(y)[0].shape

    def first(value, like):             # ``value`` in place of the first array of an argument shaped ``like``
        return (value, *like[1:]) if isinstance(like, tuple) else value

    def outs_for(out, results):         # ``out`` as the first output, the others left to the op
        return first(out, _map(lambda _: None, results)) if isinstance(results, tuple) else out

    for i, name in enumerate(spec.array_names[:len(arrays)]):
        shared, out = _sharing(_leaves(arrays[i])[0], shape)
        with pytest.raises(ValueError, match=f"out must not share memory with {name}"):
            spec.forward(*arrays[:i], first(shared, arrays[i]), *arrays[i + 1:], **params, out=outs_for(out, y))
    if spec.backward is not None:
        g = _grad_out(spec, arrays, params)
        shared, out = _sharing(_leaves(g)[0], _leaves(arrays[0])[0].shape)
        outs = (first(out, _map(lambda _: None, arrays[0])),) + (None,) * (len(spec.arrays) - 1)
        with pytest.raises(ValueError, match="out must not share memory with grad_out"):
            spec.backward(first(shared, g), *arrays, **params, out=outs if len(outs) > 1 else outs[0])


def _non_contiguous(t):
    if t.ndim >= 2 and t.shape[-1] > 1 and t.shape[-2] > 1:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return torch.stack([t, t], -1)[..., 0]


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_non_contiguous_input(spec):
    arrays, params = example(spec)
    tensors = [_torch(a) for a in arrays]
    strided = [_map(_non_contiguous, t) for t in tensors]
    assert all(not s.is_contiguous() for s in _leaves(strided) if s.ndim >= 1 and s.numel() > 1)
    fn = getattr(gt, spec.name)
    torch.testing.assert_close(fn(*strided, **params), fn(*tensors, **params), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# the torch adapter


def _requiring_grad(arrays):
    """Flat leaf tensors requiring grad, one per array (sequence arguments flattened: gradcheck takes flat
    inputs; `_regroup` rebuilds the arguments)."""
    return [torch.from_numpy(a.copy()).requires_grad_() for a in _leaves(arrays)]


def _calling(fn, arrays, params):
    """``fn`` of flat tensors (`_requiring_grad`'s order), the arguments regrouped like ``arrays``."""
    return lambda *t: fn(*[list(a) if isinstance(a, tuple) else a for a in _regroup(t, arrays)], **params)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_torch_opcheck(spec):
    arrays, params = example(spec)
    tensors = _regroup(_requiring_grad(arrays), arrays)
    tensors = [list(t) if isinstance(t, tuple) else t for t in tensors]
    forward = getattr(torch.ops.gpuops, spec.name).default
    torch.library.opcheck(forward, (*tensors, *_torch_params(params)))
    if spec.backward is not None:
        g = _torch(_grad_out(spec, arrays, params))
        backward = getattr(torch.ops.gpuops, f"{spec.name}_backward").default
        detached = [_map(lambda t: t.detach(), t) for t in tensors]
        detached = [list(t) if isinstance(t, tuple) else t for t in detached]
        torch.library.opcheck(backward, (g, *detached, *_torch_params(params)))


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_torch_gradcheck(spec):
    arrays, params = example(spec)
    fn = getattr(gt, spec.name)
    assert torch.autograd.gradcheck(_calling(fn, arrays, params), _requiring_grad(arrays))


MULTI_ARRAY = [s for s in SPECS if len(s.arrays) > 1 and not any(s.sequence)]


@pytest.mark.parametrize("spec", MULTI_ARRAY, ids=ids(MULTI_ARRAY))
def test_torch_arrays_by_keyword_are_differentiated(spec):
    """Arrays after the first given by keyword (``bias=b``) give the positional call's values and gradients:
    a keyword tensor that requires grad must not slip past autograd."""
    arrays, params = example(spec)
    fn = getattr(gt, spec.name)
    given = [(name, a) for name, a in zip(spec.array_names, arrays) if a is not None]
    grads = []
    for by_keyword in (False, True):
        tensors = [torch.from_numpy(a.copy()).requires_grad_() for _, a in given]
        head = tensors[:1]
        named = {name: t for (name, _), t in zip(given[1:], tensors[1:])}
        y = fn(*head, **named, **params) if by_keyword else fn(*tensors, **params)
        assert y.requires_grad if not spec.multi_output else all(o.requires_grad for o in y)
        grads.append((_leaves(y), torch.autograd.grad(_loss(y), tensors)))
    (ya, ga), (yb, gb) = grads
    for a, b in zip(ya + list(ga), yb + list(gb)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_torch_missing_array_before_a_keyword_array_is_named():
    x, b = torch.zeros(1, 2, 3, 3), torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match="missing required argument 'weight'"):
        gt.conv2d_depthwise(x, bias=b)


@pytest.mark.parametrize("spec", WITH_BACKWARD, ids=ids(WITH_BACKWARD))
def test_torch_double_backward_raises(spec):
    """A gradient of a gradient through an op without a derivative of its backward must raise, not be 0."""
    arrays, params = example(spec)
    tensors = _requiring_grad(arrays)
    y = _calling(getattr(gt, spec.name), arrays, params)(*tensors)
    grads = torch.autograd.grad(_loss(y), tensors, create_graph=True)
    penalty = sum(g.square().sum() for g in grads)
    with pytest.raises(RuntimeError, match="double backward"):
        penalty.backward()


@pytest.mark.parametrize("spec", ADJOINT, ids=ids(ADJOINT))
def test_torch_gradgradcheck_linear_ops(spec):
    arrays, params = example(spec)
    fn = getattr(gt, spec.name)
    assert torch.autograd.gradgradcheck(_calling(fn, arrays, params), _requiring_grad(arrays))


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_torch_compile_fullgraph(spec):
    arrays, params = example(spec)
    fn = _calling(getattr(gt, spec.name), arrays, params)
    torch._dynamo.reset()
    compiled = torch.compile(lambda *t: _loss(fn(*t)), fullgraph=True, backend="aot_eager")
    tensors, eager = _requiring_grad(arrays), _requiring_grad(arrays)
    compiled(*tensors).backward()
    _loss(fn(*eager)).backward()
    for a, b in zip(tensors, eager):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
@pytest.mark.parametrize("grad", [False, True])
def test_torch_jit_trace_records_the_op(spec, grad):
    arrays, params = example(spec)
    fn = _calling(getattr(gt, spec.name), arrays, params)
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(fn, tuple(torch.from_numpy(a) for a in _leaves(arrays)))
    assert f"gpuops::{spec.name}" in str(traced.graph)
    other, _ = example(spec, seed=7)
    other = [torch.from_numpy(a) for a in _leaves(other)]
    torch.testing.assert_close(traced(*other), fn(*other))


# ---------------------------------------------------------------------------------------------
# the JAX adapter


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_jax_jit_grad_vmap(spec):
    arrays, params = example(spec)
    fn = getattr(gj, spec.name)
    inputs = [_map(jnp.asarray, a) for a in arrays]
    y = jax.jit(lambda *t: fn(*t, **params))(*inputs)
    _close_all(y, spec.reference(*arrays, **params), "float64")
    g = _grad_out(spec, arrays, params)

    def loss(*t):
        return sum((o * w).sum() for o, w in zip(_leaves(fn(*t, **params)), _leaves(g), strict=True))
    grads = jax.grad(loss, argnums=tuple(range(len(inputs))))(*inputs)
    if spec.backward is not None:
        expected = _tuple(spec.reference_backward(g, *arrays, **params))
    else:
        t = _requiring_grad(arrays)
        expected = torch.autograd.grad(_calling(getattr(gt, spec.name), arrays, params)(*t), t, torch.from_numpy(g))
    for a, b in zip(grads, expected):
        _close_all(a, _map(to_f64, b), "float64")
    other, _ = example(spec, seed=3)
    batched = [_stacked(a, b) for a, b in zip(arrays, other)]
    v = jax.vmap(lambda *t: fn(*t, **params))(*batched)
    _close_all(_map(lambda o: o[1], v), spec.reference(*other, **params), "float64")


def _stacked(a, b):
    """jnp.stack([a, b]) of two arguments (element by element for two sequences)."""
    return tuple(_stacked(x, y) for x, y in zip(a, b)) if isinstance(a, tuple) else jnp.stack([a, b])


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_jax_eval_shape(spec):
    arrays, params = example(spec)
    shapes = [_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), a) for a in arrays]
    out = jax.eval_shape(lambda *t: getattr(gj, spec.name)(*t, **params), *shapes)
    assert [o.shape for o in _leaves(out)] == [y.shape for y in _leaves(spec.forward(*arrays, **params))]


# ---------------------------------------------------------------------------------------------
# bad input: one error, worded once, from numpy, torch and JAX (under jit, at trace time)


def _errors(spec, arrays, params):
    """The exception each entry point raises for these arguments."""
    found = []
    for call in (lambda: spec.forward(*arrays, **params),
                 lambda: getattr(gt, spec.name)(*[_torch(a) for a in arrays], **params),
                 lambda: jax.jit(lambda *t: getattr(gj, spec.name)(*t, **params))(*[_map(jnp.asarray, a)
                                                                                    for a in arrays])):
        try:
            call()
            found.append(None)
        except (TypeError, ValueError) as e:
            found.append((type(e), str(e)))
    return found


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_bad_dtype_same_error_everywhere(spec):
    arrays, params = example(spec)
    found = _errors(spec, [_map(lambda a: a.astype(np.int32), arrays[0])] + arrays[1:], params)
    assert found[0][0] is TypeError and spec.array_names[0] in found[0][1]
    assert found[1] == found[0] and found[2] == found[0]
    if len(arrays) > 1:
        found = _errors(spec, arrays[:1] + [_map(lambda a: a.astype(np.float32), a) for a in arrays[1:]], params)
        assert found[0][0] is TypeError and found[1] == found[0] and found[2] == found[0]


@pytest.mark.parametrize("spec", SPECS, ids=ids(SPECS))
def test_bad_rank_same_error_everywhere(spec):
    arrays, params = example(spec)
    found = _errors(spec, [_map(lambda a: a.reshape(-1)[:1], arrays[0])] + arrays[1:], params)
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
