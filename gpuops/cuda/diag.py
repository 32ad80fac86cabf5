"""CUDA kernels of the diag family: dgmm and cdgmm (multiply by a diagonal matrix), forward and backward.

Arrays arrive flat; ``P`` is 1 for real data and 2 for complex data stored as (re, im) pairs (the
complex64/complex128 layout is viewed as pairs by gpuops.diag).  ``right`` = 1 scales columns
(``a @ diag(x)``), 0 scales rows (``diag(x) @ a``).  Offsets are 64-bit.

One tiled kernel serves the forward pass and the whole backward, so the backward reads grad_out once:

* ``SCALE``: ``out[i, j] = a[i, j] · x̃`` with x̃ = x[j] (right) or x[i] (left), conjugated when
  ``conj`` (complex product) — the forward pass.  ``SCALE_SUM`` also reduces ``a · conj(b)`` along the
  reduced axis (rows for right, columns for left) into ``partial[segment, index]`` — grad_a and the
  pieces of grad_x: the grid's y axis cuts the reduced axis into segments, each block keeps its sums
  in registers and tree-reduces them once at the end, in a fixed order.  ``SCALE_WORDS(_SUM)`` are the
  same on 64-bit words.  Both pairs share one body each, specialised by a literal ``want_sum``.
* ``SUM_SEGMENTS``: ``gx[n] = Σ_segment partial[segment, n]`` in a fixed order (deterministic, no
  atomics).  With one segment there is nothing to add: the sum kernels write gx themselves, 16-bit
  gradients through ``SCALE(_WORDS)_SUM_TO_GX`` (the same bodies, partial typed as gx).

A block is 256 threads laid out as ``rows × tc`` with ``tc`` (a power of two) threads along the
contiguous column axis, so every warp reads whole row stretches (coalesced) and no thread ever
divides an index: x̃ is one value per thread, loaded once.  ``UNROLL`` independent elements per
thread and loop step, all loaded before any is stored, keep enough loads in flight for copy bandwidth.
"""
import numpy as np

from gpuops._constants import DIAG_SUM_COLUMNS, DIAG_THREADS, DIAG_UNROLL
from gpuops._launch import Kernel, array_type, compute_type
from gpuops._toolchain import cuda, nt
from gpuops.cuda._memory import load, store, zero

THREADS = DIAG_THREADS
UNROLL = DIAG_UNROLL   # elements per thread and loop step (written out in _scale)
assert UNROLL == 4, "_scale_tile is written out for four elements per step"
RED = 2 * THREADS      # float64 shared words of the block reduction (re and im halves)
WORD_SLOTS = 4         # scalars per 64-bit word of 16-bit data: the most sums a word-kernel thread keeps
WORD_RED = WORD_SLOTS * THREADS
SUM_COLUMNS = DIAG_SUM_COLUMNS   # outputs per block of SUM_SEGMENTS (a warp's coalesced row of partial sums)
SUM_GROUPS = THREADS // SUM_COLUMNS
SUM_LOADS = 8          # loads in flight per thread of SUM_SEGMENTS (its sum is written out for 8)


@cuda.jit(device=True, inline=True)
def _offset(right, t, n, K):
    """Flat index of element t of the reduced axis at n of the kept one."""
    if right:
        return t * K + n
    return n * K + t


@cuda.jit(device=True, inline=True)
def _fetch(a, b, e, ok, P, want_sum):
    """(re a[e], im a[e], re b[e], im b[e]) in the compute type; zeros where not ok (b: unless want_sum)."""
    ar = ai = br = bi = nt.float32(0)
    if ok:
        if P == 1:
            ar = load(a, e)
            if want_sum:
                br = load(b, e)
        else:
            ar = load(a, 2 * e)
            ai = load(a, 2 * e + 1)
            if want_sum:
                br = load(b, 2 * e)
                bi = load(b, 2 * e + 1)
    return ar, ai, br, bi


@cuda.jit(device=True, inline=True)
def _emit(out, e, ok, v, xr, xm, P):
    """out[e] = a · (xr + i·xm) for the fetched v = (a, b); returns a · conj(b)."""
    ar, ai, br, bi = v
    if ok:
        if P == 1:
            store(out, e, ar * xr)
        else:
            store(out, 2 * e, ar * xr - ai * xm)
            store(out, 2 * e + 1, ar * xm + ai * xr)
    return ar * br + ai * bi, ai * br - ar * bi


@cuda.jit(device=True, inline=True)
def _walk(right, tc, seg, seg_len, M, K):
    """This thread's share of segment ``seg`` of a (M, K) tile walk: (n, first, end, step, active).
    Side right: the block is one stretch of tc columns, n = column, t runs over the segment's rows.
    Side left: the block is THREADS/tc whole rows, n = row, t runs over the segment's columns."""
    tid = cuda.threadIdx.x
    tx = tid & (tc - 1)
    ty = tid // tc
    rows = THREADS // tc
    if right:
        n = nt.int64(cuda.blockIdx.x) * tc + tx
        return n, seg * seg_len + ty, min(M, (seg + 1) * seg_len), nt.int64(rows), n < K
    n = nt.int64(cuda.blockIdx.x) * rows + ty
    return n, seg * seg_len + tx, min(K, (seg + 1) * seg_len), nt.int64(tc), n < M


@cuda.jit(device=True, inline=True)
def _block_sum(smem, slots, right, tc):
    """Tree-sum each slot ``smem[k·THREADS + tid]`` (k < slots, a literal) over the threads that share an
    output — along ty (stride tc) for side right, along tx for left — in a fixed order.  Returns this
    thread's lane in that direction: lane 0 holds the sums afterwards."""
    tid = cuda.threadIdx.x
    if right:
        lane = tid // tc
        stride = tc
        s = (THREADS // tc) >> 1
    else:
        lane = tid & (tc - 1)
        stride = 1
        s = tc >> 1
    cuda.syncthreads()
    while s > 0:
        if lane < s:
            for k in range(slots):
                smem[k * THREADS + tid] += smem[k * THREADS + tid + s * stride]
        cuda.syncthreads()
        s >>= 1
    return lane


@cuda.jit(device=True, inline=True)
def _scale_tile(a, x, out, b, partial, M, K, P, right, conj, tc, seg_len, want_sum):
    """The body of `SCALE` (want_sum 0) and `SCALE_SUM` (want_sum 1); want_sum is a literal, so the
    forward kernel carries none of the reduction's registers."""
    smem = cuda.shared.array(RED, nt.float64)
    tid = cuda.threadIdx.x
    seg = nt.int64(cuda.blockIdx.y)
    n, first, end, step, active = _walk(right, tc, seg, seg_len, M, K)
    xr = zero(x)
    xm = xr
    re = xr
    im = xr
    if active:
        xr = load(x, n * P)
        if P == 2:
            xm = load(x, n * P + 1)
            if conj:
                xm = -xm
        t = first
        while t < end:
            # all loads of a step before its stores: out may alias a, so the compiler keeps the order
            e0 = _offset(right, t, n, K)
            e1 = _offset(right, t + step, n, K)
            e2 = _offset(right, t + 2 * step, n, K)
            e3 = _offset(right, t + 3 * step, n, K)
            ok1 = t + step < end
            ok2 = t + 2 * step < end
            ok3 = t + 3 * step < end
            v0 = _fetch(a, b, e0, True, P, want_sum)
            v1 = _fetch(a, b, e1, ok1, P, want_sum)
            v2 = _fetch(a, b, e2, ok2, P, want_sum)
            v3 = _fetch(a, b, e3, ok3, P, want_sum)
            d0 = _emit(out, e0, True, v0, xr, xm, P)
            d1 = _emit(out, e1, ok1, v1, xr, xm, P)
            d2 = _emit(out, e2, ok2, v2, xr, xm, P)
            d3 = _emit(out, e3, ok3, v3, xr, xm, P)
            re += (d0[0] + d1[0]) + (d2[0] + d3[0])
            im += (d0[1] + d1[1]) + (d2[1] + d3[1])
            t += UNROLL * step
    if want_sum:
        smem[tid] = re
        smem[THREADS + tid] = im
        if _block_sum(smem, 2, right, tc) == 0 and active:
            count = K if right else M
            store(partial, (seg * count + n) * P, smem[tid])
            if P == 2:
                store(partial, (seg * count + n) * P + 1, smem[THREADS + tid])


@cuda.jit(device=True, inline=True)
def _scale_word(values_a, values_out, i, xr, xm, P):
    """Element i (its P scalars) of the viewed words: out = a · (xr + i·xm)."""
    ar = load(values_a, i)
    if P == 1:
        store(values_out, i, ar * xr)
    else:
        ai = load(values_a, i + 1)
        store(values_out, i, ar * xr - ai * xm)
        store(values_out, i + 1, ar * xm + ai * xr)


@cuda.jit(device=True, inline=True)
def _x_value(x, e, P, conj):
    """x̃ = x[e] (+ i·x[e + 1] when P is 2, conjugated when conj) in the compute type."""
    xr = load(x, e)
    xm = zero(x)
    if P == 2:
        xm = load(x, e + 1)
        if conj:
            xm = -xm
    return xr, xm


@cuda.jit(device=True, inline=True)
def _words_step(values_a, values_b, values_out, scale, acc, P, conj, want_sum):
    """The arithmetic of one loop step of `_scale_words_tile` on UNROLL words viewed as scalars: element
    q of each word uses scale[q·P:] and sums into acc[q·P:].  Called with P as a literal so that every
    index is a constant and the local arrays stay in registers."""
    S = values_a.size // UNROLL                        # scalars per word
    for u in range(UNROLL):
        for q in range(S // P):
            i = u * S + q * P
            k = q * P
            xr, xm = _x_value(scale, k, P, conj)
            _scale_word(values_a, values_out, i, xr, xm, P)
            if want_sum:
                ar = load(values_a, i)
                br = load(values_b, i)
                if P == 1:
                    acc[k] += ar * br
                else:
                    ai = load(values_a, i + 1)
                    bi = load(values_b, i + 1)
                    acc[k] += ar * br + ai * bi
                    acc[k + 1] += ai * br - ar * bi


@cuda.jit(device=True, inline=True)
def _scale_words_tile(a, x, out, b, partial, M, Kw, P, right, conj, tc, seg_len, want_sum):
    """`_scale` on 64-bit words: a, out and b are read and written as uint64 words that each hold
    8 / (P·itemsize) whole elements of one row (Kw words per row); x is read as elements.  Word
    loads put 4× more bytes in flight than 16-bit element loads (2× for float32); sums accumulate in
    the compute type.  The host picks it when the pointers are 8-byte aligned and a row is whole words."""
    smem = cuda.shared.array(WORD_RED, nt.float64)
    a_words = a.view(np.uint64)
    b_words = b.view(np.uint64)
    out_words = out.view(np.uint64)
    words_a = cuda.local.array(UNROLL, nt.uint64)
    words_b = cuda.local.array(UNROLL, nt.uint64)
    words_out = cuda.local.array(UNROLL, nt.uint64)
    values_a = words_a.view(x.dtype)
    values_b = words_b.view(x.dtype)
    values_out = words_out.view(x.dtype)
    scale = cuda.local.array(WORD_SLOTS, x.dtype)      # x value of each scalar of a word (raw storage)
    acc = cuda.local.array(WORD_SLOTS, nt.float32)     # the compute type of every word dtype
    S = values_a.size // UNROLL
    tid = cuda.threadIdx.x
    seg = nt.int64(cuda.blockIdx.y)
    n, first, end, step, active = _walk(right, tc, seg, seg_len, M, Kw)    # n: word column or row
    if right:
        slots = S                                      # a sum per element column and component
        first_x = n * S
        base = (seg * Kw + n) * S                      # = (seg·K + first element column)·P
    else:
        slots = P                                      # a sum per component
        first_x = n * P
        base = (seg * M + n) * P
    for k in range(WORD_SLOTS):
        acc[k] = 0.0
    if active:
        for k in range(WORD_SLOTS):
            if k < S:
                # right: the word's own columns; left: the row's value, repeated for each element
                scale[k] = x[first_x + (k if right else k % P)]
        t = first
        while t < end:
            for u in range(UNROLL):
                tu = t + u * step
                words_a[u] = 0                         # past the end: zeros add nothing to the sums
                words_b[u] = 0
                if tu < end:
                    e = _offset(right, tu, n, Kw)
                    words_a[u] = a_words[e]
                    if want_sum:
                        words_b[u] = b_words[e]
            if P == 1:
                _words_step(values_a, values_b, values_out, scale, acc, 1, conj, want_sum)
            else:
                _words_step(values_a, values_b, values_out, scale, acc, 2, conj, want_sum)
            for u in range(UNROLL):
                tu = t + u * step
                if tu < end:
                    out_words[_offset(right, tu, n, Kw)] = words_out[u]
            t += UNROLL * step
    if want_sum:
        if not right:
            # one row: fold the per-element sums into re (and im)
            if P == 1:
                acc[0] += (acc[1] + acc[2]) + acc[3]
            else:
                acc[0] += acc[2]
                acc[1] += acc[3]
        for k in range(WORD_SLOTS):
            smem[k * THREADS + tid] = acc[k]
        if _block_sum(smem, WORD_SLOTS, right, tc) == 0 and active:
            for k in range(WORD_SLOTS):
                if k < slots:
                    store(partial, base + k, smem[k * THREADS + tid])


def _scale(a, x, out, b, partial, M, K, P, right, conj, tc, seg_len):
    _scale_tile(a, x, out, b, partial, M, K, P, right, conj, tc, seg_len, 0)


def _scale_sum(a, x, out, b, partial, M, K, P, right, conj, tc, seg_len):
    _scale_tile(a, x, out, b, partial, M, K, P, right, conj, tc, seg_len, 1)


@cuda.jit(device=True, inline=True)
def _scale_words_step(values_a, values_out, scale, x, first_row, step, M, P, right, conj):
    """The arithmetic of UNROLL words of `_scale_words`, P a literal (constant indices keep the words in
    registers).  x̃ comes from ``scale`` (side right: the thread's columns,
    loaded once) or, for side left, from x at each word's row (rows past M are computed, never stored)."""
    S = values_a.size // UNROLL
    for u in range(UNROLL):
        if not right:
            xr, xm = _x_value(x, min(first_row + u * step, M - 1) * P, P, conj)
        for q in range(S // P):
            if right:
                xr, xm = _x_value(scale, q * P, P, conj)
            _scale_word(values_a, values_out, u * S + q * P, xr, xm, P)


def _scale_words(a, x, out, b, partial, M, Kw, P, right, conj, tc, seg_len):
    """The forward pass on 64-bit words (b and partial unused).  It reduces nothing, so on both sides a
    thread walks down one word column, the walk of SCALE_WORDS_SUM's side right; side left's x̃ changes
    with the row (one address per row: a broadcast load, cached).  Each step loads two halves of UNROLL
    words (64 bytes in flight per thread) and computes them as two UNROLL-word steps: LLVM unrolls
    those fully, a single 8-word step it left partly rolled (in local memory) for 16-bit data."""
    a_words = a.view(np.uint64)
    out_words = out.view(np.uint64)
    lo_a = cuda.local.array(UNROLL, nt.uint64)
    hi_a = cuda.local.array(UNROLL, nt.uint64)
    lo_out = cuda.local.array(UNROLL, nt.uint64)
    hi_out = cuda.local.array(UNROLL, nt.uint64)
    scale = cuda.local.array(WORD_SLOTS, x.dtype)      # side right: x of each scalar of the word (raw)
    S = lo_a.view(x.dtype).size // UNROLL              # scalars per word
    n, first, end, step, active = _walk(1, tc, nt.int64(cuda.blockIdx.y), seg_len, M, Kw)
    if not active:
        return
    for k in range(WORD_SLOTS):
        if k < S:
            scale[k] = x[n * S + k] if right else x[0]
    t = first
    half = UNROLL * step
    # unsigned word offsets, advanced by a stride: no per-load multiply or negative-index wraparound
    e = nt.uint64(t * Kw + n)
    stride = nt.uint64(step * Kw)
    e_half = nt.uint64(UNROLL) * stride
    while t < end:
        for u in range(UNROLL):
            lo_a[u] = 0
            hi_a[u] = 0
            if t + u * step < end:
                lo_a[u] = a_words[e + nt.uint64(u) * stride]
            if t + half + u * step < end:
                hi_a[u] = a_words[e + e_half + nt.uint64(u) * stride]
        if P == 1:
            _scale_words_step(lo_a.view(x.dtype), lo_out.view(x.dtype), scale, x, t, step, M, 1, right, conj)
            _scale_words_step(hi_a.view(x.dtype), hi_out.view(x.dtype), scale, x, t + half, step, M, 1, right,
                              conj)
        else:
            _scale_words_step(lo_a.view(x.dtype), lo_out.view(x.dtype), scale, x, t, step, M, 2, right, conj)
            _scale_words_step(hi_a.view(x.dtype), hi_out.view(x.dtype), scale, x, t + half, step, M, 2, right,
                              conj)
        for u in range(UNROLL):
            if t + u * step < end:
                out_words[e + nt.uint64(u) * stride] = lo_out[u]
            if t + half + u * step < end:
                out_words[e + e_half + nt.uint64(u) * stride] = hi_out[u]
        t += 2 * half
        e += nt.uint64(2) * e_half


def _scale_words_sum(a, x, out, b, partial, M, Kw, P, right, conj, tc, seg_len):
    # want_sum from the data (partial is never empty here), not a literal 1: with the literal LLVM
    # schedules the loop into 122 registers, this way into 47
    _scale_words_tile(a, x, out, b, partial, M, Kw, P, right, conj, tc, seg_len, partial.size > 0)


def _scale_sum_to_gx(a, x, out, b, gx, M, K, P, right, conj, tc, seg_len):
    """`SCALE_SUM` with one segment, writing its sums straight into the 16-bit gradient (no SUM_SEGMENTS)."""
    _scale_tile(a, x, out, b, gx, M, K, P, right, conj, tc, seg_len, 1)


def _scale_words_sum_to_gx(a, x, out, b, gx, M, Kw, P, right, conj, tc, seg_len):
    """`SCALE_WORDS_SUM` with one segment, writing its sums straight into the 16-bit gradient."""
    _scale_words_tile(a, x, out, b, gx, M, Kw, P, right, conj, tc, seg_len, gx.size > 0)


def _sum_segments(partial, gx, segments):
    """gx[i] = Σ_s partial[s, i] in a fixed order.  A block owns SUM_COLUMNS outputs; the SUM_GROUPS
    threads of an output each sum every SUM_GROUPS-th segment, SUM_LOADS of them per loop step, all
    loaded before any is added, then the block tree-sums the groups.  With up to SUM_GROUPS × SUM_LOADS
    (64) segments every load of the kernel is in flight at once: the kernel runs right after the scale
    kernel, on partial sums that are mostly still in L2, so it costs about one round trip."""
    smem = cuda.shared.array(THREADS, nt.float64)
    values = cuda.local.array(SUM_LOADS, partial.dtype)
    n = gx.size
    tid = cuda.threadIdx.x
    g = tid // SUM_COLUMNS
    i = nt.int64(cuda.blockIdx.x) * SUM_COLUMNS + (tid & (SUM_COLUMNS - 1))
    total = zero(partial)
    if i < n:
        s = nt.int64(g)
        while s < segments:
            for k in range(SUM_LOADS):
                values[k] = 0
                if s + k * SUM_GROUPS < segments:
                    values[k] = partial[(s + k * SUM_GROUPS) * n + i]
            total += ((values[0] + values[1]) + (values[2] + values[3])) + (
                (values[4] + values[5]) + (values[6] + values[7]))
            s += SUM_LOADS * SUM_GROUPS
    smem[tid] = total
    if _block_sum(smem, 1, 1, SUM_COLUMNS) == 0 and i < n:
        store(gx, i, smem[tid])


def _flat(d):
    return array_type(d, 1)


def _partial(d):
    return nt.Array(compute_type(d), 1, "C")


_I = nt.int64
_SIGNATURE = lambda d: (_flat(d),) * 4 + (_partial(d),) + (_I,) * 7  # noqa: E731
_WORD_DTYPES = ("float16", "bfloat16", "float32")    # float64 gains nothing from words (one element each)
SCALE = Kernel(_scale, _SIGNATURE)
SCALE_SUM = Kernel(_scale_sum, _SIGNATURE)
# 64 registers: 4 blocks of 256 per SM (float32 takes 95 uncapped, 2 blocks); no spills at sm_90
SCALE_WORDS = Kernel(_scale_words, _SIGNATURE, dtypes=_WORD_DTYPES, max_registers=64)
SCALE_WORDS_SUM = Kernel(_scale_words_sum, _SIGNATURE, dtypes=_WORD_DTYPES, max_registers=64)
SUM_SEGMENTS = Kernel(_sum_segments, lambda d: (_partial(d), _flat(d), _I))
# one segment of a 16-bit gradient: the sums go to gx in its own dtype (partial = gx)
_SIGNATURE_TO_GX = lambda d: (_flat(d),) * 5 + (_I,) * 7  # noqa: E731
SCALE_SUM_TO_GX = Kernel(_scale_sum_to_gx, _SIGNATURE_TO_GX, dtypes=("float16", "bfloat16"))
SCALE_WORDS_SUM_TO_GX = Kernel(_scale_words_sum_to_gx, _SIGNATURE_TO_GX, dtypes=("float16", "bfloat16"),
                               max_registers=64)
