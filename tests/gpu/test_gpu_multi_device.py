"""GPU tier on two GPUs (issue 18, item 1): every declared op on the second GPU of a host while the first is
current, through the core (forward and backward), gpuops.torch (autograd) and gpuops.jax (jit): compilation,
launch and allocation follow the arrays' device, and results stay there; arrays on different GPUs raise a clear
`ValueError`.  Skipped with fewer than two GPUs."""
import numpy as np
import pytest

from gpuops import _ops
from test_gpu_battery import _close_all, _example, _leaves, _map, _scale, _torch, _tuple

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                reason="needs two CUDA GPUs")

SPECS = list(_ops.ops().values())


def _ids(specs):
    return [s.name for s in specs]


@pytest.mark.parametrize("spec", SPECS, ids=_ids(SPECS))
def test_core_runs_on_the_arrays_device(spec):
    arrays, params = _example(spec)
    expected = spec.reference(*arrays, **params)
    with torch.cuda.device(0):
        second = [_torch(a, "float64", "cuda:1") for a in arrays]
        y = spec.forward(*second, **params)
        assert all(o.device == torch.device("cuda:1") for o in _leaves(y))
        _close_all(y, expected, "float64", _scale(expected))
        if spec.backward is not None:
            g = _map(lambda e: np.random.default_rng(1).uniform(-1, 1, e.shape), expected)
            got = _tuple(spec.backward(_torch(g, "float64", "cuda:1"), *second, **params))
            want = _tuple(spec.reference_backward(g, *arrays, **params))
            for a, b in zip(got, want):
                assert all(o.device == torch.device("cuda:1") for o in _leaves(a) if o is not None)
                _close_all(a, b, "float64", 4 * _scale(want))


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.multi_output and not any(s.sequence)],
                         ids=_ids([s for s in SPECS if not s.multi_output and not any(s.sequence)]))
def test_torch_autograd_on_the_second_device(spec):
    import gpuops.torch as gt
    arrays, params = _example(spec)
    with torch.cuda.device(0):
        second = [None if a is None else _torch(a, "float64", "cuda:1").requires_grad_() for a in arrays]
        first = [None if a is None else t.detach().to("cuda:0").requires_grad_() for a, t in zip(arrays, second)]
        fn = getattr(gt, spec.name)
        y1, y0 = fn(*second, **params), fn(*first, **params)
        assert y1.device == torch.device("cuda:1")
        y1.square().sum().backward()
        y0.square().sum().backward()
        for t1, t0 in zip(second, first):
            if t1 is not None and t1.grad is not None:
                assert t1.grad.device == torch.device("cuda:1")
                torch.testing.assert_close(t1.grad.cpu(), t0.grad.cpu())


def test_arrays_on_different_gpus_raise():
    import gpuops
    x = torch.randn(1, 2, 5, 5, device="cuda:0")
    w = torch.randn(2, 1, 3, 3, device="cuda:1")
    with pytest.raises(ValueError, match=r"weight must be on the device of x \(cuda:0\), got cuda:1"):
        gpuops.conv2d_depthwise(x, w)


def test_a_side_stream_of_the_second_device():
    import gpuops
    x = torch.randn(4, 8, 32, 32, device="cuda:1")
    w = torch.randn(8, 1, 3, 3, device="cuda:1")
    side = torch.cuda.Stream(device="cuda:1")
    side.wait_stream(torch.cuda.current_stream("cuda:1"))
    with torch.cuda.device(0), torch.cuda.stream(side):
        y = gpuops.conv2d_depthwise(x, w, padding=1)
    side.synchronize()
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, None, 1, 1, 1, 8), rtol=1e-4, atol=1e-4)


def test_jax_jit_on_the_second_device():
    jax = pytest.importorskip("jax")
    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if len(gpus) < 2:
        pytest.skip("JAX sees fewer than two GPUs")
    import gpuops.jax as gj
    x = jax.device_put(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32), gpus[1])
    w = jax.device_put(np.random.default_rng(1).standard_normal((3, 1, 3, 3)).astype(np.float32), gpus[1])
    y = jax.jit(lambda a, b: gj.conv2d_depthwise(a, b, padding=1))(x, w)
    assert y.devices() == {gpus[1]}
    want = torch.nn.functional.conv2d(torch.tensor(np.asarray(x)), torch.tensor(np.asarray(w)), None, 1, 1, 1, 3)
    np.testing.assert_allclose(np.asarray(y), want.numpy(), rtol=1e-4, atol=1e-4)
