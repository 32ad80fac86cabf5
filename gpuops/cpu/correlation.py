"""CPU mirrors of gpuops.cuda.correlation: same argument lists (4-D float32/float64 arrays, int64
parameters, scalars in the compute type; the CUDA launch-geometry arguments are accepted and unused),
same formulas (spec/ops.md §7), parallel over (image, displacement) forward and (image, channel)
backward.  The backward is the exact adjoint written as a per-(n, c) scatter, which is deterministic
because each (n, c) plane belongs to one thread.
"""
import numpy as np

from gpuops._toolchain import CPU_JIT, njit, prange


@njit(**CPU_JIT)
def _forward(in1, in2, out, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, scale):
    N, C, H, W = in1.shape
    D, oH, oW = out.shape[1], out.shape[2], out.shape[3]
    for nd in prange(N * D):
        n = nd // D
        d = nd - n * D
        ph = d // PW
        pw = d - ph * PW
        sy = (ph - (PH - 1) // 2) * dpH
        sx = (pw - (PW - 1) // 2) * dpW
        acc = np.zeros((oH, oW), out.dtype)
        for c in range(C):
            for h in range(oH):
                for a in range(kH):
                    y = h * sH - padH + a * dilH
                    if y < 0 or y >= H or y + sy < 0 or y + sy >= H:
                        continue
                    for w in range(oW):
                        for b in range(kW):
                            x = w * sW - padW + b * dilW
                            if 0 <= x < W and 0 <= x + sx < W:
                                acc[h, w] += in1[n, c, y, x] * in2[n, c, y + sy, x + sx]
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
            ph = d // PW
            pw = d - ph * PW
            sy = (ph - (PH - 1) // 2) * dpH
            sx = (pw - (PW - 1) // 2) * dpW
            for h in range(oH):
                for a in range(kH):
                    y = h * sH - padH + a * dilH
                    if y < 0 or y >= H or y + sy < 0 or y + sy >= H:
                        continue
                    for w in range(oW):
                        gv = g[n, d, h, w]
                        for b in range(kW):
                            x = w * sW - padW + b * dilW
                            if 0 <= x < W and 0 <= x + sx < W:
                                a1[y, x] += gv * in2[n, c, y + sy, x + sx]
                                a2[y + sy, x + sx] += gv * in1[n, c, y, x]
        for y in range(H):
            for x in range(W):
                gin1[n, c, y, x] = a1[y, x] * scale
                gin2[n, c, y, x] = a2[y, x] * scale


def sample_backward(g, in1, in2, gin1, gin2, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW,
                    gsz, ngroups, tiles_x, scale):
    _backward(g, in1, in2, gin1, gin2, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, scale)


sample_backward64 = sample_backward
