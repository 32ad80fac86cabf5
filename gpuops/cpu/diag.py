"""CPU mirrors of gpuops.cuda.diag: same argument lists (flat float32/float64 arrays, int64 scalars),
same formulas (``P`` = 2: complex as (re, im) pairs) and the same segmented partial sums, parallel
over row segments (side right) or rows (side left); the inner loop runs along the contiguous columns."""
import numpy as np

from gpuops._toolchain import CPU_JIT, njit, prange


@njit(inline="always")
def _element(a, x, out, b, e, n, P, conj, want_sum):
    """out[e] = a[e] · x̃[n]; returns a[e] · conj(b[e]) (zero unless want_sum)."""
    if P == 1:
        out[e] = a[e] * x[n]
        zero = a.dtype.type(0)
        return (a[e] * b[e] if want_sum else zero), zero
    xr, xm = x[2 * n], x[2 * n + 1]
    if conj:
        xm = -xm
    ar, ai = a[2 * e], a[2 * e + 1]
    out[2 * e] = ar * xr - ai * xm
    out[2 * e + 1] = ar * xm + ai * xr
    if not want_sum:
        return a.dtype.type(0), a.dtype.type(0)
    br, bi = b[2 * e], b[2 * e + 1]
    return ar * br + ai * bi, ai * br - ar * bi


@njit(cache=True)
def _scale_columns(out, a, x, b, sums, want_sum):
    """Rows of 2-D views: out = a · x[None, :]; sums += Σ_rows a · b (want_sum)."""
    for i in range(out.shape[0]):
        o, r = out[i], a[i]
        for j in range(o.size):
            o[j] = r[j] * x[j]
        if want_sum:
            q = b[i]
            for j in range(o.size):
                sums[j] += r[j] * q[j]


@njit(cache=True)
def _scale_row(out, a, s, b, want_sum):
    """1-D views: out = a · s; returns Σ a · b (want_sum; else 0)."""
    for j in range(out.size):
        out[j] = a[j] * s
    acc = a.dtype.type(0)       # not s * 0: NaN for a non-finite s, which the sum does not use
    if want_sum:
        for j in range(out.size):
            acc += a[j] * b[j]
    return acc


@njit(**CPU_JIT)
def _scale_real(a, x, out, b, partial, M, K, right, seg_len, want_sum):
    """P = 1: the loops over 2-D views in their own functions (numba vectorises those, not flat offsets)."""
    a2, b2, out2 = a.reshape(M, K), b.reshape(M, K), out.reshape(M, K)
    if right:
        segments = max(1, (M + seg_len - 1) // seg_len)
        for seg in prange(segments):
            lo, hi = seg * seg_len, min(M, (seg + 1) * seg_len)
            sums = np.zeros(K, partial.dtype)
            _scale_columns(out2[lo:hi], a2[lo:hi], x, b2[lo:hi], sums, want_sum)
            if want_sum:
                partial[seg * K:(seg + 1) * K] = sums
    else:
        segments = max(1, (K + seg_len - 1) // seg_len)
        for i in prange(M):
            for seg in range(segments):
                lo, hi = seg * seg_len, min(K, (seg + 1) * seg_len)
                acc = _scale_row(out2[i, lo:hi], a2[i, lo:hi], x[i], b2[i, lo:hi], want_sum)
                if want_sum:
                    partial[seg * M + i] = acc


# Entry points dispatch in Python: a parallel function called from another njit function segfaults once
# loaded from the disk cache in a fresh process (numba#8578), so no parallel function calls another.
def scale(a, x, out, b, partial, M, K, P, right, conj, tc, seg_len):
    _scale(a, x, out, b, partial, M, K, P, right, conj, seg_len, False)


def scale_sum(a, x, out, b, partial, M, K, P, right, conj, tc, seg_len):
    _scale(a, x, out, b, partial, M, K, P, right, conj, seg_len, True)


def _scale(a, x, out, b, partial, M, K, P, right, conj, seg_len, want_sum):
    if P == 1:
        _scale_real(a, x, out, b, partial, M, K, right, seg_len, want_sum)
    else:
        _scale_pairs(a, x, out, b, partial, M, K, P, right, conj, seg_len, want_sum)


@njit(**CPU_JIT)
def _scale_pairs(a, x, out, b, partial, M, K, P, right, conj, seg_len, want_sum):
    """P = 2 (complex as (re, im) pairs)."""
    if right:
        segments = max(1, (M + seg_len - 1) // seg_len)
        for seg in prange(segments):
            sums = np.zeros((K, 2), partial.dtype)
            for i in range(seg * seg_len, min(M, (seg + 1) * seg_len)):
                for j in range(K):
                    re, im = _element(a, x, out, b, i * K + j, j, P, conj, want_sum)
                    sums[j, 0] += re
                    sums[j, 1] += im
            if want_sum:
                for j in range(K):
                    for p in range(P):
                        partial[(seg * K + j) * P + p] = sums[j, p]
    else:
        segments = max(1, (K + seg_len - 1) // seg_len)
        for i in prange(M):
            for seg in range(segments):
                re = partial.dtype.type(0.0)
                im = partial.dtype.type(0.0)
                for j in range(seg * seg_len, min(K, (seg + 1) * seg_len)):
                    dr, di = _element(a, x, out, b, i * K + j, i, P, conj, want_sum)
                    re += dr
                    im += di
                if want_sum:
                    partial[(seg * M + i) * P] = re
                    if P == 2:
                        partial[(seg * M + i) * P + 1] = im


_SUM_GROUPS = 8          # = gpuops.cuda.diag.SUM_GROUPS
_SUM_LOADS = 8           # = gpuops.cuda.diag.SUM_LOADS


@njit(**CPU_JIT)
def sum_segments(partial, gx, segments):
    """The CUDA kernel's order: group g takes segments g, g + 8, ... eight at a time, adds each eight as a
    pairwise tree into its running sum, then the eight groups are tree-summed in float64."""
    n = gx.size
    for i in prange(n):
        groups = np.zeros(_SUM_GROUPS, np.float64)
        for g in range(min(_SUM_GROUPS, segments)):
            total = partial.dtype.type(0)
            values = np.zeros(_SUM_LOADS, partial.dtype)
            s = g
            while s < segments:
                for k in range(_SUM_LOADS):
                    values[k] = partial[(s + k * _SUM_GROUPS) * n + i] if s + k * _SUM_GROUPS < segments else 0
                total += ((values[0] + values[1]) + (values[2] + values[3])) + (
                    (values[4] + values[5]) + (values[6] + values[7]))
                s += _SUM_LOADS * _SUM_GROUPS
            groups[g] = total
        h = _SUM_GROUPS // 2
        while h > 0:
            for g in range(h):
                groups[g] += groups[g + h]
            h //= 2
        gx[i] = groups[0]
