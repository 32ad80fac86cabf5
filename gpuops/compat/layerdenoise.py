"""Drop-in for NVlabs/layerdenoise ``torch_utils``: ``WeightedFilter`` and ``WeightedFilterFunction``.

Same signatures, outputs and gradients as the original (research/originals.md §8): x (N, C, H, W) filtered by
per-pixel K×K kernels weight (N, K², H, W), gather or splat, zero padding, plus a bias per channel.  Unlike it,
this runs on CPU and CUDA, in float16/bfloat16/float32/float64, takes non-contiguous tensors and works under
torch.compile (it calls `gpuops.torch.weighted_filter`).  One deliberate difference: the module's bias starts at
zeros, where the original left it uninitialised (``torch.Tensor(channels)``: whatever the memory held).
"""
import numbers

import torch
from torch import nn

from gpuops.adapters import torch as _ops


def _checked_kernel_size(kernel_size, weights=None):
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral):
        raise TypeError(f"kernel_size must be an int, got {type(kernel_size).__name__}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1 (the original asserts it), got {kernel_size}")
    if weights is not None and weights.dim() == 4 and weights.shape[1] != kernel_size * kernel_size:
        raise ValueError(f"weights must have kernel_size² = {kernel_size * kernel_size} channels, "
                         f"got shape {list(weights.shape)}")
    return int(kernel_size)


class WeightedFilterFunction:
    """The original autograd function's entry point: ``WeightedFilterFunction.apply(input, weights, kernel_size,
    splat)`` → (N, C, H, W), differentiable in input and weights (no bias)."""

    @staticmethod
    def apply(input: torch.Tensor, weights: torch.Tensor, kernel_size: int, splat: bool) -> torch.Tensor:
        _checked_kernel_size(kernel_size, weights)
        return _ops.weighted_filter(input, weights, splat=bool(splat))


class WeightedFilter(nn.Module):
    """The original module: ``WeightedFilter(channels, kernel_size, bias=True, splat=False)``, called as
    ``m(input, weight)``; the output is the filtered input plus ``bias.view(1, C, 1, 1)``."""

    def __init__(self, channels, kernel_size, bias=True, splat=False):
        super().__init__()
        self.channels = channels
        self.kernel_size = _checked_kernel_size(kernel_size)
        self.splat = bool(splat)
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, input, weight):
        _checked_kernel_size(self.kernel_size, weight)
        return _ops.weighted_filter(input, weight, self.bias, splat=self.splat)
