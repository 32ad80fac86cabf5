"""CPU mirrors of gpuops.cuda.raft: the same kernels with the same argument lists (flat float32/float64
arrays, int64 parameters, scalars in the compute type), the same formulas and the same bucketed
gather for the gradient of the sampled map.  Parallel over output elements, or over (image, channel)
planes for the gradient of the map.  Bucketing runs one image per thread in query order, so the
cells come out sorted and `bucket_sort` only copies them.
"""
import numpy as np

from gpuops._toolchain import CPU_JIT, njit, prange

from gpuops._constants import RAFT_COORD_LIMIT as COORD_LIMIT  # noqa: E402


@njit(cache=True, inline="always")
def _level_offset(N, C, H2, W2, level):
    off = 0
    for j in range(1, level):
        off += N * C * (H2 >> j) * (W2 >> j)
    return off


@njit(cache=True, inline="always")
def _position(coords, off, csxy, level, half):
    x = coords[off]
    y = coords[off + csxy]
    for _ in range(level):
        x = x * half
        y = y * half
    valid = abs(x) <= COORD_LIMIT and abs(y) <= COORD_LIMIT
    if not valid:
        x = half - half
        y = x
    xf = np.floor(x)
    yf = np.floor(y)
    return valid, np.int64(xf), np.int64(yf), x - xf, y - yf


@njit(cache=True, inline="always")
def _pixel(src, off, Hl, Wl, y, x, zero):
    if 0 <= y < Hl and 0 <= x < Wl:
        return src[off + y * Wl + x]
    return zero


@njit(cache=True, inline="always")
def corner_gradient(grad, base, stride, radius, y, x, y0, x0, fx, fy, one, zero):
    """gpuops.cuda.raft.corner_gradient."""
    L = 2 * radius + 1
    acc = zero
    for a in range(2):
        dy = y - y0 - a
        if -radius <= dy <= radius:
            wy = fy if a else one - fy
            for e in range(2):
                dx = x - x0 - e
                if -radius <= dx <= radius:
                    wx = fx if e else one - fx
                    acc += grad[base + ((dx + radius) * L + dy + radius) * stride] * (wy * wx)
    return acc


@njit(cache=True, inline="always")
def _corners(src, off, Hl, Wl, y, x, zero):
    return (_pixel(src, off, Hl, Wl, y, x, zero), _pixel(src, off, Hl, Wl, y, x + 1, zero),
            _pixel(src, off, Hl, Wl, y + 1, x, zero), _pixel(src, off, Hl, Wl, y + 1, x + 1, zero))


@njit(cache=True, inline="always")
def _bilinear(v00, v01, v10, v11, fx, fy, one):
    return (one - fy) * ((one - fx) * v00 + fx * v01) + fy * ((one - fx) * v10 + fx * v11)


@njit(cache=True, inline="always")
def _sample(src, off, Hl, Wl, y, x, fx, fy, one, zero):
    v00, v01, v10, v11 = _corners(src, off, Hl, Wl, y, x, zero)
    return _bilinear(v00, v01, v10, v11, fx, fy, one)


@njit(cache=True, inline="always")
def _signed(v, d, zero):
    if d > 0:
        return v
    if d < 0:
        return -v
    if d == 0:
        return v * zero         # IEEE: a NaN or Inf gradient times sign(0) = 0 is NaN, not dropped
    return d


# ---------------------------------------------------------------------------------------------
# forward and pyramid


@njit(cache=True, inline="always")
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


@njit(**CPU_JIT)
def lookup_forward(base, fmap2, pyr, coords, out, N, C, H1, W1, H2, W2, levels, radius, csn, csh, csw, csxy, l1,
                   scale, half):
    one = half + half
    zero = half - half
    plane1 = H1 * W1
    for i in prange(out.size):
        n, level, dx, dy, h, w = _lookup_index(i, H1, W1, levels, radius)
        valid, x0, y0, fx, fy = _position(coords, n * csn + h * csh + w * csw, csxy, level, half)
        Hl = H2 >> level
        Wl = W2 >> level
        moff = n * C * Hl * Wl
        if level > 0:
            moff += _level_offset(N, C, H2, W2, level)
        boff = n * C * plane1 + h * W1 + w
        acc = zero
        for c in range(C):
            b = base[boff + c * plane1]
            s = zero
            if valid and level == 0:
                s = _sample(fmap2, moff + c * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx, fx, fy, one, zero)
            elif valid:
                s = _sample(pyr, moff + c * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx, fx, fy, one, zero)
            if l1:
                acc += abs(b - s)
            else:
                acc += b * s
        out[i] = acc * scale


@njit(**CPU_JIT)
def zero_fill(out, half):
    zero = half - half
    for i in prange(out.size):
        out[i] = zero


@njit(cache=True, inline="always")
def pooled_mean(src, off, i, Hs, Ws, quarter):
    Wd = Ws >> 1
    x = i % Wd
    t = i // Wd
    y = t % (Hs >> 1)
    s = off + (t // (Hs >> 1)) * Hs * Ws + 2 * y * Ws + 2 * x
    return (src[s] + src[s + 1] + src[s + Ws] + src[s + Ws + 1]) * quarter


@njit(**CPU_JIT)
def pool_features(src, pyr, NC, Hs, Ws, dst_off, half):
    quarter = half * half
    for i in prange(NC * (Hs >> 1) * (Ws >> 1)):
        pyr[dst_off + i] = pooled_mean(src, 0, i, Hs, Ws, quarter)


@njit(**CPU_JIT)
def pool_level(pyr, NC, Hs, Ws, src_off, dst_off, half):
    quarter = half * half
    for i in prange(NC * (Hs >> 1) * (Ws >> 1)):
        pyr[dst_off + i] = pooled_mean(pyr, src_off, i, Hs, Ws, quarter)


# ---------------------------------------------------------------------------------------------
# backward: base and coordinates


@njit(**CPU_JIT)
def lookup_grad_base(grad, base, fmap2, pyr, coords, grad_base, N, C, H1, W1, H2, W2, levels, radius, csn, csh, csw,
                     csxy, l1, scale, half):
    one = half + half
    zero = half - half
    L = 2 * radius + 1
    LL = L * L
    plane1 = H1 * W1
    for i in prange(grad_base.size):
        w = i % W1
        t = i // W1
        h = t % H1
        t = t // H1
        c = t % C
        n = t // C
        b = base[i]
        acc = zero
        for level in range(levels):
            valid, x0, y0, fx, fy = _position(coords, n * csn + h * csh + w * csw, csxy, level, half)
            Hl = H2 >> level
            Wl = W2 >> level
            moff = (n * C + c) * Hl * Wl
            if level > 0:
                moff += _level_offset(N, C, H2, W2, level)
            goff = (n * levels + level) * LL * plane1 + h * W1 + w
            for k in range(LL):
                dx = k // L - radius
                dy = k - (k // L) * L - radius
                g = grad[goff + k * plane1]
                s = zero
                if valid and level == 0:
                    s = _sample(fmap2, moff, Hl, Wl, y0 + dy, x0 + dx, fx, fy, one, zero)
                elif valid:
                    s = _sample(pyr, moff, Hl, Wl, y0 + dy, x0 + dx, fx, fy, one, zero)
                if l1:
                    acc += _signed(g, b - s, zero)
                else:
                    acc += g * s
        grad_base[i] = acc * scale


@njit(cache=True, inline="always")
def _coord_terms(src, moff, Hl, Wl, y, x, fx, fy, b, G, l1, one, zero):
    v00, v01, v10, v11 = _corners(src, moff, Hl, Wl, y, x, zero)
    if l1:
        coef = -_signed(G, b - _bilinear(v00, v01, v10, v11, fx, fy, one), zero)
    else:
        coef = G * b
    return (coef * ((one - fy) * (v01 - v00) + fy * (v11 - v10)),
            coef * ((one - fx) * (v10 - v00) + fx * (v11 - v01)))


@njit(**CPU_JIT)
def lookup_grad_coords_partial(grad, base, fmap2, pyr, coords, work, part_off, N, C, H1, W1, H2, W2, levels, radius,
                               csn, csh, csw, csxy, l1, scale, half):
    one = half + half
    zero = half - half
    plane1 = H1 * W1
    for i in prange(grad.size):
        n, level, dx, dy, h, w = _lookup_index(i, H1, W1, levels, radius)
        valid, x0, y0, fx, fy = _position(coords, n * csn + h * csh + w * csw, csxy, level, half)
        gx = zero
        gy = zero
        if valid:
            Hl = H2 >> level
            Wl = W2 >> level
            moff = n * C * Hl * Wl
            if level > 0:
                moff += _level_offset(N, C, H2, W2, level)
            G = grad[i] * scale
            boff = n * C * plane1 + h * W1 + w
            for c in range(C):
                b = base[boff + c * plane1]
                if level == 0:
                    tx, ty = _coord_terms(fmap2, moff + c * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx, fx, fy, b, G, l1, one,
                                          zero)
                else:
                    tx, ty = _coord_terms(pyr, moff + c * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx, fx, fy, b, G, l1, one,
                                          zero)
                gx += tx
                gy += ty
            for _ in range(level):
                gx = gx * half
                gy = gy * half
        work[part_off + 2 * i] = gx
        work[part_off + 2 * i + 1] = gy


@njit(**CPU_JIT)
def lookup_grad_coords_sum(work, part_off, grad_coords, N, H1, W1, channels, csn, csh, csw, csxy, half):
    zero = half - half
    plane1 = H1 * W1
    for q in prange(N * plane1):
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
        grad_coords[off] = gx
        grad_coords[off + csxy] = gy


# ---------------------------------------------------------------------------------------------
# backward: the sampled map, bucketed queries


@njit(cache=True, inline="always")
def _cell(coords, n, q, W1, csn, csh, csw, csxy, level, radius, CH, CW, half):
    h = q // W1
    w = q - h * W1
    valid, x0, y0, fx, fy = _position(coords, n * csn + h * csh + w * csw, csxy, level, half)
    cy = y0 + radius + 1
    cx = x0 + radius + 1
    if valid and 0 <= cy < CH and 0 <= cx < CW:
        return cy * CW + cx
    return -1


@njit(**CPU_JIT)
def bucket_clear(ints, start_at, count):
    cells = ints.view(np.int32)
    for i in prange(count):
        cells[start_at + i] = 0


@njit(**CPU_JIT)
def bucket_count(coords, ints, counts_off, N, H1, W1, csn, csh, csw, csxy, level, radius, CH, CW, half):
    counts = ints.view(np.int32)
    Q = H1 * W1
    for n in prange(N):
        for q in range(Q):
            cell = _cell(coords, n, q, W1, csn, csh, csw, csxy, level, radius, CH, CW, half)
            if cell >= 0:
                counts[counts_off + n * CH * CW + cell] += 1


@njit(**CPU_JIT)
def bucket_scan(ints, counts_off, starts_off, N, ncell):
    vals = ints.view(np.int32)
    for n in prange(N):
        running = 0
        for j in range(ncell):
            value = vals[counts_off + n * ncell + j]
            vals[starts_off + n * ncell + j] = running
            vals[counts_off + n * ncell + j] = 0
            running += value


@njit(**CPU_JIT)
def bucket_place(coords, ints, counts_off, starts_off, items_off, N, H1, W1, csn, csh, csw, csxy, level, radius, CH,
                 CW, half):
    vals = ints.view(np.int32)
    Q = H1 * W1
    ncell = CH * CW
    for n in prange(N):
        for q in range(Q):
            cell = _cell(coords, n, q, W1, csn, csh, csw, csxy, level, radius, CH, CW, half)
            if cell >= 0:
                slot = vals[counts_off + n * ncell + cell]
                vals[counts_off + n * ncell + cell] = slot + 1
                vals[items_off + n * Q + vals[starts_off + n * ncell + cell] + slot] = q


@njit(**CPU_JIT)
def bucket_sort(ints, counts_off, starts_off, placed_off, items_off, N, Q, ncell):
    vals = ints.view(np.int32)
    for i in prange(N * ncell):
        first = i // ncell * Q + vals[starts_off + i]
        count = vals[counts_off + i]
        placed = vals[placed_off + first:placed_off + first + count]
        vals[items_off + first:items_off + first + count] = np.sort(placed)


@njit(cache=True)
def _grad_map_plane(grad, base, coords, src, src_off, prev, prev_off, has_prev, vals, counts_off, starts_off,
                    items_off, out, out_off, n, c, N, C, H1, W1, Hl, Wl, levels, level, radius, csn, csh, csw, csxy,
                    l1, scale, half):
    """Plane (n, c) of the level map's gradient (gpuops.cuda.raft._grad_map_body)."""
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
    plane = (n * C + c) * Hl * Wl
    for y in range(Hl):
        for x in range(Wl):
            acc = zero
            for cy in range(y, y + 2 * radius + 2):
                for cx in range(x, x + 2 * radius + 2):
                    cell = n * ncell + cy * CW + cx
                    first = items_off + n * Q + vals[starts_off + cell]
                    for j in range(first, first + vals[counts_off + cell]):
                        q = np.int64(vals[j])
                        qh = q // W1
                        qw = q - qh * W1
                        valid, x0, y0, fx, fy = _position(coords, n * csn + qh * csh + qw * csw, csxy, level, half)
                        b = base[(n * C + c) * Q + q]
                        for a in range(2):
                            dy = y - y0 - a
                            if -radius <= dy <= radius:
                                wy = fy if a else one - fy
                                for e in range(2):
                                    dx = x - x0 - e
                                    if -radius <= dx <= radius:
                                        wx = fx if e else one - fx
                                        G = grad[((n * levels + level) * LL + (dx + radius) * L + dy + radius) * Q + q]
                                        if l1:
                                            s = _sample(src, src_off + plane, Hl, Wl, y0 + dy, x0 + dx, fx, fy, one,
                                                        zero)
                                            coef = -_signed(G, b - s, zero)
                                        else:
                                            coef = G * b
                                        acc += coef * (wy * wx)
            acc = acc * scale
            if has_prev and y < 2 * Hp and x < 2 * Wp:
                acc += prev[prev_off + ((n * C + c) * Hp + (y >> 1)) * Wp + (x >> 1)] * quarter
            out[out_off + plane + y * Wl + x] = acc


@njit(**CPU_JIT)
def lookup_grad_map(grad, base, coords, fmap2, work, prev_off, has_prev, ints, counts_off, starts_off, items_off,
                    grad_map, N, C, H1, W1, Hl, Wl, levels, level, radius, csn, csh, csw, csxy, l1, scale, half):
    vals = ints.view(np.int32)
    for nc in prange(N * C):
        _grad_map_plane(grad, base, coords, fmap2, 0, work, prev_off, has_prev, vals, counts_off, starts_off,
                        items_off, grad_map, 0, nc // C, nc % C, N, C, H1, W1, Hl, Wl, levels, level, radius, csn,
                        csh, csw, csxy, l1, scale, half)


@njit(**CPU_JIT)
def lookup_grad_map_pooled(grad, base, coords, pyr_work, src_off, prev_off, has_prev, ints, counts_off, starts_off,
                           items_off, out_off, N, C, H1, W1, Hl, Wl, levels, level, radius, csn, csh, csw, csxy, l1,
                           scale, half):
    vals = ints.view(np.int32)
    for nc in prange(N * C):
        _grad_map_plane(grad, base, coords, pyr_work, src_off, pyr_work, prev_off, has_prev, vals, counts_off,
                        starts_off, items_off, pyr_work, out_off, nc // C, nc % C, N, C, H1, W1, Hl, Wl, levels, level,
                        radius, csn, csh, csw, csxy, l1, scale, half)
