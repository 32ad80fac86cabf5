"""Device functions of the generated depthwise-convolution kernels (gpuops.cuda._conv_source writes
them; gpuops.cuda.conv documents the algorithms).  A module of its own so that the generated module
imports only complete modules: gpuops.cuda.conv loads the generated module while it is being imported.
"""
from gpuops._toolchain import SIMULATOR, cuda, nt, overload
from gpuops.cuda._memory import load, store


@cuda.jit(device=True, inline=True)
def _grad_x_gather(g, w, gx, C, m, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, planes):
    """grad_x[n, c, y, x] = Σ_{q<m} Σ_{i,j} w[c·m+q, i, j] · g[n, c·m+q, (y+ph-i·dh)/sh, (x+pw-j·dw)/sw]
    over the taps whose division is exact and in range (the transposed convolution, as a gather).

    Grid: (planes, rows, column blocks), each axis walked with a grid stride, so the plane, row and
    column come from the block indices with no division per element, the tap tests divide in 32 bits,
    and the row's tests are the same for the whole block.  Inlined into each kernel, so that the
    generated ones (`gpuops.cuda._conv_source._gen_grad_x_strided`) get their sizes and strides as
    constants: tap loops unrolled, divisions by 2 as shifts."""
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


# ---------------------------------------------------------------------------------------------
# the flat fast kernels (`_conv_source._gen_fwd`, `_gen_wgrad`)


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


if SIMULATOR:
    # a simulated device function gets the simulator's per-thread `cuda` module while it runs (a plain
    # function would see the module-level one, which has no syncthreads: the calling kernels live in
    # another module, whose globals the simulator swaps instead)
    _shfl_down = cuda.jit(device=True)(_shfl_down)
else:
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


# ---------------------------------------------------------------------------------------------
# the stride-1 tile kernels (`_conv_source._gen_tile_fwd`, `_gen_tile_wgrad`)


@cuda.jit(device=True)
def _ldo(a, off, ok):
    """a[off] in the compute type where ``ok``, else 0; when not ``ok`` the offset becomes 0
    (``a[0]`` is always a valid address), so the load needs no branch."""
    o = cuda.selp(ok, nt.uint32(off), nt.uint32(0))
    return cuda.selp(ok, load(a, o), nt.float32(0.0))
