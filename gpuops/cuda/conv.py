"""CUDA kernels of the conv family: depthwise convolution (forward, input and weight gradients),
im2col and its adjoint col2im.

All arrays arrive flat (1-D, C-contiguous); shapes travel as int64 scalars, and every offset is
computed in 64 bits (tensors may exceed 2**31 elements).

Depthwise convolution (docs/ops.md §4), block = ``THREADS`` threads viewed as 32 × 8:

* ``DW_TILED`` — one block computes a ``TH × TW`` (32 × 32) output tile of one (n, channel) plane:
  the input patch with its halo and the taps go to dynamic shared memory (compute type: float32
  for 16/32-bit storage, float64 for float64), each thread accumulates ``ROWS`` (4) outputs in
  registers, 8 rows apart (consecutive lanes read consecutive shared words: no bank conflicts
  for stride 1).  The same kernel computes the forward pass (one source plane per output plane)
  and, for stride 1, the input gradient (a correlation of grad_out with the flipped taps, summed
  over the m output channels of each input channel).  Used when the patch fits in 48 KiB.
* ``DW_DIRECT`` / ``DW_GRAD_X_STRIDED`` — one thread per output, reading global memory (the
  fallbacks for patches that do not fit, and the strided input gradient, a gather that tests
  ``(y + p - i·d) % s == 0``).
* ``DW_WGRAD_TILED`` / ``DW_WGRAD_DIRECT`` + ``DW_WGRAD_FINAL`` — the weight (and bias) gradient
  as a deterministic two-stage reduction, no atomics: a block owns one output channel and a fixed
  subset ("group") of its (image, tile) work items; each thread owns one tap (or the bias) for the
  block's lifetime and a lane of the pixels; lanes are tree-reduced in shared memory and written
  to ``partial[o, group, tap]``; the final kernel sums the groups in a fixed order.

Channels-last depthwise (C-contiguous (N, H, W, C) arrays, the channel fastest, so that a warp reads
consecutive channels of one pixel): ``DW_NHWC_DIRECT`` (one thread per output, the correlation of
``DW_DIRECT``), ``DW_NHWC_GRAD_X`` (the strided input gradient, a gather) and ``DW_NHWC_WGRAD`` +
``DW_NHWC_WGRAD_FINAL`` (the weight gradient: partial[group, tap, channel] over fixed pixel subsets, then
the groups summed in a fixed order by rows of a block) take any taps, stride, dilation, multiplier and dtype; the generated
``DW_NHWC_FAST``, ``DW_NHWC_GRAD_X_FAST`` and ``DW_NHWC_WGRAD_FAST`` (64-bit words of channels, see
gpuops.cuda._conv_source) are the fast path.

im2col is a gather over the columns; col2im is the exact adjoint computed as a gather over the
image (each pixel sums the column entries that came from it).
"""
from gpuops._constants import (CONV_FAST_SIZES, CONV_FAST_STRIDES, CONV_NY, CONV_THREADS, CONV_TILE_H, CONV_TILE_W,
                               CONV_WGRAD_FINAL_ROWS)
from gpuops._constants import SHARED_BYTES  # noqa: F401  (the budget gpuops.conv plans DW_TILED launches with)
from gpuops._dtypes import STORAGE
from gpuops._launch import ByDtype, Kernel, array_type, compute_type
from gpuops._toolchain import cuda, nt
from gpuops.cuda import _conv_source, _generate
from gpuops.cuda._conv_device import _grad_x_gather
from gpuops.cuda._memory import load, store, zero

THREADS = CONV_THREADS
TW = CONV_TILE_W     # tile width (one warp across)
TROWS = 8            # thread rows of a block
ROWS = 4             # outputs per thread in DW_TILED (8 rows apart)
TH = TROWS * ROWS    # tile height of DW_TILED
assert TH == CONV_TILE_H and TW == 32 and THREADS == TROWS * TW


# ---------------------------------------------------------------------------------------------
# shared helpers


@cuda.jit(device=True)
def _load_patch(smem, at, src, plane_off, Hs, Ws, iy0, ix0, PH, PW, tid):
    """smem[at + r*PW + c] = src plane at (iy0 + r, ix0 + c), zero outside the image."""
    r = tid >> 5
    while r < PH:
        iy = iy0 + r
        row_ok = iy >= 0 and iy < Hs
        row = plane_off + iy * Ws
        c = tid & 31
        while c < PW:
            ix = ix0 + c
            v = nt.float32(0.0)
            if row_ok and ix >= 0 and ix < Ws:
                v = load(src, row + ix)
            smem[at + r * PW + c] = v
            c += TW
        r += TROWS


@cuda.jit(device=True)
def _dw_tiled_body(smem, src, w, bias, dst, has_bias, n_src_ch, n_dst_ch, terms, div, Hs, Ws, Hd, Wd,
                   kh, kw, sh, sw, offy, offx, dh, dw, flip):
    """dst[n, d, y, x] = bias[d] + Σ_{q<terms} Σ_{i,j} w'[d·terms + q, i, j]
                                    · src[n, (d·terms + q) // div, y·sh + offy + i·dh, x·sw + offx + j·dw]

    with w' the taps, flipped in both axes when ``flip``.  Forward: terms=1, div=m, offsets -pad.
    Input gradient (stride 1): terms=m, div=1, flip, offsets pad - (k-1)·dil.
    Grid: (planes, tiles down, tiles across), one block per tile, no 64-bit divisions.
    """
    tid = cuda.threadIdx.x
    tx = tid & 31
    ty = tid >> 5
    KK = kh * kw
    TK = terms * KK
    PH = (TH - 1) * sh + (kh - 1) * dh + 1
    PW = (TW - 1) * sw + (kw - 1) * dw + 1
    plane32 = nt.int32(cuda.blockIdx.x)
    n = nt.int64(plane32 // nt.int32(n_dst_ch))
    plane = nt.int64(plane32)
    d = plane - n * n_dst_ch
    oy0 = nt.int64(cuda.blockIdx.y) * TH
    ox0 = nt.int64(cuda.blockIdx.z) * TW
    for q in range(terms):
        kk = tid
        while kk < KK:
            tap = kk
            if flip:
                tap = KK - 1 - kk
            smem[q * KK + kk] = load(w, (d * terms + q) * KK + tap)
            kk += THREADS
    acc0 = nt.float32(0.0)
    acc1 = nt.float32(0.0)
    acc2 = nt.float32(0.0)
    acc3 = nt.float32(0.0)
    row_step = nt.int32(TROWS * sh * PW)
    tap_row = nt.int32(dh * PW)
    tap_col = nt.int32(dw)
    base = nt.int32(TK + ty * sh * PW + tx * sw)
    for q in range(terms):
        s = d * terms + q
        if div != 1:
            s = nt.int64(nt.int32(d) // nt.int32(div))
        if q > 0:
            cuda.syncthreads()
        _load_patch(smem, TK, src, (n * n_src_ch + s) * Hs * Ws, Hs, Ws, oy0 * sh + offy, ox0 * sw + offx,
                    PH, PW, tid)
        cuda.syncthreads()
        wb = nt.int32(q * KK)
        row = base
        for i in range(kh):
            o = row
            for j in range(kw):
                wv = smem[wb]
                acc0 += wv * smem[o]
                acc1 += wv * smem[o + row_step]
                acc2 += wv * smem[o + 2 * row_step]
                acc3 += wv * smem[o + 3 * row_step]
                wb += 1
                o += tap_col
            row += tap_row
    if has_bias:
        b = load(bias, d)
        acc0 += b
        acc1 += b
        acc2 += b
        acc3 += b
    ox = ox0 + tx
    if ox < Wd:
        out = plane * Hd * Wd + ox
        oy = oy0 + ty
        if oy < Hd:
            store(dst, out + oy * Wd, acc0)
        oy += TROWS
        if oy < Hd:
            store(dst, out + oy * Wd, acc1)
        oy += TROWS
        if oy < Hd:
            store(dst, out + oy * Wd, acc2)
        oy += TROWS
        if oy < Hd:
            store(dst, out + oy * Wd, acc3)


def _dw_tiled_f32(src, w, bias, dst, has_bias, n_src_ch, n_dst_ch, terms, div, Hs, Ws, Hd, Wd,
                  kh, kw, sh, sw, offy, offx, dh, dw, flip):
    smem = cuda.shared.array(0, nt.float32)
    _dw_tiled_body(smem, src, w, bias, dst, has_bias, n_src_ch, n_dst_ch, terms, div, Hs, Ws, Hd, Wd,
                   kh, kw, sh, sw, offy, offx, dh, dw, flip)


def _dw_tiled_f64(src, w, bias, dst, has_bias, n_src_ch, n_dst_ch, terms, div, Hs, Ws, Hd, Wd,
                  kh, kw, sh, sw, offy, offx, dh, dw, flip):
    smem = cuda.shared.array(0, nt.float64)
    _dw_tiled_body(smem, src, w, bias, dst, has_bias, n_src_ch, n_dst_ch, terms, div, Hs, Ws, Hd, Wd,
                   kh, kw, sh, sw, offy, offx, dh, dw, flip)


def _dw_direct(src, w, bias, dst, has_bias, n_src_ch, n_dst_ch, terms, div, Hs, Ws, Hd, Wd,
               kh, kw, sh, sw, offy, offx, dh, dw, flip):
    """One thread per output; the formula of `_dw_tiled_body` read straight from global memory."""
    KK = kh * kw
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    n_out = dst.size
    while i < n_out:
        ox = i % Wd
        r = i // Wd
        oy = r % Hd
        plane = r // Hd
        n = plane // n_dst_ch
        d = plane - n * n_dst_ch
        acc = nt.float32(0.0)
        for q in range(terms):
            s = (d * terms + q) // div
            src_off = (n * n_src_ch + s) * Hs * Ws
            w_off = (d * terms + q) * KK
            for a in range(kh):
                iy = oy * sh + offy + a * dh
                if iy >= 0 and iy < Hs:
                    for b in range(kw):
                        ix = ox * sw + offx + b * dw
                        if ix >= 0 and ix < Ws:
                            kk = a * kw + b
                            if flip:
                                kk = KK - 1 - kk
                            acc += load(w, w_off + kk) * load(src, src_off + iy * Ws + ix)
        if has_bias:
            acc += load(bias, d)
        store(dst, i, acc)
        i += step


def _dw_grad_x_strided(g, w, gx, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, planes):
    """`_grad_x_gather` with every size at run time (any taps, stride, dilation, depth multiplier)."""
    _grad_x_gather(g, w, gx, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, planes)


# ---------------------------------------------------------------------------------------------
# weight / bias gradient: stage 1 (per-block partial sums), stage 2 (fixed-order sum)


@cuda.jit(device=True)
def _tree_reduce_lanes(smem, at, tid, lane, width, active):
    """Sum smem[at + tid - lane + 0 .. width) into smem[at + tid - lane] (all threads must call;
    only ``active`` ones add)."""
    while width > 1:
        half = (width + 1) >> 1
        if active and lane + half < width:
            smem[at + tid] += smem[at + tid + half]
        cuda.syncthreads()
        width = half


@cuda.jit(device=True)
def _dw_wgrad_tiled_body(smem, x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
                         th, tiles_x, tiles_y, groups, tpt, with_bias):
    tid = cuda.threadIdx.x
    KK = kh * kw
    slots = KK + with_bias
    per_pass = THREADS // tpt
    slot0 = tid // tpt
    lane = tid - slot0 * tpt
    active = slot0 < per_pass      # the THREADS % tpt leftover threads only help load tiles
    Cm = C * m
    PH = (th - 1) * sh + (kh - 1) * dh + 1
    PW = (TW - 1) * sw + (kw - 1) * dw + 1
    G_AT = 0
    P_AT = th * TW
    R_AT = P_AT + PH * PW
    npix = th * TW
    tiles = tiles_x * tiles_y
    items = (x.size // (C * H * W)) * tiles
    total = Cm * groups
    n_pass = (slots + per_pass - 1) // per_pass
    blk = nt.int64(cuda.blockIdx.x)
    while blk < total:
        o = blk // groups
        grp = blk - o * groups
        c = o // m
        for ps in range(n_pass):
            k = ps * per_pass + slot0
            if not active:
                k = slots
            ki = k // kw
            kj = k - ki * kw
            acc = nt.float32(0.0)
            item = grp
            while item < items:
                n = item // tiles
                t = item - n * tiles
                tyi = t // tiles_x
                oy0 = tyi * th
                ox0 = (t - tyi * tiles_x) * TW
                cuda.syncthreads()
                g_off = (n * Cm + o) * Ho * Wo
                p = tid
                while p < npix:
                    oy = oy0 + (p >> 5)
                    ox = ox0 + (p & 31)
                    v = nt.float32(0.0)
                    if oy < Ho and ox < Wo:
                        v = load(g, g_off + oy * Wo + ox)
                    smem[G_AT + p] = v
                    p += THREADS
                _load_patch(smem, P_AT, x, (n * C + c) * H * W, H, W, oy0 * sh - ph, ox0 * sw - pw, PH, PW, tid)
                cuda.syncthreads()
                rows = Ho - oy0
                if rows > th:
                    rows = th
                cols = Wo - ox0
                if cols > TW:
                    cols = TW
                if k < KK:
                    base = P_AT + ki * dh * PW + kj * dw
                    p = lane
                    while p < npix:
                        r = p >> 5
                        cc = p & 31
                        if r < rows and cc < cols:
                            acc += smem[G_AT + p] * smem[base + r * sh * PW + cc * sw]
                        p += tpt
                elif k < slots:
                    p = lane
                    while p < npix:
                        acc += smem[G_AT + p]
                        p += tpt
                item += groups
            cuda.syncthreads()
            smem[R_AT + tid] = acc
            cuda.syncthreads()
            _tree_reduce_lanes(smem, R_AT, tid, lane, tpt, active)
            if lane == 0 and k < slots:
                partial[(o * groups + grp) * slots + k] = smem[R_AT + tid]
        blk += cuda.gridDim.x


def _dw_wgrad_tiled_f32(x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
                        th, tiles_x, tiles_y, groups, tpt, with_bias):
    smem = cuda.shared.array(0, nt.float32)
    _dw_wgrad_tiled_body(smem, x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
                         th, tiles_x, tiles_y, groups, tpt, with_bias)


def _dw_wgrad_tiled_f64(x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
                        th, tiles_x, tiles_y, groups, tpt, with_bias):
    smem = cuda.shared.array(0, nt.float64)
    _dw_wgrad_tiled_body(smem, x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
                         th, tiles_x, tiles_y, groups, tpt, with_bias)


@cuda.jit(device=True)
def _dw_wgrad_direct_body(smem, x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
                          groups, tpt, with_bias):
    """Like the tiled stage 1, reading global memory; work items are whole images."""
    tid = cuda.threadIdx.x
    KK = kh * kw
    slots = KK + with_bias
    per_pass = THREADS // tpt
    slot0 = tid // tpt
    lane = tid - slot0 * tpt
    active = slot0 < per_pass      # the THREADS % tpt leftover threads only help load tiles
    Cm = C * m
    items = x.size // (C * H * W)
    npix = Ho * Wo
    total = Cm * groups
    n_pass = (slots + per_pass - 1) // per_pass
    blk = nt.int64(cuda.blockIdx.x)
    while blk < total:
        o = blk // groups
        grp = blk - o * groups
        c = o // m
        for ps in range(n_pass):
            k = ps * per_pass + slot0
            if not active:
                k = slots
            ki = k // kw
            kj = k - ki * kw
            acc = nt.float32(0.0)
            if k < slots:
                n = grp
                while n < items:
                    g_off = (n * Cm + o) * npix
                    x_off = (n * C + c) * H * W
                    p = nt.int64(lane)
                    while p < npix:
                        gv = load(g, g_off + p)
                        if k < KK:
                            oy = p // Wo
                            iy = oy * sh - ph + ki * dh
                            ix = (p - oy * Wo) * sw - pw + kj * dw
                            if iy >= 0 and iy < H and ix >= 0 and ix < W:
                                acc += gv * load(x, x_off + iy * W + ix)
                        else:
                            acc += gv
                        p += tpt
                    n += groups
            cuda.syncthreads()
            smem[tid] = acc
            cuda.syncthreads()
            _tree_reduce_lanes(smem, 0, tid, lane, tpt, active)
            if lane == 0 and k < slots:
                partial[(o * groups + grp) * slots + k] = smem[tid]
        blk += cuda.gridDim.x


def _dw_wgrad_direct_f32(x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, groups, tpt, with_bias):
    smem = cuda.shared.array(THREADS, nt.float32)
    _dw_wgrad_direct_body(smem, x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
                          groups, tpt, with_bias)


def _dw_wgrad_direct_f64(x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, groups, tpt, with_bias):
    smem = cuda.shared.array(THREADS, nt.float64)
    _dw_wgrad_direct_body(smem, x, g, partial, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
                          groups, tpt, with_bias)


def _dw_wgrad_final(partial, gw, gb, groups, KK, with_bias):
    """gw[o, k] (and gb[o]) = Σ_group partial[o, group, k], groups summed in order."""
    slots = KK + with_bias
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    n = (partial.size // (groups * slots)) * slots
    while i < n:
        o = i // slots
        k = i - o * slots
        at = o * groups * slots + k
        acc = partial[at]
        for grp in range(1, groups):
            acc += partial[at + grp * slots]
        if k < KK:
            store(gw, o * KK + k, acc)
        else:
            store(gb, o, acc)
        i += step


# ---------------------------------------------------------------------------------------------
# channels-last (NHWC) depthwise: the general kernels (any taps, stride, dilation, multiplier, dtype)
#
# Arrays are C-contiguous (N, H, W, C): the channel is the contiguous axis, and consecutive threads take
# consecutive channels of one pixel, so every load and store of a warp is coalesced.  The generated
# kernels (`gpuops.cuda._conv_source`, "channels-last kernels") are the fast path; these run the rest.


def _dw_nhwc_direct(src, w, bias, dst, has_bias, n_src_ch, n_dst_ch, terms, div, Hs, Ws, Hd, Wd,
                    kh, kw, sh, sw, offy, offx, dh, dw, flip):
    """`_dw_direct` on channels-last arrays: dst[n, y, x, d] = bias[d] + Σ_{q<terms} Σ_{i,j}
    w'[d·terms + q, i, j] · src[n, y·sh + offy + i·dh, x·sw + offx + j·dw, (d·terms + q) // div];
    one thread per output, the channel fastest."""
    KK = kh * kw
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    n_out = dst.size
    while i < n_out:
        d = i % n_dst_ch
        r = i // n_dst_ch
        ox = r % Wd
        r = r // Wd
        oy = r % Hd
        n = r // Hd
        acc = nt.float32(0.0)
        for q in range(terms):
            s = (d * terms + q) // div
            w_off = (d * terms + q) * KK
            for a in range(kh):
                iy = oy * sh + offy + a * dh
                if iy >= 0 and iy < Hs:
                    row = (n * Hs + iy) * Ws
                    for b in range(kw):
                        ix = ox * sw + offx + b * dw
                        if ix >= 0 and ix < Ws:
                            kk = a * kw + b
                            if flip:
                                kk = KK - 1 - kk
                            acc += load(w, w_off + kk) * load(src, (row + ix) * n_src_ch + s)
        if has_bias:
            acc += load(bias, d)
        store(dst, i, acc)
        i += step


def _dw_nhwc_grad_x(g, w, gx, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    """The input gradient on channels-last arrays, any stride (the gather of `_grad_x_gather`):
    gx[n, y, x, c] = Σ_{q<m} Σ_{i,j} w[c·m+q, i, j] · g[n, (y+ph-i·dh)/sh, (x+pw-j·dw)/sw, c·m+q] over the
    taps whose divisions are exact and in range; one thread per input element, the channel fastest."""
    KK = kh * kw
    Cm = C * m
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    n_out = gx.size
    while i < n_out:
        c = i % C
        r = i // C
        x = r % W
        r = r // W
        y = r % H
        n = r // H
        acc = nt.float32(0.0)
        for a in range(kh):
            ty = y + ph - a * dh
            if ty >= 0 and ty % sh == 0 and ty // sh < Ho:
                row = (n * Ho + ty // sh) * Wo
                for b in range(kw):
                    tx = x + pw - b * dw
                    if tx >= 0 and tx % sw == 0 and tx // sw < Wo:
                        at = (row + tx // sw) * Cm + c * m
                        for q in range(m):
                            acc += load(w, (c * m + q) * KK + a * kw + b) * load(g, at + q)
        store(gx, i, acc)
        i += step


def _dw_nhwc_wgrad(x, g, partial, N, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, groups, with_bias):
    """Weight-gradient stage 1 on channels-last arrays: partial[grp, k, o] = Σ over the output pixels
    p = grp, grp + groups, … (in that order) of g[p, o] · x[the pixel tap k of p reads, o // m] (k = KK:
    the bias, Σ g[p, o]); one thread per (group, slot, channel), the channel fastest (coalesced)."""
    KK = kh * kw
    slots = KK + with_bias
    Cm = C * m
    P = N * Ho * Wo
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    total = groups * slots * Cm
    while i < total:
        o = i % Cm
        r = i // Cm
        k = r % slots
        grp = r // slots
        c = o // m
        a = k // kw
        b = k - a * kw
        acc = nt.float32(0.0)
        p = grp
        while p < P:
            gv = load(g, p * Cm + o)
            if k < KK:
                ox = p % Wo
                r2 = p // Wo
                oy = r2 % Ho
                n = r2 // Ho
                iy = oy * sh - ph + a * dh
                ix = ox * sw - pw + b * dw
                if iy >= 0 and iy < H and ix >= 0 and ix < W:
                    acc += gv * load(x, ((n * H + iy) * W + ix) * C + c)
            else:
                acc += gv
            p += groups
        partial[i] = acc
        i += step


@cuda.jit(device=True)
def _nhwc_wgrad_final_body(red, partial, gw, gb, groups, KK, with_bias):
    """gw[o, k] (and gb[o]) = Σ_group partial[group, k, o] (the stage 2 of every channels-last weight gradient).
    A block of 32 × CONV_WGRAD_FINAL_ROWS threads takes 32 consecutive outputs (reads coalesced along o); row r
    of it sums the groups r, r + rows, … in order, then row 0 adds the rows' sums in order: a fixed order for a
    fixed launch (deterministic), and no output is one thread's chain of ``groups`` loads."""
    lane = cuda.threadIdx.x % 32
    row = cuda.threadIdx.x // 32
    rows = cuda.blockDim.x // 32
    slots = KK + with_bias
    Cm = partial.size // (groups * slots)
    n = slots * Cm
    first = nt.int64(cuda.blockIdx.x) * 32
    while first < n:                        # the same trip count in every thread of the block (barriers)
        i = first + lane
        acc = zero(partial)
        if i < n:
            for grp in range(row, groups, rows):
                acc += partial[grp * n + i]
        red[row, lane] = acc
        cuda.syncthreads()
        if row == 0 and i < n:
            for r in range(1, rows):
                acc += red[r, lane]
            k = i // Cm
            o = i - k * Cm
            if k < KK:
                store(gw, o * KK + k, acc)
            else:
                store(gb, o, acc)
        cuda.syncthreads()
        first += nt.int64(cuda.gridDim.x) * 32


def _dw_nhwc_wgrad_final_f32(partial, gw, gb, groups, KK, with_bias):
    red = cuda.shared.array((CONV_WGRAD_FINAL_ROWS, 32), nt.float32)
    _nhwc_wgrad_final_body(red, partial, gw, gb, groups, KK, with_bias)


def _dw_nhwc_wgrad_final_f64(partial, gw, gb, groups, KK, with_bias):
    red = cuda.shared.array((CONV_WGRAD_FINAL_ROWS, 32), nt.float64)
    _nhwc_wgrad_final_body(red, partial, gw, gb, groups, KK, with_bias)


# ---------------------------------------------------------------------------------------------
# im2col / col2im


def _im2col(x, cols, H, W, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw):
    """cols[plane, i, j, oy, ox] = x[plane, oy·sh - ph + i·dh, ox·sw - pw + j·dw] (0 outside)."""
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    n = cols.size
    while i < n:
        ox = i % Wo
        r = i // Wo
        oy = r % Ho
        r = r // Ho
        b = r % kw
        r = r // kw
        a = r % kh
        plane = r // kh
        iy = oy * sh - ph + a * dh
        ix = ox * sw - pw + b * dw
        v = nt.float32(0.0)
        if iy >= 0 and iy < H and ix >= 0 and ix < W:
            v = load(x, (plane * H + iy) * W + ix)
        store(cols, i, v)
        i += step


def _col2im(cols, x, H, W, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw):
    """x[plane, y, x] = Σ of the column entries im2col took from that pixel (a gather, no atomics)."""
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    n = x.size
    while i < n:
        px = i % W
        r = i // W
        py = r % H
        plane = r // H
        acc = nt.float32(0.0)
        for a in range(kh):
            ty = py + ph - a * dh
            if ty >= 0 and ty % sh == 0 and ty // sh < Ho:
                oy = ty // sh
                for b in range(kw):
                    tx = px + pw - b * dw
                    if tx >= 0 and tx % sw == 0 and tx // sw < Wo:
                        acc += load(cols, (((plane * kh + a) * kw + b) * Ho + oy) * Wo + tx // sw)
        store(x, i, acc)
        i += step


# ---------------------------------------------------------------------------------------------
# kernel objects


def _flat(d):
    return array_type(d, 1)


def _partial(d):
    return nt.Array(compute_type(d), 1, "C")


_I = nt.int64
_NARROW = ("float16", "bfloat16", "float32")
_WIDE = ("float64",)

_tiled_sig = lambda d: (_flat(d),) * 4 + (_I,) * 18           # noqa: E731
_direct_sig = lambda d: (_flat(d),) * 4 + (_I,) * 18          # noqa: E731
_wgrad_tiled_sig = lambda d: (_flat(d), _flat(d), _partial(d)) + (_I,) * 20     # noqa: E731
_wgrad_direct_sig = lambda d: (_flat(d), _flat(d), _partial(d)) + (_I,) * 17    # noqa: E731
_final_sig = lambda d: (_partial(d), _flat(d), _flat(d)) + (_I,) * 3              # noqa: E731

DW_TILED = ByDtype(Kernel(_dw_tiled_f32, _tiled_sig, dtypes=_NARROW),
                   Kernel(_dw_tiled_f64, _tiled_sig, dtypes=_WIDE))
DW_DIRECT = Kernel(_dw_direct, _direct_sig)
DW_GRAD_X_STRIDED = Kernel(_dw_grad_x_strided, lambda d: (_flat(d),) * 3 + (_I,) * 15)
#: (K, stride) -> Kernel: the strided input gradient with its sizes fixed (stride > 1, dilation 1)
DW_GRAD_X_FIXED = {}
_grad_x_fixed_sig = lambda d: (_flat(d),) * 3 + (_I,) * 9          # noqa: E731
DW_WGRAD_TILED = ByDtype(Kernel(_dw_wgrad_tiled_f32, _wgrad_tiled_sig, dtypes=_NARROW),
                         Kernel(_dw_wgrad_tiled_f64, _wgrad_tiled_sig, dtypes=_WIDE))
DW_WGRAD_DIRECT = ByDtype(Kernel(_dw_wgrad_direct_f32, _wgrad_direct_sig, dtypes=_NARROW),
                          Kernel(_dw_wgrad_direct_f64, _wgrad_direct_sig, dtypes=_WIDE))
DW_WGRAD_FINAL = Kernel(_dw_wgrad_final, _final_sig)
DW_NHWC_DIRECT = Kernel(_dw_nhwc_direct, _direct_sig)
DW_NHWC_GRAD_X = Kernel(_dw_nhwc_grad_x, lambda d: (_flat(d),) * 3 + (_I,) * 14)
DW_NHWC_WGRAD = Kernel(_dw_nhwc_wgrad, lambda d: (_flat(d), _flat(d), _partial(d)) + (_I,) * 17)
DW_NHWC_WGRAD_FINAL = ByDtype(Kernel(_dw_nhwc_wgrad_final_f32, _final_sig, dtypes=_NARROW),
                              Kernel(_dw_nhwc_wgrad_final_f64, _final_sig, dtypes=_WIDE))
IM2COL = Kernel(_im2col, lambda d: (_flat(d), _flat(d)) + (_I,) * 12)
COL2IM = Kernel(_col2im, lambda d: (_flat(d), _flat(d)) + (_I,) * 12)

# ---------------------------------------------------------------------------------------------
# generated kernels: the depthwise fast path, fully unrolled per (kernel size, stride)
#
# gpuops.cuda._conv_source writes them (and documents their layouts: flat kernels, one thread per
# output column and strip of NY rows; stride-1 tile kernels with the input window in shared memory);
# gpuops.cuda._generate writes the text to a content-hashed file in the cache directory and imports it.

NY = CONV_NY                     # output rows per thread (fast path)
FAST_SIZES = CONV_FAST_SIZES
FAST_STRIDES = CONV_FAST_STRIDES
wgrad_ny = _conv_source.wgrad_ny
wgrad_parts = _conv_source.wgrad_parts

_fast_sig = lambda d: (_flat(d),) * 4 + (_I,) * 13                     # noqa: E731
_wgrad_fast_sig = lambda d: (_flat(d), _flat(d), _partial(d)) + (_I,) * 13   # noqa: E731
_tile_sig = lambda d: (_flat(d),) * 4 + (_I,) * 13                     # noqa: E731
_wgrad_tile_sig = lambda d: (_flat(d), _flat(d), _partial(d)) + (_I,) * 16   # noqa: E731

#: (K, stride) -> Kernel; narrow dtypes only (float64 takes the generic kernels)
DW_FAST = {}
#: (K, stride, band) -> Kernel: weight-gradient stage 1 (`wgrad_parts` bands of tap rows)
DW_WGRAD_FAST = {}
#: K -> Kernel: stride-1 shared-memory tile kernels (forward / input gradient, weight gradient)
DW_TILE = {}
DW_WGRAD_TILE = {}
_TABLES = {"DW_FAST": (DW_FAST, _fast_sig), "DW_WGRAD_FAST": (DW_WGRAD_FAST, _wgrad_fast_sig),
           "DW_GRAD_X_FIXED": (DW_GRAD_X_FIXED, _grad_x_fixed_sig), "DW_TILE": (DW_TILE, _tile_sig),
           "DW_WGRAD_TILE": (DW_WGRAD_TILE, _wgrad_tile_sig)}


def _build_fast(ny=NY, sizes=FAST_SIZES, strides=FAST_STRIDES):
    """Load the generated kernels for ``ny`` output rows per thread, ``sizes`` and ``strides`` (benchmarks
    try other values) and enter them in the tables and as module attributes."""
    entries = _conv_source.kernels(ny, sizes, strides)
    module = _generate.load("conv_depthwise", _conv_source.source(entries=entries))
    for table, key, function, _ in entries:
        kernels, signature = _TABLES[table]
        kernel = kernels[key] = Kernel(getattr(module, function), signature, dtypes=_NARROW)
        # gpuops._core.run finds them as DW_FAST_<K>_<S>, DW_WGRAD_FAST_<K>_<S>_<band>, DW_GRAD_X_FIXED_<K>_<S>,
        # DW_TILE_<K>, DW_WGRAD_TILE_<K>
        globals()["_".join((table, *map(str, key if isinstance(key, tuple) else (key,))))] = kernel


_build_fast()


# ---------------------------------------------------------------------------------------------
# generated channels-last kernels: per (K, stride), one kernel per word width (gpuops.cuda._conv_source,
# "channels-last kernels"): V = 2 float32 values per 64-bit word, V = 4 16-bit ones


class ByWord:
    """The kernels of one generated channels-last entry, one per word width, chosen by the storage dtype."""

    def __init__(self, kernels: dict):
        self.kernels = kernels          # V -> Kernel

    def kernel(self, dtype) -> Kernel:
        return self.kernels[8 // STORAGE[dtype][1]]

    def launch(self, dtype, *args, **kwargs):
        self.kernel(dtype).launch(dtype, *args, **kwargs)

    def prepare(self, dtype, *args, **kwargs):
        return self.kernel(dtype).prepare(dtype, *args, **kwargs)


_WORD_DTYPES = {2: ("float32",), 4: ("float16", "bfloat16")}
#: register caps of the channels-last kernels, as measured (H100, session 10): 128 (2 blocks of 256 threads per SM)
#: for the 4-output ones, 168 for the 8-output ones (C192 28² 7×7 bf16 forward 0.098 ms at 128, 0.075 at 168).
#: A cap of 192 for all slowed the 4-output float32 forward (C96 56² 7×7: 0.185 -> 0.251 ms) and the 8-output bf16
#: one (0.119 -> 0.137)
NHWC_MAX_REGISTERS = 128
NHWC_WIDE_MAX_REGISTERS = 168
#: bytes ptxas spills at those caps where it spills at all, (table, K, stride, V) -> bytes: the 7×7 16-bit
#: correlation, measured faster all the same (the compile checks allow exactly these)
NHWC_SPILLS = {("DW_NHWC_FAST", 7, 1, 4): 12}
_NHWC_SIGS = {"DW_NHWC_FAST": lambda d: (_flat(d),) * 4 + (_I,) * 12,
              "DW_NHWC_GRAD_X_FAST": lambda d: (_flat(d),) * 3 + (_I,) * 10,
              "DW_NHWC_WGRAD_FAST": lambda d: (_flat(d), _flat(d), _partial(d)) + (_I,) * 11}
#: (K, stride) -> ByWord: the channels-last correlation (forward / stride-1 input gradient), the strided input
#: gradient (stride > 1) and the weight gradient's stage 1
DW_NHWC_FAST = {}
DW_NHWC_GRAD_X_FAST = {}
DW_NHWC_WGRAD_FAST = {}


def build_nhwc(sizes=FAST_SIZES, strides=FAST_STRIDES):
    """Load the generated channels-last kernels and enter them in the tables and as module attributes (once;
    done on first use by `__getattr__`, so that importing this module does not load them: the compile checks
    call it)."""
    if DW_NHWC_FAST:
        return
    entries = _conv_source.nhwc_kernels(sizes, strides)
    module = _generate.load("conv_nhwc", _conv_source.nhwc_source(entries=entries))
    tables = {"DW_NHWC_FAST": DW_NHWC_FAST, "DW_NHWC_GRAD_X_FAST": DW_NHWC_GRAD_X_FAST,
              "DW_NHWC_WGRAD_FAST": DW_NHWC_WGRAD_FAST}
    for table, (k, s, v), function, _ in entries:
        entry = tables[table].setdefault((k, s), ByWord({}))
        wide = table != "DW_NHWC_GRAD_X_FAST" and _conv_source.nhwc_tx(
            k, s, v, wgrad=table == "DW_NHWC_WGRAD_FAST") == _conv_source.NHWC_TX_WIDE
        cap = NHWC_WIDE_MAX_REGISTERS if wide else NHWC_MAX_REGISTERS
        # capped: unrolled straight-line code lets the compiler hoist loads (latency) until registers run out
        kernel = entry.kernels[v] = Kernel(getattr(module, function), _NHWC_SIGS[table], dtypes=_WORD_DTYPES[v],
                                           max_registers=cap)
        kernel.register_budget = cap                    # what the compile checks hold it to
        kernel.spill_budget = NHWC_SPILLS.get((table, k, s, v), 0)
        # gpuops._core.run finds them as DW_NHWC_FAST_<K>_<S>, DW_NHWC_GRAD_X_FAST_<K>_<S>, DW_NHWC_WGRAD_FAST_<K>_<S>
        globals()[f"{table}_{k}_{s}"] = entry


def __getattr__(name):
    """The generated channels-last kernels (``DW_NHWC_FAST_<K>_<S>`` …), built on the first look-up."""
    if name.startswith(tuple(_NHWC_SIGS)) and not DW_NHWC_FAST:
        build_nhwc()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
