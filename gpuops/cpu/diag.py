"""CPU mirrors of gpuops.cuda.diag: same argument lists (flat float32/float64 arrays, int64 scalars),
same formulas (``P`` = 2: complex as (re, im) pairs), parallel over rows / columns / chunks."""
from gpuops._toolchain import CPU_JIT, njit, prange


@njit(**CPU_JIT)
def scale(a, d, out, K, P, right, conj):
    n = a.size // P
    for e in prange(n):
        row = e // K
        k = row
        if right:
            k = e - row * K
        if P == 1:
            out[e] = a[e] * d[k]
        else:
            ar = a[2 * e]
            am = a[2 * e + 1]
            dr = d[2 * k]
            dm = d[2 * k + 1]
            if conj:
                dm = -dm
            out[2 * e] = ar * dr - am * dm
            out[2 * e + 1] = ar * dm + am * dr


@njit(**CPU_JIT)
def colsum_partial(g, a, partial, M, K, P, rows_per_chunk):
    chunks = max(1, (M + rows_per_chunk - 1) // rows_per_chunk)
    for ch in prange(chunks):
        end = min(M, (ch + 1) * rows_per_chunk)
        for j in range(K):
            re = partial.dtype.type(0.0)
            im = partial.dtype.type(0.0)
            for i in range(ch * rows_per_chunk, end):
                e = i * K + j
                if P == 1:
                    re += g[e] * a[e]
                else:
                    gr, gi, ar, ai = g[2 * e], g[2 * e + 1], a[2 * e], a[2 * e + 1]
                    re += gr * ar + gi * ai
                    im += gi * ar - gr * ai
            partial[(ch * K + j) * P] = re
            if P == 2:
                partial[(ch * K + j) * P + 1] = im


@njit(**CPU_JIT)
def colsum_final(partial, gx, chunks):
    n = gx.size
    for i in prange(n):
        acc = partial[i]
        for ch in range(1, chunks):
            acc += partial[ch * n + i]
        gx[i] = acc


@njit(**CPU_JIT)
def rowsum(g, a, gx, M, K, P, lanes):
    for row in prange(M):
        re = gx.dtype.type(0.0)
        im = gx.dtype.type(0.0)
        for j in range(K):
            e = row * K + j
            if P == 1:
                re += g[e] * a[e]
            else:
                gr, gi, ar, ai = g[2 * e], g[2 * e + 1], a[2 * e], a[2 * e + 1]
                re += gr * ar + gi * ai
                im += gi * ar - gr * ai
        gx[row * P] = re
        if P == 2:
            gx[row * P + 1] = im
