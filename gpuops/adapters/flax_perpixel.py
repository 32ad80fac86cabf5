"""Flax module of the per-pixel family (exposed as ``gpuops.jax.Involution``).

The involution block of Li et al. (CVPR 2021) around the generated JAX op `gpuops.adapters.jax.involution`;
the layers and their order are those of `gpuops.adapters.torch_perpixel.Involution`.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from gpuops.adapters.jax import involution


class Involution(nn.Module):
    """Involution block on NCHW arrays: ``Involution(channels, kernel_size, stride)(x, train=True)``.

    G = channels // group_channels groups share one generated K×K kernel per pixel.  Kernel branch:
    average-pool by ``stride`` (when > 1) → 1×1 conv to channels // reduction_ratio (no bias) → BatchNorm
    (its statistics in the ``batch_stats`` collection; pass ``mutable=["batch_stats"]`` when training) → ReLU
    → 1×1 conv to G·K² channels, viewed as (N, G, K, K, Ho, Wo); then `gpuops.involution` with padding
    (K−1)//2.  x: (N, channels, H, W), H and W divisible by ``stride``.
    """

    channels: int
    kernel_size: int
    stride: int = 1
    reduction_ratio: int = 4
    group_channels: int = 16

    @nn.compact
    def __call__(self, x, train: bool = True):
        K, s = self.kernel_size, self.stride
        if K < 1 or K % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (the window is centred on each pixel), got {K}")
        if s < 1:
            raise ValueError(f"stride must be >= 1, got {s}")
        if self.group_channels < 1 or self.channels % self.group_channels or self.channels < self.group_channels:
            raise ValueError(f"channels must be a positive multiple of group_channels ({self.group_channels}), "
                             f"got {self.channels}")
        if self.channels < self.reduction_ratio or self.reduction_ratio < 1:
            raise ValueError(f"channels // reduction_ratio must be >= 1, got {self.channels} // {self.reduction_ratio}")
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must be (N, {self.channels}, H, W), got shape {list(x.shape)}")
        if x.shape[2] % s or x.shape[3] % s:
            raise ValueError(f"Involution with stride {s} needs H and W divisible by {s}, "
                             f"got {x.shape[2]}×{x.shape[3]}")
        groups = self.channels // self.group_channels
        h = jnp.transpose(x, (0, 2, 3, 1))                     # Flax convolutions are NHWC
        if s > 1:
            h = nn.avg_pool(h, (s, s), strides=(s, s))
        h = nn.Conv(self.channels // self.reduction_ratio, (1, 1), use_bias=False, name="reduce")(h)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn")(h)
        h = nn.Conv(K * K * groups, (1, 1), name="span")(nn.relu(h))
        N, Ho, Wo, _ = h.shape
        # the convolutions' parameters may be wider than x: the op needs one dtype
        kernels = jnp.transpose(h, (0, 3, 1, 2)).reshape(N, groups, K, K, Ho, Wo).astype(x.dtype)
        return involution(x, kernels, stride=s, padding=(K - 1) // 2)
