"""Drop-in for szagoruyko/pyinn: ``import gpuops.compat.pyinn as P``.

pyinn's legacy autograd functions no longer run on current PyTorch; these do, on CPU and CUDA, in
float16/bfloat16/float32/float64.
"""
import torch

from gpuops.adapters import torch as _ops


def ncrelu(input: torch.Tensor) -> torch.Tensor:
    """pyinn.ncrelu: (N, C, H, W) -> (N, 2C, H, W), ``cat([relu(x), min(x, 0)], 1)``; NaN goes to the second
    half and at x == 0 the gradient goes to the first half only (pyinn's CUDA convention)."""
    return _ops.ncrelu(input)
