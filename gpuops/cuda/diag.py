"""CUDA kernels of the diag family: dgmm and cdgmm (multiply by a diagonal matrix), forward and backward.

Arrays arrive flat; ``P`` is 1 for real data and 2 for complex data stored as (re, im) pairs (the
complex64/complex128 layout is viewed as pairs by gpuops.diag).  ``right`` = 1 scales columns
(``a @ diag(x)``), 0 scales rows (``diag(x) @ a``).  Offsets are 64-bit.

One tiled kernel serves the forward pass and the whole backward, so the backward reads grad_out once:

* ``SCALE``: ``out[i, j] = a[i, j] · x̃`` with x̃ = x[j] (right) or x[i] (left), conjugated when
  ``conj`` (complex product) — the forward pass and grad_a.  When ``want_sum`` it also reduces
  ``a · conj(b)`` along the reduced axis (rows for right, columns for left) into
  ``partial[segment, index]``: the grid's y axis cuts the reduced axis into segments, each block
  keeps its sums in registers and tree-reduces them once at the end, in a fixed order.
* ``SUM_SEGMENTS``: ``gx[n] = Σ_segment partial[segment, n]`` in segment order (deterministic, no
  atomics).

A block is 256 threads laid out as ``rows × tc`` with ``tc`` (a power of two) threads along the
contiguous column axis, so every warp reads whole row stretches (coalesced) and no thread ever
divides an index: x̃ is one value per thread, loaded once.  ``UNROLL`` independent elements per
thread and loop step keep enough loads in flight to reach copy bandwidth.
"""
from gpuops._launch import Kernel, array_type, compute_type
from gpuops._toolchain import cuda, nt
from gpuops.cuda._memory import load, store

THREADS = 256
UNROLL = 4
RED = 2 * THREADS      # float64 shared words of the block reduction (re and im halves)


@cuda.jit(device=True, inline=True)
def _element(a, b, out, e, xr, xm, P, want_sum):
    """out[e] = a[e] · (xr + i·xm); returns a[e] · conj(b[e]) (zero unless want_sum)."""
    if P == 1:
        av = load(a, e)
        store(out, e, av * xr)
        if want_sum:
            return av * load(b, e), av * 0
        return av * 0, av * 0
    ar = load(a, 2 * e)
    ai = load(a, 2 * e + 1)
    store(out, 2 * e, ar * xr - ai * xm)
    store(out, 2 * e + 1, ar * xm + ai * xr)
    if want_sum:
        br = load(b, 2 * e)
        bi = load(b, 2 * e + 1)
        return ar * br + ai * bi, ai * br - ar * bi
    return ar * 0, ar * 0


def _scale(a, x, out, b, partial, M, K, P, right, conj, tc, seg_len, want_sum):
    smem = cuda.shared.array(RED, nt.float64)
    tid = cuda.threadIdx.x
    tx = tid & (tc - 1)
    ty = tid // tc
    rows = THREADS // tc
    seg = nt.int64(cuda.blockIdx.y)
    if right:
        # block = one stretch of tc columns; loop over the rows of this segment
        j = nt.int64(cuda.blockIdx.x) * tc + tx
        n = j
        first = seg * seg_len + ty
        end = min(M, (seg + 1) * seg_len)
        step = rows
        active = j < K
    else:
        # block = `rows` whole rows; loop over the columns of this segment
        n = nt.int64(cuda.blockIdx.x) * rows + ty
        first = seg * seg_len + tx
        end = min(K, (seg + 1) * seg_len)
        step = tc
        active = n < M
    xr = load(x, 0) * 0
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
            for u in range(UNROLL):
                tu = t + u * step
                if tu < end:
                    if right:
                        e = tu * K + n
                    else:
                        e = n * K + tu
                    dr, di = _element(a, b, out, e, xr, xm, P, want_sum)
                    re += dr
                    im += di
            t += UNROLL * step
    if want_sum:
        smem[tid] = re
        smem[THREADS + tid] = im
        cuda.syncthreads()
        # tree over the threads that share n: along ty (stride tc) for right, along tx for left
        if right:
            lane = ty
            stride = tc
            s = rows >> 1
        else:
            lane = tx
            stride = 1
            s = tc >> 1
        while s > 0:
            if lane < s:
                smem[tid] += smem[tid + s * stride]
                smem[THREADS + tid] += smem[THREADS + tid + s * stride]
            cuda.syncthreads()
            s >>= 1
        if lane == 0 and active:
            count = K if right else M
            partial[(seg * count + n) * P] = smem[tid]
            if P == 2:
                partial[(seg * count + n) * P + 1] = smem[THREADS + tid]


def _sum_segments(partial, gx, segments):
    """gx[i] = Σ_s partial[s, i], segments in order."""
    n = gx.size
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    while i < n:
        acc = partial[i]
        for s in range(1, segments):
            acc += partial[s * n + i]
        store(gx, i, acc)
        i += step


def _flat(d):
    return array_type(d, 1)


def _partial(d):
    return nt.Array(compute_type(d), 1, "C")


_I = nt.int64
SCALE = Kernel(_scale, lambda d: (_flat(d),) * 4 + (_partial(d),) + (_I,) * 8)
SUM_SEGMENTS = Kernel(_sum_segments, lambda d: (_partial(d), _flat(d), _I))
