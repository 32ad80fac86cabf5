"""Tier 4: the PyTorch adapter for gsmelu / ncrelu on CPU: opcheck, float64 gradcheck,
torch.compile(fullgraph=True), modules, autocast, errors."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import gpuops.torch as gt  # noqa: E402

PARAMS = dict(slope=1.2, neg_slope=0.1, alpha=0.3, beta=0.2, delta_t=0.05)


def _gsmelu_ref(x, slope, neg_slope, alpha, beta, delta_t):
    h = torch.where(x <= -alpha, 0.0, torch.where(x <= beta, (x + alpha) ** 2 / (2 * (alpha + beta)),
                                                  x + (alpha - beta) / 2))
    return neg_slope * x + delta_t + (slope - neg_slope) * h


def test_opcheck():
    x = torch.randn(3, 17, requires_grad=True)
    torch.library.opcheck(torch.ops.gpuops.gsmelu.default, (x, 1.0, 0.01, 0.1, 0.1, 0.0))
    torch.library.opcheck(torch.ops.gpuops.gsmelu_backward.default, (torch.randn(3, 17), x.detach(),
                                                                     1.0, 0.01, 0.1, 0.1, 0.0))
    torch.library.opcheck(torch.ops.gpuops.ncrelu.default, (torch.randn(2, 3, 5, requires_grad=True),))
    torch.library.opcheck(torch.ops.gpuops.ncrelu_backward.default, (torch.randn(2, 6, 5), torch.randn(2, 3, 5)))


def test_gradcheck_float64():
    x = (torch.rand(40, dtype=torch.float64) - 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: gt.gsmelu(t, **PARAMS), (x,))
    xn = torch.randn(2, 3, 4, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(gt.ncrelu, (xn,))


def test_values_and_gradients_match_reference():
    x = (torch.rand(5, 7, dtype=torch.float64) - 0.5).requires_grad_()
    y = gt.gsmelu(x, **PARAMS)
    torch.testing.assert_close(y, _gsmelu_ref(x.detach(), **PARAMS))
    (g,) = torch.autograd.grad(y.square().sum(), x)
    xr = x.detach().requires_grad_()
    (gr,) = torch.autograd.grad(_gsmelu_ref(xr, **PARAMS).square().sum(), xr)
    torch.testing.assert_close(g, gr)


def test_compile_fullgraph():
    torch._dynamo.reset()
    f = torch.compile(lambda t: (gt.gsmelu(gt.ncrelu(t), **PARAMS) * 2).sum(), fullgraph=True)
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    loss = f(x)
    loss.backward()
    xr = x.detach().requires_grad_()
    ref = (_gsmelu_ref(torch.cat([xr.clamp(min=0), torch.where(xr >= 0, 0.0, xr)], 1), **PARAMS) * 2).sum()
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(x.grad, xr.grad)


def test_modules():
    m = gt.GSmeLU(**PARAMS)
    assert "alpha=0.3" in repr(m)
    x = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(m(x), _gsmelu_ref(x, **PARAMS))
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), gt.NCReLU(), torch.nn.Conv2d(6, 1, 1)).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    out = net(x)
    out.square().sum().backward()
    h = net[0](x)
    ref = net[2](torch.cat([h.clamp(min=0), torch.where(h >= 0, 0.0, h)], 1))
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
    torch.testing.assert_close(y.double(), _gsmelu_ref(x.detach().double(), 1.0, 0.01, 0.1, 0.1, 0.0),
                               rtol=2e-2, atol=2e-2)
    y.sum().backward()
    assert x.grad.dtype == dtype
    xd = x.detach().double()
    slope = torch.where(xd <= -0.1, 0.01, torch.where(xd <= 0.1, 0.01 + 0.99 * (xd + 0.1) / 0.2, 1.0))
    torch.testing.assert_close(x.grad.double(), slope, rtol=2e-2, atol=1e-2)


def test_autocast_cpu():
    lin = torch.nn.Linear(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(torch.randn(4, 8))
        y = gt.gsmelu(h)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), _gsmelu_ref(h.double(), 1.0, 0.01, 0.1, 0.1, 0.0), rtol=2e-2, atol=2e-2)


def test_noncontiguous_and_channels_last():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64).to(memory_format=torch.channels_last)
    torch.testing.assert_close(gt.gsmelu(x), _gsmelu_ref(x, 1.0, 0.01, 0.1, 0.1, 0.0))
    torch.testing.assert_close(gt.ncrelu(x), torch.cat([x.clamp(min=0), x.clamp(max=0)], 1))


def test_errors_surface_through_the_op():
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        gt.gsmelu(torch.arange(3))
    with pytest.raises(ValueError, match="alpha \\+ beta"):
        gt.gsmelu(torch.zeros(3), alpha=0.0, beta=0.0)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        gt.ncrelu(torch.zeros(3))


def test_backward_functions_exposed():
    x, g = torch.randn(2, 3, 4), torch.randn(2, 6, 4)
    np.testing.assert_allclose(gt.ncrelu_backward(g, x).numpy(), torch.where(x >= 0, g[:, :3], g[:, 3:]).numpy())
    np.testing.assert_allclose(gt.gsmelu_backward(torch.ones(4), torch.tensor([-1.0, 0.0, 0.05, 2.0])).numpy(),
                               [0.01, 0.505, 0.7525, 1.0], rtol=1e-6)
