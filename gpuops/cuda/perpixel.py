"""CUDA kernels of the per-pixel-kernel family: involution and the KPN weighted filter.

One family serves both ops (docs/ops.md §6, §11).  A gather-mode weighted filter with a K×K kernel
is an involution with one group, stride 1, padding (K−1)/2 and dilation 1 on the same memory layout,
and splat is its adjoint; so three kernels, each used with the arrays in different roles, compute
every forward and gradient:

* ``PP_GATHER``    ``dst[n,c,y,x] = bias[c] + Σ_{i,j} w[n, c // cpg, i, j, y, x] · src[n, c, y·sh − ph + i·dh, x·sw − pw + j·dw]``
                   involution forward, gather forward, splat input gradient (src = grad_out).
* ``PP_TRANSPOSE`` the adjoint of PP_GATHER in ``src``: every input pixel sums the window entries that read
                   it, ``dst[n,c,y,x] = bias[c] + Σ_{i,j} w[n, c // cpg, i, j, h, v] · src[n, c, h, v]`` over the
                   (h, v) with ``h·sh − ph + i·dh = y`` and ``v·sw − pw + j·dw = x``; involution and gather
                   input gradient (src = grad_out), splat forward (src = x).
* ``PP_WGRAD``     ``gw[n,g,i,j,y,x] = Σ_{c in group g} center[n,c,y,x] · shifted[n, c, y·sh − ph + i·dh, x·sw − pw + j·dw]``
                   involution and gather weight gradient (center = grad_out, shifted = x), splat weight
                   gradient (center = x, shifted = grad_out).

Register blocking.  The weight (N, G, kh, kw, Ho, Wo) is the largest array and is shared by the cpg channels
of a group, so a thread loads each weight entry it needs once and uses it for a whole chunk of channels:

* PP_GATHER and PP_TRANSPOSE: a thread owns one column of a strip of ``ROWS`` output rows and a chunk of at most
  ``CHUNK`` channels of one group (``CHUNK64`` for float64 data: a group of cpg channels is cut into
  ``ceil(cpg / CHUNK)`` chunks of ``ceil(cpg / chunks)`` channels, the last ones shorter; the last group may
  have fewer channels than cpg).  Its ``ROWS × CHUNK`` sums live in registers.  It walks the distinct source
  rows its strip's windows read (``t``), and in each the kernel columns ``j`` whose taps fall inside the
  source: it loads the chunk's values at that (row, column) once, then, for every strip row q that reads the
  row with some tap row i, the weight of (q, i, j) once, and adds it times each value.  So a weight entry is
  read once per chunk (once in all when cpg <= CHUNK: every KPN filter with C <= 8; twice for RedNet's 16
  channels per group, the second time from L2, as the two chunks of a group are neighbouring work items),
  a source value once per strip instead of once per tap row, and adjacent threads read adjacent columns
  (coalesced).  The transpose reads its source (grad_out, or x for splat) and weight at the same shifted
  pixel; with stride 1 it walks the columns with running offsets, like the gather.
* PP_WGRAD: a thread owns one column of a strip of ``WROWS`` rows and a whole group; the centre values of up to
  ``WCHUNK`` (``WCHUNK64``) channels stay in registers for all taps (larger groups: chunk by chunk, the
  centre values reloaded from L1 per tap).  Taps are the outer loop, channels the inner one: for each (row
  t, column j) it loads the shifted values once and writes the finished sum of every strip row that uses the
  tap (0 for taps in the padding), so each weight-gradient entry is written once, in one piece: no partial
  sums, no second stage.
* The _FEW kernels (PP_GATHER_FEW, PP_TRANSPOSE_FEW, PP_WGRAD_FEW) are the same bodies with register tiles for
  groups of at most ``FEW`` channels (KPN's RGB): taller strips (``FEW_ROWS``, ``WFEW_ROWS``) instead of
  registers and loads spent on channels the group does not have.  The host picks them by cpg.

Every output element is one thread's sum in a fixed order (taps in (i, j) order, channels in ascending
order), whatever CHUNK and ROWS are: deterministic, no atomics.  The bias gradient
(``Σ_{n,y,x} grad_out[n,c,y,x]``) is a staged sum: ``PP_BIAS_PARTIAL`` gives each of ``segments`` threads per
channel the elements ``segment, segment + segments, …`` of the channel (adjacent threads read adjacent
addresses), ``PP_BIAS_PARTIAL_SUMS`` (when there are many segments) does the same to the partial sums,
``PP_BIAS_FINAL`` adds the remaining segments in order.

Grid: one dimension over the work items (group chunk, strip, column), walked with a grid-stride loop.  Arrays
are flat; every offset is int64 (tensors may exceed 2**31 elements).  ``cpg`` is the number of channels per
kernel group (the last group may have fewer when it does not divide C: the seed drop-in's convention), ``G``
the number of groups, so ``w`` is (N, G, kh, kw, Ho, Wo).  The sums are in float32 for 16-bit and float32
data, in float64 for float64 (`_local_sums`).
"""
import numpy as np

from gpuops._constants import (PERPIXEL_CHUNK, PERPIXEL_CHUNK_F64, PERPIXEL_FEW, PERPIXEL_FEW_F64, PERPIXEL_FEW_ROWS,
                               PERPIXEL_ROWS, PERPIXEL_THREADS, PERPIXEL_WGRAD_CHUNK, PERPIXEL_WGRAD_CHUNK_F64,
                               PERPIXEL_WGRAD_FEW_ROWS, PERPIXEL_WGRAD_ROWS)
from gpuops._launch import Kernel, array_type, compute_type
from gpuops._toolchain import SIMULATOR, cuda, nt, overload
from gpuops.cuda._memory import load, store, zero

THREADS = PERPIXEL_THREADS
CHUNK = PERPIXEL_CHUNK
CHUNK64 = PERPIXEL_CHUNK_F64
ROWS = PERPIXEL_ROWS
WCHUNK = PERPIXEL_WGRAD_CHUNK
WCHUNK64 = PERPIXEL_WGRAD_CHUNK_F64
WROWS = PERPIXEL_WGRAD_ROWS
FEW = PERPIXEL_FEW
FEW64 = PERPIXEL_FEW_F64
FEW_ROWS = PERPIXEL_FEW_ROWS
WFEW_ROWS = PERPIXEL_WGRAD_FEW_ROWS
# sizes of the register arrays (module constants: `_local_sums` needs literals)
TILE, TILE64 = ROWS * CHUNK, ROWS * CHUNK64
WTILE, WTILE64 = WROWS * WCHUNK, WROWS * WCHUNK64
FEW_TILE, FEW_TILE64 = FEW_ROWS * FEW, FEW_ROWS * FEW64
WFEW_TILE = WFEW_ROWS * FEW

#: indices cast to unsigned once known to be in bounds: numba then skips its negative-index fix-ups
U = nt.uint64
_INLINE = {} if SIMULATOR else {"forceinline": True}


def _local_sums(a, size, size64):
    """A thread's array of values in ``a``'s compute type: ``size64`` float64 values for float64 data, else
    ``size`` float32 values.  The kernels take their chunk sizes from these arrays' sizes.

    This body runs under the simulator; the CUDA overload below is a local array that the kernels index only
    with constants (their loops over it are fully unrolled), so it lives in registers."""
    if a.dtype == np.float64:
        return np.zeros(size64, np.float64)
    return np.zeros(size, np.float32)


@overload(_local_sums, target="cuda", inline="always", prefer_literal=True)
def _local_sums_cuda(a, size, size64):
    n, n64 = getattr(size, "literal_value", None), getattr(size64, "literal_value", None)
    if not isinstance(n, int) or not isinstance(n64, int):
        raise TypeError("_local_sums: the sizes must be compile-time constants")
    if a.dtype == nt.float64:
        return lambda a, size, size64: cuda.local.array(n64, nt.float64)
    return lambda a, size, size64: cuda.local.array(n, nt.float32)


@cuda.jit(device=True, **_INLINE)
def _taps_of_row(iq, t, rows, step, dh, kh, flip):
    """Which tap row each strip row reads source row ``t`` with: ``iq[q] = i`` where ``q·step + i·dh = t``,
    ``0 <= i < kh`` and ``q < rows``, else −1 (``flip``: ``kh − 1 − i`` instead).  True if any strip row does."""
    used = False
    for q in range(iq.size):
        i = -1
        d = t - q * step
        if q < rows and d >= 0:
            if dh == 1:
                i = d
            else:
                i = d // dh
                if i * dh != d:
                    i = -1
            if i >= kh:
                i = -1
            if i >= 0 and flip:
                i = kh - 1 - i
        iq[q] = i
        used = used or i >= 0
    return used


@cuda.jit(device=True, **_INLINE)
def _inside(start, step, count, size):
    """``(lo, hi)``: the k in [lo, hi) are those of [0, count) with 0 <= start + k·step < size (step >= 1)."""
    lo = nt.int64(0)
    if start < 0:
        lo = (step - 1 - start) // step
    hi = count
    last = size - 1 - start
    if last < 0:
        hi = 0
    elif (count - 1) * step > last:
        hi = last // step + 1
    return lo, max(lo, hi)


@cuda.jit(device=True, **_INLINE)
def _load_chunk(a, vals, at, stride, nch):
    """vals[cc] = a[at + cc·stride] for cc < nch, 0 for the rest (a full chunk loads without tests)."""
    if nch == vals.size:
        for cc in range(vals.size):
            vals[cc] = load(a, U(at))
            at += stride
    else:
        for cc in range(vals.size):
            vals[cc] = load(a, U(at)) if cc < nch else zero(a)
            at += stride


@cuda.jit(device=True, **_INLINE)
def _load_centres(a, ctr, at, Wo, stride, rows, nch, n):
    """ctr[q, cc] = a[at + q·Wo + cc·stride] for strip rows q < rows and channels cc < nch, else 0 (``n``
    channels per row of ctr)."""
    for q in range(ctr.size // n):
        here = at + q * Wo
        for cc in range(n):
            ok = q < rows and cc < nch
            ctr[q * n + cc] = load(a, U(here)) if ok else zero(a)
            here += stride


@cuda.jit(device=True, **_INLINE)
def _add_taps(acc, vals, w, wrow, wj):
    """acc[q, cc] += w[wrow[q] + wj] · vals[cc] for every strip row q with a tap here (wrow[q] >= 0)."""
    for q in range(wrow.size):
        if wrow[q] >= 0:
            wv = load(w, U(wrow[q] + wj))
            for cc in range(vals.size):
                acc[q * vals.size + cc] += wv * vals[cc]


@cuda.jit(device=True, **_INLINE)
def _chunk_of(cpg, C, g, k, chunks):
    """(first channel, channels) of chunk ``k`` of group ``g``: ``chunks`` chunks of ``ceil(cpg / chunks)``
    channels, the last ones shorter (or empty), clipped at C (the last group may have fewer channels)."""
    size = (cpg + chunks - 1) // chunks
    c0 = g * cpg + k * size
    return c0, nt.int32(max(0, min(size, cpg - k * size, C - c0)))


@cuda.jit(device=True, **_INLINE)
def _gather(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, acc, vals, iq, wrow):
    """PP_GATHER's body.  Thread = (n, g, chunk of vals.size channels, strip of R = wrow.size output rows,
    column); acc holds its R × vals.size sums; dst (N, C, Ho, Wo), src (N, C, H, W)."""
    ROWS = wrow.size
    plane_size = Ho * Wo
    KK = kh * kw
    HW = H * W
    N = dst.size // (C * plane_size)
    strips = (Ho + ROWS - 1) // ROWS
    span = (ROWS - 1) * sh + (kh - 1) * dh + 1      # source rows the windows of a strip cover
    chunks = (cpg + vals.size - 1) // vals.size
    per_slab = strips * Wo
    items = N * G * chunks * per_slab
    first = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    for item in range(first, items, step):
        slab = item // per_slab
        sp = item - slab * per_slab
        s = sp // Wo
        ox = sp - s * Wo
        ng = slab // chunks
        n = ng // G
        c0, nch = _chunk_of(cpg, C, ng - n * G, slab - ng * chunks, chunks)
        if nch <= 0:
            continue
        oy0 = s * ROWS
        rows = min(ROWS, Ho - oy0)
        for a in range(acc.size):
            acc[a] = 0
        src_base = (n * C + c0) * HW
        w_base = ng * KK * plane_size + oy0 * Wo + ox
        iy0 = oy0 * sh - ph
        ix0 = ox * sw - pw
        j_lo, j_hi = _inside(ix0, dw, kw, W)        # the kernel columns (rows) that read inside the image
        t_lo, t_hi = _inside(iy0, 1, span, H)
        if j_lo >= j_hi:
            t_hi = t_lo
        for t in range(t_lo, t_hi):
            if not _taps_of_row(iq, t, rows, sh, dh, kh, False):
                continue
            for q in range(ROWS):                   # the weights of strip row q at tap (iq[q], j_lo); −1: none
                wrow[q] = w_base + (iq[q] * kw + j_lo) * plane_size + q * Wo if iq[q] >= 0 else -1
            at = src_base + (iy0 + t) * W + ix0 + j_lo * dw
            wj = nt.int64(0)
            for j in range(j_lo, j_hi):
                _load_chunk(src, vals, at, HW, nch)
                _add_taps(acc, vals, w, wrow, wj)
                at += dw
                wj += plane_size
        out = (n * C + c0) * plane_size + oy0 * Wo + ox
        for cc in range(vals.size):
            if cc < nch:
                b = load(bias, c0 + cc) if has_bias else zero(bias)
                for q in range(ROWS):
                    if q < rows:
                        v = acc[q * vals.size + cc]
                        if has_bias:
                            v += b
                        store(dst, U(out + q * Wo), v)
            out += plane_size


@cuda.jit(device=True, **_INLINE)
def _transpose(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, acc, vals, iq,
               wrow):
    """PP_TRANSPOSE's body.  Thread = (n, g, chunk of vals.size channels, strip of R = wrow.size rows of dst,
    column); dst (N, C, H, W), src and w on the (Ho, Wo) grid.  Row y of the strip reads grid row
    (y + ph − i·dh) / sh with tap row i where that is exact."""
    ROWS = wrow.size
    plane_size = H * W
    out_plane = Ho * Wo
    KK = kh * kw
    N = dst.size // (C * plane_size)
    strips = (H + ROWS - 1) // ROWS
    span = ROWS + (kh - 1) * dh                     # t = q + (kh − 1 − i)·dh: grid rows y0 + ph − (kh−1)·dh + t
    chunks = (cpg + vals.size - 1) // vals.size
    per_slab = strips * W
    items = N * G * chunks * per_slab
    first = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    for item in range(first, items, step):
        slab = item // per_slab
        sp = item - slab * per_slab
        s = sp // W
        x = sp - s * W
        ng = slab // chunks
        n = ng // G
        c0, nch = _chunk_of(cpg, C, ng - n * G, slab - ng * chunks, chunks)
        if nch <= 0:
            continue
        y0 = s * ROWS
        rows = min(ROWS, H - y0)
        for a in range(acc.size):
            acc[a] = 0
        src_base = (n * C + c0) * out_plane
        w_base = ng * KK * out_plane
        ty0 = y0 + ph - (kh - 1) * dh
        # grid rows ty0 + t and columns x + pw − j·dw inside [0, Ho·sh) × [0, Wo·sw) (exact division: below)
        t_lo, t_hi = _inside(ty0, 1, span, Ho * sh)
        a, b = _inside(x + pw - (kw - 1) * dw, dw, kw, Wo * sw)
        j_lo, j_hi = kw - b, kw - a
        if j_lo >= j_hi:
            t_hi = t_lo
        for tt in range(t_hi - t_lo):
            t = t_hi - 1 - tt                       # descending: each strip row takes its taps in ascending i
            ty = ty0 + t
            oy = ty
            if sh != 1:
                oy = ty // sh
                if oy * sh != ty:
                    continue
            if not _taps_of_row(iq, t, rows, 1, dh, kh, True):
                continue
            for q in range(ROWS):                   # tap row iq[q], column 0, at grid row oy
                wrow[q] = w_base + iq[q] * kw * out_plane + oy * Wo if iq[q] >= 0 else -1
            row = src_base + oy * Wo
            if sw == 1:
                ox = x + pw - j_lo * dw
                at = row + ox
                wj = j_lo * out_plane + ox
                for j in range(j_lo, j_hi):
                    _load_chunk(src, vals, at, out_plane, nch)
                    _add_taps(acc, vals, w, wrow, wj)
                    at -= dw
                    wj += out_plane - dw
            else:
                for j in range(j_lo, j_hi):
                    tx = x + pw - j * dw
                    ox = tx // sw
                    if ox * sw != tx:
                        continue
                    _load_chunk(src, vals, row + ox, out_plane, nch)
                    _add_taps(acc, vals, w, wrow, j * out_plane + ox)
        out = (n * C + c0) * plane_size + y0 * W + x
        for cc in range(vals.size):
            if cc < nch:
                b = load(bias, c0 + cc) if has_bias else zero(bias)
                for q in range(ROWS):
                    if q < rows:
                        v = acc[q * vals.size + cc]
                        if has_bias:
                            v += b
                        store(dst, U(out + q * W), v)
            out += plane_size


def _pp_gather(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    """Strips of ROWS rows × chunks of CHUNK (float64: CHUNK64) channels (`_gather`)."""
    _gather(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
            _local_sums(dst, TILE, TILE64), _local_sums(dst, CHUNK, CHUNK64),
            cuda.local.array(ROWS, nt.int64), cuda.local.array(ROWS, nt.int64))


def _pp_gather_few(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    """Groups of at most FEW channels (KPN's RGB): strips of FEW_ROWS rows × FEW (float64: FEW64) channels."""
    _gather(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
            _local_sums(dst, FEW_TILE, FEW_TILE64), _local_sums(dst, FEW, FEW64),
            cuda.local.array(FEW_ROWS, nt.int64), cuda.local.array(FEW_ROWS, nt.int64))


def _pp_transpose(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    """Strips of ROWS rows × chunks of CHUNK (float64: CHUNK64) channels (`_transpose`)."""
    _transpose(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
               _local_sums(dst, TILE, TILE64), _local_sums(dst, CHUNK, CHUNK64),
               cuda.local.array(ROWS, nt.int64), cuda.local.array(ROWS, nt.int64))


def _pp_transpose_few(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    """Groups of at most FEW channels: strips of FEW_ROWS rows × FEW (float64: FEW64) channels."""
    _transpose(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
               _local_sums(dst, FEW_TILE, FEW_TILE64), _local_sums(dst, FEW, FEW64),
               cuda.local.array(FEW_ROWS, nt.int64), cuda.local.array(FEW_ROWS, nt.int64))


@cuda.jit(device=True, **_INLINE)
def _wgrad(center, shifted, gw, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, ctr, vals, sums, iq, wrow,
           one_chunk):
    """The weight-gradient kernels' body.  Thread = (n, g, strip of R = wrow.size rows, column) of gw
    (N, G, kh, kw, Ho, Wo), all channels of group g, walked in chunks of vals.size whose centre values are
    ``ctr`` (R × vals.size); center on the (Ho, Wo) grid, shifted (N, C, H, W).  Every gw entry of the thread
    is written once.  ``one_chunk`` (a constant): the caller guarantees cpg <= vals.size, and the chunk loop
    compiles away."""
    R = wrow.size
    wchunk = vals.size
    plane_size = Ho * Wo
    KK = kh * kw
    HW = H * W
    N = gw.size // (G * KK * plane_size)
    strips = (Ho + R - 1) // R
    per_slab = strips * Wo
    items = N * G * per_slab
    span = (R - 1) * sh + (kh - 1) * dh + 1
    chunks = 1 if one_chunk else (cpg + wchunk - 1) // wchunk     # 1: centre values in registers for all taps
    first = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    for item in range(first, items, step):
        ng = item // per_slab
        sp = item - ng * per_slab
        s = sp // Wo
        ox = sp - s * Wo
        n = ng // G
        c_first = (ng - n * G) * cpg
        c_end = min(C, c_first + cpg)
        oy0 = s * R
        rows = min(R, Ho - oy0)
        pix = oy0 * Wo + ox
        ctr_base = (n * C + c_first) * plane_size + pix
        _load_centres(center, ctr, ctr_base, Wo, plane_size, rows, min(wchunk, c_end - c_first), wchunk)
        gw_base = ng * KK * plane_size + pix
        sh_base = (n * C + c_first) * HW
        iy0 = oy0 * sh - ph
        ix0 = ox * sw - pw
        j_lo, j_hi = _inside(ix0, dw, kw, W)        # the kernel columns that read inside the image
        for t in range(span):
            if not _taps_of_row(iq, t, rows, sh, dh, kh, False):
                continue
            for q in range(R):                      # gw of strip row q at tap (iq[q], 0); −1: none
                wrow[q] = gw_base + iq[q] * kw * plane_size + q * Wo if iq[q] >= 0 else -1
            iy = iy0 + t
            lo, hi = j_lo, j_hi
            if iy < 0 or iy >= H:
                hi = lo
            at = sh_base + iy * W + ix0 + lo * dw
            wj = nt.int64(0)
            for j in range(kw):
                for q in range(R):
                    sums[q] = 0
                if j >= lo and j < hi:              # else the tap reads padding: its gradient is 0
                    for k in range(chunks):
                        nch = min(wchunk, c_end - c_first - k * wchunk)
                        if chunks > 1:              # this chunk's centre values, again (from L1)
                            _load_centres(center, ctr, ctr_base + k * wchunk * plane_size, Wo, plane_size, rows, nch,
                                          wchunk)
                        _load_chunk(shifted, vals, at + k * wchunk * HW, HW, nch)
                        for q in range(R):
                            if wrow[q] >= 0:
                                for cc in range(wchunk):
                                    sums[q] += ctr[q * wchunk + cc] * vals[cc]
                    at += dw
                for q in range(R):
                    if wrow[q] >= 0:
                        store(gw, U(wrow[q] + wj), sums[q])
                wj += plane_size


def _pp_wgrad(center, shifted, gw, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    """Any group size: strips of WROWS rows, the centre values of WCHUNK (float64: WCHUNK64) channels in
    registers (`_wgrad`)."""
    _wgrad(center, shifted, gw, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
           _local_sums(gw, WTILE, WTILE64), _local_sums(gw, WCHUNK, WCHUNK64), _local_sums(gw, WROWS, WROWS),
           cuda.local.array(WROWS, nt.int64), cuda.local.array(WROWS, nt.int64), False)


def _pp_wgrad_few(center, shifted, gw, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    """Groups of at most FEW channels (KPN's RGB, whose group is all C; the host launches it for cpg <= FEW
    only): strips of WFEW_ROWS rows, no registers for channels the group does not have (`_wgrad`)."""
    _wgrad(center, shifted, gw, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw,
           _local_sums(gw, WFEW_TILE, WFEW_TILE), _local_sums(gw, FEW, FEW), _local_sums(gw, WFEW_ROWS, WFEW_ROWS),
           cuda.local.array(WFEW_ROWS, nt.int64), cuda.local.array(WFEW_ROWS, nt.int64), True)


@cuda.jit(device=True)
def _channel_sums(g, partial, C, plane_size, segments):
    """partial[c·segments + s] = Σ of g[n, c] elements s, s + segments, … over every n (fixed order)."""
    t = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    if t >= C * segments:
        return
    c = t // segments
    s = t - c * segments
    N = g.size // (C * plane_size)
    acc = nt.float32(0.0)
    for n in range(N):
        base = (n * C + c) * plane_size
        for e in range(s, plane_size, segments):
            acc += load(g, base + e)
    partial[t] = acc


def _pp_bias_partial(g, partial, C, plane_size, segments):
    """Stage 1 of the bias gradient: g (N, C, H, W) in its storage dtype."""
    _channel_sums(g, partial, C, plane_size, segments)


def _pp_bias_partial_sums(partial, fewer, C, segments, lanes):
    """An optional middle stage: the (C, segments) partial sums into (C, lanes), in the compute dtype."""
    _channel_sums(partial, fewer, C, segments, lanes)


def _pp_bias_final(partial, gb, segments):
    c = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    if c >= gb.size:
        return
    acc = partial[c * segments]
    for s in range(1, segments):
        acc += partial[c * segments + s]
    store(gb, c, acc)


def _flat(d):
    return array_type(d, 1)


def _partial(d):
    return nt.Array(compute_type(d), 1, "C")


_I = nt.int64

PP_GATHER = Kernel(_pp_gather, lambda d: (_flat(d),) * 4 + (_I,) * 16)
PP_GATHER_FEW = Kernel(_pp_gather_few, lambda d: (_flat(d),) * 4 + (_I,) * 16)
PP_TRANSPOSE = Kernel(_pp_transpose, lambda d: (_flat(d),) * 4 + (_I,) * 16)
PP_TRANSPOSE_FEW = Kernel(_pp_transpose_few, lambda d: (_flat(d),) * 4 + (_I,) * 16)
PP_WGRAD = Kernel(_pp_wgrad, lambda d: (_flat(d),) * 3 + (_I,) * 15)
PP_WGRAD_FEW = Kernel(_pp_wgrad_few, lambda d: (_flat(d),) * 3 + (_I,) * 15)
PP_BIAS_PARTIAL = Kernel(_pp_bias_partial, lambda d: (_flat(d), _partial(d)) + (_I,) * 3)
PP_BIAS_PARTIAL_SUMS = Kernel(_pp_bias_partial_sums, lambda d: (_partial(d), _partial(d)) + (_I,) * 3)
PP_BIAS_FINAL = Kernel(_pp_bias_final, lambda d: (_partial(d), _flat(d), _I))
