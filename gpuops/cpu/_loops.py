"""Loop helpers the CPU mirrors share.

numba does not vectorise a loop over flat offsets into two arrays it cannot prove disjoint; the same
loop over 2-D views of them, written as its own function, it does.  `span` turns "skip the pixels
whose input falls outside the image" into loop bounds, so inner loops carry no branches.
"""
from gpuops._toolchain import njit


@njit(cache=True, inline="always")
def span(n_out, stride, offset, size):
    """Output indices ``o`` in [lo, hi) whose input ``o·stride + offset`` lies in [0, size)."""
    lo = 0 if offset >= 0 else (stride - 1 - offset) // stride
    last = size - 1 - offset
    hi = 0 if last < 0 else min(n_out, last // stride + 1)
    return lo, max(lo, hi)


@njit(cache=True)
def axpy(dst, src, a):
    """``dst += a · src`` over 1-D or 2-D views (numba compiles one version per rank)."""
    if dst.ndim == 1:
        for j in range(dst.size):
            dst[j] += a * src[j]
        return
    for i in range(dst.shape[0]):
        d = dst[i]
        s = src[i]
        for j in range(d.size):
            d[j] += a * s[j]


@njit(cache=True)
def fma(dst, x, y):
    """``dst += x · y`` over 2-D views."""
    for i in range(dst.shape[0]):
        d = dst[i]
        u = x[i]
        v = y[i]
        for j in range(d.size):
            d[j] += u[j] * v[j]
