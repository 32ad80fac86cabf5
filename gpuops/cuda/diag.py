"""CUDA kernels of the diag family: dgmm and cdgmm (multiply by a diagonal matrix), forward and backward.

Arrays arrive flat; ``P`` is 1 for real data and 2 for complex data stored as (re, im) pairs (the
complex64/complex128 layout is viewed as pairs by gpuops.diag).  ``right`` = 1 scales columns
(``a @ diag(x)``), 0 scales rows (``diag(x) @ a``).  Offsets are 64-bit.

* ``SCALE``: ``out[i, j] = a[i, j] · x[j or i]`` (complex product; ``conj`` conjugates x) — the forward
  pass and grad_a.  Memory-bound, one element per thread per grid-stride step.
* grad_x reductions, deterministic (no atomics), partial sums in the compute type, tree-reduced
  in float64 shared memory:
  ``COLSUM_PARTIAL`` + ``COLSUM_FINAL`` (side right: sum over rows) — a block is 32 columns × 8
  row lanes of one chunk of rows (coalesced); chunks are summed in order by the final kernel.
  ``ROWSUM`` (side left: sum along a row) — ``lanes`` threads per row (a power of two ≤ 256).
"""
from gpuops._launch import Kernel, array_type, compute_type
from gpuops._toolchain import cuda, nt
from gpuops.cuda._memory import load, store

THREADS = 256
RED = 2 * THREADS      # float64 shared words of a reduction (re and im halves)


def _scale(a, x, out, K, P, right, conj):
    n = a.size // P
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    small = n < 2147483647          # 32-bit division when every index fits (the common case)
    while i < n:
        if small:
            row = nt.int64(nt.int32(i) // nt.int32(K))
        else:
            row = i // K
        xi = row
        if right:
            xi = i - row * K
        if P == 1:
            store(out, i, load(a, i) * load(x, xi))
        else:
            ar = load(a, 2 * i)
            ai = load(a, 2 * i + 1)
            xr = load(x, 2 * xi)
            xm = load(x, 2 * xi + 1)
            if conj:
                xm = -xm
            store(out, 2 * i, ar * xr - ai * xm)
            store(out, 2 * i + 1, ar * xm + ai * xr)
        i += step


def _colsum_partial(g, a, partial, M, K, P, rows_per_chunk):
    """partial[chunk, j, p] = Σ_{i in chunk} g[i, j] · conj(a[i, j])  (p = re, im)."""
    smem = cuda.shared.array(RED, nt.float64)
    tid = cuda.threadIdx.x
    tx = tid & 31
    ty = tid >> 5
    col_blocks = (K + 31) // 32
    chunks = (M + rows_per_chunk - 1) // rows_per_chunk
    if chunks < 1:
        chunks = 1
    total = chunks * col_blocks
    blk = nt.int64(cuda.blockIdx.x)
    while blk < total:
        ch = blk // col_blocks
        j = (blk - ch * col_blocks) * 32 + tx
        re = nt.float32(0.0)
        im = nt.float32(0.0)
        if j < K:
            i = ch * rows_per_chunk + ty
            end = (ch + 1) * rows_per_chunk
            if end > M:
                end = M
            while i < end:
                e = i * K + j
                if P == 1:
                    re += load(g, e) * load(a, e)
                else:
                    gr = load(g, 2 * e)
                    gi = load(g, 2 * e + 1)
                    ar = load(a, 2 * e)
                    ai = load(a, 2 * e + 1)
                    re += gr * ar + gi * ai
                    im += gi * ar - gr * ai
                i += 8
        smem[tid] = re
        smem[THREADS + tid] = im
        cuda.syncthreads()
        s = 4
        while s > 0:
            if ty < s:
                smem[tid] += smem[tid + 32 * s]
                smem[THREADS + tid] += smem[THREADS + tid + 32 * s]
            cuda.syncthreads()
            s >>= 1
        if ty == 0 and j < K:
            partial[(ch * K + j) * P] = smem[tid]
            if P == 2:
                partial[(ch * K + j) * P + 1] = smem[THREADS + tid]
        blk += cuda.gridDim.x


def _colsum_final(partial, gx, chunks):
    """gx[j, p] = Σ_chunk partial[chunk, j, p], chunks in order."""
    n = gx.size
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    while i < n:
        acc = partial[i]
        for ch in range(1, chunks):
            acc += partial[ch * n + i]
        store(gx, i, acc)
        i += step


def _rowsum(g, a, gx, M, K, P, lanes):
    """gx[i, p] = Σ_j g[i, j] · conj(a[i, j]); ``lanes`` threads per row."""
    smem = cuda.shared.array(RED, nt.float64)
    tid = cuda.threadIdx.x
    per_block = THREADS // lanes
    r = tid // lanes
    lane = tid - r * lanes
    total = (M + per_block - 1) // per_block
    blk = nt.int64(cuda.blockIdx.x)
    while blk < total:
        row = blk * per_block + r
        re = nt.float32(0.0)
        im = nt.float32(0.0)
        if row < M:
            j = nt.int64(lane)
            while j < K:
                e = row * K + j
                if P == 1:
                    re += load(g, e) * load(a, e)
                else:
                    gr = load(g, 2 * e)
                    gi = load(g, 2 * e + 1)
                    ar = load(a, 2 * e)
                    ai = load(a, 2 * e + 1)
                    re += gr * ar + gi * ai
                    im += gi * ar - gr * ai
                j += lanes
        cuda.syncthreads()
        smem[tid] = re
        smem[THREADS + tid] = im
        cuda.syncthreads()
        s = lanes >> 1
        while s > 0:
            if lane < s:
                smem[tid] += smem[tid + s]
                smem[THREADS + tid] += smem[THREADS + tid + s]
            cuda.syncthreads()
            s >>= 1
        if lane == 0 and row < M:
            store(gx, row * P, smem[tid])
            if P == 2:
                store(gx, row * P + 1, smem[THREADS + tid])
        blk += cuda.gridDim.x


def _flat(d):
    return array_type(d, 1)


def _partial(d):
    return nt.Array(compute_type(d), 1, "C")


_I = nt.int64
SCALE = Kernel(_scale, lambda d: (_flat(d),) * 3 + (_I,) * 4)
COLSUM_PARTIAL = Kernel(_colsum_partial, lambda d: (_flat(d), _flat(d), _partial(d)) + (_I,) * 4)
COLSUM_FINAL = Kernel(_colsum_final, lambda d: (_partial(d), _flat(d), _I))
ROWSUM = Kernel(_rowsum, lambda d: (_flat(d),) * 3 + (_I,) * 4)
