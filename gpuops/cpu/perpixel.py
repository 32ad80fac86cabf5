"""CPU mirrors of gpuops.cuda.perpixel: same argument lists (flat float32/float64 arrays, int64
scalars), same formulas, parallel over planes.

Each mirror works tap by tap on whole planes: for one tap the window positions that fall inside the image
form a strided rectangle (`span`), so the inner loop is a branch-free 2-D multiply-add (`fma`) that numba
vectorises.  The transpose is computed as the scatter it is the adjoint of, per (image, channel) plane:
within one plane and one tap every output pixel lands on a different input pixel, so planes run in
parallel without races.  The bias partial sums put the whole sum of each channel into segment 0 and
zeros into the others: `pp_bias_final` then gives what the CUDA reduction gives, up to rounding.
"""
import numpy as np

from gpuops._toolchain import CPU_JIT, njit, prange
from gpuops.cpu._loops import fma, span


@njit(**CPU_JIT)
def pp_gather(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    planes = dst.size // (Ho * Wo)
    KK = kh * kw
    for plane in prange(planes):
        n = plane // C
        c = plane - n * C
        image = src[plane * H * W:(plane + 1) * H * W].reshape(H, W)
        w_at = (n * G + c // cpg) * KK * Ho * Wo
        acc = np.zeros((Ho, Wo), dst.dtype)
        for i in range(kh):
            oy_lo, oy_hi = span(Ho, sh, i * dh - ph, H)
            for j in range(kw):
                ox_lo, ox_hi = span(Wo, sw, j * dw - pw, W)
                if oy_lo < oy_hi and ox_lo < ox_hi:
                    taps = w[w_at + (i * kw + j) * Ho * Wo:w_at + (i * kw + j + 1) * Ho * Wo].reshape(Ho, Wo)
                    iy, ix = oy_lo * sh - ph + i * dh, ox_lo * sw - pw + j * dw
                    fma(acc[oy_lo:oy_hi, ox_lo:ox_hi], taps[oy_lo:oy_hi, ox_lo:ox_hi],
                        image[iy:iy + (oy_hi - oy_lo - 1) * sh + 1:sh, ix:ix + (ox_hi - ox_lo - 1) * sw + 1:sw])
        if has_bias:
            acc += bias[c]
        dst[plane * Ho * Wo:(plane + 1) * Ho * Wo] = acc.ravel()


@njit(**CPU_JIT)
def pp_transpose(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    planes = dst.size // (H * W)
    KK = kh * kw
    for plane in prange(planes):
        n = plane // C
        c = plane - n * C
        grad = src[plane * Ho * Wo:(plane + 1) * Ho * Wo].reshape(Ho, Wo)
        w_at = (n * G + c // cpg) * KK * Ho * Wo
        acc = np.zeros((H, W), dst.dtype)
        for i in range(kh):
            oy_lo, oy_hi = span(Ho, sh, i * dh - ph, H)
            for j in range(kw):
                ox_lo, ox_hi = span(Wo, sw, j * dw - pw, W)
                if oy_lo < oy_hi and ox_lo < ox_hi:
                    taps = w[w_at + (i * kw + j) * Ho * Wo:w_at + (i * kw + j + 1) * Ho * Wo].reshape(Ho, Wo)
                    iy, ix = oy_lo * sh - ph + i * dh, ox_lo * sw - pw + j * dw
                    fma(acc[iy:iy + (oy_hi - oy_lo - 1) * sh + 1:sh, ix:ix + (ox_hi - ox_lo - 1) * sw + 1:sw],
                        taps[oy_lo:oy_hi, ox_lo:ox_hi], grad[oy_lo:oy_hi, ox_lo:ox_hi])
        if has_bias:
            acc += bias[c]
        dst[plane * H * W:(plane + 1) * H * W] = acc.ravel()


@njit(**CPU_JIT)
def pp_wgrad(center, shifted, gw, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    KK = kh * kw
    planes = gw.size // (Ho * Wo)             # (n, g, tap) triples
    for plane in prange(planes):
        ng = plane // KK
        tap = plane - ng * KK
        n = ng // G
        g = ng - n * G
        i = tap // kw
        j = tap - i * kw
        acc = np.zeros((Ho, Wo), gw.dtype)
        oy_lo, oy_hi = span(Ho, sh, i * dh - ph, H)
        ox_lo, ox_hi = span(Wo, sw, j * dw - pw, W)
        if oy_lo < oy_hi and ox_lo < ox_hi:
            iy, ix = oy_lo * sh - ph + i * dh, ox_lo * sw - pw + j * dw
            for c in range(g * cpg, min(C, (g + 1) * cpg)):
                nc = n * C + c
                ctr = center[nc * Ho * Wo:(nc + 1) * Ho * Wo].reshape(Ho, Wo)
                image = shifted[nc * H * W:(nc + 1) * H * W].reshape(H, W)
                fma(acc[oy_lo:oy_hi, ox_lo:ox_hi], ctr[oy_lo:oy_hi, ox_lo:ox_hi],
                    image[iy:iy + (oy_hi - oy_lo - 1) * sh + 1:sh, ix:ix + (ox_hi - ox_lo - 1) * sw + 1:sw])
        gw[plane * Ho * Wo:(plane + 1) * Ho * Wo] = acc.ravel()


@njit(**CPU_JIT)
def pp_bias_partial(g, partial, C, plane_size, segments):
    N = g.size // (C * plane_size) if C * plane_size else 0
    for c in prange(C):
        acc = 0.0
        for n in range(N):
            base = (n * C + c) * plane_size
            acc += g[base:base + plane_size].sum()
        partial[c * segments:(c + 1) * segments] = 0.0
        partial[c * segments] = acc


@njit(**CPU_JIT)
def pp_bias_final(partial, gb, segments):
    for c in prange(gb.size):
        acc = partial[c * segments]
        for s in range(1, segments):
            acc += partial[c * segments + s]
        gb[c] = acc


# the middle stage of the CUDA bias sum: the same function on the partial sums
pp_bias_partial_sums = pp_bias_partial
# the CUDA kernels for groups of few channels (PP_GATHER_FEW, ...) differ from the others in their register tiles only
pp_gather_few = pp_gather
pp_transpose_few = pp_transpose
pp_wgrad_few = pp_wgrad
