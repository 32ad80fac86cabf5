"""Drop-in for limacv/CorrelationLayer ``correlation_torch.py``: ``CorrTorch``.

``CorrTorch(pad_size=4, kernel_size=1, max_displacement=4, stride1=1, stride2=1, corr_multiply=1)``
asserts (``AssertionError``, as the original) ``kernel_size == 1``, ``pad_size == max_displacement`` and
``stride1 == stride2 == 1``; ``corr_multiply`` is ignored. ``forward(in1, in2)`` -> (N, D*D, H, W),
D = 2*md + 1:

    out[n, (dy+md)*D + (dx+md), y, x] = mean_c in1[n, c, y, x] * in2[n, c, y+dy, x+dx]   (in2 zero-padded)

i.e. NVIDIA ``Correlation(md, 1, md, 1, 1)``. Computed by the fused gpuops correlation op instead of the
original's D*D full-size products (same values up to float rounding order). Differences: in1 and in2
must have the same shape (``ValueError``; the original silently accepted a larger in2 and used its
top-left part), and a max_displacement that is negative or not an int raises at construction
(``ValueError``/``TypeError``, after the original's asserts).
"""
import torch

import gpuops.adapters.torch  # noqa: F401  (registers torch.ops.gpuops.*)
from gpuops.compat import _checks

__all__ = ["CorrTorch"]


class CorrTorch(torch.nn.Module):
    """limacv's ``CorrTorch``; keeps its ``max_hdisp`` and ``padlayer`` attributes.  Scriptable, like the
    original: forward calls the registered ``torch.ops.gpuops.correlation`` directly."""

    max_hdisp: int

    def __init__(self, pad_size=4, kernel_size=1, max_displacement=4, stride1=1, stride2=1, corr_multiply=1):
        assert kernel_size == 1, "kernel_size other than 1 is not implemented"
        assert pad_size == max_displacement
        assert stride1 == stride2 == 1
        super().__init__()
        # the original's asserts first, then the checks a call would make (e.g. a negative max_displacement)
        self.max_hdisp = _checks.correlation_params(max_displacement, 1, max_displacement, 1, 1)[0]
        self.padlayer = torch.nn.ConstantPad2d(pad_size, 0.0)     # unused; a float value, or scripting fails

    def forward(self, in1, in2):
        md = self.max_hdisp
        return torch.ops.gpuops.correlation(in1, in2, md, 1, md, 1, 1)
