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

Every output element is one thread's sum in a fixed order: deterministic, no atomics.  The bias
gradient (``Σ_{n,y,x} grad_out[n,c,y,x]``) is a staged sum: ``PP_BIAS_PARTIAL`` gives each of
``segments`` threads per channel the elements ``segment, segment + segments, …`` of the channel (adjacent
threads read adjacent addresses), ``PP_BIAS_PARTIAL_SUMS`` (when there are many segments) does the same
to the partial sums, ``PP_BIAS_FINAL`` adds the remaining segments in order.

Grid: x-blocks walk the pixels of an output plane, y-blocks the planes (grid-stride loops on both), so a
thread divides twice per plane and pixel instead of once per output index.  Arrays are flat; every
offset is int64 (tensors may exceed 2**31 elements).  ``cpg`` is the number of channels per kernel group
(the last group may have fewer when it does not divide C: the seed drop-in's convention), ``G`` the number
of groups, so ``w`` is (N, G, kh, kw, Ho, Wo).
"""
from gpuops._constants import PERPIXEL_THREADS
from gpuops._launch import Kernel, array_type, compute_type
from gpuops._toolchain import cuda, nt
from gpuops.cuda._memory import load, store

THREADS = PERPIXEL_THREADS


def _pp_gather(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    """One thread per dst element (N, C, Ho, Wo); src (N, C, H, W)."""
    plane_size = Ho * Wo
    planes = dst.size // plane_size
    KK = kh * kw
    first = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    for plane in range(nt.int64(cuda.blockIdx.y), planes, nt.int64(cuda.gridDim.y)):
        n = plane // C
        c = plane - n * C
        src_plane = plane * H * W
        w_plane = (n * G + c // cpg) * KK * plane_size
        for p in range(first, plane_size, step):
            oy = p // Wo
            ox = p - oy * Wo
            acc = nt.float32(0.0)
            for i in range(kh):
                iy = oy * sh - ph + i * dh
                if iy >= 0 and iy < H:
                    for j in range(kw):
                        ix = ox * sw - pw + j * dw
                        if ix >= 0 and ix < W:
                            acc += load(w, w_plane + (i * kw + j) * plane_size + p) * load(src, src_plane + iy * W + ix)
            if has_bias:
                acc += load(bias, c)
            store(dst, plane * plane_size + p, acc)


def _pp_transpose(src, w, bias, dst, has_bias, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    """One thread per dst element (N, C, H, W); src and w on the (Ho, Wo) grid."""
    plane_size = H * W
    out_plane = Ho * Wo
    planes = dst.size // plane_size
    KK = kh * kw
    first = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    for plane in range(nt.int64(cuda.blockIdx.y), planes, nt.int64(cuda.gridDim.y)):
        n = plane // C
        c = plane - n * C
        src_plane = plane * out_plane
        w_plane = (n * G + c // cpg) * KK * out_plane
        for p in range(first, plane_size, step):
            y = p // W
            x = p - y * W
            acc = nt.float32(0.0)
            for i in range(kh):
                ty = y + ph - i * dh              # = oy·sh for the output row whose tap i reads row y
                if ty < 0:
                    break                         # ty only decreases with i
                oy = ty // sh
                if oy * sh != ty or oy >= Ho:
                    continue
                for j in range(kw):
                    tx = x + pw - j * dw
                    if tx < 0:
                        break
                    ox = tx // sw
                    if ox * sw == tx and ox < Wo:
                        at = oy * Wo + ox
                        acc += load(w, w_plane + (i * kw + j) * out_plane + at) * load(src, src_plane + at)
            if has_bias:
                acc += load(bias, c)
            store(dst, plane * plane_size + p, acc)


def _pp_wgrad(center, shifted, gw, C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw):
    """One thread per gw element (N, G, kh, kw, Ho, Wo); center on the (Ho, Wo) grid, shifted (N, C, H, W)."""
    plane_size = Ho * Wo
    planes = gw.size // plane_size            # (n, g, tap) triples
    KK = kh * kw
    first = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    for plane in range(nt.int64(cuda.blockIdx.y), planes, nt.int64(cuda.gridDim.y)):
        ng = plane // KK
        tap = plane - ng * KK
        n = ng // G
        g = ng - n * G
        i = tap // kw
        j = tap - i * kw
        c_first = g * cpg
        c_last = min(C, c_first + cpg)
        for p in range(first, plane_size, step):
            oy = p // Wo
            ox = p - oy * Wo
            iy = oy * sh - ph + i * dh
            ix = ox * sw - pw + j * dw
            acc = nt.float32(0.0)
            if iy >= 0 and iy < H and ix >= 0 and ix < W:
                for c in range(c_first, c_last):
                    nc = n * C + c
                    acc += load(center, nc * plane_size + p) * load(shifted, (nc * H + iy) * W + ix)
            store(gw, plane * plane_size + p, acc)


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
PP_TRANSPOSE = Kernel(_pp_transpose, lambda d: (_flat(d),) * 4 + (_I,) * 16)
PP_WGRAD = Kernel(_pp_wgrad, lambda d: (_flat(d),) * 3 + (_I,) * 15)
PP_BIAS_PARTIAL = Kernel(_pp_bias_partial, lambda d: (_flat(d), _partial(d)) + (_I,) * 3)
PP_BIAS_PARTIAL_SUMS = Kernel(_pp_bias_partial_sums, lambda d: (_partial(d), _partial(d)) + (_I,) * 3)
PP_BIAS_FINAL = Kernel(_pp_bias_final, lambda d: (_partial(d), _flat(d), _I))
