"""CPU mirrors of gpuops.cuda.conv: same argument lists (flat float32/float64 arrays, int64 scalars),
same formulas, parallel over planes.

The tiled and direct CUDA variants compute the same thing, so their mirrors share one body (tile
parameters are ignored).  The weight-gradient stage 1 mirrors put the whole sum of each output
channel into group 0 and zeros into the other groups: stage 2 (`dw_wgrad_final`) then gives the
same result as the CUDA reduction, up to rounding.
"""
import numpy as np

from gpuops._toolchain import CPU_JIT, njit, prange
from gpuops.cpu._loops import axpy, span


@njit(cache=True)
def _stride1_plane(acc, src, src_off, w, w_off, Hs, Ws, Hd, Wd, kh, kw, offy, offx, dh, dw, flip):
    """acc (Hd·Wd) += one source plane correlated with one tap set, stride 1.

    The plane is copied into a zero-padded buffer of row width Wp, after which every tap is one long
    contiguous axpy over Hd·Wp values (columns Wd..Wp of each row are computed and dropped): far
    better vectorised than one short axpy per output row."""
    KK = kh * kw
    Hp, Wp = Hd + (kh - 1) * dh, Wd + (kw - 1) * dw
    padded = np.zeros(Hp * Wp + (kw - 1) * dw, acc.dtype)
    px_lo, px_hi = span(Wp, 1, offx, Ws)
    for py in range(Hp):
        y = py + offy
        if 0 <= y < Hs and px_lo < px_hi:
            row = src_off + y * Ws + offx
            padded[py * Wp + px_lo:py * Wp + px_hi] = src[row + px_lo:row + px_hi]
    full = np.zeros(Hd * Wp, acc.dtype)
    for a in range(kh):
        for b in range(kw):
            kk = a * kw + b
            if flip:
                kk = KK - 1 - kk
            shift = a * dh * Wp + b * dw
            axpy(full, padded[shift:shift + Hd * Wp], w[w_off + kk])
    for oy in range(Hd):
        acc[oy * Wd:(oy + 1) * Wd] += full[oy * Wp:oy * Wp + Wd]


@njit(**CPU_JIT)
def _dw_corr(src, w, bias, dst, has_bias, n_src_ch, n_dst_ch, terms, div, Hs, Ws, Hd, Wd,
             kh, kw, sh, sw, offy, offx, dh, dw, flip):
    KK = kh * kw
    planes = dst.size // (Hd * Wd)
    for plane in prange(planes):
        n = plane // n_dst_ch
        d = plane - n * n_dst_ch
        out_off = plane * Hd * Wd
        acc = np.zeros(Hd * Wd, dst.dtype)
        for q in range(terms):
            s = (d * terms + q) // div
            src_off = (n * n_src_ch + s) * Hs * Ws
            w_off = (d * terms + q) * KK
            if sh == 1 and sw == 1:
                _stride1_plane(acc, src, src_off, w, w_off, Hs, Ws, Hd, Wd, kh, kw, offy, offx, dh, dw, flip)
                continue
            plane_in = src[src_off:src_off + Hs * Ws].reshape(Hs, Ws)
            plane_out = acc.reshape(Hd, Wd)
            for a in range(kh):
                oy_lo, oy_hi = span(Hd, sh, offy + a * dh, Hs)
                for b in range(kw):
                    kk = a * kw + b
                    if flip:
                        kk = KK - 1 - kk
                    ox_lo, ox_hi = span(Wd, sw, offx + b * dw, Ws)
                    if oy_lo < oy_hi and ox_lo < ox_hi:
                        iy, ix = oy_lo * sh + offy + a * dh, ox_lo * sw + offx + b * dw
                        rows = slice(iy, iy + (oy_hi - oy_lo - 1) * sh + 1, sh)
                        cols = slice(ix, ix + (ox_hi - ox_lo - 1) * sw + 1, sw)
                        axpy(plane_out[oy_lo:oy_hi, ox_lo:ox_hi], plane_in[rows, cols], w[w_off + kk])
        if has_bias:
            acc += bias[d]
        dst[out_off:out_off + Hd * Wd] = acc


# Entry points are parallel functions or plain Python, never njit wrappers: an njit function calling a
# parallel one segfaults when loaded from the disk cache in a fresh process (numba#8578).
dw_tiled = dw_direct = _dw_corr


@njit(**CPU_JIT)
def dw_grad_x_strided(g, w, gx, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, planes):
    """Scatter form of the same adjoint (each grad_out entry adds onto the taps' input pixels)."""
    KK = kh * kw
    Cm = C * m
    for plane in prange(planes):
        n = plane // C
        c = plane - n * C
        acc = np.zeros(H * W, gx.dtype)
        for q in range(m):
            o = c * m + q
            g_off = (n * Cm + o) * Ho * Wo
            for a in range(kh):
                for b in range(kw):
                    wv = w[o * KK + a * kw + b]
                    for oy in range(Ho):
                        iy = oy * sh - ph + a * dh
                        if iy < 0 or iy >= H:
                            continue
                        for ox in range(Wo):
                            ix = ox * sw - pw + b * dw
                            if ix >= 0 and ix < W:
                                acc[iy * W + ix] += wv * g[g_off + oy * Wo + ox]
        gx[plane * H * W:(plane + 1) * H * W] = acc


@njit(**CPU_JIT)
def _dw_wgrad(x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, groups, with_bias):
    KK = kh * kw
    slots = KK + with_bias
    Cm = C * m
    N = x.size // (C * H * W)
    for o in prange(Cm):
        c = o // m
        sums = np.zeros(slots, partial.dtype)
        for n in range(N):
            g_off = (n * Cm + o) * Ho * Wo
            x_off = (n * C + c) * H * W
            for a in range(kh):
                for b in range(kw):
                    s = sums[a * kw + b]
                    for oy in range(Ho):
                        iy = oy * sh - ph + a * dh
                        if iy < 0 or iy >= H:
                            continue
                        for ox in range(Wo):
                            ix = ox * sw - pw + b * dw
                            if ix >= 0 and ix < W:
                                s += g[g_off + oy * Wo + ox] * x[x_off + iy * W + ix]
                    sums[a * kw + b] = s
            if with_bias:
                sums[KK] += g[g_off:g_off + Ho * Wo].sum()
        base = o * groups * slots
        partial[base:base + groups * slots] = 0.0
        partial[base:base + slots] = sums


def dw_wgrad_tiled(x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
                   th, tiles_x, tiles_y, groups, tpt, with_bias):
    _dw_wgrad(x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, groups, with_bias)


def dw_wgrad_direct(x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, groups, tpt, with_bias):
    _dw_wgrad(x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, groups, with_bias)


@njit(**CPU_JIT)
def dw_wgrad_final(partial, gw, gb, groups, KK, with_bias):
    slots = KK + with_bias
    Cm = partial.size // (groups * slots)
    for o in prange(Cm):
        for k in range(slots):
            at = o * groups * slots + k
            acc = partial[at]
            for grp in range(1, groups):
                acc += partial[at + grp * slots]
            if k < KK:
                gw[o * KK + k] = acc
            else:
                gb[o] = acc


# ---------------------------------------------------------------------------------------------
# channels-last (NHWC) depthwise: mirrors of the general kernels (C-contiguous (N, H, W, C) arrays; the
# generated CUDA kernels run on CUDA only).  The channel is the inner loop, over taps laid out per channel.


@njit(**CPU_JIT)
def dw_nhwc_direct(src, w, bias, dst, has_bias, n_src_ch, n_dst_ch, terms, div, Hs, Ws, Hd, Wd,
                   kh, kw, sh, sw, offy, offx, dh, dw, flip):
    KK = kh * kw
    rows = dst.size // (Wd * n_dst_ch)          # N·Hd
    taps = np.empty((terms, KK, n_dst_ch), dst.dtype)
    source = np.empty((terms, n_dst_ch), np.int64)
    for q in range(terms):
        for d in range(n_dst_ch):
            source[q, d] = (d * terms + q) // div
            for k in range(KK):
                taps[q, k, d] = w[(d * terms + q) * KK + (KK - 1 - k if flip else k)]
    for r in prange(rows):
        n = r // Hd
        oy = r - n * Hd
        acc = np.zeros((Wd, n_dst_ch), dst.dtype)
        for q in range(terms):
            for a in range(kh):
                iy = oy * sh + offy + a * dh
                if iy < 0 or iy >= Hs:
                    continue
                for b in range(kw):
                    k = a * kw + b
                    lo, hi = span(Wd, sw, offx + b * dw, Ws)
                    for ox in range(lo, hi):
                        base = ((n * Hs + iy) * Ws + ox * sw + offx + b * dw) * n_src_ch
                        for d in range(n_dst_ch):
                            acc[ox, d] += taps[q, k, d] * src[base + source[q, d]]
        if has_bias:
            for ox in range(Wd):
                for d in range(n_dst_ch):
                    acc[ox, d] += bias[d]
        dst[r * Wd * n_dst_ch:(r + 1) * Wd * n_dst_ch] = acc.ravel()


@njit(**CPU_JIT)
def dw_nhwc_grad_x(g, w, gx, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    KK = kh * kw
    Cm = C * m
    rows = gx.size // (W * C)                   # N·H
    taps = np.empty((KK, Cm), gx.dtype)
    for o in range(Cm):
        for k in range(KK):
            taps[k, o] = w[o * KK + k]
    for r in prange(rows):
        n = r // H
        y = r - n * H
        acc = np.zeros((W, C), gx.dtype)
        for a in range(kh):
            ty = y + ph - a * dh
            if ty < 0 or ty % sh != 0 or ty // sh >= Ho:
                continue
            for b in range(kw):
                k = a * kw + b
                for x in range(W):
                    tx = x + pw - b * dw
                    if tx < 0 or tx % sw != 0 or tx // sw >= Wo:
                        continue
                    base = ((n * Ho + ty // sh) * Wo + tx // sw) * Cm
                    for c in range(C):
                        for q in range(m):
                            acc[x, c] += taps[k, c * m + q] * g[base + c * m + q]
        gx[r * W * C:(r + 1) * W * C] = acc.ravel()


@njit(**CPU_JIT)
def dw_nhwc_wgrad(x, g, partial, N, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, groups, with_bias):
    """Every sum in group 0 (pixels in order), zeros in the others: stage 2 gives the CUDA result up to
    rounding."""
    KK = kh * kw
    slots = KK + with_bias
    Cm = C * m
    for k in prange(slots):
        a = k // kw
        b = k - a * kw
        acc = np.zeros(Cm, partial.dtype)
        for n in range(N):
            for oy in range(Ho):
                iy = oy * sh - ph + a * dh
                if k < KK and (iy < 0 or iy >= H):
                    continue
                for ox in range(Wo):
                    gb = ((n * Ho + oy) * Wo + ox) * Cm
                    if k < KK:
                        ix = ox * sw - pw + b * dw
                        if ix < 0 or ix >= W:
                            continue
                        xb = ((n * H + iy) * W + ix) * C
                        for o in range(Cm):
                            acc[o] += g[gb + o] * x[xb + o // m]
                    else:
                        for o in range(Cm):
                            acc[o] += g[gb + o]
        partial[k * Cm:(k + 1) * Cm] = acc
    partial[slots * Cm:] = 0.0


@njit(**CPU_JIT)
def dw_nhwc_wgrad_final(partial, gw, gb, groups, KK, with_bias):
    slots = KK + with_bias
    n = partial.size // groups
    Cm = n // slots
    for o in prange(Cm):
        for k in range(slots):
            acc = partial[k * Cm + o]
            for grp in range(1, groups):
                acc += partial[grp * n + k * Cm + o]
            if k < KK:
                gw[o * KK + k] = acc
            else:
                gb[o] = acc


@njit(**CPU_JIT)
def im2col(x, cols, H, W, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw):
    planes = x.size // (H * W)
    for pk in prange(planes * kh * kw):
        plane = pk // (kh * kw)
        a = (pk // kw) % kh
        b = pk % kw
        out = pk * Ho * Wo
        for oy in range(Ho):
            iy = oy * sh - ph + a * dh
            row_ok = iy >= 0 and iy < H
            for ox in range(Wo):
                ix = ox * sw - pw + b * dw
                if row_ok and ix >= 0 and ix < W:
                    cols[out + oy * Wo + ox] = x[(plane * H + iy) * W + ix]
                else:
                    cols[out + oy * Wo + ox] = 0.0


@njit(**CPU_JIT)
def col2im(cols, x, H, W, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw):
    planes = x.size // (H * W)
    for plane in prange(planes):
        acc = np.zeros(H * W, x.dtype)
        for a in range(kh):
            for b in range(kw):
                src = ((plane * kh + a) * kw + b) * Ho * Wo
                for oy in range(Ho):
                    iy = oy * sh - ph + a * dh
                    if iy < 0 or iy >= H:
                        continue
                    for ox in range(Wo):
                        ix = ox * sw - pw + b * dw
                        if ix >= 0 and ix < W:
                            acc[iy * W + ix] += cols[src + oy * Wo + ox]
        x[plane * H * W:(plane + 1) * H * W] = acc
