"""Drop-in for johannesschaeufele/pytorch-cuda-ops (``op.gsmelu``): ``gsmelu`` and ``GSmeLU``.

Same positional signature and values as the original; unlike it, this also runs on CPU, takes
non-contiguous tensors, computes 16-bit inputs in float32 and never recompiles per parameter value.
"""
import torch

from gpuops.adapters import torch as _ops


def gsmelu(input: torch.Tensor, slope: float = 1.0, neg_slope: float = 1e-2, alpha: float = 0.1,
           beta: float = 0.1, delta_t: float = 0.0) -> torch.Tensor:
    """The original ``gsmelu(input, slope, neg_slope, alpha, beta, delta_t)``; see `gpuops.gsmelu`."""
    return _ops.gsmelu(input, slope=slope, neg_slope=neg_slope, alpha=alpha, beta=beta, delta_t=delta_t)


class GSmeLU(torch.nn.Module):
    """The original module; note its keyword is ``negative_slope`` (the function's is ``neg_slope``)."""

    def __init__(self, slope=1.0, negative_slope=1e-2, alpha=0.1, beta=0.1, delta_t=0.0):
        super().__init__()
        self.slope, self.negative_slope, self.alpha, self.beta, self.delta_t = (
            slope, negative_slope, alpha, beta, delta_t)
        _ops.GSmeLU(slope, negative_slope, alpha, beta, delta_t)       # validate now, as the original did

    def forward(self, input):
        return gsmelu(input, self.slope, self.negative_slope, self.alpha, self.beta, self.delta_t)
