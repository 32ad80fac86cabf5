"""GPU tier of the contract battery: every declared op (`gpuops._ops.REGISTRY`) on CUDA tensors in every
dtype against the float64 reference, forward and backward, through the core, gpuops.torch (autograd)
and gpuops.jax (jit) — and which ops' launches a jitted JAX call can replay."""
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


def _scale(expected):
    return max(1.0, max(float(np.abs(e).max()) for e in expected if e is not None and e.size))


@pytest.mark.parametrize("spec", SPECS, ids=_ids(SPECS))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cuda_matches_reference(spec, dtype):
    arrays, params = _example(spec)
    cuda = [to_kind(a, "torch", dtype, "cuda") for a in arrays]
    seen = [rounded(a, dtype) for a in arrays]
    expected = spec.reference(*seen, **params)
    y = spec.forward(*cuda, **params)
    assert y.is_cuda and str(y.dtype) == f"torch.{dtype}"
    assert_close(y, expected, dtype, scale=_scale([expected]))
    if spec.backward is not None:
        g = np.random.default_rng(1).uniform(-1, 1, expected.shape)
        got = _tuple(spec.backward(to_kind(g, "torch", dtype, "cuda"), *cuda, **params))
        want = _tuple(spec.reference_backward(rounded(g, dtype), *seen, **params))
        for a, b in zip(got, want):
            assert_close(a, b, dtype, scale=4 * _scale(want))


@pytest.mark.parametrize("spec", SPECS, ids=_ids(SPECS))
def test_torch_autograd_on_cuda_matches_cpu(spec):
    import gpuops.torch as gt
    arrays, params = _example(spec)
    fn = getattr(gt, spec.name)
    cpu = [torch.from_numpy(a).requires_grad_() for a in arrays]
    cuda = [torch.from_numpy(a).cuda().requires_grad_() for a in arrays]
    fn(*cpu, **params).square().sum().backward()
    fn(*cuda, **params).square().sum().backward()
    for a, b in zip(cpu, cuda):
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
        assert_close(fn(*[jnp.asarray(a, jnp.float32) for a in arrays]),
                     spec.reference(*[rounded(a, "float32") for a in arrays], **params), "float32", scale=4)


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
        cuda = [torch.from_numpy(a).float().cuda() for a in arrays]
        shape = spec.output_shape([_core.wrap(n, a) for n, a in zip(spec.array_names, cuda)], params)
        if backward:
            cuda.insert(0, torch.from_numpy(np.random.default_rng(seed + 1).uniform(-1, 1, shape)).float().cuda())
            outs = tuple(torch.empty_like(a) for a in cuda[1:])
        else:
            outs = (torch.empty(shape, device="cuda"),)
        return cuda, outs, params

    def call(cuda, outs, params, stream):
        fn = spec.backward if backward else spec.forward
        fn(*cuda, **params, out=outs if len(outs) > 1 else outs[0], stream=stream)

    stream = torch.cuda.current_stream().cuda_stream
    cuda, outs, params = buffers(0)
    replay = _core.record(lambda: call(cuda, outs, params, stream), [t.data_ptr() for t in (*outs, *cuda)])
    assert isinstance(replay, _core.Replay)
    cuda2, outs2, _ = buffers(3)
    assert replay(stream, [t.data_ptr() for t in (*outs2, *cuda2)])
    fresh = tuple(torch.empty_like(o) for o in outs2)
    call(cuda2, fresh, params, stream)
    torch.cuda.synchronize()
    for a, b in zip(outs2, fresh):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert to_f64(outs2[0]).size == 0 or np.isfinite(to_f64(outs2[0])).all()
