"""Drop-in for szagoruyko/pyinn: ``import gpuops.compat.pyinn as P`` and
``from gpuops.compat.pyinn.modules import Conv2dDepthwise``.

pyinn's legacy autograd functions no longer run on current PyTorch (and needed CuPy and
scikit-cuda); these do, on CPU and CUDA, in float16/bfloat16/float32/float64, with the same
signatures and results.  Differences: inputs may be non-contiguous (pyinn silently computed garbage
for non-contiguous forward inputs), `cdgmm` also returns the gradient w.r.t. ``x`` (pyinn raised
NotImplementedError) and its backward no longer conjugates ``x`` in place, and `im2col` of a batch is
one launch instead of a Python loop.
"""
from gpuops.adapters import torch as _ops


def conv2d_depthwise(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """pyinn.conv2d_depthwise: ``F.conv2d(input, weight, bias, stride, padding, dilation, groups=C)`` with
    weight (C, 1, kh, kw) (depth multipliers > 1 also work here)."""
    return _ops.conv2d_depthwise(input, weight, bias, stride=stride, padding=padding, dilation=dilation)


def dgmm(input, x):
    """pyinn.dgmm: ``input @ diag(x)`` if len(x) == input.size(1) (tested first), else ``diag(x) @ input``."""
    return _ops.dgmm(input, x)


def cdgmm(input, x):
    """pyinn.cdgmm: complex diagonal multiply on (re, im) pairs, input (M, K, 2), x (K, 2) or (M, 2)."""
    return _ops.cdgmm(input, x)


def ncrelu(input):
    """pyinn.ncrelu: ``cat([relu(x), min(x, 0)], 1)``; at x == 0 the gradient goes to the first half only."""
    return _ops.ncrelu(input)


def im2col(input, kernel_size, stride, padding):
    """pyinn.im2col: (C, H, W) -> (C, kh, kw, Ho, Wo), (N, C, H, W) -> (N, C, kh, kw, Ho, Wo); no dilation."""
    return _ops.im2col(input, kernel_size, stride=stride, padding=padding)


def col2im(input, kernel_size, stride, padding):
    """pyinn.col2im: the adjoint of im2col, output ((Ho−1)·s − 2p + k) square per axis, as pyinn's."""
    return _ops.col2im(input, kernel_size, stride=stride, padding=padding)


# last: modules.py imports conv2d_depthwise from this package (pyinn's own layout); gpuops.compat.pyinn
# has always exported the module here as well
from gpuops.compat.pyinn.modules import Conv2dDepthwise  # noqa: E402

__all__ = ["conv2d_depthwise", "dgmm", "cdgmm", "ncrelu", "im2col", "col2im", "Conv2dDepthwise"]
