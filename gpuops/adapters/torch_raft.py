"""RAFT's correlation block over gpuops (exposed as ``gpuops.torch.CorrBlock``; docs/ops.md §10, §12).

A thin holder around the generated op `gpuops.adapters.torch.corr_lookup`: every formula is in
gpuops/raft.py and its kernels.
"""
from __future__ import annotations

import torch
from torch import nn

from gpuops import _core, raft
from gpuops.adapters.torch import corr_lookup

_SIXTEEN_BIT = (torch.float16, torch.bfloat16)


class CorrBlock(nn.Module):
    """RAFT's ``CorrBlock(fmap1, fmap2, num_levels=4, radius=4)`` (and ``AlternateCorrBlock``), called as
    ``block(coords)``.

    fmap1, fmap2: (N, C, H, W), one shape; coords: (N, 2, H, W), channel 0 = x, in pixels of fmap2.
    Returns (N, num_levels·L², H, W), L = 2·radius + 1, level-major, x-offset-major within a level,
    float32 (RAFT's CorrBlock ends with ``.float()``; its alternate block is float32 only):

        out[n, i·L² + (dx+r)·L + (dy+r), h, w] = 1/√C · Σ_c fmap1[n,c,h,w] · s_c^i(x/2^i + dx, y/2^i + dy)

    with s^i the bilinear sample, zeros outside, of fmap2 average-pooled 2×2 i times.  Gradients reach
    fmap1, fmap2 and coords (RAFT detaches coords itself; its alternate CUDA block returned none).

    In this version both ``alternate=False`` and ``alternate=True`` compute with `corr_lookup` (no
    all-pairs volume: memory O(C·H·W) instead of O((H·W)²)); the cached pyramid path
    (``corr_pyramid``) is planned.  16-bit feature maps are upcast to float32 once, here (RAFT's model
    calls CorrBlock with ``fmap.float()``), and coords are cast to the maps' dtype: the op takes one
    dtype, and 16-bit coordinates would lose sub-pixel precision.  Bad sizes and parameters raise at
    construction, as RAFT's avg_pool2d would for too many levels.
    """

    def __init__(self, fmap1, fmap2, num_levels=4, radius=4, alternate=False):
        super().__init__()
        if not isinstance(alternate, bool):
            raise TypeError(f"alternate must be a bool, got {type(alternate).__name__}")
        for name, fmap in (("fmap1", fmap1), ("fmap2", fmap2)):
            if not isinstance(fmap, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(fmap).__name__}")
        if fmap1.dtype in _SIXTEEN_BIT:
            fmap1 = fmap1.float()
        if fmap2.dtype in _SIXTEEN_BIT:
            fmap2 = fmap2.float()
        # the op's own checks and messages, on shapes (coords as a call will pass them)
        coords_shape = (fmap1.shape[0], 2, *fmap1.shape[2:]) if fmap1.dim() == 4 else (2,)
        metas = (_core.meta("fmap1", fmap1.shape, fmap1.dtype), _core.meta("fmap2", fmap2.shape, fmap2.dtype),
                 _core.meta("coords", coords_shape, fmap1.dtype))
        raft._lookup_inputs(*metas, radius, num_levels)
        self.fmap1, self.fmap2 = fmap1, fmap2
        self.num_levels, self.radius, self.alternate = int(num_levels), int(radius), alternate

    def forward(self, coords):
        out = corr_lookup(self.fmap1, self.fmap2, coords.to(self.fmap1.dtype), radius=self.radius,
                          num_levels=self.num_levels)
        return out.float()

    def extra_repr(self):
        return f"num_levels={self.num_levels}, radius={self.radius}, alternate={self.alternate}"
