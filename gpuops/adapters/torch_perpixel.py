"""PyTorch modules of the per-pixel family (exposed as ``gpuops.torch.Involution`` / ``WeightedFilter``).

Thin holders of parameters around the generated ops `gpuops.adapters.torch.involution` and
`weighted_filter` (docs/ops.md §6, §11, §12); every formula is in gpuops/perpixel.py and its kernels.
"""
from __future__ import annotations

import numbers

import torch
from torch import nn

from gpuops.adapters.torch import involution, weighted_filter


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _odd_kernel_size(value):
    k = _positive_int("kernel_size", value)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd (the window is centred on each pixel), got {k}")
    return k


class Involution(nn.Module):
    """The involution block of Li et al. (CVPR 2021), as in the official ``involution`` module.

    ``channels`` input (= output) channels, split into G = channels // group_channels groups that share one
    generated K×K kernel per pixel.  The kernel-generating branch is average-pool by ``stride`` (when > 1)
    → 1×1 conv to channels // reduction_ratio (no bias) → BatchNorm → ReLU → 1×1 conv to G·K² channels;
    its output, viewed as (N, G, K, K, Ho, Wo), drives `gpuops.involution` with padding (K−1)//2.

    Input (N, channels, H, W), H and W divisible by ``stride``; output (N, channels, H/stride, W/stride).
    """

    def __init__(self, channels, kernel_size, stride=1, *, reduction_ratio=4, group_channels=16):
        super().__init__()
        self.channels = _positive_int("channels", channels)
        self.kernel_size = _odd_kernel_size(kernel_size)
        self.stride = _positive_int("stride", stride)
        self.reduction_ratio = _positive_int("reduction_ratio", reduction_ratio)
        self.group_channels = _positive_int("group_channels", group_channels)
        if channels % group_channels:
            raise ValueError(f"channels must be a multiple of group_channels ({group_channels}), got {channels}")
        if channels < reduction_ratio:
            raise ValueError(f"channels // reduction_ratio must be >= 1, got {channels} // {reduction_ratio}")
        self.groups = channels // group_channels
        reduced = channels // reduction_ratio
        self.pool = nn.AvgPool2d(stride, stride) if stride > 1 else nn.Identity()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=False)
        self.bn = nn.BatchNorm2d(reduced)
        self.span = nn.Conv2d(reduced, self.kernel_size ** 2 * self.groups, 1)

    def forward(self, x):
        s, K = self.stride, self.kernel_size
        if x.dim() == 4 and (x.shape[-2] % s or x.shape[-1] % s):
            raise ValueError(f"Involution with stride {s} needs H and W divisible by {s} (its kernel branch "
                             f"average-pools by the stride), got {x.shape[-2]}×{x.shape[-1]}")
        kernels = self.span(torch.relu(self.bn(self.reduce(self.pool(x)))))
        N, _, Ho, Wo = kernels.shape
        kernels = kernels.view(N, self.groups, K, K, Ho, Wo).to(x.dtype)      # autocast may run the convs narrower
        return involution(x, kernels, stride=s, padding=(K - 1) // 2)

    def extra_repr(self):
        return (f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"reduction_ratio={self.reduction_ratio}, group_channels={self.group_channels}")


class WeightedFilter(nn.Module):
    """The final layer of a kernel-predicting network (layerdenoise's ``WeightedFilter``): ``m(x, weight)``
    applies the per-pixel K×K kernels ``weight`` (N, K², H, W) to every channel of x (N, channels, H, W),
    gathering (default) or splatting, then adds the learnable ``bias`` (channels,), initialised to zeros."""

    def __init__(self, channels, kernel_size, bias=True, splat=False):
        super().__init__()
        self.channels = _positive_int("channels", channels)
        self.kernel_size = _odd_kernel_size(kernel_size)
        if not isinstance(splat, bool):
            raise TypeError(f"splat must be a bool, got {type(splat).__name__}")
        self.splat = splat
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x, weight):
        K = self.kernel_size
        if x.dim() == 4 and x.shape[1] != self.channels:
            raise ValueError(f"x must have {self.channels} channels (the module's), got shape {list(x.shape)}")
        if weight.dim() == 4 and weight.shape[1] != K * K:
            raise ValueError(f"weight must have kernel_size² = {K * K} channels, got shape {list(weight.shape)}")
        return weighted_filter(x, weight, self.bias, splat=self.splat)

    def extra_repr(self):
        return f"{self.channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}, splat={self.splat}"
