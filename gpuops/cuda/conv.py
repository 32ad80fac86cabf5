"""CUDA kernels of the conv family: depthwise convolution (forward, input and weight gradients),
im2col and its adjoint col2im.

All arrays arrive flat (1-D, C-contiguous); shapes travel as int64 scalars, and every offset is
computed in 64 bits (tensors may exceed 2**31 elements).

Depthwise convolution (spec/ops.md §4), block = ``THREADS`` threads viewed as 32 × 8:

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

im2col is a gather over the columns; col2im is the exact adjoint computed as a gather over the
image (each pixel sums the column entries that came from it).
"""
from gpuops._launch import Kernel, array_type, compute_type
from gpuops._toolchain import cuda, nt, overload
from gpuops.cuda._memory import load, store

THREADS = 256
TW = 32              # tile width (one warp across)
TROWS = 8            # thread rows of a block
ROWS = 4             # outputs per thread in DW_TILED (8 rows apart)
TH = TROWS * ROWS    # tile height of DW_TILED
SHARED_BYTES = 48 * 1024


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


@cuda.jit(device=True, inline=True)
def _grad_x_gather(g, w, gx, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, planes):
    """grad_x[n, c, y, x] = Σ_{q<m} Σ_{i,j} w[c·m+q, i, j] · g[n, c·m+q, (y+ph-i·dh)/sh, (x+pw-j·dw)/sw]
    over the taps whose division is exact and in range (the transposed convolution, as a gather).

    Grid: (planes, rows, column blocks), each axis walked with a grid stride, so the plane, row and
    column come from the block indices with no division per element, the tap tests divide in 32 bits,
    and the row's tests are the same for the whole block.  Inlined into each kernel, so that the
    generated ones (`_gen_grad_x_strided`) get their sizes and strides as constants: tap loops
    unrolled, divisions by 2 as shifts."""
    KK = nt.int32(kh * kw)
    Cm = C * m
    ho, wo = nt.int32(Ho), nt.int32(Wo)
    ush, usw = nt.uint32(sh), nt.uint32(sw)
    p = nt.int64(cuda.blockIdx.x)
    while p < planes:
        n = p // C
        c = p - n * C
        y = nt.int32(cuda.blockIdx.y)
        while y < H:
            x = nt.int32(cuda.blockIdx.z * cuda.blockDim.x + cuda.threadIdx.x)
            while x < W:
                acc = nt.float32(0.0)
                for q in range(m):
                    o = c * m + q
                    g_base = (n * Cm + o) * Ho * Wo
                    w_base = o * KK
                    for a in range(kh):
                        ty = y + nt.int32(ph) - nt.int32(a * dh)
                        oy = nt.int32(nt.uint32(ty) // ush)
                        if ty >= 0 and oy * nt.int32(sh) == ty and oy < ho:
                            for b in range(kw):
                                tx = x + nt.int32(pw) - nt.int32(b * dw)
                                ox = nt.int32(nt.uint32(tx) // usw)
                                if tx >= 0 and ox * nt.int32(sw) == tx and ox < wo:
                                    acc += load(w, w_base + a * kw + b) * load(g, g_base + nt.int64(oy) * wo + ox)
                store(gx, (p * H + y) * W + x, acc)
                x += nt.int32(cuda.gridDim.z * cuda.blockDim.x)
            y += nt.int32(cuda.gridDim.y)
        p += cuda.gridDim.x


def _dw_grad_x_strided(g, w, gx, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, planes):
    """`_grad_x_gather` with every size at run time (any taps, stride, dilation, depth multiplier)."""
    _grad_x_gather(g, w, gx, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, planes)


def _gen_grad_x_strided(K, S):
    """Source of `_grad_x_gather` for K×K taps, stride S, dilation 1, as constants."""
    return (f"def _dw_grad_x_k{K}s{S}(g, w, gx, C, m, H, W, Ho, Wo, ph, pw, planes):\n"
            f'    """Strided input gradient, {K}x{K} taps, stride {S} (`_grad_x_gather`)."""\n'
            f"    _grad_x_gather(g, w, gx, C, m, H, W, Ho, Wo, {K}, {K}, {S}, {S}, ph, pw, 1, 1, planes)\n")


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
# depthwise fast path: kernels generated per (kernel size, stride), fully unrolled
#
# Each thread owns one output column ``ox`` and a vertical strip of ``NY`` output rows of one plane
# (consecutive threads: consecutive columns, so every load and store of a warp is coalesced; a
# flat thread index over planes × strips × columns, so 56-wide images waste no lanes).  The taps
# are registers, the strip's accumulators are registers, and every input row of the strip's window
# is read once per tap column (L1 serves the neighbouring columns' re-reads): (NY-1)·S + K rows ×
# K loads feed NY·K·K FMAs.  All loads of a thread are independent (straight-line code), so many are
# in flight.  Offsets inside a plane are 32-bit, plane bases 64-bit.
#
# The source is generated here (plain Python text, compiled with this file's name so that numba's
# on-disk cache works) because the loops must unroll completely: the taps, the accumulators and
# the row window have to be scalars, never an indexed array.

NY = 8                 # output rows per thread (fast path)
FAST_SIZES = (3, 5, 7)
FAST_STRIDES = (1, 2)
WG_THREADS = 256       # largest block of the fast weight gradient (its shared scratch is sized for it)


def _shfl_down(scratch, v, off, tid):
    """``v`` of lane ``lane + off`` of the warp (every thread of the block must call it).

    This body runs under the simulator, which has no warp shuffles: the values go through shared
    memory.  The CUDA overload below is one ``shfl.sync.down`` (``scratch`` unused)."""
    cuda.syncthreads()
    scratch[tid] = v
    cuda.syncthreads()
    if (tid & 31) + off < 32 and tid + off < cuda.blockDim.x:
        return scratch[tid + off]
    return v


@overload(_shfl_down, target="cuda")
def _shfl_down_cuda(scratch, v, off, tid):
    def impl(scratch, v, off, tid):
        return cuda.shfl_down_sync(0xFFFFFFFF, v, off)
    return impl


@cuda.jit(device=True)
def _ldm(a, base, off, ok):
    """a[base + off] in the compute type where ``ok``, else 0 (the address is always valid)."""
    return cuda.selp(ok, load(a, base + off), nt.float32(0.0))


@cuda.jit(device=True)
def _col(ix, ws):
    """(clamped column offset, validity) of column ``ix`` of a ``ws``-wide row."""
    return nt.int64(min(max(ix, nt.int32(0)), ws - nt.int32(1))), (ix >= nt.int32(0)) & (ix < ws)


@cuda.jit(device=True)
def _row(pb, y, hs, Ws):
    """(offset of the clamped row ``y`` of the plane at ``pb``, validity of ``y``)."""
    return pb + nt.int64(min(max(y, nt.int32(0)), hs - nt.int32(1))) * Ws, (y >= nt.int32(0)) & (y < hs)


def _gen_prologue_cols(L, K, ind):
    """Per thread: clamped column offsets cj (always a valid address) and their validity mj."""
    for j in range(K):
        L.append(f"{ind}c{j}, m{j} = _col(ix0 + nt.int32({j}), ws)")


def _gen_rows(L, K, S, NY, R, ind, src, acc, coef, taprows=None):
    """The strip's input rows: K branch-free loads each (select on validity, clamped addresses),
    then one FMA chain per (output row, tap row) pair (tap rows in ``taprows`` only)."""
    I0, I1 = taprows or (0, K)
    for t in range(R):
        if not any(I0 <= t - u * S < I1 for u in range(NY)):
            continue
        L.append(f"{ind}rb, r = _row(pb, iy0 + nt.int32({t}), hs, Ws)")
        for j in range(K):
            L.append(f"{ind}v{j} = _ldm({src}, rb, c{j}, r & m{j})")
        for u in range(NY):
            i = t - u * S
            if I0 <= i < I1:
                L.append(acc(ind, u, i))


def _gen_fwd(K, S, NY=NY):
    R = (NY - 1) * S + K
    KK = K * K
    L = [f"def _dw_fast_k{K}s{S}y{NY}(src, w, bias, dst, has_bias, n_src_ch, n_dst_ch, div, Hs, Ws, Hd, Wd,",
         "                offy, offx, flip, strips, total):",
         f'    """Fast depthwise correlation, {K}x{K} taps, stride {S} (see the section comment)."""',
         "    gi = nt.uint32(cuda.blockIdx.x) * nt.uint32(cuda.blockDim.x) + nt.uint32(cuda.threadIdx.x)",
         "    if gi >= nt.uint32(total):",
         "        return",
         "    wd = nt.uint32(Wd)",
         "    per_plane = nt.uint32(strips) * wd",
         "    plane = nt.uint32(gi // per_plane)",
         "    rem = nt.uint32(gi - plane * per_plane)",
         "    strip = nt.uint32(rem // wd)",
         "    ox = nt.int32(rem - strip * wd)",
         "    nd = nt.uint32(n_dst_ch)",
         "    n = nt.uint32(plane // nd)",
         "    d = nt.uint32(plane - n * nd)",
         "    sp = nt.uint32(n * nt.uint32(n_src_ch) + nt.uint32(d // nt.uint32(div)))",
         "    hs = nt.int32(Hs)",
         "    ws = nt.int32(Ws)",
         f"    oy0 = nt.int32(strip) * nt.int32({NY})",
         f"    iy0 = nt.int32(oy0 * nt.int32({S}) + nt.int32(offy))",
         f"    ix0 = nt.int32(ox * nt.int32({S}) + nt.int32(offx))",
         "    pb = nt.int64(sp) * Hs * Ws",
         "    zero = nt.float32(0.0)",
         "    fl = nt.int64(flip != 0)",
         f"    wb = nt.int64(d) * {KK}"]
    _gen_prologue_cols(L, K, "    ")
    for i in range(K):
        for j in range(K):
            k = i * K + j
            L.append(f"    w{i}_{j} = load(w, wb + {k} + fl * {KK - 1 - 2 * k})")
    for u in range(NY):
        L.append(f"    a{u} = zero")

    def acc(ind, u, i):
        return f"{ind}a{u} = a{u} + " + " + ".join(f"w{i}_{j} * v{j}" for j in range(K))
    _gen_rows(L, K, S, NY, R, "    ", "src", acc, None)
    L += ["    b = zero",
          "    if has_bias:",
          "        b = load(bias, d)",
          "    ob = nt.int64(plane) * Hd * Wd + nt.int64(oy0) * Wd + nt.int64(ox)",
          "    rows = nt.int32(Hd) - oy0"]
    for u in range(NY):
        L.append(f"    if rows > nt.int32({u}):")
        L.append(f"        store(dst, ob + {u} * Wd, a{u} + b)")
    return "\n".join(L) + "\n"


def _gen_wgrad(K, S, NY=NY, part=0, parts=1):
    R = (NY - 1) * S + K
    KK = K * K
    I0, I1 = (K * part) // parts, (K * (part + 1)) // parts      # the tap rows this kernel sums
    last = part == parts - 1          # the bias slot (KK) follows the last band's taps: contiguous slots
    mine = [k for k in range(KK) if I0 <= k // K < I1] + ([KK] if last else [])
    L = [f"def _dw_wgrad_fast_k{K}s{S}y{NY}p{part}(x, g, partial, n_src_ch, n_dst_ch, div, Hs, Ws, Ho, Wo, offy, offx,",
         "                       strips, N, groups, with_bias):",
         f'    """Fast weight-gradient stage 1, {K}x{K} taps, stride {S}: block = (output channel, group of',
         '    images); taps summed in registers over (column, row strip) items, then across the block."""',
         f"    smem = cuda.shared.array({(WG_THREADS // 32) * len(mine)}, nt.float32)",
         f"    scratch = cuda.shared.array({WG_THREADS}, nt.float32)",
         f"    red = cuda.local.array({len(mine)}, nt.float32)",
         "    tid = nt.uint32(cuda.threadIdx.x)",
         "    nthreads = nt.uint32(cuda.blockDim.x)",
         "    grp_n = nt.uint32(groups)",
         "    blk = nt.uint32(cuda.blockIdx.x)",
         "    o = nt.uint32(blk // grp_n)",
         "    grp = nt.uint32(blk - o * grp_n)",
         "    c = nt.uint32(o // nt.uint32(div))",
         "    wo = nt.uint32(Wo)",
         "    ipi = nt.uint32(strips) * wo",
         "    nimg = nt.uint32((nt.uint32(N) - grp + grp_n - nt.uint32(1)) // grp_n)",
         "    total = nimg * ipi",
         "    hs = nt.int32(Hs)",
         "    ws = nt.int32(Ws)",
         "    ho = nt.int32(Ho)",
         "    zero = nt.float32(0.0)",
         "    ab = zero"]
    for k in mine[:-1] if last else mine:
        L.append(f"    a{k} = zero")
    L += ["    it = tid",
          "    while it < total:",
          "        q = nt.uint32(it // ipi)",
          "        rem = nt.uint32(it - q * ipi)",
          "        strip = nt.uint32(rem // wo)",
          "        ox = nt.int32(rem - strip * wo)",
          "        n = nt.int64(grp + q * grp_n)",
          f"        oy0 = nt.int32(strip) * nt.int32({NY})",
          "        gp = (n * n_dst_ch + nt.int64(o)) * Ho * Wo + nt.int64(ox)"]
    for u in range(NY):
        if not last and not any(I0 <= t - u * S < I1 for t in range(R)):
            continue
        L.append(f"        g{u} = _ldm(g, gp, nt.int64(min(oy0 + nt.int32({u}), ho - nt.int32(1))) * Wo, "
                 f"oy0 + nt.int32({u}) < ho)")
    if last:
        L.append("        ab = ab + " + " + ".join(f"g{u}" for u in range(NY)))
    L += [f"        iy0 = nt.int32(oy0 * nt.int32({S}) + nt.int32(offy))",
          f"        ix0 = nt.int32(ox * nt.int32({S}) + nt.int32(offx))",
          "        pb = (n * n_src_ch + nt.int64(c)) * Hs * Ws"]
    _gen_prologue_cols(L, K, "        ")

    def acc(ind, u, i):
        return "\n".join(f"{ind}a{i * K + j} = a{i * K + j} + g{u} * v{j}" for j in range(K))
    _gen_rows(L, K, S, NY, R, "        ", "x", acc, None, (I0, I1))
    L.append("        it += nthreads")
    # block reduction: warp shuffles, then the warps' sums in a fixed order
    M = len(mine)
    for q, k in enumerate(mine):
        L.append(f"    red[{q}] = " + ("ab" if k == KK else f"a{k}"))
    L += [
          "    lane = tid & nt.uint32(31)",
          f"    at = (tid >> nt.uint32(5)) * nt.uint32({M})",
          f"    for k in range({M}):",
          "        s = red[k]"]
    for off in (16, 8, 4, 2, 1):
        L.append(f"        s += _shfl_down(scratch, s, nt.uint32({off}), tid)")
    L += ["        if lane == 0:",
          "            smem[at + nt.uint32(k)] = s",
          "    cuda.syncthreads()",
          f"    mine = nt.uint32({M - 1}) + nt.uint32(with_bias)" if last else f"    mine = nt.uint32({M})",
          "    slots = nt.uint32(" + str(KK) + ") + nt.uint32(with_bias)",
          "    if tid < mine:",
          "        s = smem[tid]",
          "        nw = (nthreads + nt.uint32(31)) >> nt.uint32(5)",
          "        for wi in range(1, nw):",
          f"            s += smem[nt.uint32(wi) * nt.uint32({M}) + tid]",
          f"        partial[nt.int64(blk) * nt.int64(slots) + nt.int64(tid + nt.uint32({mine[0]}))] = s"]
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------
# depthwise stride-1 tile kernels (forward / input gradient and weight gradient), generated per K
#
# A block owns a tile of one plane: ``twc`` output columns × ``sb`` strips of ``NY`` rows; thread
# (strip s, column c) computes the NY outputs of its column in strip s.  The block first copies the
# tile's input window ((sb·NY + K - 1) × (twc + K - 1), zero outside the image) to shared memory,
# each thread its own column's rows (NY independent loads in flight, coalesced across the warp)
# and the threads of the first K - 1 columns also the right halo; afterwards every tap read is an
# unpredicated shared load at a constant offset from one per-row base: no clamps, selects or
# 64-bit arithmetic per value, which were ≈ 90 % of the instructions of the flat kernels above.


@cuda.jit(device=True)
def _ldo(a, off, ok):
    """a[off] in the compute type where ``ok``, else 0; when not ``ok`` the offset becomes 0
    (``a[0]`` is always a valid address), so the load needs no branch."""
    o = cuda.selp(ok, nt.uint32(off), nt.uint32(0))
    return cuda.selp(ok, load(a, o), nt.float32(0.0))


def _woff(K):
    """Shared-memory offset (in elements) of the input window: the K·K taps come first."""
    return (K * K + 3) // 4 * 4


def _gen_tile_load(L, K, NY, ind, src):
    """Copy this thread's column of the input window (and, for the first K - 1 columns, the right halo
    column) into smem: all loads first (independent, in flight together), then the stores."""
    L += [f"{ind}iy = nt.int32(oy0 + nt.int32(offy)) + nt.int32(s * nt.uint32({NY}))",
          f"{ind}ix = nt.int32(ox0 + nt.int32(offx)) + nt.int32(col)",
          f"{ind}ix2 = ix + nt.int32(tw)",
          f"{ind}cok = nt.uint32(ix) < ws",
          f"{ind}halo = col < nt.uint32({K - 1})",
          f"{ind}cok2 = halo & (nt.uint32(ix2) < ws)",
          f"{ind}at = s * nt.uint32({NY}) * pw + col + nt.uint32({_woff(K)})",
          f"{ind}ro = nt.uint32(iy) * ws + nt.uint32(ix)",
          f"{ind}pl = {src}[pb:]"]
    for u in range(NY):
        L += [f"{ind}rok{u} = nt.uint32(iy + nt.int32({u})) < hs",
              f"{ind}e{u} = _ldo(pl, ro + nt.uint32({u}) * ws, rok{u} & cok)"]
    L += [f"{ind}if halo:"]
    for u in range(NY):
        L += [f"{ind}    f{u} = _ldo(pl, ro + nt.uint32({u}) * ws + tw, rok{u} & cok2)"]
    for u in range(NY):
        L += [f"{ind}    smem[nt.uint64(at + nt.uint32({u}) * pw + tw)] = f{u}"]
    for u in range(NY):
        L += [f"{ind}smem[nt.uint64(at + nt.uint32({u}) * pw)] = e{u}"]
    # the K - 1 rows under the last strip: strip h % sb loads row sb·NY + h
    L += [f"{ind}h = s",
          f"{ind}while h < nt.uint32({K - 1}):",
          f"{ind}    y = nt.uint32(iy + nt.int32((nsb - s) * nt.uint32({NY}) + h))   # wraps: rows < 0 fail y < hs",
          f"{ind}    rok = y < hs",
          f"{ind}    ro2 = ro + ((nsb - s) * nt.uint32({NY}) + h) * ws",
          f"{ind}    e0 = _ldo(pl, ro2, rok & cok)",
          f"{ind}    f0 = _ldo(pl, ro2 + tw, rok & cok2)",
          f"{ind}    at2 = nt.uint64((nsb * nt.uint32({NY}) + h) * pw + col + nt.uint32({_woff(K)}))",
          f"{ind}    smem[at2] = e0",
          f"{ind}    if halo:",
          f"{ind}        smem[at2 + nt.uint64(tw)] = f0",
          f"{ind}    h += nsb"]


def _gen_tile_fwd(K, NY=NY):
    KK = K * K
    R = NY + K - 1
    L = [f"def _dw_tile_k{K}y{NY}(src, w, bias, dst, has_bias, n_src_ch, n_dst_ch, div, Hs, Ws, Hd, Wd, offy, offx,",
         "                flip, twc, sb):",
         f'    """Stride-1 depthwise correlation, {K}x{K} taps, shared-memory tile (see the section comment).',
         '    Grid: (planes, tiles down, tiles across); block: twc·sb threads (rounded up to warps)."""',
         "    smem = cuda.shared.array(0, nt.float32)",
         "    tid = nt.uint32(cuda.threadIdx.x)",
         "    tw = nt.uint32(twc)",
         "    nsb = nt.uint32(sb)",
         "    s = nt.uint32(tid // tw)",
         "    col = nt.uint32(tid - s * tw)",
         f"    pw = tw + nt.uint32({K - 1})",
         "    plane = nt.uint32(cuda.blockIdx.x)",
         "    nd = nt.uint32(n_dst_ch)",
         "    n = nt.uint32(plane // nd)",
         "    d = nt.uint32(plane - n * nd)",
         "    sp = nt.uint32(n * nt.uint32(n_src_ch) + nt.uint32(d // nt.uint32(div)))",
         "    hs = nt.uint32(Hs)",
         "    ws = nt.uint32(Ws)",
         f"    oy0 = nt.int32(nt.uint32(cuda.blockIdx.y) * nsb * nt.uint32({NY}))",
         "    ox0 = nt.int32(nt.uint32(cuda.blockIdx.z) * tw)",
         "    pb = nt.uint64(sp) * nt.uint64(hs) * nt.uint64(ws)",
         "    kk = tid",
         f"    while kk < nt.uint32({KK}):      # the taps (flipped for the input gradient)",
         f"        smem[kk] = load(w, nt.uint64(d) * nt.uint64({KK}) + nt.uint64(cuda.selp(flip != 0, nt.uint32(nt.uint32({KK - 1}) - kk), kk)))",
         "        kk = nt.uint32(kk + nt.uint32(cuda.blockDim.x))",
         "    if s < nsb:"]
    _gen_tile_load(L, K, NY, "        ", "src")
    L += ["    cuda.syncthreads()",
          "    if s >= nsb:",
          "        return",
          "    zero = nt.float32(0.0)"]
    for i in range(K):
        for j in range(K):
            L.append(f"    w{i}_{j} = smem[{i * K + j}]")
    for u in range(NY):
        L.append(f"    a{u} = zero")
    L.append(f"    rb = nt.uint64(s * nt.uint32({NY}) * pw + col + nt.uint32({_woff(K)}))")
    for t in range(R):
        if t:
            L.append("    rb += nt.uint64(pw)")
        for j in range(K):
            L.append(f"    v{j} = smem[rb + nt.uint64({j})]")
        for u in range(NY):
            i = t - u
            if 0 <= i < K:
                L.append(f"    a{u} = a{u} + " + " + ".join(f"w{i}_{j} * v{j}" for j in range(K)))
    L += ["    b = zero",
          "    if has_bias:",
          "        b = load(bias, d)",
          "    ox = nt.uint32(ox0) + col",
          f"    oy = nt.uint32(oy0) + s * nt.uint32({NY})",
          "    if ox < nt.uint32(Wd):",
          "        wdu = nt.uint64(Wd)",
          "        ob = nt.uint64(plane) * nt.uint64(Hd) * wdu + nt.uint64(oy) * wdu + nt.uint64(ox)",
          "        rows = nt.int32(Hd) - nt.int32(oy)"]
    for u in range(NY):
        L.append(f"        if rows > nt.int32({u}):")
        L.append(f"            store(dst, ob + nt.uint64({u}) * wdu, a{u} + b)")
    return "\n".join(L) + "\n"


def _gen_tile_wgrad(K, NY=NY):
    """Weight-gradient stage 1 on the tile layout: block = (output channel o, group of work items), an
    item = one tile of one image; per item the input window goes to smem, each thread reads its NY
    grad_out values straight into registers and adds g·x into the K·K tap sums (registers), then the
    block reduces them as `_gen_wgrad` does (warp shuffles, warps in a fixed order)."""
    KK = K * K
    R = NY + K - 1
    L = [f"def _dw_wgrad_tile_k{K}y{NY}(x, g, partial, n_src_ch, n_dst_ch, div, Hs, Ws, Ho, Wo, offy, offx,",
         "                       N, groups, with_bias, twc, sb, tiles_y, tiles_x):",
         f'    """Stride-1 weight-gradient stage 1, {K}x{K} taps, shared-memory tiles (see `_gen_tile_wgrad`)."""',
         "    smem = cuda.shared.array(0, nt.float32)",
         f"    wsum = cuda.shared.array({(WG_THREADS // 32) * (KK + 1)}, nt.float32)",
         f"    scratch = cuda.shared.array({WG_THREADS}, nt.float32)",
         f"    red = cuda.local.array({KK + 1}, nt.float32)",
         "    tid = nt.uint32(cuda.threadIdx.x)",
         "    nthreads = nt.uint32(cuda.blockDim.x)",
         "    tw = nt.uint32(twc)",
         "    nsb = nt.uint32(sb)",
         "    s = nt.uint32(tid // tw)",
         "    col = nt.uint32(tid - s * tw)",
         f"    pw = tw + nt.uint32({K - 1})",
         "    grp_n = nt.uint32(groups)",
         "    blk = nt.uint32(cuda.blockIdx.x)",
         "    o = nt.uint32(blk // grp_n)",
         "    grp = nt.uint32(blk - o * grp_n)",
         "    c = nt.uint32(o // nt.uint32(div))",
         "    hs = nt.uint32(Hs)",
         "    ws = nt.uint32(Ws)",
         "    ho = nt.uint32(Ho)",
         "    wo = nt.uint32(Wo)",
         "    tx_n = nt.uint32(tiles_x)",
         "    tiles = nt.uint32(tiles_y) * tx_n",
         "    items = nt.uint32(N) * tiles",
         "    zero = nt.float32(0.0)",
         "    ab = zero"]
    for k in range(KK):
        L.append(f"    a{k} = zero")
    L += ["    it = grp",
          "    while it < items:",
          "        n = nt.uint32(it // tiles)",
          "        t = nt.uint32(it - n * tiles)",
          "        ty = nt.uint32(t // tx_n)",
          f"        oy0 = nt.int32(ty * nsb * nt.uint32({NY}))",
          "        ox0 = nt.int32((t - ty * tx_n) * tw)",
          "        pb = nt.uint64(n * nt.uint32(n_src_ch) + c) * nt.uint64(hs) * nt.uint64(ws)",
          "        cuda.syncthreads()",
          "        if s < nsb:"]
    _gen_tile_load(L, K, NY, "            ", "x")
    L += ["        cuda.syncthreads()",
          "        if s < nsb:",
          "            ox = nt.uint32(ox0) + col",
          f"            oy = nt.uint32(oy0) + s * nt.uint32({NY})",
          "            gok = ox < wo",
          "            go = oy * wo + ox",
          "            gl = g[nt.uint64(n * nt.uint32(n_dst_ch) + o) * nt.uint64(ho) * nt.uint64(wo):]"]
    for u in range(NY):
        L.append(f"            g{u} = _ldo(gl, go + nt.uint32({u}) * wo, gok & (oy + nt.uint32({u}) < ho))")
    L.append("            ab = ab + " + " + ".join(f"g{u}" for u in range(NY)))
    L.append(f"            rb = nt.uint64(s * nt.uint32({NY}) * pw + col + nt.uint32({_woff(K)}))")
    for t in range(R):
        if t:
            L.append("            rb += nt.uint64(pw)")
        for j in range(K):
            L.append(f"            v{j} = smem[rb + nt.uint64({j})]")
        for u in range(NY):
            i = t - u
            if 0 <= i < K:
                for j in range(K):
                    L.append(f"            a{i * K + j} = a{i * K + j} + g{u} * v{j}")
    L.append("        it += grp_n")
    M = KK + 1
    for k in range(KK):
        L.append(f"    red[{k}] = a{k}")
    L += [f"    red[{KK}] = ab",
          "    lane = tid & nt.uint32(31)",
          f"    at = (tid >> nt.uint32(5)) * nt.uint32({M})",
          f"    for q in range({M}):",
          "        sm = red[q]"]
    for off in (16, 8, 4, 2, 1):
        L.append(f"        sm += _shfl_down(scratch, sm, nt.uint32({off}), tid)")
    L += ["        if lane == 0:",
          "            wsum[at + nt.uint32(q)] = sm",
          "    cuda.syncthreads()",
          f"    slots = nt.uint32({KK}) + nt.uint32(with_bias)",
          "    nw = (nthreads + nt.uint32(31)) >> nt.uint32(5)",
          "    k = tid",
          "    while k < slots:       # a block may have fewer threads than slots",
          f"        sm = wsum[k]",
          "        for wi in range(1, nw):",
          f"            sm += wsum[nt.uint32(wi) * nt.uint32({M}) + k]",
          "        partial[nt.int64(blk) * nt.int64(slots) + nt.int64(k)] = sm",
          "        k += nthreads"]
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------
# kernel objects


class ByDtype:
    """Two kernels over the same arguments, one for float64 (float64 shared memory), one for the rest."""

    def __init__(self, narrow: Kernel, wide: Kernel):
        self.narrow, self.wide = narrow, wide

    def launch(self, dtype, *args, **kwargs):
        (self.wide if dtype == "float64" else self.narrow).launch(dtype, *args, **kwargs)


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
DW_WGRAD_FINAL = Kernel(_dw_wgrad_final, lambda d: (_partial(d), _flat(d), _flat(d)) + (_I,) * 3)
IM2COL = Kernel(_im2col, lambda d: (_flat(d), _flat(d)) + (_I,) * 12)
COL2IM = Kernel(_col2im, lambda d: (_flat(d), _flat(d)) + (_I,) * 12)


def _define(source, name):
    """Compile generated kernel source under this file's name (numba's cache locates it by file)."""
    exec(compile(source, __file__, "exec"), globals())
    return globals()[name]


_fast_sig = lambda d: (_flat(d),) * 4 + (_I,) * 13                     # noqa: E731
_wgrad_fast_sig = lambda d: (_flat(d), _flat(d), _partial(d)) + (_I,) * 13   # noqa: E731

#: (K, stride) -> Kernel; narrow dtypes only (float64 takes the generic kernels)
DW_FAST = {}
DW_WGRAD_FAST = {}
#: K -> Kernel: stride-1 shared-memory tile kernels (forward / input gradient)
DW_TILE = {}
DW_WGRAD_TILE = {}
_wgrad_tile_sig = lambda d: (_flat(d), _flat(d), _partial(d)) + (_I,) * 16   # noqa: E731
_tile_sig = lambda d: (_flat(d),) * 4 + (_I,) * 13                     # noqa: E731


def wgrad_ny(k, ny=NY):
    """Output rows per thread of the weight-gradient kernel (the same for every size: 5x5 and 7x7 fit
    their registers by splitting the taps into bands instead, see `wgrad_parts`)."""
    return ny


def wgrad_parts(k):
    """Launches (each summing a band of tap rows) of the weight gradient: one band's sums must fit
    in registers next to the strip's values (<= 128 registers, no spills)."""
    return 1 if k <= 3 else 2


def _build_fast(ny=NY, sizes=FAST_SIZES, strides=FAST_STRIDES):
    """Define the generated kernels for ``ny`` output rows per thread (benchmarks try other values)."""
    for k in sizes:
        for s in strides:
            # gpuops._core.run finds them as DW_FAST_<K>_<S> / DW_WGRAD_FAST_<K>_<S>
            DW_FAST[(k, s)] = globals()[f"DW_FAST_{k}_{s}"] = Kernel(
                _define(_gen_fwd(k, s, ny), f"_dw_fast_k{k}s{s}y{ny}"), _fast_sig, dtypes=_NARROW)
            nyw = wgrad_ny(k, ny)
            parts = wgrad_parts(k)
            for part in range(parts):
                DW_WGRAD_FAST[(k, s, part)] = globals()[f"DW_WGRAD_FAST_{k}_{s}_{part}"] = Kernel(
                    _define(_gen_wgrad(k, s, nyw, part, parts), f"_dw_wgrad_fast_k{k}s{s}y{nyw}p{part}"),
                    _wgrad_fast_sig, dtypes=_NARROW)
            if s > 1:
                DW_GRAD_X_FIXED[(k, s)] = globals()[f"DW_GRAD_X_FIXED_{k}_{s}"] = Kernel(
                    _define(_gen_grad_x_strided(k, s), f"_dw_grad_x_k{k}s{s}"), _grad_x_fixed_sig, dtypes=_NARROW)
    for k in sizes:
        DW_TILE[k] = globals()[f"DW_TILE_{k}"] = Kernel(
            _define(_gen_tile_fwd(k, ny), f"_dw_tile_k{k}y{ny}"), _tile_sig, dtypes=_NARROW)
        DW_WGRAD_TILE[k] = globals()[f"DW_WGRAD_TILE_{k}"] = Kernel(
            _define(_gen_tile_wgrad(k, ny), f"_dw_wgrad_tile_k{k}y{ny}"), _wgrad_tile_sig, dtypes=_NARROW)


_build_fast()
