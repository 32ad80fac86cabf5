"""RAFT's correlation block over gpuops (exposed as ``gpuops.torch.CorrBlock``; docs/ops.md §10, §12).

A thin holder around the generated ops `gpuops.adapters.torch.corr_pyramid` / `corr_pyramid_lookup`
(RAFT's CorrBlock) and `corr_lookup` (its AlternateCorrBlock): every formula is in gpuops/pyramid.py,
gpuops/raft.py and their kernels.
"""
from __future__ import annotations

import torch
from torch import nn

from gpuops import _core, _ops
from gpuops.adapters.torch import corr_lookup, corr_pyramid, corr_pyramid_lookup

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

    ``alternate=False`` (RAFT's CorrBlock): the all-pairs pyramid is built once, here, with `corr_pyramid`
    ((N, H, W, H >> i, W >> i) per level: O((H·W)²) memory), and each call looks it up with
    `corr_pyramid_lookup`; in training the pyramid's backward runs once, with the level gradients of every
    call summed by autograd.  ``alternate=True`` (AlternateCorrBlock): each call computes `corr_lookup`
    from the feature maps, without the volume (memory O(C·H·W)).  Both give the same values.  16-bit
    feature maps are upcast to float32 once, here (RAFT's model calls CorrBlock with ``fmap.float()``), and
    coords are cast to the maps' dtype: the ops take one dtype, and 16-bit coordinates would lose
    sub-pixel precision.  Bad sizes and parameters raise at construction, as RAFT's avg_pool2d would for
    too many levels.
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
        # corr_lookup's own checks and messages, on shapes (coords as a call will pass them): both modes take
        # the same arguments
        coords_shape = (fmap1.shape[0], 2, *fmap1.shape[2:]) if fmap1.dim() == 4 else (2,)
        metas = (_core.meta("fmap1", fmap1.shape, fmap1.dtype), _core.meta("fmap2", fmap2.shape, fmap2.dtype),
                 _core.meta("coords", coords_shape, fmap1.dtype))
        _ops.REGISTRY["corr_lookup"].output_shape(metas, dict(radius=radius, num_levels=num_levels))
        self.num_levels, self.radius, self.alternate = int(num_levels), int(radius), alternate
        self.dtype = fmap1.dtype
        if alternate:
            self.fmap1, self.fmap2 = fmap1, fmap2
        else:
            self.pyramid = corr_pyramid(fmap1, fmap2, num_levels=self.num_levels)

    def forward(self, coords):
        coords = coords.to(self.dtype)
        if self.alternate:
            out = corr_lookup(self.fmap1, self.fmap2, coords, radius=self.radius, num_levels=self.num_levels)
        else:
            out = corr_pyramid_lookup(self.pyramid, coords, radius=self.radius)
        return out.float()

    def extra_repr(self):
        return f"num_levels={self.num_levels}, radius={self.radius}, alternate={self.alternate}"
