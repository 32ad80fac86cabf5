"""CUDA kernels of the elementwise family: gsmelu and ncrelu, forward and backward.

Memory-bound: each thread handles ``ITEMS`` elements a block-width apart and issues all their loads
before any store, so enough bytes are in flight to approach copy bandwidth with 32-bit loads (numba
has no 128-bit vector loads).  Indices are 64-bit: tensors may exceed 2**31 elements.
"""
from gpuops._launch import Kernel, array_type, compute_type
from gpuops._toolchain import cuda, nt
from gpuops.cuda._memory import load, store

THREADS = 256
ITEMS = 4


@cuda.jit(device=True)
def gsmelu_value(v, neg_slope, delta_t, alpha, beta, slope_gap, inv_two_width, half_asym):
    line = neg_slope * v + delta_t
    if v <= -alpha:
        return line
    if v <= beta:
        return line + slope_gap * (v + alpha) * (v + alpha) * inv_two_width
    return line + slope_gap * (v + half_asym)        # also NaN


@cuda.jit(device=True)
def gsmelu_slope(v, neg_slope, slope, alpha, beta, slope_gap, inv_two_width):
    if v <= -alpha:
        return neg_slope
    if v <= beta:
        return neg_slope + slope_gap * (v + alpha) * (inv_two_width + inv_two_width)
    return slope


def _gsmelu_forward(x, out, neg_slope, delta_t, alpha, beta, slope_gap, inv_two_width, half_asym):
    n = x.size
    width = nt.int64(cuda.blockDim.x)
    i = nt.int64(cuda.blockIdx.x) * width * ITEMS + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * width * ITEMS
    while i < n:
        if i + (ITEMS - 1) * width < n:
            v0 = load(x, i)
            v1 = load(x, i + width)
            v2 = load(x, i + 2 * width)
            v3 = load(x, i + 3 * width)
            store(out, i, gsmelu_value(v0, neg_slope, delta_t, alpha, beta, slope_gap, inv_two_width, half_asym))
            store(out, i + width,
                  gsmelu_value(v1, neg_slope, delta_t, alpha, beta, slope_gap, inv_two_width, half_asym))
            store(out, i + 2 * width,
                  gsmelu_value(v2, neg_slope, delta_t, alpha, beta, slope_gap, inv_two_width, half_asym))
            store(out, i + 3 * width,
                  gsmelu_value(v3, neg_slope, delta_t, alpha, beta, slope_gap, inv_two_width, half_asym))
        else:
            j = i
            while j < n:
                store(out, j,
                      gsmelu_value(load(x, j), neg_slope, delta_t, alpha, beta, slope_gap, inv_two_width, half_asym))
                j += width
        i += step


def _gsmelu_backward(grad_out, x, grad_x, neg_slope, slope, alpha, beta, slope_gap, inv_two_width):
    n = x.size
    width = nt.int64(cuda.blockDim.x)
    i = nt.int64(cuda.blockIdx.x) * width * ITEMS + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * width * ITEMS
    while i < n:
        if i + (ITEMS - 1) * width < n:
            v0 = load(x, i)
            v1 = load(x, i + width)
            v2 = load(x, i + 2 * width)
            v3 = load(x, i + 3 * width)
            g0 = load(grad_out, i)
            g1 = load(grad_out, i + width)
            g2 = load(grad_out, i + 2 * width)
            g3 = load(grad_out, i + 3 * width)
            store(grad_x, i, g0 * gsmelu_slope(v0, neg_slope, slope, alpha, beta, slope_gap, inv_two_width))
            store(grad_x, i + width,
                  g1 * gsmelu_slope(v1, neg_slope, slope, alpha, beta, slope_gap, inv_two_width))
            store(grad_x, i + 2 * width,
                  g2 * gsmelu_slope(v2, neg_slope, slope, alpha, beta, slope_gap, inv_two_width))
            store(grad_x, i + 3 * width,
                  g3 * gsmelu_slope(v3, neg_slope, slope, alpha, beta, slope_gap, inv_two_width))
        else:
            j = i
            while j < n:
                store(grad_x, j, load(grad_out, j)
                      * gsmelu_slope(load(x, j), neg_slope, slope, alpha, beta, slope_gap, inv_two_width))
                j += width
        i += step


def _ncrelu_forward(x, out, plane):
    """x flat (N*C*inner,), out flat (N*2C*inner,); ``plane`` = C*inner."""
    n = x.size
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    while i < n:
        v = load(x, i)
        pos = i + (i // plane) * plane
        if v >= 0:
            store(out, pos, v)
            store(out, pos + plane, 0.0)
        else:                 # negative and NaN
            store(out, pos, 0.0)
            store(out, pos + plane, v)
        i += step


def _ncrelu_backward(grad_out, x, grad_x, plane):
    n = x.size
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    while i < n:
        pos = i + (i // plane) * plane
        if load(x, i) >= 0:
            store(grad_x, i, load(grad_out, pos))
        else:
            store(grad_x, i, load(grad_out, pos + plane))
        i += step


def _flat(dtype):
    return array_type(dtype, 1)


GSMELU_FORWARD = Kernel(_gsmelu_forward, lambda d: (_flat(d), _flat(d)) + (compute_type(d),) * 7)
GSMELU_BACKWARD = Kernel(_gsmelu_backward, lambda d: (_flat(d),) * 3 + (compute_type(d),) * 6)
NCRELU_FORWARD = Kernel(_ncrelu_forward, lambda d: (_flat(d), _flat(d), nt.int64))
NCRELU_BACKWARD = Kernel(_ncrelu_backward, lambda d: (_flat(d),) * 3 + (nt.int64,))
