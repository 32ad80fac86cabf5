"""CUDA kernels of the RAFT family: patch_correlate and corr_lookup (docs/ops.md §9, §10).

One set of kernels serves both ops.  A *lookup* correlates the query features ``base`` (N, C, H1, W1)
with a sampled map on ``levels`` levels: level 0 is ``fmap2`` (N, C, H2, W2) itself, level i > 0 is
fmap2 average-pooled 2×2 i times, of size (H2 >> i, W2 >> i), kept in a compute-dtype *pyramid*
buffer (levels 1.. one after another, `level_offset`).  patch_correlate is one level.  With
(x, y) = coords[n, h, w] / 2**level, x0 = floor(x), fx = x − x0 (y alike), L = 2r + 1::

    s_c(dx, dy) = bilinear sample of the level map at (x + dx, y + dy), each corner 0 outside
    out[n, level·L² + (dx+r)·L + (dy+r), h, w] = scale · Σ_c base_c · s_c        (l1 = 0)
                                               = scale · Σ_c |base_c − s_c|      (l1 = 1)

Coordinates are read through element strides (csn, csh, csw, csxy) so both layouts, (N, H, W, 2)
and RAFT's (N, 2, H, W), need no copy.  A coordinate that is not finite or beyond ±2**40 makes the
query *invalid*: every sample is 0 and it gets no coordinate gradient.

Kernels (all arrays flat, offsets 64-bit, grid-stride loops):

* `LOOKUP_FORWARD`: one thread per output element, a loop over channels.
* `POOL_FEATURES`, `POOL_LEVEL`: the pyramid, level by level (mean of 2×2, floor).
* `LOOKUP_GRAD_BASE`: one thread per base element; a gather over levels and offsets.
* `LOOKUP_GRAD_COORDS_PARTIAL` (one thread per output element: Σ_c of the coordinate derivative)
  then `LOOKUP_GRAD_COORDS_SUM` (one thread per query: the sum over levels and offsets in order).
* The gradient of the sampled map is a scatter at data-dependent positions.  It is computed as a
  deterministic gather after bucketing the queries by cell (x0, y0) with integer atomics only:
  `BUCKET_CLEAR`, `BUCKET_COUNT` (integer atomic counts per cell), `BUCKET_SCAN` (block per image:
  exclusive prefix sums, counts reset to 0), `BUCKET_PLACE` (integer atomic cursors: each query
  lands in its cell's range, in arbitrary order), `BUCKET_SORT` (each cell's queries sorted by index:
  the order is now fixed), then `LOOKUP_GRAD_MAP` / `LOOKUP_GRAD_MAP_POOLED`: one thread per element
  of the level map, which visits the (L+1)² cells whose footprint can reach its pixel, their queries
  in index order, and sums the at most 4 bilinear terms of each.  A level's gradient adds the pooling
  adjoint of the coarser level's (``prev``, the coarsest level first), so level 0 ends as grad_fmap2.
  The bucket data are int32 in float32 scratch (viewed, never read as floats).

A cell (cy, cx) = (y0 + r + 1, x0 + r + 1) in [0, Hl + 2r] × [0, Wl + 2r]: the queries whose footprint
(rows y0 − r … y0 + r + 1) intersects the level map; others touch no pixel and are not bucketed.

The *window* kernels (`TO_CHANNELS_LAST`, `POOL_CHANNELS_LAST`, `WINDOW_FORWARD`, `WINDOW_GRAD_COORDS`,
`WINDOW_GD`, `WINDOW_GRAD_BASE`, `WINDOW_GRAD_MAP`, `WINDOW_GRAD_MAP_POOLED`) compute dot lookups from
the window sums of each query instead (their section below says how); the kernels above remain the
form of L1 lookups, of radii beyond RAFT_WINDOW_MAX_RADIUS, and the CPU mirrors' form.

Scalars ``half`` (0.5) and ``scale`` are in the compute type and every other constant is derived from
them, so float32 kernels never widen to float64 (numba types float32 ∘ int64 as float64).
"""
import numpy as np

from gpuops._constants import (RAFT_COORD_LIMIT, RAFT_SCAN_THREADS, RAFT_THREADS, RAFT_TRANSPOSE_THREADS,
                               RAFT_WINDOW_DOT_LANES, RAFT_WINDOW_MAX_RADIUS, RAFT_WINDOW_WARPS)
from gpuops._dtypes import STORAGE
from gpuops._launch import Kernel, array_type, compute_type
from gpuops._toolchain import SIMULATOR, cuda, libdevice, nt, overload
from gpuops.cuda._memory import load, load4, store

THREADS = RAFT_THREADS
SCAN_THREADS = RAFT_SCAN_THREADS
#: coordinates beyond this magnitude (and NaN, ±Inf) make a query invalid: nothing to sample
COORD_LIMIT = RAFT_COORD_LIMIT

_INLINE = {} if SIMULATOR else {"forceinline": True}


def floor_same_type(v):
    """floor(v) in v's own float type (math.floor gives an int64 in numba)."""
    return np.floor(v)


@overload(floor_same_type, target="cuda")
def _floor_cuda(v):
    if v == nt.float32:
        return lambda v: libdevice.floorf(v)
    return lambda v: libdevice.floor(v)


@cuda.jit(device=True, **_INLINE)
def thread_range():
    start = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    return start, nt.int64(cuda.gridDim.x) * cuda.blockDim.x


@cuda.jit(device=True, **_INLINE)
def level_offset(N, C, H2, W2, level):
    """Start of pooled level ``level`` (>= 1) in the pyramid buffer."""
    off = nt.int64(0)
    for j in range(1, level):
        off += N * C * (H2 >> j) * (W2 >> j)
    return off


@cuda.jit(device=True, **_INLINE)
def position(coords, off, csxy, level, half):
    """(valid, x0, y0, fx, fy) of the query whose x coordinate is at ``off``, on ``level``."""
    x = load(coords, off)
    y = load(coords, off + csxy)
    for _ in range(level):
        x = x * half
        y = y * half
    valid = abs(x) <= COORD_LIMIT and abs(y) <= COORD_LIMIT
    if not valid:
        x = half - half
        y = x
    xf = floor_same_type(x)
    yf = floor_same_type(y)
    return valid, nt.int64(xf), nt.int64(yf), x - xf, y - yf


@cuda.jit(device=True, **_INLINE)
def corner_gradient(grad, base, stride, radius, y, x, y0, x0, fx, fy, one, zero):
    """Σ, in a fixed order, over the offsets (dx, dy) of one query with a bilinear corner on pixel (y, x) of its
    map of grad[base + ((dx + r)·L + dy + r)·stride] · corner weight (≤ 4 terms); (x0, y0, fx, fy) is the
    query's position (`position`).  Pixel (y, x) relative to the window's corner is (y, x) with y0 = x0 = r."""
    L = 2 * radius + 1
    acc = zero
    for a in range(2):                          # (y, x) as corner row a of offset dy ...
        dy = y - y0 - a
        if -radius <= dy <= radius:
            wy = fy if a else one - fy
            for e in range(2):                  # ... and corner column e of offset dx
                dx = x - x0 - e
                if -radius <= dx <= radius:
                    wx = fx if e else one - fx
                    acc += load(grad, base + ((dx + radius) * L + dy + radius) * stride) * (wy * wx)
    return acc


@cuda.jit(device=True, **_INLINE)
def _pixel(src, off, Hl, Wl, y, x, zero):
    if 0 <= y < Hl and 0 <= x < Wl:
        return load(src, off + y * Wl + x)
    return zero


@cuda.jit(device=True, **_INLINE)
def _corners(src, off, Hl, Wl, y, x, zero):
    """The 4 corners (v00, v01, v10, v11) = rows y, y+1 × columns x, x+1 (0 outside)."""
    return (_pixel(src, off, Hl, Wl, y, x, zero), _pixel(src, off, Hl, Wl, y, x + 1, zero),
            _pixel(src, off, Hl, Wl, y + 1, x, zero), _pixel(src, off, Hl, Wl, y + 1, x + 1, zero))


@cuda.jit(device=True, **_INLINE)
def _bilinear(v00, v01, v10, v11, fx, fy, one):
    return (one - fy) * ((one - fx) * v00 + fx * v01) + fy * ((one - fx) * v10 + fx * v11)


@cuda.jit(device=True, **_INLINE)
def _sample(src, off, Hl, Wl, y, x, fx, fy, one, zero):
    v00, v01, v10, v11 = _corners(src, off, Hl, Wl, y, x, zero)
    return _bilinear(v00, v01, v10, v11, fx, fy, one)


@cuda.jit(device=True, **_INLINE)
def _lookup_index(i, H1, W1, levels, radius):
    """(n, level, dx, dy, h, w) of element i of a lookup output (N, levels·L², H1, W1), x-offset-major."""
    L = 2 * radius + 1
    LL = L * L
    w = i % W1
    t = i // W1
    h = t % H1
    t = t // H1
    ch = t % (levels * LL)
    level = ch // LL
    k = ch - level * LL
    return t // (levels * LL), level, k // L - radius, k - (k // L) * L - radius, h, w


@cuda.jit(device=True, **_INLINE)
def _signed(v, d, zero):
    """v · sign(d), sign(0) = 0, NaN for NaN d."""
    if d > 0:
        return v
    if d < 0:
        return -v
    if d == 0:
        return v * zero         # IEEE: a NaN or Inf gradient times sign(0) = 0 is NaN, not dropped
    return d


# ---------------------------------------------------------------------------------------------
# forward


def _lookup_forward(base, fmap2, pyr, coords, out, N, C, H1, W1, H2, W2, levels, radius, csn, csh, csw, csxy,
                    l1, scale, half):
    one = half + half
    zero = half - half
    plane1 = H1 * W1
    start, step = thread_range()
    for i in range(start, out.size, step):
        n, level, dx, dy, h, w = _lookup_index(i, H1, W1, levels, radius)
        valid, x0, y0, fx, fy = position(coords, n * csn + h * csh + w * csw, csxy, level, half)
        Hl = H2 >> level
        Wl = W2 >> level
        moff = n * C * Hl * Wl
        if level > 0:
            moff += level_offset(N, C, H2, W2, level)
        boff = n * C * plane1 + h * W1 + w
        acc = zero
        for c in range(C):
            b = load(base, boff + c * plane1)
            s = zero
            if valid:
                if level == 0:
                    s = _sample(fmap2, moff + c * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx, fx, fy, one, zero)
                else:
                    s = _sample(pyr, moff + c * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx, fx, fy, one, zero)
            if l1:
                acc += abs(b - s)
            else:
                acc += b * s
        store(out, i, acc * scale)


def _zero_fill(out, half):
    """out = 0 (gradients of empty sums)."""
    zero = half - half
    start, step = thread_range()
    for i in range(start, out.size, step):
        store(out, i, zero)


# ---------------------------------------------------------------------------------------------
# the pooled pyramid


@cuda.jit(device=True, **_INLINE)
def pooled_mean(src, off, i, Hs, Ws, quarter):
    """Element i of planes of (Hs, Ws) values at ``off`` in ``src`` average-pooled 2×2 (stride 2, floor)."""
    Wd = Ws >> 1
    x = i % Wd
    t = i // Wd
    y = t % (Hs >> 1)
    s = off + (t // (Hs >> 1)) * Hs * Ws + 2 * y * Ws + 2 * x
    return (load(src, s) + load(src, s + 1) + load(src, s + Ws) + load(src, s + Ws + 1)) * quarter


def _pool_features(src, pyr, NC, Hs, Ws, dst_off, half):
    """pyr[dst_off + (p, y, x)] = mean of src[p, 2y:2y+2, 2x:2x+2] (level 1 from fmap2)."""
    quarter = half * half
    start, step = thread_range()
    for i in range(start, NC * (Hs >> 1) * (Ws >> 1), step):
        pyr[dst_off + i] = pooled_mean(src, 0, i, Hs, Ws, quarter)


def _pool_level(pyr, NC, Hs, Ws, src_off, dst_off, half):
    """The next pooled level from the previous one, both inside the pyramid buffer."""
    quarter = half * half
    start, step = thread_range()
    for i in range(start, NC * (Hs >> 1) * (Ws >> 1), step):
        pyr[dst_off + i] = pooled_mean(pyr, src_off, i, Hs, Ws, quarter)


# ---------------------------------------------------------------------------------------------
# backward: base and coordinates


def _lookup_grad_base(grad, base, fmap2, pyr, coords, grad_base, N, C, H1, W1, H2, W2, levels, radius,
                      csn, csh, csw, csxy, l1, scale, half):
    """grad_base[n, c, h, w] = scale · Σ_level Σ_k grad[n, level·L² + k, h, w] · (s_c or sign(base_c − s_c))."""
    one = half + half
    zero = half - half
    L = 2 * radius + 1
    LL = L * L
    plane1 = H1 * W1
    start, step = thread_range()
    for i in range(start, grad_base.size, step):
        w = i % W1
        t = i // W1
        h = t % H1
        t = t // H1
        c = t % C
        n = t // C
        b = load(base, i)
        acc = zero
        for level in range(levels):
            valid, x0, y0, fx, fy = position(coords, n * csn + h * csh + w * csw, csxy, level, half)
            Hl = H2 >> level
            Wl = W2 >> level
            moff = (n * C + c) * Hl * Wl
            if level > 0:
                moff += level_offset(N, C, H2, W2, level)
            goff = (n * levels + level) * LL * plane1 + h * W1 + w
            for k in range(LL):
                dx = k // L - radius
                dy = k - (k // L) * L - radius
                g = load(grad, goff + k * plane1)
                s = zero
                if valid:
                    if level == 0:
                        s = _sample(fmap2, moff, Hl, Wl, y0 + dy, x0 + dx, fx, fy, one, zero)
                    else:
                        s = _sample(pyr, moff, Hl, Wl, y0 + dy, x0 + dx, fx, fy, one, zero)
                if l1:
                    acc += _signed(g, b - s, zero)
                else:
                    acc += g * s
        store(grad_base, i, acc * scale)


@cuda.jit(device=True, **_INLINE)
def _coord_terms(src, moff, Hl, Wl, y, x, fx, fy, b, G, l1, one, zero):
    """(∂/∂x, ∂/∂y) of G·b·s (dot) or G·|b − s| (l1) for one channel's sample at corner (y, x)."""
    v00, v01, v10, v11 = _corners(src, moff, Hl, Wl, y, x, zero)
    if l1:
        coef = -_signed(G, b - _bilinear(v00, v01, v10, v11, fx, fy, one), zero)
    else:
        coef = G * b
    return (coef * ((one - fy) * (v01 - v00) + fy * (v11 - v10)),
            coef * ((one - fx) * (v10 - v00) + fx * (v11 - v01)))


def _lookup_grad_coords_partial(grad, base, fmap2, pyr, coords, work, part_off, N, C, H1, W1, H2, W2, levels,
                                radius, csn, csh, csw, csxy, l1, scale, half):
    """work[part_off + 2·i + (0, 1)] = the x and y coordinate gradient of output element i (Σ over c)."""
    one = half + half
    zero = half - half
    plane1 = H1 * W1
    start, step = thread_range()
    for i in range(start, grad.size, step):
        n, level, dx, dy, h, w = _lookup_index(i, H1, W1, levels, radius)
        valid, x0, y0, fx, fy = position(coords, n * csn + h * csh + w * csw, csxy, level, half)
        gx = zero
        gy = zero
        if valid:
            Hl = H2 >> level
            Wl = W2 >> level
            moff = n * C * Hl * Wl
            if level > 0:
                moff += level_offset(N, C, H2, W2, level)
            G = load(grad, i) * scale
            boff = n * C * plane1 + h * W1 + w
            for c in range(C):
                b = load(base, boff + c * plane1)
                if level == 0:
                    tx, ty = _coord_terms(fmap2, moff + c * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx, fx, fy, b, G, l1,
                                          one, zero)
                else:
                    tx, ty = _coord_terms(pyr, moff + c * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx, fx, fy, b, G, l1,
                                          one, zero)
                gx += tx
                gy += ty
            for _ in range(level):        # d(x / 2**level) / dx
                gx = gx * half
                gy = gy * half
        work[part_off + 2 * i] = gx
        work[part_off + 2 * i + 1] = gy


def _lookup_grad_coords_sum(work, part_off, grad_coords, N, H1, W1, channels, csn, csh, csw, csxy, half):
    """grad_coords[n, h, w] = Σ over the output channels, in order, of the partial gradients."""
    zero = half - half
    plane1 = H1 * W1
    start, step = thread_range()
    for q in range(start, N * plane1, step):
        n = q // plane1
        p = q - n * plane1
        h = p // W1
        w = p - h * W1
        gx = zero
        gy = zero
        for ch in range(channels):
            e = part_off + 2 * ((n * channels + ch) * plane1 + p)
            gx += work[e]
            gy += work[e + 1]
        off = n * csn + h * csh + w * csw
        store(grad_coords, off, gx)
        store(grad_coords, off + csxy, gy)


# ---------------------------------------------------------------------------------------------
# backward: the sampled map, bucketed queries


@cuda.jit(device=True, **_INLINE)
def _cell(coords, n, q, W1, csn, csh, csw, csxy, level, radius, CH, CW, half):
    """Cell index (cy·CW + cx) of query q of image n on ``level``, or -1 when it touches no pixel."""
    h = q // W1
    w = q - h * W1
    valid, x0, y0, fx, fy = position(coords, n * csn + h * csh + w * csw, csxy, level, half)
    cy = y0 + radius + 1
    cx = x0 + radius + 1
    if valid and 0 <= cy < CH and 0 <= cx < CW:
        return cy * CW + cx
    return nt.int64(-1)


def _bucket_clear(ints, start_at, count):
    cells = ints.view(np.int32)
    start, step = thread_range()
    for i in range(start, count, step):
        cells[start_at + i] = 0


def _bucket_count(coords, ints, counts_off, N, H1, W1, csn, csh, csw, csxy, level, radius, CH, CW, half):
    counts = ints.view(np.int32)
    Q = H1 * W1
    start, step = thread_range()
    for i in range(start, N * Q, step):
        n = i // Q
        cell = _cell(coords, n, i - n * Q, W1, csn, csh, csw, csxy, level, radius, CH, CW, half)
        if cell >= 0:
            cuda.atomic.add(counts, counts_off + n * CH * CW + cell, 1)


def _bucket_scan(ints, counts_off, starts_off, N, ncell):
    """Per image (one block each): starts = exclusive prefix sums of counts; counts reset to 0."""
    vals = ints.view(np.int32)
    sums = cuda.shared.array(SCAN_THREADS, nt.int64)
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x                # <= SCAN_THREADS
    chunk = (ncell + nthreads - 1) // nthreads
    lo = min(ncell, tid * chunk)
    hi = min(ncell, lo + chunk)
    for n in range(cuda.blockIdx.x, N, cuda.gridDim.x):
        c_base = counts_off + n * ncell
        total = nt.int64(0)
        for j in range(lo, hi):
            total += vals[c_base + j]
        sums[tid] = total
        cuda.syncthreads()
        if tid == 0:
            running = nt.int64(0)
            for j in range(nthreads):
                value = sums[j]
                sums[j] = running
                running += value
        cuda.syncthreads()
        running = sums[tid]
        s_base = starts_off + n * ncell
        for j in range(lo, hi):
            value = vals[c_base + j]
            vals[s_base + j] = running
            vals[c_base + j] = 0
            running += value
        cuda.syncthreads()


def _bucket_place(coords, ints, counts_off, starts_off, items_off, N, H1, W1, csn, csh, csw, csxy, level, radius,
                  CH, CW, half):
    vals = ints.view(np.int32)
    Q = H1 * W1
    ncell = CH * CW
    start, step = thread_range()
    for i in range(start, N * Q, step):
        n = i // Q
        q = i - n * Q
        cell = _cell(coords, n, q, W1, csn, csh, csw, csxy, level, radius, CH, CW, half)
        if cell >= 0:
            slot = cuda.atomic.add(vals, counts_off + n * ncell + cell, 1)
            vals[items_off + n * Q + vals[starts_off + n * ncell + cell] + slot] = q


def _bucket_sort(ints, counts_off, starts_off, placed_off, items_off, N, Q, ncell):
    """Each cell's queries, placed in any order from ``placed_off``, in index order from ``items_off``: a warp
    per cell puts each of its (distinct) queries at its rank among them.  The k² comparisons of a cell of k
    queries are spread over the lanes and read from L1; coarse levels hold tens of queries per cell, where a
    thread per cell sorting in place took k² serial steps through global memory."""
    vals = ints.view(np.int32)
    start, step = thread_range()
    lane = start % 32
    for i in range(start // 32, N * ncell, step // 32):
        n = i // ncell
        first = n * Q + vals[starts_off + i]
        count = vals[counts_off + i]
        for j in range(lane, count, 32):
            item = vals[placed_off + first + j]
            rank = 0
            for k in range(count):
                if vals[placed_off + first + k] < item:
                    rank += 1
            vals[items_off + first + rank] = item


@cuda.jit(device=True, **_INLINE)
def _grad_map_body(grad, base, coords, src, src_off, prev, prev_off, has_prev, ints, counts_off, starts_off,
                   items_off, out, out_off, N, C, H1, W1, Hl, Wl, levels, level, radius, csn, csh, csw, csxy, l1,
                   scale, half):
    """out[out_off + (n, c, y, x)] = the gradient w.r.t. the level map at (y, x), plus the pooling adjoint
    of ``prev`` (the coarser level's gradient, (Hl >> 1) × (Wl >> 1)) when ``has_prev``."""
    vals = ints.view(np.int32)
    one = half + half
    zero = half - half
    quarter = half * half
    L = 2 * radius + 1
    LL = L * L
    Q = H1 * W1
    CW = Wl + 2 * radius + 1
    ncell = (Hl + 2 * radius + 1) * CW
    Hp = Hl >> 1
    Wp = Wl >> 1
    start, step = thread_range()
    for i in range(start, N * C * Hl * Wl, step):
        x = i % Wl
        t = i // Wl
        y = t % Hl
        t = t // Hl
        c = t % C
        n = t // C
        acc = zero
        for cy in range(y, y + 2 * radius + 2):
            for cx in range(x, x + 2 * radius + 2):
                cell = n * ncell + cy * CW + cx
                first = items_off + n * Q + vals[starts_off + cell]
                for j in range(first, first + vals[counts_off + cell]):
                    q = nt.int64(vals[j])
                    qh = q // W1
                    qw = q - qh * W1
                    valid, x0, y0, fx, fy = position(coords, n * csn + qh * csh + qw * csw, csxy, level, half)
                    b = load(base, (n * C + c) * Q + q)
                    for a in range(2):                 # the pixel as corner row a of offset dy
                        dy = y - y0 - a
                        if -radius <= dy <= radius:
                            wy = fy if a else one - fy
                            for e in range(2):         # and as corner column e of offset dx
                                dx = x - x0 - e
                                if -radius <= dx <= radius:
                                    wx = fx if e else one - fx
                                    G = load(grad, ((n * levels + level) * LL + (dx + radius) * L + dy + radius) * Q
                                             + q)
                                    if l1:
                                        s = _sample(src, src_off + (n * C + c) * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx,
                                                    fx, fy, one, zero)
                                        coef = -_signed(G, b - s, zero)
                                    else:
                                        coef = G * b
                                    acc += coef * (wy * wx)
        acc = acc * scale
        if has_prev and y < 2 * Hp and x < 2 * Wp:
            acc += prev[prev_off + ((n * C + c) * Hp + (y >> 1)) * Wp + (x >> 1)] * quarter
        store(out, out_off + i, acc)


def _lookup_grad_map(grad, base, coords, fmap2, work, prev_off, has_prev, ints, counts_off, starts_off, items_off,
                     grad_map, N, C, H1, W1, Hl, Wl, levels, level, radius, csn, csh, csw, csxy, l1, scale, half):
    """Level 0: reads fmap2 (L1 samples), writes grad_map in the storage dtype."""
    _grad_map_body(grad, base, coords, fmap2, 0, work, prev_off, has_prev, ints, counts_off, starts_off, items_off,
                   grad_map, 0, N, C, H1, W1, Hl, Wl, levels, level, radius, csn, csh, csw, csxy, l1, scale, half)


def _lookup_grad_map_pooled(grad, base, coords, pyr_work, src_off, prev_off, has_prev, ints, counts_off, starts_off,
                            items_off, out_off, N, C, H1, W1, Hl, Wl, levels, level, radius, csn, csh, csw, csxy, l1,
                            scale, half):
    """Levels > 0: reads the pyramid, writes the level's gradient into the compute-dtype work buffer."""
    _grad_map_body(grad, base, coords, pyr_work, src_off, pyr_work, prev_off, has_prev, ints, counts_off, starts_off,
                   items_off, pyr_work, out_off, N, C, H1, W1, Hl, Wl, levels, level, radius, csn, csh, csw, csxy,
                   l1, scale, half)


# ---------------------------------------------------------------------------------------------
# window kernels (dot products): a warp per query, its lanes over the channels of channels-last maps
#
# Σ_c base_c · s_c(dx, dy) is the bilinear interpolation, with the query's (fx, fy), of the window sums
# D(py, px) = Σ_c base_c · map_c(y0 − r + py, x0 − r + px) over the (2r+2)² window pixels, so a lookup
# level costs (2r+2)² dot products of length C instead of 4·(2r+1)².  Each dot product is one coalesced
# pass of the warp over a pixel's channels (maps and base transposed to channels-last once per call) and
# a butterfly sum; D lives in shared memory (sized for RAFT_WINDOW_MAX_RADIUS, float64 for every dtype:
# its values are exact there).  The backward keeps the same split: gD(p) = Σ_k G_k · (bilinear weight of
# corner p in output k) per query (the `gd` buffer), then grad_base = Σ_p gD(p)·map(p) (per query) and
# grad_map(pixel) = Σ over the bucketed queries whose window holds the pixel of gD·base (per pixel).
# Loops that contain warp-wide sums have block-uniform trip counts (the simulator's stand-in is a block
# barrier).

WARPS = RAFT_WINDOW_WARPS
AREA = (2 * RAFT_WINDOW_MAX_RADIUS + 2) ** 2
WINDOW_THREADS = WARPS * 32
TRANSPOSE_THREADS = RAFT_TRANSPOSE_THREADS
#: lanes per window dot product: a warp takes 32 // DOT_LANES window pixels at once
DOT_LANES = RAFT_WINDOW_DOT_LANES
#: channels per lane per pass of the channel loops (a fixed set of accumulators: loads in flight)
CHUNKS = 8
_FULL_MASK = 0xFFFFFFFF


def lane_sum(v, red, width):
    """The sum of ``v`` over each aligned group of ``width`` lanes (a power of two <= 32), in every lane of
    the group (simulator body: a block barrier and a shared array ``red`` with a slot per thread)."""
    t = cuda.threadIdx.x
    red[t] = v
    cuda.syncthreads()
    first = t - t % width
    total = v - v
    for j in range(width):
        total += red[first + j]
    cuda.syncthreads()
    return type(v)(total)


@overload(lane_sum, target="cuda")
def _lane_sum_cuda(v, red, width):
    def impl(v, red, width):
        d = width >> 1
        while d > 0:                         # butterfly: every lane ends with the same, ordered sum
            v += cuda.shfl_xor_sync(_FULL_MASK, v, d)
            d >>= 1
        return v
    return impl


def warp_sync():
    """Order the warp's shared and global memory accesses (simulator body: a block barrier)."""
    cuda.syncthreads()


@overload(warp_sync, target="cuda")
def _warp_sync_cuda():
    return lambda: cuda.syncwarp(_FULL_MASK)


def keep_rolled():
    """Nothing (simulator body).  On the GPU a warp barrier, which is convergent: the compiler cannot move the
    16-byte loads of an unrolled dot-product loop across it, so fewer are in flight at once (the forward
    window kernel takes 122 of its 128 registers with it, 128 without; ptxas, sm_90).  Every lane of the
    warp must reach it: the loop holding it has the same trip count in every lane."""


@overload(keep_rolled, target="cuda")
def _keep_rolled_cuda():
    return lambda: cuda.syncwarp(_FULL_MASK)


def like_type(v, like):
    """``v`` converted to ``like``'s float type (window sums are kept in float64)."""
    return type(like)(v)


@overload(like_type, target="cuda")
def _like_type_cuda(v, like):
    if like == nt.float32:
        return lambda v, like: nt.float32(v)
    return lambda v, like: nt.float64(v)


@cuda.jit(device=True, **_INLINE)
def cl_level_offset(N, C, H2, W2, level):
    """Start of level ``level`` (0 = the map itself) in a channels-last pyramid buffer."""
    off = nt.int64(0)
    for j in range(level):
        off += N * C * (H2 >> j) * (W2 >> j)
    return off


@cuda.jit(device=True, **_INLINE)
def _window_query(i, NQ, W1, Q, csn, csh, csw):
    """(live, n, q, coordinate offset) of the query a warp takes at flat index i (dead warps read query 0)."""
    live = i < NQ
    if not live:
        i = i - i
    n = i // Q
    q = i - n * Q
    h = q // W1
    return live, n, q, n * csn + h * csh + (q - h * W1) * csw


@cuda.jit(device=True, **_INLINE)
def _window_dots(bt, cl, D, red, warp, lane, boff, moff, valid, x0, y0, Hl, Wl, C, radius, zero):
    """D[warp, p] = Σ_c bt[boff + c] · cl[moff + (y·Wl + x)·C + c] over the window pixels p = (py, px),
    (y, x) = (y0 − r + py, x0 − r + px); 0 outside the map or for an invalid query.  The warp takes
    32 // DOT_LANES pixels at a time, DOT_LANES lanes each; (2r+2)² is a multiple of 4, so every pass is full.
    When C is a multiple of 4 (RAFT's 256) a lane reads 4 adjacent channels of each map at once (`load4`: one
    16-byte load for float32 work, whose offsets are then multiples of 4), four partial sums in flight: a
    quarter of the load instructions, which bound this loop; other C take the channels one by one."""
    side = 2 * radius + 2
    sub = lane % DOT_LANES
    quads = C % 4 == 0
    for first in range(0, side * side, 32 // DOT_LANES):
        p = first + lane // DOT_LANES
        py = p // side
        y = y0 - radius + py
        x = x0 - radius + p - py * side
        a0 = zero
        a1 = zero
        a2 = zero
        a3 = zero
        inside = valid and 0 <= y < Hl and 0 <= x < Wl
        if quads:
            off = moff + (y * Wl + x) * C
            for step in range(0, C, 4 * DOT_LANES):       # the same trip count in every lane
                c = step + 4 * sub
                if inside and c < C:
                    b0, b1, b2, b3 = load4(bt, boff + c)
                    m0, m1, m2, m3 = load4(cl, off + c)
                    a0 += b0 * m0
                    a1 += b1 * m1
                    a2 += b2 * m2
                    a3 += b3 * m3
                keep_rolled()
        elif inside:
            off = moff + (y * Wl + x) * C
            for c in range(sub, C, DOT_LANES):
                a0 += bt[boff + c] * cl[off + c]
        acc = lane_sum((a0 + a1) + (a2 + a3), red, DOT_LANES)
        if sub == 0:
            D[warp, p] = acc
    warp_sync()


@cuda.jit(device=True, **_INLINE)
def _window_level(work, bt_off, coords, D, red, warp, lane, live, n, q, Q, coff, csxy, N, C, H2, W2, level, radius,
                  half):
    """The window sums D[warp, ·] of query (n, q) on ``level`` (`_window_dots` on the channels-last pyramid in
    ``work``, base from ``bt_off``) and the query's (valid and live, fx, fy) there."""
    valid, x0, y0, fx, fy = position(coords, coff, csxy, level, half)
    valid = valid and live
    Hl = H2 >> level
    Wl = W2 >> level
    moff = cl_level_offset(N, C, H2, W2, level) + n * Hl * Wl * C
    _window_dots(work, work, D, red, warp, lane, bt_off + (n * Q + q) * C, moff, valid, x0, y0, Hl, Wl, C, radius,
                 half - half)
    return valid, fx, fy


@cuda.jit(device=True, **_INLINE)
def _corner_sums(D, warp, side, kx, ky, like):
    """The window sums at the 4 corners of output (dx, dy) = (kx − r, ky − r): (d00, d01, d10, d11)."""
    p = ky * side + kx
    return (like_type(D[warp, p], like), like_type(D[warp, p + 1], like),
            like_type(D[warp, p + side], like), like_type(D[warp, p + side + 1], like))


def _to_channels_last(src, dst, dst_off, C, P, half):
    """dst[dst_off + (n·P + p)·C + c] = src[(n·C + c)·P + p] in the compute type (base, fmap2): 32×32 tiles
    through shared memory, so that both the reads (along p) and the writes (along c) are coalesced.
    Blocks of TRANSPOSE_THREADS threads."""
    tile = cuda.shared.array((32, 33), nt.float64)
    lane = cuda.threadIdx.x % 32
    row = cuda.threadIdx.x // 32
    ptiles = (P + 31) // 32
    ctiles = (C + 31) // 32
    tiles = src.size // (C * P) * ptiles * ctiles
    for t in range(nt.int64(cuda.blockIdx.x), tiles, nt.int64(cuda.gridDim.x)):
        ct = t % ctiles
        r = t // ctiles
        pt = r % ptiles
        n = r // ptiles
        p = pt * 32 + lane
        for j in range(row, 32, TRANSPOSE_THREADS // 32):
            c = ct * 32 + j
            if c < C and p < P:
                tile[j, lane] = load(src, (n * C + c) * P + p)
        cuda.syncthreads()
        c = ct * 32 + lane
        for j in range(row, 32, TRANSPOSE_THREADS // 32):
            p = pt * 32 + j
            if c < C and p < P:
                dst[dst_off + (n * P + p) * C + c] = like_type(tile[lane, j], half)
        cuda.syncthreads()


def _pool_channels_last(work, N, C, Hs, Ws, src_off, dst_off, half):
    """The next level of a channels-last pyramid: mean of 2×2 (floor), (N, Hs>>1, Ws>>1, C)."""
    quarter = half * half
    Hd = Hs >> 1
    Wd = Ws >> 1
    start, step = thread_range()
    for i in range(start, N * Hd * Wd * C, step):
        c = i % C
        t = i // C
        x = t % Wd
        t = t // Wd
        y = t % Hd
        n = t // Hd
        s = src_off + ((n * Hs + 2 * y) * Ws + 2 * x) * C + c
        work[dst_off + i] = (work[s] + work[s + C] + work[s + Ws * C] + work[s + Ws * C + C]) * quarter


def _window_forward(work, bt_off, coords, out, N, C, H1, W1, H2, W2, levels, radius, csn, csh, csw, csxy, scale,
                    half):
    """out = the lookup (dot products), a warp per query; ``work`` holds the channels-last pyramid from 0 and
    the channels-last base from ``bt_off``."""
    D = cuda.shared.array((WARPS, AREA), nt.float64)
    red = cuda.shared.array(WINDOW_THREADS, nt.float64)
    one = half + half
    warp = cuda.threadIdx.x // 32
    lane = cuda.threadIdx.x % 32
    L = 2 * radius + 1
    LL = L * L
    side = L + 1
    Q = H1 * W1
    NQ = N * Q
    for first in range(nt.int64(cuda.blockIdx.x) * WARPS, NQ, nt.int64(cuda.gridDim.x) * WARPS):
        live, n, q, coff = _window_query(first + warp, NQ, W1, Q, csn, csh, csw)
        for level in range(levels):
            valid, fx, fy = _window_level(work, bt_off, coords, D, red, warp, lane, live, n, q, Q, coff, csxy, N, C,
                                          H2, W2, level, radius, half)
            if live:
                for k in range(lane, LL, 32):
                    kx = k // L
                    ky = k - kx * L
                    d00, d01, d10, d11 = _corner_sums(D, warp, side, kx, ky, half)
                    store(out, ((n * levels + level) * LL + k) * Q + q, scale * _bilinear(d00, d01, d10, d11, fx, fy,
                                                                                          one))
            warp_sync()


def _window_grad_coords(grad, work, bt_off, coords, grad_coords, N, C, H1, W1, H2, W2, levels, radius, csn, csh,
                        csw, csxy, scale, half):
    """Per query (a warp): grad_coords = Σ_level 2**-level · Σ_k G_k · ∂(bilinear of the window sums)/∂(x, y)."""
    D = cuda.shared.array((WARPS, AREA), nt.float64)
    red = cuda.shared.array(WINDOW_THREADS, nt.float64)
    one = half + half
    zero = half - half
    warp = cuda.threadIdx.x // 32
    lane = cuda.threadIdx.x % 32
    L = 2 * radius + 1
    LL = L * L
    side = L + 1
    Q = H1 * W1
    NQ = N * Q
    for first in range(nt.int64(cuda.blockIdx.x) * WARPS, NQ, nt.int64(cuda.gridDim.x) * WARPS):
        live, n, q, coff = _window_query(first + warp, NQ, W1, Q, csn, csh, csw)
        gx = zero
        gy = zero
        for level in range(levels):
            valid, fx, fy = _window_level(work, bt_off, coords, D, red, warp, lane, live, n, q, Q, coff, csxy, N, C,
                                          H2, W2, level, radius, half)
            goff = (n * levels + level) * LL * Q + q
            tx = zero
            ty = zero
            if valid:
                for k in range(lane, LL, 32):
                    kx = k // L
                    ky = k - kx * L
                    G = load(grad, goff + k * Q) * scale
                    d00, d01, d10, d11 = _corner_sums(D, warp, side, kx, ky, half)
                    tx += G * ((one - fy) * (d01 - d00) + fy * (d11 - d10))
                    ty += G * ((one - fx) * (d10 - d00) + fx * (d11 - d01))
            tx = lane_sum(tx, red, 32)
            ty = lane_sum(ty, red, 32)
            for _ in range(level):             # d(x / 2**level) / dx
                tx = tx * half
                ty = ty * half
            gx += tx
            gy += ty
            warp_sync()
        if live and lane == 0:
            store(grad_coords, coff, gx)
            store(grad_coords, coff + csxy, gy)


def _window_gd(grad, work, gd_off, coords, N, H1, W1, levels, radius, csn, csh, csw, csxy, scale, half):
    """work[gd_off + ((n·levels + level)·area + p)·Q + q] = gD = Σ_k G_k · (bilinear weight of window pixel p
    as a corner of output k), scale included; a thread per element (queries fastest: coalesced)."""
    one = half + half
    zero = half - half
    L = 2 * radius + 1
    LL = L * L
    side = L + 1
    area = side * side
    Q = H1 * W1
    start, step = thread_range()
    for i in range(start, N * levels * area * Q, step):
        q = i % Q
        t = i // Q
        p = t % area
        t = t // area
        level = t % levels
        n = t // levels
        h = q // W1
        valid, x0, y0, fx, fy = position(coords, n * csn + h * csh + (q - h * W1) * csw, csxy, level, half)
        py = p // side
        px = p - py * side
        goff = (n * levels + level) * LL * Q + q
        acc = zero
        if valid:                          # p relative to the window's corner
            acc = corner_gradient(grad, goff, Q, radius, py, px, radius, radius, fx, fy, one, zero)
        work[gd_off + i] = acc * scale


@cuda.jit(device=True, **_INLINE)
def _chunk(src, off, c, C, zero):
    """src[off + c] for a channel c < C, else 0."""
    if c < C:
        return src[off + c]
    return zero


@cuda.jit(device=True, **_INLINE)
def _quad(src, off, c, C, zero):
    """src[off + c .. off + c + 3] (`load4`) for a channel c < C (C a multiple of 4), else zeros."""
    if c < C:
        return load4(src, off + c)
    return zero, zero, zero, zero


@cuda.jit(device=True, **_INLINE)
def _lane_channel(c0, j, quads):
    """The channel of a lane's j-th of CHUNKS accumulators in the pass from c0: c0 + 32·j, or with
    ``quads`` (the lane reads 4 adjacent channels at once) c0 + 128·(j // 4) + j % 4."""
    if quads:
        return c0 + 128 * (j >> 2) + (j & 3)
    return c0 + 32 * j


@cuda.jit(device=True, **_INLINE)
def _axpy(acc, g, src, off, c0, C, zero, quads):
    """acc[j] + g · src[off + channel j] for the CHUNKS channels of a lane's pass (`_lane_channel`), 0 beyond
    C.  A pass covers 32·CHUNKS channels either way; with ``quads`` (C a multiple of 4, float32 work: 16-byte
    aligned) two 16-byte loads replace eight 4-byte ones."""
    a0, a1, a2, a3, a4, a5, a6, a7 = acc
    if quads:
        s0, s1, s2, s3 = _quad(src, off, c0, C, zero)
        s4, s5, s6, s7 = _quad(src, off, c0 + 128, C, zero)
    else:
        s0 = _chunk(src, off, c0, C, zero)
        s1 = _chunk(src, off, c0 + 32, C, zero)
        s2 = _chunk(src, off, c0 + 64, C, zero)
        s3 = _chunk(src, off, c0 + 96, C, zero)
        s4 = _chunk(src, off, c0 + 128, C, zero)
        s5 = _chunk(src, off, c0 + 160, C, zero)
        s6 = _chunk(src, off, c0 + 192, C, zero)
        s7 = _chunk(src, off, c0 + 224, C, zero)
    return (a0 + g * s0, a1 + g * s1, a2 + g * s2, a3 + g * s3, a4 + g * s4, a5 + g * s5, a6 + g * s6,
            a7 + g * s7)


def _window_grad_base(work, gd_off, coords, grad_base, N, C, H1, W1, H2, W2, levels, radius, csn, csh, csw, csxy,
                      half):
    """grad_base[n, c, q] = Σ_level Σ_p gD(q, level, p) · map_level[c, window pixel p]; a warp per query, its
    lanes over channels, CHUNKS channels per lane per pass."""
    zero = half - half
    warp = cuda.threadIdx.x // 32
    lane = cuda.threadIdx.x % 32
    side = 2 * radius + 2
    area = side * side
    Q = H1 * W1
    NQ = N * Q
    quads = C % 4 == 0
    for first in range(nt.int64(cuda.blockIdx.x) * WARPS, NQ, nt.int64(cuda.gridDim.x) * WARPS):
        live, n, q, coff = _window_query(first + warp, NQ, W1, Q, csn, csh, csw)
        if live:
            for c0 in range(4 * lane if quads else lane, C, 32 * CHUNKS):
                acc = (zero, zero, zero, zero, zero, zero, zero, zero)
                for level in range(levels):
                    valid, x0, y0, fx, fy = position(coords, coff, csxy, level, half)
                    if valid:
                        Hl = H2 >> level
                        Wl = W2 >> level
                        moff = cl_level_offset(N, C, H2, W2, level) + n * Hl * Wl * C
                        gd_level = gd_off + (n * levels + level) * area * Q + q
                        for py in range(side):
                            y = y0 - radius + py
                            if 0 <= y < Hl:
                                for px in range(side):
                                    x = x0 - radius + px
                                    if 0 <= x < Wl:
                                        acc = _axpy(acc, work[gd_level + (py * side + px) * Q], work,
                                                    moff + (y * Wl + x) * C, c0, C, zero, quads)
                for j in range(CHUNKS):
                    c = _lane_channel(c0, j, quads)
                    if c < C:
                        store(grad_base, (n * C + c) * Q + q, acc[j])


def _window_grad_map_partial(work, bt_off, gd_off, part_off, splits, ints, counts_off, starts_off, items_off, N, C,
                             H1, W1, Hl, Wl, levels, level, radius, half):
    """work[part_off + ((pixel·splits + s)·C + c] = Σ over the queries bucketed in the cells of split s of
    pixel (n, y, x) (the (2r+2)² cells whose queries' windows hold the pixel, in order, cut into ``splits``
    ranges; each cell's queries in index order) of gD(query, level, pixel) · base[query, c].  A warp per
    (pixel, split), lanes over channels: coarse levels have few pixels and many queries per cell."""
    vals = ints.view(np.int32)
    zero = half - half
    warp = cuda.threadIdx.x // 32
    lane = cuda.threadIdx.x % 32
    side = 2 * radius + 2
    area = side * side
    Q = H1 * W1
    CW = Wl + 2 * radius + 1
    ncell = (Hl + 2 * radius + 1) * CW
    per_split = (area + splits - 1) // splits
    total = N * Hl * Wl * splits
    quads = C % 4 == 0
    for first in range(nt.int64(cuda.blockIdx.x) * WARPS, total, nt.int64(cuda.gridDim.x) * WARPS):
        i = first + warp
        if i < total:
            split = i % splits
            pixel = i // splits
            x = pixel % Wl
            t = pixel // Wl
            y = t % Hl
            n = t // Hl
            for c0 in range(4 * lane if quads else lane, C, 32 * CHUNKS):
                acc = (zero, zero, zero, zero, zero, zero, zero, zero)
                for k in range(split * per_split, min(area, (split + 1) * per_split)):
                    ky = k // side
                    kx = k - ky * side
                    p = (side - 1 - ky) * side + side - 1 - kx      # the pixel's place in those windows
                    cell = n * ncell + (y + ky) * CW + x + kx
                    first_item = items_off + n * Q + vals[starts_off + cell]
                    gd_pixel = gd_off + ((n * levels + level) * area + p) * Q
                    for j in range(first_item, first_item + vals[counts_off + cell]):
                        q = nt.int64(vals[j])
                        acc = _axpy(acc, work[gd_pixel + q], work, bt_off + (n * Q + q) * C, c0, C, zero, quads)
                for j in range(CHUNKS):
                    c = _lane_channel(c0, j, quads)
                    if c < C:
                        work[part_off + i * C + c] = acc[j]


@cuda.jit(device=True, **_INLINE)
def _window_grad_map_value(work, part_off, splits, gcl_prev, has_prev, i, C, Hl, Wl, quarter, zero):
    """The map gradient at element i = (pixel, c) of a level: its partial sums in split order, plus the
    pooling adjoint of the coarser level's channels-last gradient (when ``has_prev``)."""
    c = i % C
    pixel = i // C
    acc = zero
    for s in range(splits):
        acc += work[part_off + (pixel * splits + s) * C + c]
    x = pixel % Wl
    t = pixel // Wl
    y = t % Hl
    n = t // Hl
    Hp = Hl >> 1
    Wp = Wl >> 1
    if has_prev and y < 2 * Hp and x < 2 * Wp:
        acc += work[gcl_prev + ((n * Hp + (y >> 1)) * Wp + (x >> 1)) * C + c] * quarter
    return acc


def _window_grad_map(work, part_off, splits, gcl_prev, has_prev, grad_map, N, C, Hl, Wl, half):
    """Level 0: grad_map[n, c, y, x] (storage dtype, NCHW); a thread per (pixel, c)."""
    zero = half - half
    quarter = half * half
    start, step = thread_range()
    for i in range(start, N * Hl * Wl * C, step):
        acc = _window_grad_map_value(work, part_off, splits, gcl_prev, has_prev, i, C, Hl, Wl, quarter, zero)
        c = i % C
        pixel = i // C
        n = pixel // (Hl * Wl)
        store(grad_map, (n * C + c) * Hl * Wl + pixel - n * Hl * Wl, acc)


def _window_grad_map_pooled(work, part_off, splits, gcl_prev, has_prev, gcl_off, N, C, Hl, Wl, half):
    """Levels > 0: the level's gradient, channels-last in ``work`` from ``gcl_off``."""
    zero = half - half
    quarter = half * half
    start, step = thread_range()
    for i in range(start, N * Hl * Wl * C, step):
        work[gcl_off + i] = _window_grad_map_value(work, part_off, splits, gcl_prev, has_prev, i, C, Hl, Wl, quarter,
                                                   zero)


# ---------------------------------------------------------------------------------------------
# signatures: storage arrays (a), compute-dtype work arrays (w), int32-in-float32 bucket arrays (b)

_I = nt.int64


def _a(d):
    return array_type(d, 1)


def _w(d):
    return array_type(STORAGE[d][2], 1)


def _b(d):
    return array_type("float32", 1)


def _f(d):
    return compute_type(d)


LOOKUP_FORWARD = Kernel(_lookup_forward, lambda d: (_a(d), _a(d), _w(d), _a(d), _a(d)) + (_I,) * 13
                        + (_f(d), _f(d)))
ZERO_FILL = Kernel(_zero_fill, lambda d: (_a(d), _f(d)))
POOL_FEATURES = Kernel(_pool_features, lambda d: (_a(d), _w(d)) + (_I,) * 4 + (_f(d),))
POOL_LEVEL = Kernel(_pool_level, lambda d: (_w(d),) + (_I,) * 5 + (_f(d),))
LOOKUP_GRAD_BASE = Kernel(_lookup_grad_base, lambda d: (_a(d), _a(d), _a(d), _w(d), _a(d), _a(d)) + (_I,) * 13
                          + (_f(d), _f(d)))
LOOKUP_GRAD_COORDS_PARTIAL = Kernel(_lookup_grad_coords_partial,
                                    lambda d: (_a(d), _a(d), _a(d), _w(d), _a(d), _w(d)) + (_I,) * 14
                                    + (_f(d), _f(d)))
LOOKUP_GRAD_COORDS_SUM = Kernel(_lookup_grad_coords_sum, lambda d: (_w(d), _I, _a(d)) + (_I,) * 8 + (_f(d),))
BUCKET_CLEAR = Kernel(_bucket_clear, lambda d: (_b(d), _I, _I))
BUCKET_COUNT = Kernel(_bucket_count, lambda d: (_a(d), _b(d)) + (_I,) * 12 + (_f(d),))
BUCKET_SCAN = Kernel(_bucket_scan, lambda d: (_b(d),) + (_I,) * 4)
BUCKET_PLACE = Kernel(_bucket_place, lambda d: (_a(d), _b(d)) + (_I,) * 14 + (_f(d),))
BUCKET_SORT = Kernel(_bucket_sort, lambda d: (_b(d),) + (_I,) * 7)
LOOKUP_GRAD_MAP = Kernel(_lookup_grad_map, lambda d: (_a(d), _a(d), _a(d), _a(d), _w(d), _I, _I, _b(d), _I, _I, _I,
                                                       _a(d)) + (_I,) * 14 + (_f(d), _f(d)))
LOOKUP_GRAD_MAP_POOLED = Kernel(_lookup_grad_map_pooled,
                                lambda d: (_a(d), _a(d), _a(d), _w(d), _I, _I, _I, _b(d), _I, _I, _I, _I)
                                + (_I,) * 14 + (_f(d), _f(d)))
TO_CHANNELS_LAST = Kernel(_to_channels_last, lambda d: (_a(d), _w(d)) + (_I,) * 3 + (_f(d),))
POOL_CHANNELS_LAST = Kernel(_pool_channels_last, lambda d: (_w(d),) + (_I,) * 6 + (_f(d),))
# capped at 128 registers (4 blocks of 128 threads per SM), without spills (tests/compile checks)
WINDOW_FORWARD = Kernel(_window_forward, lambda d: (_w(d), _I, _a(d), _a(d)) + (_I,) * 12 + (_f(d), _f(d)),
                        max_registers=128)
WINDOW_GRAD_COORDS = Kernel(_window_grad_coords, lambda d: (_a(d), _w(d), _I, _a(d), _a(d)) + (_I,) * 12
                            + (_f(d), _f(d)), max_registers=128)
WINDOW_GD = Kernel(_window_gd, lambda d: (_a(d), _w(d), _I, _a(d)) + (_I,) * 9 + (_f(d), _f(d)))
WINDOW_GRAD_BASE = Kernel(_window_grad_base, lambda d: (_w(d), _I, _a(d), _a(d)) + (_I,) * 12 + (_f(d),))
WINDOW_GRAD_MAP_PARTIAL = Kernel(_window_grad_map_partial, lambda d: (_w(d), _I, _I, _I, _I, _b(d)) + (_I,) * 12
                                 + (_f(d),))
WINDOW_GRAD_MAP = Kernel(_window_grad_map, lambda d: (_w(d), _I, _I, _I, _I, _a(d)) + (_I,) * 4 + (_f(d),))
WINDOW_GRAD_MAP_POOLED = Kernel(_window_grad_map_pooled, lambda d: (_w(d),) + (_I,) * 9 + (_f(d),))
