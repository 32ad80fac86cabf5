"""Drop-in for ClementPinard/Pytorch-Correlation-extension (PyPI ``spatial-correlation-sampler``):
``spatial_correlation_sample`` and ``SpatialCorrelationSampler``.

Same positional signature, defaults, output layout (N, patchH, patchW, oH, oW) and values (raw sums,
no normalisation) as the original. Every parameter is an int or an (h, w) pair. Differences:

* The patch shift is ``(ph - (patchH - 1) // 2) * dilation_patchH`` (the original's CPU forward and both
  of its backwards). The original's CUDA forward used ``ph*dp - trunc(dp*(P-1)/2)``, which differs
  for even patch sizes with ``dilation_patch > 1`` (e.g. P=4, dp=2: CUDA {-3,-1,1,3}, CPU {-2,0,2,4})
  and made its CUDA forward and backward inconsistent; that bug is not reproduced, so CUDA and CPU
  agree and the backward is the exact adjoint of the forward.
* input1 and input2 must have the same shape (``ValueError``; the original did not check), a
  degenerate parameter (e.g. ``dilation=0``) or an empty output raises ``ValueError``; the module
  checks its parameters when it is constructed and keeps them as [h, w] lists.
* ``torch.jit.script`` works on the module and the function (the original could not be scripted).
* Runs on CPU and CUDA, takes non-contiguous tensors, float16/bfloat16 accumulate in float32,
  and the backward is a regular (twice-callable, torch.compile-friendly) autograd op rather than
  ``@once_differentiable``.
"""
from typing import List

import torch
from torch._jit_internal import BroadcastingList2  # int-or-pair arguments, as torch.nn.functional types them

from gpuops.adapters import torch as _ops  # also registers torch.ops.gpuops.*
from gpuops.compat import _checks

__all__ = ["spatial_correlation_sample", "SpatialCorrelationSampler"]


def spatial_correlation_sample(input1: torch.Tensor, input2: torch.Tensor, kernel_size: BroadcastingList2[int] = 1,
                               patch_size: BroadcastingList2[int] = 1, stride: BroadcastingList2[int] = 1,
                               padding: BroadcastingList2[int] = 0, dilation: BroadcastingList2[int] = 1,
                               dilation_patch: BroadcastingList2[int] = 1) -> torch.Tensor:
    """The original ``spatial_correlation_sample``: (N, C, H, W) x2 -> (N, patchH, patchW, oH, oW),

    ``out[n, ph, pw, h, w] = sum_c sum_{i,j} input1[n, c, u + i*dilH, v + j*dilW] * input2[n, c, u + i*dilH + sH,
    v + j*dilW + sW]`` with ``u = h*strideH - padH``, ``v = w*strideW - padW``,
    ``sH = (ph - (patchH - 1)//2) * dilation_patchH`` (same for W); zero padding, no normalisation.
    Scriptable (``torch.jit.script``), like the module."""
    if torch.jit.is_scripting():       # parameters arrive as [h, w] lists; the op itself checks them
        return torch.ops.gpuops.spatial_correlation_sample(input1, input2, kernel_size, patch_size, stride, padding,
                                                           dilation, dilation_patch)
    return _ops.spatial_correlation_sample(
        input1, input2, kernel_size=kernel_size, patch_size=patch_size, stride=stride, padding=padding,
        dilation=dilation, dilation_patch=dilation_patch)


class SpatialCorrelationSampler(torch.nn.Module):
    """The original parameterless module; ``forward(input1, input2)`` computes `spatial_correlation_sample`.

    The parameters are checked at construction (the ValueError/TypeError a call would raise) and kept as
    [h, w] lists, so ``torch.jit.script`` compiles the module: forward calls the registered
    ``torch.ops.gpuops.spatial_correlation_sample`` directly."""

    kernel_size: List[int]
    patch_size: List[int]
    stride: List[int]
    padding: List[int]
    dilation: List[int]
    dilation_patch: List[int]

    def __init__(self, kernel_size=1, patch_size=1, stride=1, padding=0, dilation=1, dilation_patch=1):
        super().__init__()
        (self.kernel_size, self.patch_size, self.stride, self.padding, self.dilation,
         self.dilation_patch) = _checks.sampler_params(kernel_size, patch_size, stride, padding, dilation,
                                                       dilation_patch)

    def forward(self, input1, input2):
        return torch.ops.gpuops.spatial_correlation_sample(input1, input2, self.kernel_size, self.patch_size,
                                                           self.stride, self.padding, self.dilation,
                                                           self.dilation_patch)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, patch_size={self.patch_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, dilation_patch={self.dilation_patch}")
