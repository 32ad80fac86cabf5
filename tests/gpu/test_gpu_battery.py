"""GPU tier of the contract battery: every declared op (`gpuops._ops.REGISTRY`) on CUDA tensors in every
dtype against the float64 reference, forward and backward, through the core, gpuops.torch (autograd)
and gpuops.jax (jit) — and which ops' launches a jitted JAX call can replay.  Sequence arguments and
several outputs go through `_map` / `_leaves` (as in tests/adapters/test_op_battery.py)."""
import numpy as np
import pytest

from gpuops import _core, _ops
from helpers import FLOAT_DTYPES, assert_close, rounded, to_f64, to_kind

torch = pytest.importorskip("torch")

SPECS = list(_ops.ops().values())
WITH_BACKWARD = [s for s in SPECS if s.backward is not None]

def _ids(specs):
    return [s.name for s in specs]


def _example(spec, seed=0, batch=2):
    arrays, params = spec.example(np.random.default_rng(seed), batch)
    return list(arrays), params


def _tuple(y):
    return tuple(y) if isinstance(y, tuple) else (y,)


def _map(fn, a):
    """``fn`` of every array of an argument or result (a sequence of arrays stays a tuple)."""
    return tuple(_map(fn, e) for e in a) if isinstance(a, (tuple, list)) else fn(a)


def _leaves(a):
    return [x for e in a for x in _leaves(e)] if isinstance(a, (tuple, list)) else [a]


def _close_all(actual, expected, dtype, scale):
    actual, expected = _leaves(actual), _leaves(expected)
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        assert_close(a, b, dtype, scale=scale)


def _scale(expected):
    return max(1.0, max(float(np.abs(e).max()) for e in _leaves(expected) if e is not None and e.size))


def _torch(a, dtype="float64", device="cpu"):
    t = _map(lambda e: to_kind(e, "torch", dtype, device), a)
    return list(t) if isinstance(t, tuple) else t


#: ops whose launches include a library GEMM (torch's for torch tensors): the replay test forces the numba one
_REPLAY_PARAMS = {"corr_pyramid": dict(variant="numba")}


@pytest.mark.parametrize("spec", SPECS, ids=_ids(SPECS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cuda_matches_reference(spec, dtype):
    arrays, params = _example(spec)
    cuda = [_torch(a, dtype, "cuda") for a in arrays]
    seen = [_map(lambda e: rounded(e, dtype), a) for a in arrays]
    expected = spec.reference(*seen, **params)
    y = spec.forward(*cuda, **params)
    assert all(o.is_cuda and str(o.dtype) == f"torch.{dtype}" for o in _leaves(y))
    _close_all(y, expected, dtype, _scale(expected))
    if spec.backward is not None:
        rng = np.random.default_rng(1)
        g = _map(lambda e: rng.uniform(-1, 1, e.shape), expected)
        got = _tuple(spec.backward(_torch(g, dtype, "cuda"), *cuda, **params))
        want = _tuple(spec.reference_backward(_map(lambda e: rounded(e, dtype), g), *seen, **params))
        for a, b in zip(got, want):
            _close_all(a, b, dtype, 4 * _scale(want))


@pytest.mark.parametrize("spec", SPECS, ids=_ids(SPECS))
def test_torch_autograd_on_cuda_matches_cpu(spec):
    import gpuops.torch as gt
    arrays, params = _example(spec)
    fn = getattr(gt, spec.name)
    cpu = [_map(lambda a: torch.from_numpy(a).requires_grad_(), a) for a in arrays]
    cuda = [_map(lambda a: torch.from_numpy(a).cuda().requires_grad_(), a) for a in arrays]
    for tensors in (cpu, cuda):
        y = fn(*[list(t) if isinstance(t, tuple) else t for t in tensors], **params)
        sum(o.square().sum() for o in _leaves(y)).backward()
    for a, b in zip(_leaves(cpu), _leaves(cuda)):
        torch.testing.assert_close(b.grad.cpu(), a.grad)


@pytest.mark.parametrize("spec", SPECS, ids=_ids(SPECS))
def test_jax_on_gpu_matches_reference(spec):
    jax = pytest.importorskip("jax")
    if not any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("JAX sees no GPU")
    import jax.numpy as jnp
    import gpuops.jax as gj
    arrays, params = _example(spec)
    fn = jax.jit(lambda *t: getattr(gj, spec.name)(*t, **params))
    for seed in (0, 5):                              # the second call with new values may be a replay
        arrays, _ = _example(spec, seed)
        _close_all(fn(*[_map(lambda a: jnp.asarray(a, jnp.float32), a) for a in arrays]),
                   spec.reference(*[_map(lambda a: rounded(a, "float32"), a) for a in arrays], **params), "float32", 4)


def _replay_cases():
    cases = []
    for spec in SPECS:
        for backward in (False, True):
            if backward and spec.backward is None:
                continue
            cases.append(pytest.param(spec, backward, id=spec.name + ("_backward" if backward else "")))
    return cases


@pytest.mark.parametrize("spec,backward", _replay_cases())
def test_launches_replay_on_new_buffers(spec, backward):
    """What a jitted JAX call relies on, for every op: the recorded launches of one call, re-issued on
    other buffers of the same shapes, give what a fresh call gives (scratch buffers included)."""
    def buffers(seed):
        arrays, params = _example(spec, seed)
        cuda = [_map(lambda a: torch.from_numpy(a).float().cuda(), a) for a in arrays]
        shape = spec.output_shape([_map(lambda a, n=n: _core.wrap(n, a), a) for n, a in zip(spec.array_names, cuda)],
                                  params)
        if backward:
            rng = np.random.default_rng(seed + 1)
            grad = [rng.uniform(-1, 1, s) for s in (shape if spec.multi_output else [shape])]
            grad = [torch.from_numpy(g).float().cuda() for g in grad]
            cuda.insert(0, tuple(grad) if spec.multi_output else grad[0])
            outs = tuple(_map(torch.empty_like, a) for a in cuda[1:])
        else:
            outs = tuple(torch.empty(s, device="cuda") for s in (shape if spec.multi_output else [shape]))
        return cuda, outs, params

    def call(cuda, outs, params, stream):
        fn = spec.backward if backward else spec.forward
        single = len(outs) == 1 and not (spec.multi_output and not backward)
        fn(*cuda, **params, **_REPLAY_PARAMS.get(spec.name, {}), out=outs[0] if single else outs, stream=stream)

    stream = torch.cuda.current_stream().cuda_stream
    cuda, outs, params = buffers(0)
    replay = _core.record(lambda: call(cuda, outs, params, stream), [t.data_ptr() for t in _leaves((outs, cuda))])
    assert isinstance(replay, _core.Replay)
    cuda2, outs2, _ = buffers(3)
    assert replay(stream, [t.data_ptr() for t in _leaves((outs2, cuda2))])
    fresh = _map(torch.empty_like, outs2)
    call(cuda2, fresh, params, stream)
    torch.cuda.synchronize()
    for a, b in zip(_leaves(outs2), _leaves(fresh)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    first = to_f64(_leaves(outs2)[0])
    assert first.size == 0 or np.isfinite(first).all()
