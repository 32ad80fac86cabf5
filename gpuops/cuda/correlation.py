"""CUDA kernels of the correlation family: spatial_correlation_sample and correlation (docs/ops.md §7, §8).

Both ops are one computation (gpuops/correlations.py maps ``correlation`` onto the sampler's parameters
with a ``scale`` of 1/(k²·C)).  Notation: input positions (y, x), output pixels (h, w),
u = h·sH − padH, v = w·sW − padW, patch shift (sy, sx) = ((ph − (PH−1)//2)·dpH, (pw − (PW−1)//2)·dpW).

Forward, tiled (`SAMPLE_FORWARD`, `SAMPLE_FORWARD64`).  A block of 8×32 threads owns an 8×32 *region*
of input positions, one image ``n``, one patch row ``ph`` and a group of up to ``G`` consecutive patch
columns.  Channel chunk by channel chunk it stages input1 over the region and input2 over the region
shifted by (sy, sx0) and widened by (group−1)·dpW columns in shared memory, and each thread
accumulates, in registers, the channel sums

    P[j](y, x) = Σ_c input1[c, y, x] · input2[c, y + sy, x + sx0 + j·dpW]      (0 outside the image)

for every patch column j of the group (one input1 value is reused across the whole group; the input2
row is reused across the 32 threads and the group).  The k×k window of the op is then a box sum of P:
out[h, w] = Σ_{i,j} P(u + i·dilH, v + j·dilW), done from shared memory for the output tile whose
windows lie inside the region (``tyo × txo`` pixels).  When a window does not fit in the region
(``(kH−1)·dilH ≥ 8`` or ``(kW−1)·dilW ≥ 32``) the family module uses `SAMPLE_FORWARD_DIRECT`, one thread
per output element.

Backward, gathers (`SAMPLE_BACKWARD`, `SAMPLE_BACKWARD64`), deterministic, no atomics.  With
Q[d](y, x) = Σ over the window taps (i, j) and output pixels (h, w) whose tap lands on (y, x) of
grad_out[d, h, w] (the adjoint of the box sum; for kernel 1 / stride 1 just a shifted grad_out):

    grad_input1[c, y, x] = Σ_d Q[d](y, x) · input2[c, y + sy, x + sx]
    grad_input2[c, y, x] = Σ_d Q[d](y − sy, x − sx) · input1[c, y − sy, x − sx]

A block of 8×32 threads owns an 8×32 tile of input positions, ``CB`` channels and one image, and
``blockIdx.z`` = 2·n + (0 for grad_input1, 1 for grad_input2): both gradients come from one launch.
For each displacement group each thread computes its Q values in registers (read straight from
grad_out), the partner input's shifted rows are staged in shared memory for the ``CB`` channels, and
every thread accumulates ``CB`` channel sums in registers.

Shared arrays need compile-time dtypes, so each tiled kernel exists twice: float32 accumulation for
float16/bfloat16/float32 storage, float64 for float64.  Offsets into the 4-D arrays are 64-bit (numba
indexes with int64); every global read is bounds-checked, and zero fill implements "a term is dropped
when either position is outside the image".
"""
from gpuops._constants import (CORR_BWD_CB, CORR_BWD_CB64, CORR_BWD_W2, CORR_FWD_W2, CORR_G, CORR_RT_CB,
                               CORR_RT_GROUPS, CORR_RT_NW, CORR_RT_ROWS, CORR_TX, CORR_TY)
from gpuops._launch import Kernel, array_type, compute_type
from gpuops._toolchain import SIMULATOR, cuda, nt
from gpuops.cuda import _correlation_source, _generate
from gpuops.cuda._memory import load, store

#: the thread block is TY × TX threads and its region TY × TX input positions
TX = CORR_TX
TY = CORR_TY
THREADS = TX * TY
#: accumulators per thread for patch columns (forward) and Q values (backward): FlowNetC's 21 in one group
G = CORR_G
#: forward channel chunk staged per shared-memory round, and the width of the staged input2 rows
FWD_CHUNK = 8
FWD_CHUNK64 = 4
FWD_W2 = CORR_FWD_W2   # 32 + (group − 1)·dpW <= 96
#: backward channels per block (all staged at once) and the width of the staged partner rows
BWD_CB = CORR_BWD_CB
BWD_CB64 = CORR_BWD_CB64
BWD_W2 = CORR_BWD_W2   # 32 + (group − 1)·dpW <= 80


def _buf_size(chunk, w2, g):
    return max(chunk * THREADS + chunk * TY * w2, g * THREADS)


FWD_BUF = _buf_size(FWD_CHUNK, FWD_W2, G)          # 8192 float32 = 32 KiB
FWD_BUF64 = _buf_size(FWD_CHUNK64, FWD_W2, G)      # 5376 float64 = 42 KiB
BWD_BUF = BWD_CB * TY * BWD_W2                     # 10240 float32 = 40 KiB
BWD_BUF64 = BWD_CB64 * TY * BWD_W2                 # 2560 float64 = 20 KiB

_INLINE = {} if SIMULATOR else {"forceinline": True}
#: indices cast to unsigned once known to be in bounds: numba then skips its negative-index fix-ups
U = nt.uint64


def group_size(patch_w, dilation_patch_w, w2):
    """Patch columns one block handles: at most G, and the staged rows must hold the group's span."""
    return max(1, min(G, patch_w, (w2 - TX) // dilation_patch_w + 1))


# ---------------------------------------------------------------------------------------------
# forward


@cuda.jit(device=True, **_INLINE)
def _forward_body(in1, in2, out, buf, acc, zero, chunk, w2max,
                  kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW,
                  gsz, ngroups, tyo, txo, tiles_x, scale):
    N, C, H, W = in1.shape
    oH = out.shape[2]
    oW = out.shape[3]
    tx = nt.int64(cuda.threadIdx.x)
    ty = nt.int64(cuda.threadIdx.y)
    tid = ty * TX + tx
    tile = nt.int64(cuda.blockIdx.x)
    th = tile // tiles_x
    tw = tile - th * tiles_x
    h0 = th * tyo
    w0 = tw * txo
    ry0 = h0 * sH - padH
    rx0 = w0 * sW - padW
    y = ry0 + ty
    x = rx0 + tx
    in1_row_ok = 0 <= y < H
    in1_ok = in1_row_ok and 0 <= x < W
    s2 = chunk * THREADS                      # start of the staged input2 rows in buf
    dpw_u = U(dpW)
    ndg = PH * ngroups
    dg = nt.int64(cuda.blockIdx.y)
    while dg < ndg:
        ph = dg // ngroups
        pw0 = (dg - ph * ngroups) * gsz
        geff = min(gsz, PW - pw0)
        sy = (ph - (PH - 1) // 2) * dpH
        sx0 = (pw0 - (PW - 1) // 2) * dpW
        w2 = TX + (geff - 1) * dpW
        y2 = y + sy
        row2_ok = 0 <= y2 < H
        n = nt.int64(cuda.blockIdx.z)
        while n < N:
            for j in range(G):
                acc[j] = zero
            for c0 in range(0, C, chunk):
                for cc in range(chunk):
                    c = c0 + cc
                    v = zero
                    if c < C and in1_ok:
                        v = load(in1, (U(n), U(c), U(y), U(x)))
                    buf[U(cc * THREADS + tid)] = v
                    base = s2 + (cc * TY + ty) * w2max
                    col = tx
                    while col < w2:
                        x2 = rx0 + sx0 + col
                        v2 = zero
                        if c < C and row2_ok and 0 <= x2 < W:
                            v2 = load(in2, (U(n), U(c), U(y2), U(x2)))
                        buf[U(base + col)] = v2
                        col += TX
                cuda.syncthreads()
                # unsigned shared indices: no negative-index fix-ups, one add per load
                for cc in range(chunk):
                    a = buf[U(cc * THREADS + tid)]
                    p = U(s2 + (cc * TY + ty) * w2max + tx)
                    for j in range(G):
                        if j < geff:
                            acc[j] += a * buf[p]
                        p += dpw_u
                cuda.syncthreads()
            # box sum of P over the window, from shared memory (buf reused: every read above is done)
            for j in range(G):
                buf[U(j * THREADS + tid)] = acc[j]
            cuda.syncthreads()
            per_j = tyo * txo
            total = geff * per_j
            e = tid
            while e < total:
                j = e // per_j
                r = e - j * per_j
                oy = r // txo
                ox = r - oy * txo
                h = h0 + oy
                w = w0 + ox
                if h < oH and w < oW:
                    s = zero
                    for i in range(kH):
                        row = j * THREADS + (oy * sH + i * dilH) * TX + ox * sW
                        for jj in range(kW):
                            s += buf[U(row + jj * dilW)]
                    store(out, (U(n), U(ph * PW + pw0 + j), U(h), U(w)), s * scale)
                e += THREADS
            cuda.syncthreads()
            n += cuda.gridDim.z
        dg += cuda.gridDim.y


def _sample_forward(in1, in2, out, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW,
                    gsz, ngroups, tyo, txo, tiles_x, scale):
    buf = cuda.shared.array(FWD_BUF, nt.float32)
    acc = cuda.local.array(G, nt.float32)
    _forward_body(in1, in2, out, buf, acc, nt.float32(0), FWD_CHUNK, FWD_W2,
                  kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, gsz, ngroups, tyo, txo, tiles_x, scale)


def _sample_forward64(in1, in2, out, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW,
                      gsz, ngroups, tyo, txo, tiles_x, scale):
    buf = cuda.shared.array(FWD_BUF64, nt.float64)
    acc = cuda.local.array(G, nt.float64)
    _forward_body(in1, in2, out, buf, acc, nt.float64(0), FWD_CHUNK64, FWD_W2,
                  kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, gsz, ngroups, tyo, txo, tiles_x, scale)


def _sample_forward_direct(in1, in2, out, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, scale, zero):
    """One thread per output element; for windows larger than the tiled kernel's region."""
    N, C, H, W = in1.shape
    D = out.shape[1]
    oH = out.shape[2]
    oW = out.shape[3]
    total = out.size
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    while i < total:
        w = i % oW
        r = i // oW
        h = r % oH
        r //= oH
        d = r % D
        n = r // D
        ph = d // PW
        pw = d - ph * PW
        sy = (ph - (PH - 1) // 2) * dpH
        sx = (pw - (PW - 1) // 2) * dpW
        s = zero
        for c in range(C):
            for a in range(kH):
                y = h * sH - padH + a * dilH
                if 0 <= y < H and 0 <= y + sy < H:
                    for b in range(kW):
                        x = w * sW - padW + b * dilW
                        if 0 <= x < W and 0 <= x + sx < W:
                            s += load(in1, (n, c, y, x)) * load(in2, (n, c, y + sy, x + sx))
        store(out, (n, d, h, w), s * scale)
        i += step


# ---------------------------------------------------------------------------------------------
# backward


@cuda.jit(device=True, **_INLINE)
def _q_value(g, n, d, qy, qx, H, W, oH, oW, kH, kW, sH, sW, padH, padW, dilH, dilW, zero):
    """Σ of grad_out[n, d, h, w] over the (tap, pixel) pairs whose input1 position is (qy, qx)."""
    s = zero
    if 0 <= qy < H and 0 <= qx < W:
        for i in range(kH):
            a = qy + padH - i * dilH
            if a >= 0 and (sH == 1 or a % sH == 0) and a // sH < oH:
                h = a // sH
                for j in range(kW):
                    b = qx + padW - j * dilW
                    if b >= 0 and (sW == 1 or b % sW == 0) and b // sW < oW:
                        s += load(g, (U(n), U(d), U(h), U(b // sW)))
    return s


@cuda.jit(device=True, **_INLINE)
def _backward_body(g, in1, in2, gin1, gin2, buf, acc, q, zero, cb, w2max,
                   kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW,
                   gsz, ngroups, tiles_x, scale):
    N, C, H, W = in1.shape
    oH = g.shape[2]
    oW = g.shape[3]
    tx = nt.int64(cuda.threadIdx.x)
    ty = nt.int64(cuda.threadIdx.y)
    tile = nt.int64(cuda.blockIdx.x)
    th = tile // tiles_x
    tw = tile - th * tiles_x
    y0 = th * TY
    x0 = tw * TX
    y = y0 + ty
    x = x0 + tx
    ndg = PH * ngroups
    ncg = (C + cb - 1) // cb
    cg = nt.int64(cuda.blockIdx.y)
    while cg < ncg:
        c0 = cg * cb
        z = nt.int64(cuda.blockIdx.z)
        while z < 2 * N:
            n = z // 2
            second = z - 2 * n           # 0: grad_input1, 1: grad_input2
            for cc in range(cb):
                acc[cc] = zero
            for dg in range(ndg):
                ph = dg // ngroups
                pw0 = (dg - ph * ngroups) * gsz
                geff = min(gsz, PW - pw0)
                sy = (ph - (PH - 1) // 2) * dpH
                sx0 = (pw0 - (PW - 1) // 2) * dpW
                w2 = TX + (geff - 1) * dpW
                d0 = ph * PW + pw0
                if second == 0:
                    qy = y
                    prow = y + sy                      # input2 row
                    pcol0 = x0 + sx0                   # input2 column of staged column 0
                else:
                    qy = y - sy
                    prow = y - sy                      # input1 row
                    pcol0 = x0 - sx0 - (geff - 1) * dpW
                # Q values of the group (the adjoint of the window's box sum); q is thread-private
                for j in range(G):
                    q[j] = zero
                    if j < geff:
                        qx = x
                        if second != 0:
                            qx = x - sx0 - j * dpW
                        q[j] = _q_value(g, n, d0 + j, qy, qx, H, W, oH, oW, kH, kW, sH, sW, padH, padW, dilH, dilW,
                                        zero)
                prow_ok = 0 <= prow < H
                for cc in range(cb):
                    c = c0 + cc
                    base = (cc * TY + ty) * w2max
                    col = tx
                    while col < w2:
                        px = pcol0 + col
                        v = zero
                        if c < C and prow_ok and 0 <= px < W:
                            if second == 0:
                                v = load(in2, (U(n), U(c), U(prow), U(px)))
                            else:
                                v = load(in1, (U(n), U(c), U(prow), U(px)))
                        buf[U(base + col)] = v
                        col += TX
                cuda.syncthreads()
                for j in range(G):
                    if j < geff:
                        qj = q[j]
                        if second == 0:
                            off = ty * w2max + tx + j * dpW
                        else:
                            off = ty * w2max + tx + (geff - 1 - j) * dpW
                        p = U(off)
                        for cc in range(cb):
                            acc[cc] += qj * buf[p + U(cc * TY * w2max)]
                cuda.syncthreads()
            if y < H and x < W:
                for cc in range(cb):
                    c = c0 + cc
                    if c < C:
                        if second == 0:
                            store(gin1, (U(n), U(c), U(y), U(x)), acc[cc] * scale)
                        else:
                            store(gin2, (U(n), U(c), U(y), U(x)), acc[cc] * scale)
            z += cuda.gridDim.z
        cg += cuda.gridDim.y


def _sample_backward(g, in1, in2, gin1, gin2, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW,
                     gsz, ngroups, tiles_x, scale):
    buf = cuda.shared.array(BWD_BUF, nt.float32)
    acc = cuda.local.array(BWD_CB, nt.float32)
    q = cuda.local.array(G, nt.float32)
    _backward_body(g, in1, in2, gin1, gin2, buf, acc, q, nt.float32(0), BWD_CB, BWD_W2,
                   kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, gsz, ngroups, tiles_x, scale)


def _sample_backward64(g, in1, in2, gin1, gin2, kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW,
                       gsz, ngroups, tiles_x, scale):
    buf = cuda.shared.array(BWD_BUF64, nt.float64)
    acc = cuda.local.array(BWD_CB64, nt.float64)
    q = cuda.local.array(G, nt.float64)
    _backward_body(g, in1, in2, gin1, gin2, buf, acc, q, nt.float64(0), BWD_CB64, BWD_W2,
                   kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW, gsz, ngroups, tiles_x, scale)


# ---------------------------------------------------------------------------------------------
# signatures

_I = nt.int64
_PARAMS = (_I,) * 12          # kH, kW, sH, sW, padH, padW, dilH, dilW, PH, PW, dpH, dpW
_SHORT = ("float16", "bfloat16", "float32")


def _a4(d):
    return array_type(d, 4)


def _forward_sig(d):
    return (_a4(d),) * 3 + _PARAMS + (_I,) * 5 + (compute_type(d),)


def _backward_sig(d):
    return (_a4(d),) * 5 + _PARAMS + (_I,) * 3 + (compute_type(d),)


SAMPLE_FORWARD = Kernel(_sample_forward, _forward_sig, dtypes=_SHORT)
SAMPLE_FORWARD64 = Kernel(_sample_forward64, _forward_sig, dtypes=("float64",))
SAMPLE_FORWARD_DIRECT = Kernel(_sample_forward_direct,
                               lambda d: (_a4(d),) * 3 + _PARAMS + (compute_type(d),) * 2)
SAMPLE_BACKWARD = Kernel(_sample_backward, _backward_sig, dtypes=_SHORT)
SAMPLE_BACKWARD64 = Kernel(_sample_backward64, _backward_sig, dtypes=("float64",))
# float64 doubles every accumulator, Q value and address held across the unrolled group loop (ptxas: 156
# registers, no spills).  One 256-thread block per SM-quarter is still resident; float64 is the accuracy
# path, not a speed target, and capping it (max_registers) would trade registers for spills.
SAMPLE_BACKWARD64.register_budget = 168


# ---------------------------------------------------------------------------------------------
# register-tiled kernels (float16/bfloat16/float32 storage; the fast paths of the family module)
#
# Both are generated (gpuops.cuda._correlation_source writes the text; gpuops.cuda._generate writes it to a
# content-hashed file in the cache directory and imports it from there), one kernel per compile-time group
# width G, so that every accumulator is a named scalar (registers, never a local array).  Layout, shared by both: a block is
# NW = 8 warps; each warp owns 2 *rows* R = 2·warp + ρ (ρ = lane // 16) of input positions, a row being
# one image row and one *phase* r of the x axis modulo the patch dilation dpW (2**ldp, 1, 2 or 4):
# R = (y_local << ldp) | r, so the block region is (16 >> ldp) rows × (32 << ldp) columns.  Lane
# q = lane % 16 owns the RP = 2 positions x = r + (2q + m)·dpW (m < 2) of its row.  Staged rows are split
# by phase, so a position and its patch neighbour x + dpW are adjacent in shared memory: position m at
# patch column j reads the staged value 2q + m + j, and the RP × G products of one channel need
# (RP + G − 1)/2 64-bit shared loads of input2 pairs and one of the input1 pair.  Row pitches are even (pairs
# aligned; a half-warp is one staged row, so 64-bit loads are conflict-free).  Each warp stages and reads only
# its own rows: warp barriers, block barriers only around the forward's box sum.  Staged values outside the image
# are 0 ("a term is dropped").  RP = 2 (was 4 with 4 warps of 4 rows): RP = 4 needed 181 registers for
# the G = 21 forward (84 accumulators + 24 live staging offsets/predicates), i.e. ~2 blocks per SM.
#
# SAMPLE_FORWARD_RT<G>: per (image, patch row, group of G patch columns) and channel chunk of RT_CH
# channels, each warp stages its 2 input1 rows (32 values each) and 2 input2 rows shifted by (sy, sx0)
# (32 + G − 1 values each), and every lane accumulates RP × G channel sums P[j](y, x).  The k×k window
# is the box sum of P done from shared memory over the block region, as in SAMPLE_FORWARD.
#
# SAMPLE_BACKWARD_RT<G> (kernel 1, stride 1 only): a block owns the region × RT_CB channels of one
# gradient (blockIdx.z = 2·n + which).  Per group it stages the partner rows (input2 shifted by
# (sy, sx0) for grad_input1; input1 shifted back by (sy, sx0 + (G − 1)·dpW) for grad_input2) for its
# RT_CB channels; then, RT_BT steps t at a time, each lane loads the RP grad_out values of every step (plane
# d0 + t, or d0 + G − 1 − t at the shifted position for grad_input2) into registers, all in flight together,
# and per channel adds the RP × RT_BT products from a sliding window of staged values (2q + m + t, read in
# 64-bit pairs).  Deterministic: every gradient element is owned by one thread.  Offsets into the inputs and
# grad_out are 32-bit (the family module uses these kernels only below 2**31 elements).

_tiles = _generate.load("correlation_tiles", _correlation_source.source())
#: the RT kernels' layout constants the family module plans launches with (gpuops._constants)
RT_NW, RT_ROWS, RT_CB, RT_GROUPS = CORR_RT_NW, CORR_RT_ROWS, CORR_RT_CB, CORR_RT_GROUPS


def _a1(d):
    return array_type(d, 1)


def _rt_fwd_sig(d):
    return (_a1(d), _a1(d), _a4(d)) + (_I,) * 3 + _PARAMS + (_I,) * 6 + (compute_type(d),)


def _rt_bwd_sig(d):
    return (_a1(d),) * 5 + (_I,) * 16 + (compute_type(d),)


for _g in RT_GROUPS:
    globals()[f"SAMPLE_FORWARD_RT{_g}"] = Kernel(getattr(_tiles, f"_sample_forward_rt{_g}"),
                                                 _rt_fwd_sig, dtypes=_SHORT)
    globals()[f"SAMPLE_BACKWARD_RT{_g}"] = Kernel(getattr(_tiles, f"_sample_backward_rt{_g}"),
                                                  _rt_bwd_sig, dtypes=_SHORT)
