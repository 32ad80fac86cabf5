"""gpuops.torch.swap_depthwise: a model's depthwise nn.Conv2d layers become Conv2dDepthwise with the same
Parameters, and the model computes the same outputs and gradients."""
import copy

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import gpuops.torch as gt  # noqa: E402


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 1),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),                             # depthwise
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 16, 5, stride=2, padding="valid", groups=8, bias=False)),   # multiplier 2
        nn.Conv2d(16, 16, 3, padding="same", dilation=2, groups=16),        # "same" → symmetric padding
        nn.Conv2d(16, 16, 3, padding=1, groups=4),                          # grouped, not depthwise: kept
        nn.Conv2d(16, 16, 3, padding=1, groups=16, padding_mode="reflect"),  # not zero padding: kept
    ).double()


def test_swapped_model_matches_the_stock_model():
    stock = _model()
    swapped = gt.swap_depthwise(copy.deepcopy(stock))
    kinds = [type(m).__name__ for m in swapped.modules() if isinstance(m, (nn.Conv2d, gt.Conv2dDepthwise))]
    assert kinds == ["Conv2d", "Conv2dDepthwise", "Conv2dDepthwise", "Conv2dDepthwise", "Conv2d", "Conv2d"]
    x = torch.randn(2, 3, 19, 17, dtype=torch.float64)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        xs = x.to(memory_format=memory_format)
        a, b = stock(xs), swapped(xs)
        torch.testing.assert_close(b, a)
        ga = torch.autograd.grad(a.square().sum(), list(stock.parameters()))
        gb = torch.autograd.grad(b.square().sum(), list(swapped.parameters()))
        for p, q in zip(ga, gb):
            torch.testing.assert_close(q, p)


def test_swap_keeps_the_parameter_objects():
    model = _model()
    weight = model[1].weight
    gt.swap_depthwise(model)
    assert model[1].weight is weight and isinstance(model[1], gt.Conv2dDepthwise)
    assert set(model.state_dict()) == set(_model().state_dict())
