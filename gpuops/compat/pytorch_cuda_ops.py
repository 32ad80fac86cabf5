"""Drop-in for johannesschaeufele/pytorch-cuda-ops (``op.gsmelu``, ``op.involution``, ``op.patch_correlate``):
``gsmelu``, ``GSmeLU``, ``involution`` and ``patch_correlate``.

Same positional signatures and values as the originals; unlike them, these also run on CPU, take
non-contiguous tensors (gradients included), compute 16-bit inputs in float32, never recompile per
parameter value, and raise `ValueError` where the original would read out of bounds.
"""
import numbers

import torch
import torch.nn.functional as F

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


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def involution(input: torch.Tensor, weight: torch.Tensor, kernel_size: int, stride_x: int, stride_y: int,
               channels: int, groups: int = 1) -> torch.Tensor:
    """The original ``involution(input, weight, kernel_size, stride_x, stride_y, channels, groups=1)``.

    input (N, C, H, W), C = ``channels``, **already padded** by the caller (no padding here); weight
    (N, E·K², Ho, Wo) with E = ceil(C / groups): ``groups`` is the number of consecutive channels sharing one
    kernel (it need not divide C; the last set serves fewer channels).  (Ho, Wo) come from the weight::

        out[n, c, h, w] = Σ_{i,j<K} weight[n, (c // groups)·K² + i·K + j, h, w] · input[n, c, stride_y·h + i, stride_x·w + j]

    Computed by `gpuops.torch.involution` (the official 6-D convention, the same memory) on the rows and
    columns the windows read, with zero channels appended when ``groups`` does not divide C.
    """
    K = _positive("kernel_size", kernel_size)
    sx, sy = _positive("stride_x", stride_x), _positive("stride_y", stride_y)
    C, per_kernel = _positive("channels", channels), _positive("groups", groups)
    if per_kernel > C:
        raise ValueError(f"groups (channels per kernel) must be <= channels = {C}, got {per_kernel}")
    if input.dim() != 4 or input.shape[1] != C:
        raise ValueError(f"input must be (N, channels = {C}, H, W), got shape {list(input.shape)}")
    E = -(-C // per_kernel)
    N, _, H, W = input.shape
    if weight.dim() != 4 or weight.shape[0] != N or weight.shape[1] != E * K * K:
        raise ValueError(f"weight must be (N = {N}, ceil(channels / groups)·kernel_size² = {E * K * K}, Ho, Wo), "
                         f"got shape {list(weight.shape)}")
    Ho, Wo = weight.shape[2:]
    rows, cols = sy * (Ho - 1) + K, sx * (Wo - 1) + K
    if Ho < 1 or Wo < 1 or rows > H or cols > W:
        raise ValueError(f"weight's output grid {Ho}×{Wo} with kernel_size {K} and strides (y {sy}, x {sx}) reads "
                         f"{rows}×{cols} input pixels, but input (pre-padded) is {H}×{W}")
    x = input[:, :, :rows, :cols]          # exactly the pixels the windows read: the op's output size is (Ho, Wo)
    if C % per_kernel:
        x = F.pad(x, (0, 0, 0, 0, 0, E * per_kernel - C))    # zero channels complete the last kernel's set
    out = _ops.involution(x, weight.reshape(N, E, K, K, Ho, Wo), stride=(sy, sx))
    return out[:, :C] if C % per_kernel else out


def patch_correlate(base: torch.Tensor, input: torch.Tensor, coords: torch.Tensor, r: int = 4,
                    l1: bool = False) -> torch.Tensor:
    """The original ``patch_correlate(base, input, coords, r=4, l1=False)``: `gpuops.torch.patch_correlate`
    with coords (N, Hg, Wg, 2) channels-last ([..., 0] = x), output (N, (2r+1)², Hg, Wg), x-offset-major.

    Dot mode divides by √C as the original does; L1 mode multiplies by C, as the original does
    (``C · Σ_c |base_c − s_c|``; the op's own L1 is the mean, 1/C · Σ_c).  Departures: ``r = 0`` gives the
    correct (N, 1, Hg, Wg) result (the original returned uninitialised memory of base's shape), ``r < 0``
    raises; coords are cast to base's dtype (the op takes one dtype); no channels_last warning.
    """
    if isinstance(coords, torch.Tensor) and isinstance(base, torch.Tensor) and coords.dtype != base.dtype:
        coords = coords.to(base.dtype)
    out = _ops.patch_correlate(base, input, coords, radius=r, l1=l1)
    if l1:
        C = base.shape[1]
        out = out * float(C * C)
    return out
