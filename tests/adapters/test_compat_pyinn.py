"""gpuops.compat.pyinn imports like pyinn (package functions and ``pyinn.modules.Conv2dDepthwise``), and
Conv2dDepthwise is pyinn's: an ``nn.Conv2d(groups=channels)`` computing ``F.conv2d(groups=C)``."""
import inspect

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402


def test_pyinn_imports():
    from gpuops.compat.pyinn import Conv2dDepthwise, cdgmm, col2im, conv2d_depthwise, dgmm, im2col, ncrelu  # noqa: F401
    from gpuops.compat.pyinn.modules import Conv2dDepthwise as FromModules
    assert FromModules is Conv2dDepthwise


def test_conv2d_depthwise_module_is_pyinns():
    from gpuops.compat.pyinn.modules import Conv2dDepthwise
    params = inspect.signature(Conv2dDepthwise).parameters
    assert [(p.name, p.default) for p in params.values()] == [
        ("channels", inspect.Parameter.empty), ("kernel_size", inspect.Parameter.empty), ("stride", 1),
        ("padding", 0), ("dilation", 1), ("bias", True)]
    torch.manual_seed(0)
    m = Conv2dDepthwise(6, (3, 5), 2, 1, 2, False)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 6, (3, 5), 2, 1, 2, groups=6, bias=False)
    assert isinstance(m, torch.nn.Conv2d) and m.groups == 6 and m.bias is None
    assert m.state_dict().keys() == conv.state_dict().keys()
    torch.testing.assert_close(m.weight, conv.weight, rtol=0, atol=0)     # nn.Conv2d's initialisation


@pytest.mark.parametrize("kernel_size, stride, padding, dilation, bias", [
    (3, 1, 1, 1, True), (3, 2, 0, 1, False), ((3, 5), (2, 1), (1, 2), (1, 2), True), (1, 1, 0, 1, True),
    (5, 3, 2, 2, False)])
def test_conv2d_depthwise_module_values_and_grads(kernel_size, stride, padding, dilation, bias):
    from gpuops.compat.pyinn.modules import Conv2dDepthwise
    m = Conv2dDepthwise(4, kernel_size, stride, padding, dilation, bias).double()
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64, requires_grad=True)
    out = m(x)
    exp = F.conv2d(x, m.weight, m.bias, m.stride, m.padding, m.dilation, groups=4)
    torch.testing.assert_close(out, exp, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(exp)
    leaves = [x, m.weight] + ([m.bias] if bias else [])
    for got, want in zip(torch.autograd.grad(out, leaves, g), torch.autograd.grad(exp, leaves, g)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_conv2d_depthwise_module_readme_usage():
    from gpuops.compat.pyinn.modules import Conv2dDepthwise
    module = Conv2dDepthwise(channels=4, kernel_size=3, padding=1)
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(module(x), F.conv2d(x, module.weight, module.bias, padding=1, groups=4))
