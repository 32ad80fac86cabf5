"""Drop-in for limacv/CorrelationLayer ``correlation_torch.py``: ``CorrTorch``.

``CorrTorch(pad_size=4, kernel_size=1, max_displacement=4, stride1=1, stride2=1, corr_multiply=1)``
asserts (``AssertionError``, as the original) ``kernel_size == 1``, ``pad_size == max_displacement`` and
``stride1 == stride2 == 1``; ``corr_multiply`` is ignored. ``forward(in1, in2)`` -> (N, D*D, H, W),
D = 2*md + 1:

    out[n, (dy+md)*D + (dx+md), y, x] = mean_c in1[n, c, y, x] * in2[n, c, y+dy, x+dx]   (in2 zero-padded)

i.e. NVIDIA ``Correlation(md, 1, md, 1, 1)``. Computed by the fused gpuops correlation op instead of the
original's D*D full-size products (same values up to float rounding order). Differences: in1 and in2
must have the same shape (``ValueError``; the original silently accepted a larger in2 and used its
top-left part).
"""
import torch

from gpuops.adapters import torch as _ops

__all__ = ["CorrTorch"]


class CorrTorch(torch.nn.Module):
    """limacv's ``CorrTorch``; keeps its ``max_hdisp`` and ``padlayer`` attributes."""

    def __init__(self, pad_size=4, kernel_size=1, max_displacement=4, stride1=1, stride2=1, corr_multiply=1):
        assert kernel_size == 1, "kernel_size other than 1 is not implemented"
        assert pad_size == max_displacement
        assert stride1 == stride2 == 1
        super().__init__()
        self.max_hdisp = max_displacement
        self.padlayer = torch.nn.ConstantPad2d(pad_size, 0)

    def forward(self, in1, in2):
        md = self.max_hdisp
        return _ops.correlation(in1, in2, pad_size=md, kernel_size=1, max_displacement=md, stride1=1, stride2=1)
