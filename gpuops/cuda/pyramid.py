"""CUDA kernels of the RAFT pyramid family: corr_pyramid and corr_pyramid_lookup (docs/ops.md §10).

The all-pairs volume of one level is (N, H, W, Hl, Wl): query (n, h, w) owns the plane
``vol[n, h, w]`` (``q·Hl·Wl`` onwards, q = n·H·W + h·W + w).  Coordinates are RAFT's (N, 2, H, W):
x of query (n, hw) at ``n·2·H·W + hw``, y one plane (H·W) further.  With (x, y) = coords / 2**level,
x0 = floor(x), fx = x − x0 (y alike), L = 2r + 1::

    out[n, level·L² + (dx+r)·L + (dy+r), h, w] = bilinear sample of vol[n, h, w] at (x + dx, y + dy),
                                                 each corner 0 outside the plane

A coordinate that is not finite or beyond ±2**40 (after the level's scaling) makes the query *invalid*
on that level: it samples zeros and gets no gradient there.

Kernels (arrays flat, offsets 64-bit, grid-stride loops; levels are separate arrays, so every lookup
kernel runs once per level):

* `GEMM` — the numba fallback of the level-0 GEMM (gpuops/pyramid.py uses torch, CuPy or numpy's BLAS
  where it can): ``out[n] = scale · A[n] @ B[n]`` with A and B read through element strides (so
  transposed operands need no copy); 32 × 32 output tiles, blocks of 32 × 8 threads holding 4 outputs
  each, K in steps of 32 through shared tiles in the compute type (float64 for float64, else float32);
  a fixed K order, so repeats are bit-identical.
* `POOL` — level i + 1 from level i: the mean of each 2 × 2 block of the last two axes (floor).
* `UNPOOL` / `UNPOOL_FINAL` — the pooling adjoint chain of the backward, coarsest level first:
  ``acc_i = g_i + acc_{i+1}[y >> 1, x >> 1] / 4`` (0 where the pooling cropped an odd row or column);
  levels ≥ 1 in a compute-dtype work buffer, level 0 into the storage-dtype buffer the GEMMs read.
* `LOOKUP_LEVEL` — one thread per output element of one level; the offset index is the fastest, so a
  warp reads one query's window (≤ 2r + 2 rows of its plane) instead of 32 planes.
* `LOOKUP_GRAD_LEVEL` — the gradient w.r.t. one level's volume as a gather: one thread per volume
  element (n, h, w, y, x) sums, in a fixed order, the ≤ 4 bilinear terms of its own query's offsets
  whose corners land on (y, x) (only query (n, h, w) reads plane (n, h, w): no scatter, no atomics).
* `LOOKUP_GRAD_LEVEL_ADD` — the same sums added in place on each query's (2r+2)² footprint alone (the
  accumulating backward of a pyramid looked up many times: no dense write per lookup).
* `LOOKUP_GRAD_COORDS_PARTIAL` (one thread per output element of a level: G · ∂s/∂(x, y) · 2**-level)
  then `LOOKUP_GRAD_COORDS_SUM` (one thread per query: the sum over every level's channels, in order).

Scalars ``half`` (0.5) and ``scale`` are in the compute type; every other constant is derived from them
(numba types float32 ∘ int64 as float64).
"""
from gpuops._constants import PYRAMID_GEMM_ROWS, PYRAMID_GEMM_TILE, PYRAMID_THREADS
from gpuops._dtypes import STORAGE
from gpuops._launch import ByDtype, Kernel, array_type, compute_type
from gpuops._toolchain import SIMULATOR, cuda, nt
from gpuops.cuda._memory import load, store
from gpuops.cuda.raft import _corners, corner_gradient, pooled_mean, position, thread_range

THREADS = PYRAMID_THREADS
TILE = PYRAMID_GEMM_TILE
ROWS = PYRAMID_GEMM_ROWS
assert TILE == 4 * ROWS, "GEMM keeps 4 accumulators per thread"
#: the GEMM's shared tiles: one extra column, so that column-wise writes hit 32 different banks
_TILE_SHAPE = (TILE, TILE + 1)

_INLINE = {} if SIMULATOR else {"forceinline": True}


# the sampling helpers are the RAFT lookup's (one definition of a position, a corner, a bilinear sample)
_position = position
_thread_range = thread_range


# ---------------------------------------------------------------------------------------------
# the level-0 GEMM (fallback) and the pooling


@cuda.jit(device=True, **_INLINE)
def _gemm_body(As, Bs, a, b, out, batch, M, Nn, K, sAn, sAi, sAk, sBn, sBk, sBj, scale):
    """out[n, i, j] = scale · Σ_k A[n, i, k]·B[n, k, j] (k in order), A[n, i, k] = a[n·sAn + i·sAi + k·sAk],
    B likewise; out row-major (batch, M, Nn)."""
    tx = nt.int64(cuda.threadIdx.x)
    ty = nt.int64(cuda.threadIdx.y)
    zero = scale - scale
    tiles_i = (M + TILE - 1) // TILE
    tiles_j = (Nn + TILE - 1) // TILE
    a_rows_fast = sAi == 1              # lanes walk the unit-stride axis of each operand: coalesced loads
    b_cols_fast = sBj == 1
    for n in range(cuda.blockIdx.z, batch, cuda.gridDim.z):
        for ti in range(cuda.blockIdx.y, tiles_i, cuda.gridDim.y):
            for tj in range(cuda.blockIdx.x, tiles_j, cuda.gridDim.x):
                i0 = nt.int64(ti) * TILE
                j0 = nt.int64(tj) * TILE
                acc0 = zero
                acc1 = zero
                acc2 = zero
                acc3 = zero
                for k0 in range(0, K, TILE):
                    for q in range(TILE // ROWS):
                        r = ty + q * ROWS
                        ii, kk = (tx, r) if a_rows_fast else (r, tx)
                        v = zero
                        if i0 + ii < M and k0 + kk < K:
                            v = load(a, n * sAn + (i0 + ii) * sAi + (k0 + kk) * sAk)
                        As[ii, kk] = v
                        kk, jj = (r, tx) if b_cols_fast else (tx, r)
                        v = zero
                        if k0 + kk < K and j0 + jj < Nn:
                            v = load(b, n * sBn + (k0 + kk) * sBk + (j0 + jj) * sBj)
                        Bs[kk, jj] = v
                    cuda.syncthreads()
                    for kk in range(TILE):
                        bv = Bs[kk, tx]
                        acc0 += As[ty, kk] * bv
                        acc1 += As[ty + ROWS, kk] * bv
                        acc2 += As[ty + 2 * ROWS, kk] * bv
                        acc3 += As[ty + 3 * ROWS, kk] * bv
                    cuda.syncthreads()
                j = j0 + tx
                if j < Nn:
                    row = n * M + i0 + ty
                    if i0 + ty < M:
                        store(out, row * Nn + j, acc0 * scale)
                    if i0 + ty + ROWS < M:
                        store(out, (row + ROWS) * Nn + j, acc1 * scale)
                    if i0 + ty + 2 * ROWS < M:
                        store(out, (row + 2 * ROWS) * Nn + j, acc2 * scale)
                    if i0 + ty + 3 * ROWS < M:
                        store(out, (row + 3 * ROWS) * Nn + j, acc3 * scale)


# shared tiles in the compute type: a shared array's dtype is fixed per function, hence two kernels
def _gemm_f32(a, b, out, batch, M, Nn, K, sAn, sAi, sAk, sBn, sBk, sBj, scale):
    As = cuda.shared.array(_TILE_SHAPE, nt.float32)
    Bs = cuda.shared.array(_TILE_SHAPE, nt.float32)
    _gemm_body(As, Bs, a, b, out, batch, M, Nn, K, sAn, sAi, sAk, sBn, sBk, sBj, scale)


def _gemm_f64(a, b, out, batch, M, Nn, K, sAn, sAi, sAk, sBn, sBk, sBj, scale):
    As = cuda.shared.array(_TILE_SHAPE, nt.float64)
    Bs = cuda.shared.array(_TILE_SHAPE, nt.float64)
    _gemm_body(As, Bs, a, b, out, batch, M, Nn, K, sAn, sAi, sAk, sBn, sBk, sBj, scale)


def _pool(src, dst, P, Hs, Ws, half):
    """dst[p, y, x] = mean of src[p, 2y:2y+2, 2x:2x+2] (P planes of Hs × Ws, floor)."""
    quarter = half * half
    start, step = _thread_range()
    for i in range(start, P * (Hs >> 1) * (Ws >> 1), step):
        store(dst, i, pooled_mean(src, 0, i, Hs, Ws, quarter))


@cuda.jit(device=True, **_INLINE)
def _unpooled(g, i, work, prev_off, has_prev, Hl, Wl, quarter):
    """g[i] plus, with ``has_prev``, the pooling adjoint of the coarser accumulated gradient at work[prev_off]."""
    v = load(g, i)
    if has_prev:
        Hp = Hl >> 1
        Wp = Wl >> 1
        x = i % Wl
        t = i // Wl
        y = t % Hl
        p = t // Hl
        if (y >> 1) < Hp and (x >> 1) < Wp:
            v += work[prev_off + (p * Hp + (y >> 1)) * Wp + (x >> 1)] * quarter
    return v


def _unpool(g, work, prev_off, has_prev, dst_off, P, Hl, Wl, half):
    """work[dst_off + i] = g[i] + adjoint of work[prev_off ...] (a level ≥ 1 of the chain, compute dtype)."""
    quarter = half * half
    start, step = _thread_range()
    for i in range(start, P * Hl * Wl, step):
        work[dst_off + i] = _unpooled(g, i, work, prev_off, has_prev, Hl, Wl, quarter)


def _unpool_final(g, work, prev_off, dst, P, Hl, Wl, half):
    """dst[i] = g[i] + adjoint of level 1's accumulated gradient: level 0's total, in the storage dtype."""
    quarter = half * half
    start, step = _thread_range()
    for i in range(start, P * Hl * Wl, step):
        store(dst, i, _unpooled(g, i, work, prev_off, 1, Hl, Wl, quarter))


# ---------------------------------------------------------------------------------------------
# the lookup


@cuda.jit(device=True, **_INLINE)
def _lookup_index(i, radius):
    """(q, k, dx, dy) of item i of one level's (N·H·W queries) × (L² offsets) items, the offset index k
    fastest (q = n·H·W + hw is the query, k = (dx + r)·L + (dy + r) its channel within the level)."""
    L = 2 * radius + 1
    LL = L * L
    k = i % LL
    q = i // LL
    return q, k, k // L - radius, k - (k // L) * L - radius


def _lookup_level(vol, coords, out, N, H, W, Hl, Wl, levels, level, radius, half):
    """out[n, level·L² + k, h, w] = bilinear sample of vol[n, h, w] at (x/2**level + dx, y/2**level + dy)."""
    one = half + half
    zero = half - half
    L = 2 * radius + 1
    LL = L * L
    HW = H * W
    start, step = _thread_range()
    for i in range(start, N * HW * LL, step):
        q, k, dx, dy = _lookup_index(i, radius)
        n = q // HW
        hw = q - n * HW
        valid, x0, y0, fx, fy = _position(coords, n * 2 * HW + hw, HW, level, half)
        s = zero
        if valid:
            v00, v01, v10, v11 = _corners(vol, q * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx, zero)
            s = (one - fy) * ((one - fx) * v00 + fx * v01) + fy * ((one - fx) * v10 + fx * v11)
        store(out, ((n * levels + level) * LL + k) * HW + hw, s)


def _lookup_grad_level(grad, coords, gvol, N, H, W, Hl, Wl, levels, level, radius, half):
    """gvol[n, h, w, y, x] = Σ over query (n, h, w)'s offsets with a corner on (y, x) of grad · corner weight.
    A block per query plane (grid-stride over the queries), its threads over the plane: the query's position
    is computed once per plane, and an element's (y, x) comes from 32-bit arithmetic (a plane is Hl·Wl <= H·W
    elements); most of the plane is outside the query's window and gets zeros."""
    one = half + half
    zero = half - half
    L = 2 * radius + 1
    LL = L * L
    HW = H * W
    plane = Hl * Wl
    Wl32 = nt.int32(Wl)
    for q in range(nt.int64(cuda.blockIdx.x), N * HW, nt.int64(cuda.gridDim.x)):
        n = q // HW
        hw = q - n * HW
        valid, x0, y0, fx, fy = _position(coords, n * 2 * HW + hw, HW, level, half)
        base = (n * levels + level) * LL * HW + hw
        first = q * plane
        for p in range(nt.int32(cuda.threadIdx.x), nt.int32(plane), nt.int32(cuda.blockDim.x)):
            y = p // Wl32
            x = p - y * Wl32
            acc = zero
            if valid:
                acc = corner_gradient(grad, base, HW, radius, y, x, y0, x0, fx, fy, one, zero)
            store(gvol, first + p, acc)


def _lookup_grad_level_add(grad, coords, gvol, N, H, W, Hl, Wl, levels, level, radius, half):
    """gvol[n, h, w, y, x] += LOOKUP_GRAD_LEVEL's value, on the (2r+2)² footprint of query (n, h, w)'s window
    alone (every element it can make nonzero), in place: one thread per (query, footprint element), the
    element fastest.  Elements outside the plane and invalid queries are left as they are."""
    one = half + half
    zero = half - half
    L = 2 * radius + 1
    LL = L * L
    F = L + 1
    FF = F * F
    HW = H * W
    start, step = _thread_range()
    for i in range(start, N * HW * FF, step):
        q = i // FF
        f = i - q * FF
        n = q // HW
        hw = q - n * HW
        valid, x0, y0, fx, fy = _position(coords, n * 2 * HW + hw, HW, level, half)
        fr = f // F
        y = y0 - radius + fr
        x = x0 - radius + (f - fr * F)
        if valid and 0 <= y < Hl and 0 <= x < Wl:
            at = q * Hl * Wl + y * Wl + x
            base = (n * levels + level) * LL * HW + hw
            store(gvol, at, load(gvol, at) + corner_gradient(grad, base, HW, radius, y, x, y0, x0, fx, fy, one,
                                                              zero))


def _lookup_level_coords_partial(vol, coords, grad, part, N, H, W, Hl, Wl, levels, level, radius, half):
    """part[2e], part[2e + 1] = grad[e] · (∂s/∂x, ∂s/∂y) · 2**-level for output element e of this level."""
    one = half + half
    zero = half - half
    L = 2 * radius + 1
    LL = L * L
    HW = H * W
    start, step = _thread_range()
    for i in range(start, N * HW * LL, step):
        q, k, dx, dy = _lookup_index(i, radius)
        n = q // HW
        hw = q - n * HW
        e = ((n * levels + level) * LL + k) * HW + hw
        valid, x0, y0, fx, fy = _position(coords, n * 2 * HW + hw, HW, level, half)
        gx = zero
        gy = zero
        if valid:
            G = load(grad, e)
            v00, v01, v10, v11 = _corners(vol, q * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx, zero)
            gx = G * ((one - fy) * (v01 - v00) + fy * (v11 - v10))
            gy = G * ((one - fx) * (v10 - v00) + fx * (v11 - v01))
            for _ in range(level):              # d(x / 2**level) / dx
                gx = gx * half
                gy = gy * half
        part[2 * e] = gx
        part[2 * e + 1] = gy


def _lookup_coords_sum(part, grad_coords, N, HW, channels, half):
    """grad_coords[n, :, hw] = Σ over the output channels, in order, of the partial gradients."""
    zero = half - half
    start, step = _thread_range()
    for q in range(start, N * HW, step):
        n = q // HW
        hw = q - n * HW
        gx = zero
        gy = zero
        for ch in range(channels):
            e = 2 * ((n * channels + ch) * HW + hw)
            gx += part[e]
            gy += part[e + 1]
        store(grad_coords, n * 2 * HW + hw, gx)
        store(grad_coords, n * 2 * HW + HW + hw, gy)


# ---------------------------------------------------------------------------------------------
# signatures: storage arrays (a), compute-dtype work arrays (w)

_I = nt.int64
_NARROW = ("float16", "bfloat16", "float32")
_WIDE = ("float64",)


def _a(d):
    return array_type(d, 1)


def _w(d):
    return array_type(STORAGE[d][2], 1)


def _f(d):
    return compute_type(d)


def _gemm_sig(d):
    return (_a(d), _a(d), _a(d)) + (_I,) * 10 + (_f(d),)


GEMM = ByDtype(Kernel(_gemm_f32, _gemm_sig, dtypes=_NARROW), Kernel(_gemm_f64, _gemm_sig, dtypes=_WIDE))
POOL = Kernel(_pool, lambda d: (_a(d), _a(d)) + (_I,) * 3 + (_f(d),))
UNPOOL = Kernel(_unpool, lambda d: (_a(d), _w(d), _I, _I, _I) + (_I,) * 3 + (_f(d),))
UNPOOL_FINAL = Kernel(_unpool_final, lambda d: (_a(d), _w(d), _I, _a(d)) + (_I,) * 3 + (_f(d),))
LOOKUP_LEVEL = Kernel(_lookup_level, lambda d: (_a(d), _a(d), _a(d)) + (_I,) * 8 + (_f(d),))
LOOKUP_GRAD_LEVEL = Kernel(_lookup_grad_level, lambda d: (_a(d), _a(d), _a(d)) + (_I,) * 8 + (_f(d),))
LOOKUP_GRAD_LEVEL_ADD = Kernel(_lookup_grad_level_add, lambda d: (_a(d), _a(d), _a(d)) + (_I,) * 8 + (_f(d),))
LOOKUP_GRAD_COORDS_PARTIAL = Kernel(_lookup_level_coords_partial,
                                    lambda d: (_a(d), _a(d), _a(d), _w(d)) + (_I,) * 8 + (_f(d),))
LOOKUP_GRAD_COORDS_SUM = Kernel(_lookup_coords_sum, lambda d: (_w(d), _a(d)) + (_I,) * 3 + (_f(d),))
