"""Tier 4: the PyTorch adapter for gsmelu / ncrelu on CPU beyond the contract battery (test_op_battery.py:
opcheck, gradcheck, aot_eager compile, dtypes): the inductor compile of a composition, modules, 16-bit
autograd, autocast, channels_last, errors, the exposed backward functions."""
import numpy as np
import pytest

from gpuops import reference as R

torch = pytest.importorskip("torch")
import gpuops.torch as gt  # noqa: E402

PARAMS = dict(slope=1.2, neg_slope=0.1, alpha=0.3, beta=0.2, delta_t=0.05)


def test_compile_fullgraph_inductor():
    # eager first: the first call of an op inside torch.compile fails on Python 3.11 (functools.cached_property
    # on OpSpec takes an RLock Dynamo cannot trace; reported, gpuops/_ops.py)
    xr = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    ref = (gt.gsmelu(gt.ncrelu(xr), **PARAMS) * 2).sum()
    ref.backward()
    torch._dynamo.reset()
    f = torch.compile(lambda t: (gt.gsmelu(gt.ncrelu(t), **PARAMS) * 2).sum(), fullgraph=True)
    x = xr.detach().requires_grad_()
    loss = f(x)
    loss.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(x.grad, xr.grad)


def test_modules():
    m = gt.GSmeLU(**PARAMS)
    assert "alpha=0.3" in repr(m)
    x = torch.randn(4, 6, dtype=torch.float64)
    np.testing.assert_allclose(m(x), R.gsmelu(x, **PARAMS))
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), gt.NCReLU(), torch.nn.Conv2d(6, 1, 1)).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    out = net(x)
    out.square().sum().backward()
    ref = net[2](gt.ncrelu(net[0](x)))
    torch.testing.assert_close(out, ref)
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    ref.square().sum().backward()
    for got, p in zip(grads, net.parameters()):
        torch.testing.assert_close(got, p.grad)
    with pytest.raises(ValueError, match="alpha \\+ beta"):
        gt.GSmeLU(alpha=0.0, beta=0.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_inputs(dtype):
    x = torch.randn(64, dtype=dtype, requires_grad=True)
    y = gt.gsmelu(x)
    assert y.dtype == dtype
    xd = x.detach().double()
    np.testing.assert_allclose(y.double().detach(), R.gsmelu(xd), rtol=2e-2, atol=2e-2)
    y.sum().backward()
    assert x.grad.dtype == dtype
    np.testing.assert_allclose(x.grad.double(), R.gsmelu_backward(np.ones(64), xd), rtol=2e-2, atol=1e-2)


def test_autocast_cpu():
    lin = torch.nn.Linear(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(torch.randn(4, 8))
        y = gt.gsmelu(h)
    assert y.dtype == torch.bfloat16
    np.testing.assert_allclose(y.double().detach(), R.gsmelu(h.double().detach()), rtol=2e-2, atol=2e-2)


def test_noncontiguous_and_channels_last():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).to(memory_format=torch.channels_last)
    np.testing.assert_allclose(gt.gsmelu(x), R.gsmelu(x))
    np.testing.assert_allclose(gt.ncrelu(x), R.ncrelu(x))


def test_errors_surface_through_the_op():
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        gt.gsmelu(torch.arange(3))
    with pytest.raises(ValueError, match="alpha \\+ beta"):
        gt.gsmelu(torch.zeros(3), alpha=0.0, beta=0.0)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        gt.ncrelu(torch.zeros(3))


def test_backward_functions_exposed():
    x, g = torch.randn(2, 3, 4), torch.randn(2, 6, 4)
    np.testing.assert_allclose(gt.ncrelu_backward(g, x).numpy(), R.ncrelu_backward(g, x))
    np.testing.assert_allclose(gt.gsmelu_backward(torch.ones(4), torch.tensor([-1.0, 0.0, 0.05, 2.0])).numpy(),
                               [0.01, 0.505, 0.7525, 1.0], rtol=1e-6)


def test_torch_func_transforms_refuse_clearly():
    # torch.library's register_autograd wraps a custom op in an autograd.Function without setup_context,
    # which torch.func's transforms refuse (torch 2.13): a clear error, never a silently wrong gradient;
    # torch.autograd.grad works (docs/architecture.md, "Small torch calls")
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    w = torch.randn(3, 1, 3, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="setup_context"):
        torch.func.grad(lambda t: gt.conv2d_depthwise(t, w, padding=1).square().sum())(x)
    with pytest.raises(RuntimeError, match="setup_context"):
        torch.func.grad(lambda t: gt.gsmelu(t).sum())(x)
