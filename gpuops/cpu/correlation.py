"""CPU mirrors of gpuops.cuda.correlation: same argument lists (4-D float32/float64 arrays, int64
parameters, scalars in the compute type; the CUDA launch-geometry arguments are accepted and unused),
same formulas (docs/ops.md §7), parallel over (image, displacement) forward and (image, channel)
backward.  The backward is the exact adjoint written as a per-(n, c) scatter, which is deterministic
because each (n, c) plane belongs to one thread.
"""
import numpy as np

from gpuops._toolchain import CPU_JIT, njit, prange
from gpuops.cpu._loops import fma, span


@njit(cache=True, inline="always")
def _overlap(n_out, stride, offset, shift, size):
    """Output indices [lo, hi) whose two inputs (``o·stride + offset`` and that ``+ shift``) are both
    inside, and the slices of the two inputs they read (meaningless when lo == hi)."""
    lo1, hi1 = span(n_out, stride, offset, size)
    lo2, hi2 = span(n_out, stride, offset + shift, size)
    lo = max(lo1, lo2)
    hi = max(lo, min(hi1, hi2))
    first, stop = lo * stride + offset, (hi - 1) * stride + offset + 1
    return lo, hi, slice(first, stop, stride), slice(first + shift, stop + shift, stride)


@njit(cache=True, inline="always")
def _patch_shift(d, PH, PW, dpH, dpW):
    """(sy, sx) of displacement channel d (docs/ops.md §7)."""
    ph = d // PW
    pw = d - ph * PW
    return (ph - (PH - 1) // 2) * dpH, (pw - (PW - 1) // 2) * dpW


@njit(**CPU_JIT)
def _forward(in1, in2, out, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, scale):
    N, C, H, W = in1.shape
    D, oH, oW = out.shape[1], out.shape[2], out.shape[3]
    for nd in prange(N * D):
        n = nd // D
        d = nd - n * D
        sy, sx = _patch_shift(d, PH, PW, dpH, dpW)
        acc = np.zeros((oH, oW), out.dtype)
        for a in range(kH):
            h_lo, h_hi, rows, rows2 = _overlap(oH, sH, a * dilH - padH, sy, H)
            if h_lo == h_hi:
                continue
            for b in range(kW):
                w_lo, w_hi, cols, cols2 = _overlap(oW, sW, b * dilW - padW, sx, W)
                if w_lo == w_hi:
                    continue
                for c in range(C):
                    fma(acc[h_lo:h_hi, w_lo:w_hi], in1[n, c, rows, cols], in2[n, c, rows2, cols2])
        for h in range(oH):
            for w in range(oW):
                out[n, d, h, w] = acc[h, w] * scale


def sample_forward(in1, in2, out, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW,
                   gsz, ngroups, tyo, txo, tiles_x, scale):
    _forward(in1, in2, out, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, scale)


sample_forward64 = sample_forward


def sample_forward_direct(in1, in2, out, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, scale, zero):
    _forward(in1, in2, out, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, scale)


@njit(**CPU_JIT)
def _backward(g, in1, in2, gin1, gin2, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, scale):
    N, C, H, W = in1.shape
    D, oH, oW = g.shape[1], g.shape[2], g.shape[3]
    for nc in prange(N * C):
        n = nc // C
        c = nc - n * C
        a1 = np.zeros((H, W), gin1.dtype)
        a2 = np.zeros((H, W), gin2.dtype)
        for d in range(D):
            sy, sx = _patch_shift(d, PH, PW, dpH, dpW)
            for a in range(kH):
                h_lo, h_hi, rows, rows2 = _overlap(oH, sH, a * dilH - padH, sy, H)
                if h_lo == h_hi:
                    continue
                for b in range(kW):
                    w_lo, w_hi, cols, cols2 = _overlap(oW, sW, b * dilW - padW, sx, W)
                    if w_lo == w_hi:
                        continue
                    grad = g[n, d, h_lo:h_hi, w_lo:w_hi]
                    fma(a1[rows, cols], grad, in2[n, c, rows2, cols2])
                    fma(a2[rows2, cols2], grad, in1[n, c, rows, cols])
        for y in range(H):
            for x in range(W):
                gin1[n, c, y, x] = a1[y, x] * scale
                gin2[n, c, y, x] = a2[y, x] * scale


def sample_backward(g, in1, in2, gin1, gin2, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW,
                    gsz, ngroups, tiles_x, scale):
    _backward(g, in1, in2, gin1, gin2, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, scale)


sample_backward64 = sample_backward
