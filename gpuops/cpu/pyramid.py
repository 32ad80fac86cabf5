"""CPU mirrors of gpuops.cuda.pyramid: the same kernels with the same argument lists (flat float32/float64
arrays, int64 parameters, scalars in the compute type) and the same formulas, term order included.
The level-0 GEMM has no mirror: on the host it is numpy's matmul (BLAS), in gpuops/pyramid.py.

The lookup kernels run in parallel over queries (each query's position is computed once and its L²
offsets, or its plane, follow in the kernels' order); the pooling kernels over output elements.
"""
from gpuops._toolchain import CPU_JIT, njit, prange
from gpuops.cpu.raft import _corners, corner_gradient, pooled_mean
from gpuops.cpu.raft import _position as _raft_position


# the sampling helpers are the RAFT lookup mirrors' (one definition of a position, a corner, a sample)
_position = _raft_position


# ---------------------------------------------------------------------------------------------
# pooling and its adjoint


@njit(**CPU_JIT)
def pool(src, dst, P, Hs, Ws, half):
    quarter = half * half
    for i in prange(P * (Hs >> 1) * (Ws >> 1)):
        dst[i] = pooled_mean(src, 0, i, Hs, Ws, quarter)


@njit(cache=True, inline="always")
def _unpooled(g, i, work, prev_off, has_prev, Hl, Wl, quarter):
    v = g[i]
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


@njit(**CPU_JIT)
def unpool(g, work, prev_off, has_prev, dst_off, P, Hl, Wl, half):
    quarter = half * half
    for i in prange(P * Hl * Wl):
        work[dst_off + i] = _unpooled(g, i, work, prev_off, has_prev, Hl, Wl, quarter)


@njit(**CPU_JIT)
def unpool_final(g, work, prev_off, dst, P, Hl, Wl, half):
    quarter = half * half
    for i in prange(P * Hl * Wl):
        dst[i] = _unpooled(g, i, work, prev_off, 1, Hl, Wl, quarter)


# ---------------------------------------------------------------------------------------------
# the lookup


@njit(**CPU_JIT)
def lookup_level(vol, coords, out, N, H, W, Hl, Wl, levels, level, radius, half):
    one = half + half
    zero = half - half
    L = 2 * radius + 1
    LL = L * L
    HW = H * W
    for q in prange(N * HW):
        n = q // HW
        hw = q - n * HW
        valid, x0, y0, fx, fy = _position(coords, n * 2 * HW + hw, HW, level, half)
        for k in range(LL):
            dx = k // L - radius
            dy = k - (k // L) * L - radius
            s = zero
            if valid:
                v00, v01, v10, v11 = _corners(vol, q * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx, zero)
                s = (one - fy) * ((one - fx) * v00 + fx * v01) + fy * ((one - fx) * v10 + fx * v11)
            out[((n * levels + level) * LL + k) * HW + hw] = s


@njit(**CPU_JIT)
def lookup_grad_level(grad, coords, gvol, N, H, W, Hl, Wl, levels, level, radius, half):
    one = half + half
    zero = half - half
    L = 2 * radius + 1
    LL = L * L
    HW = H * W
    plane = Hl * Wl
    for q in prange(N * HW):
        n = q // HW
        hw = q - n * HW
        valid, x0, y0, fx, fy = _position(coords, n * 2 * HW + hw, HW, level, half)
        base = (n * levels + level) * LL * HW + hw
        for p in range(plane):
            y = p // Wl
            x = p - y * Wl
            acc = zero
            if valid:
                acc = corner_gradient(grad, base, HW, radius, y, x, y0, x0, fx, fy, one, zero)
            gvol[q * plane + p] = acc


@njit(**CPU_JIT)
def lookup_grad_level_add(grad, coords, gvol, N, H, W, Hl, Wl, levels, level, radius, half):
    one = half + half
    zero = half - half
    L = 2 * radius + 1
    LL = L * L
    F = L + 1
    HW = H * W
    for q in prange(N * HW):
        n = q // HW
        hw = q - n * HW
        valid, x0, y0, fx, fy = _position(coords, n * 2 * HW + hw, HW, level, half)
        if not valid:
            continue
        base = (n * levels + level) * LL * HW + hw
        for f in range(F * F):
            fr = f // F
            y = y0 - radius + fr
            x = x0 - radius + (f - fr * F)
            if 0 <= y < Hl and 0 <= x < Wl:
                at = q * Hl * Wl + y * Wl + x
                gvol[at] = gvol[at] + corner_gradient(grad, base, HW, radius, y, x, y0, x0, fx, fy, one, zero)


@njit(**CPU_JIT)
def lookup_grad_coords_partial(vol, coords, grad, part, N, H, W, Hl, Wl, levels, level, radius, half):
    one = half + half
    zero = half - half
    L = 2 * radius + 1
    LL = L * L
    HW = H * W
    for q in prange(N * HW):
        n = q // HW
        hw = q - n * HW
        valid, x0, y0, fx, fy = _position(coords, n * 2 * HW + hw, HW, level, half)
        for k in range(LL):
            dx = k // L - radius
            dy = k - (k // L) * L - radius
            e = ((n * levels + level) * LL + k) * HW + hw
            gx = zero
            gy = zero
            if valid:
                G = grad[e]
                v00, v01, v10, v11 = _corners(vol, q * Hl * Wl, Hl, Wl, y0 + dy, x0 + dx, zero)
                gx = G * ((one - fy) * (v01 - v00) + fy * (v11 - v10))
                gy = G * ((one - fx) * (v10 - v00) + fx * (v11 - v01))
                for _ in range(level):
                    gx = gx * half
                    gy = gy * half
            part[2 * e] = gx
            part[2 * e + 1] = gy


@njit(**CPU_JIT)
def lookup_grad_coords_sum(part, grad_coords, N, HW, channels, half):
    zero = half - half
    for q in prange(N * HW):
        n = q // HW
        hw = q - n * HW
        gx = zero
        gy = zero
        for ch in range(channels):
            e = 2 * ((n * channels + ch) * HW + hw)
            gx += part[e]
            gy += part[e + 1]
        grad_coords[n * 2 * HW + hw] = gx
        grad_coords[n * 2 * HW + HW + hw] = gy
