"""Drop-in for NVIDIA/flownet2-pytorch ``networks/correlation_package``: ``CorrelationFunction`` and
``Correlation`` (the FlowNet/Caffe correlation layer).

Same signatures and defaults as the original: ``CorrelationFunction.apply(input1, input2, pad_size=3,
kernel_size=3, max_displacement=20, stride1=1, stride2=2, corr_multiply=1)`` (new-style, as NVIDIA's
current code calls it) and the module ``Correlation(pad_size=0, kernel_size=0, max_displacement=0,
stride1=1, stride2=2, corr_multiply=1)``. Output (N, D*D, Ho, Wo), D = 2*(max_displacement // stride2) + 1,
``Ho = ceil((H + 2*pad_size - 2*(max_displacement + (kernel_size-1)//2)) / stride1)``, channel
``(p + R)*D + (o + R)`` for vertical displacement p and horizontal o (y-displacement-major), values
divided by ``kernel_size**2 * C`` (a mean). FlowNetC: ``Correlation(20, 1, 20, 1, 2, 1)`` -> 441 channels.
``corr_multiply`` is accepted and ignored, as in the original.

Semantics are Caffe's (the window is centred); NVIDIA's bugs are not reproduced:

* kernel_size > 1: NVIDIA's forward shifts the window up/left by (k-1)//2 and reads garbage before the
  padded buffer at the top/left border (issue #194: all-ones 3x3, k=3, md=0 gives 5/9, not 1). Here the
  window is centred, as in Caffe. For kernel_size = 1 the two agree.
* stride1 > 1: NVIDIA's backward leaves most input gradients 0; here the backward is the exact adjoint.
* NVIDIA's forward accumulates in float32 for double inputs; here float64 accumulates in float64.
* A stride-0 / non-contiguous ``grad_output`` or ``pad_size < max_displacement`` made NVIDIA read out of
  bounds; here they work.
* The module default ``kernel_size=0`` divided by 0 in NVIDIA (inf/NaN output); here an even or
  non-positive kernel_size raises ``ValueError``.  The module checks every parameter when it is
  constructed (so ``Correlation()`` with the defaults raises), `CorrelationFunction` when called.
* ``torch.jit.script`` works on the module (NVIDIA's autograd Function could not be scripted).
* Runs on CPU as well as CUDA, and input1/input2 must have the same shape (``ValueError``).
"""
import torch

from gpuops.adapters import torch as _ops  # also registers torch.ops.gpuops.*
from gpuops.compat import _checks

__all__ = ["CorrelationFunction", "Correlation"]


def _correlation(input1, input2, pad_size, kernel_size, max_displacement, stride1, stride2):
    return _ops.correlation(input1, input2, pad_size=pad_size, kernel_size=kernel_size,
                            max_displacement=max_displacement, stride1=stride1, stride2=stride2)


class CorrelationFunction:
    """NVIDIA's ``CorrelationFunction``: call ``CorrelationFunction.apply(input1, input2, pad_size=3,
    kernel_size=3, max_displacement=20, stride1=1, stride2=2, corr_multiply=1)``. Differentiable in
    input1 and input2. The old-style form ``CorrelationFunction(pad_size, ...)(input1, input2)`` of the
    package's early versions also works."""

    def __init__(self, pad_size=3, kernel_size=3, max_displacement=20, stride1=1, stride2=2, corr_multiply=1):
        self.pad_size, self.kernel_size, self.max_displacement = pad_size, kernel_size, max_displacement
        self.stride1, self.stride2, self.corr_multiply = stride1, stride2, corr_multiply

    def __call__(self, input1, input2):
        return _correlation(input1, input2, self.pad_size, self.kernel_size, self.max_displacement,
                            self.stride1, self.stride2)

    @staticmethod
    def apply(input1, input2, pad_size=3, kernel_size=3, max_displacement=20, stride1=1, stride2=2,
              corr_multiply=1):
        return _correlation(input1, input2, pad_size, kernel_size, max_displacement, stride1, stride2)


class Correlation(torch.nn.Module):
    """NVIDIA's module (note its defaults differ from `CorrelationFunction.apply`'s).

    The parameters are checked at construction (the ValueError/TypeError a call would raise) and kept as
    ints, so ``torch.jit.script`` compiles the module: forward calls the registered
    ``torch.ops.gpuops.correlation`` directly."""

    pad_size: int
    kernel_size: int
    max_displacement: int
    stride1: int
    stride2: int

    def __init__(self, pad_size=0, kernel_size=0, max_displacement=0, stride1=1, stride2=2, corr_multiply=1):
        super().__init__()
        self.pad_size, self.kernel_size, self.max_displacement, self.stride1, self.stride2 = (
            _checks.correlation_params(pad_size, kernel_size, max_displacement, stride1, stride2))
        self.corr_multiply = corr_multiply

    def forward(self, input1, input2):
        return torch.ops.gpuops.correlation(input1, input2, self.pad_size, self.kernel_size, self.max_displacement,
                                            self.stride1, self.stride2)

    def extra_repr(self):
        return (f"pad_size={self.pad_size}, kernel_size={self.kernel_size}, max_displacement={self.max_displacement}, "
                f"stride1={self.stride1}, stride2={self.stride2}, corr_multiply={self.corr_multiply}")
