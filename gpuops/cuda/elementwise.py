"""CUDA kernels of the elementwise family: gsmelu and ncrelu, forward and backward.

Memory-bound.  Each thread owns ``ITEMS`` elements a block-width apart and copies all of them into
registers (raw storage values) before computing or storing any, so ``ITEMS`` loads per thread are in
flight: with 16-bit data that is what it takes to approach copy bandwidth without 128-bit vector
loads, which numba lacks.  Indices are 64-bit: tensors may exceed 2**31 elements.
"""
import numpy as np

from gpuops._constants import (ELEMENTWISE_FORWARD_ITEMS, ELEMENTWISE_ITEMS, ELEMENTWISE_THREADS, ELEMENTWISE_WORDS,
                               MAX_GRID_YZ)
from gpuops._launch import Kernel, array_type, compute_type
from gpuops._toolchain import cuda, nt
from gpuops.cuda._memory import load, store

THREADS = ELEMENTWISE_THREADS
ITEMS = ELEMENTWISE_ITEMS
FORWARD_ITEMS = ELEMENTWISE_FORWARD_ITEMS
WORDS = ELEMENTWISE_WORDS    # 64-bit words per thread in the word kernels (32 bytes of each array in flight)
MAX_GRID_Y = MAX_GRID_YZ
assert FORWARD_ITEMS == 4, "_gsmelu_forward is written out as a four-way unroll"


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
    # explicit four-way unroll: measured 93 % of copy bandwidth on an H200 (fp32), where the local-array
    # loop of the other kernels reached 77 % for this one
    n = x.size
    width = nt.int64(cuda.blockDim.x)
    i = nt.int64(cuda.blockIdx.x) * width * FORWARD_ITEMS + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * width * FORWARD_ITEMS
    while i < n:
        if i + 3 * width < n:
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
                store(out, j, gsmelu_value(load(x, j), neg_slope, delta_t, alpha, beta, slope_gap, inv_two_width,
                                           half_asym))
                j += width
        i += step


def _gsmelu_backward(grad_out, x, grad_x, neg_slope, slope, alpha, beta, slope_gap, inv_two_width):
    n = x.size
    width = nt.int64(cuda.blockDim.x)
    start = nt.int64(cuda.blockIdx.x) * width * ITEMS + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * width * ITEMS
    xs = cuda.local.array(ITEMS, x.dtype)
    gs = cuda.local.array(ITEMS, x.dtype)
    for base in range(start, n, step):
        full = base + (ITEMS - 1) * width < n
        for k in range(ITEMS):
            if full or base + k * width < n:
                xs[k] = x[base + k * width]
                gs[k] = grad_out[base + k * width]
        for k in range(ITEMS):
            if full or base + k * width < n:
                store(grad_x, base + k * width, load(gs, k) * gsmelu_slope(load(xs, k), neg_slope, slope, alpha, beta,
                                                                           slope_gap, inv_two_width))


# Word kernels: the same maps, reading and writing 64-bit words (2 float32 or 4 16-bit values per
# load instruction).  numba has no 128-bit vector loads, and 16-bit scalar loads reach only about half
# of copy bandwidth; a local uint64 viewed as the storage dtype stays in registers.  The host uses them
# when every pointer is 8-byte aligned and the size is a whole number of words.


def _gsmelu_forward_words(x, out, neg_slope, delta_t, alpha, beta, slope_gap, inv_two_width, half_asym):
    xw = x.view(np.uint64)
    ow = out.view(np.uint64)
    n = xw.size
    width = nt.int64(cuda.blockDim.x)
    start = nt.int64(cuda.blockIdx.x) * width * WORDS + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * width * WORDS
    words_in = cuda.local.array(WORDS, nt.uint64)
    words_out = cuda.local.array(WORDS, nt.uint64)
    values_in = words_in.view(x.dtype)
    values_out = words_out.view(out.dtype)
    for base in range(start, n, step):
        for k in range(WORDS):
            if base + k * width < n:
                words_in[k] = xw[base + k * width]
        for j in range(values_in.size):
            store(values_out, j, gsmelu_value(load(values_in, j), neg_slope, delta_t, alpha, beta, slope_gap,
                                              inv_two_width, half_asym))
        for k in range(WORDS):
            if base + k * width < n:
                ow[base + k * width] = words_out[k]


def _gsmelu_backward_words(grad_out, x, grad_x, neg_slope, slope, alpha, beta, slope_gap, inv_two_width):
    gw = grad_out.view(np.uint64)
    xw = x.view(np.uint64)
    ow = grad_x.view(np.uint64)
    n = xw.size
    width = nt.int64(cuda.blockDim.x)
    start = nt.int64(cuda.blockIdx.x) * width * WORDS + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * width * WORDS
    words_g = cuda.local.array(WORDS, nt.uint64)
    words_x = cuda.local.array(WORDS, nt.uint64)
    words_out = cuda.local.array(WORDS, nt.uint64)
    values_g = words_g.view(grad_out.dtype)
    values_x = words_x.view(x.dtype)
    values_out = words_out.view(grad_x.dtype)
    for base in range(start, n, step):
        for k in range(WORDS):
            if base + k * width < n:
                words_g[k] = gw[base + k * width]
                words_x[k] = xw[base + k * width]
        for j in range(values_x.size):
            store(values_out, j, load(values_g, j) * gsmelu_slope(load(values_x, j), neg_slope, slope, alpha, beta,
                                                                  slope_gap, inv_two_width))
        for k in range(WORDS):
            if base + k * width < n:
                ow[base + k * width] = words_out[k]


def _ncrelu_forward(x, out):
    """x (N, plane), out (N, 2, plane): blockIdx.y walks the batch, x-blocks the plane (no divisions)."""
    batch, plane = x.shape
    width = nt.int64(cuda.blockDim.x)
    start = nt.int64(cuda.blockIdx.x) * width * ITEMS + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * width * ITEMS
    xs = cuda.local.array(ITEMS, x.dtype)
    for b in range(cuda.blockIdx.y, batch, cuda.gridDim.y):
        for base in range(start, plane, step):
            for k in range(ITEMS):
                if base + k * width < plane:
                    xs[k] = x[b, base + k * width]
            for k in range(ITEMS):
                j = base + k * width
                if j < plane:
                    v = load(xs, k)
                    if v >= 0:
                        store(out, (b, 0, j), v)
                        store(out, (b, 1, j), 0.0)
                    else:                 # negative and NaN
                        store(out, (b, 0, j), 0.0)
                        store(out, (b, 1, j), v)


def _ncrelu_backward(grad_out, x, grad_x):
    """grad_out (N, 2, plane), x and grad_x (N, plane)."""
    batch, plane = x.shape
    width = nt.int64(cuda.blockDim.x)
    start = nt.int64(cuda.blockIdx.x) * width * ITEMS + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * width * ITEMS
    xs = cuda.local.array(ITEMS, x.dtype)
    for b in range(cuda.blockIdx.y, batch, cuda.gridDim.y):
        for base in range(start, plane, step):
            for k in range(ITEMS):
                if base + k * width < plane:
                    xs[k] = x[b, base + k * width]
            for k in range(ITEMS):
                j = base + k * width
                if j < plane:
                    half = 0 if load(xs, k) >= 0 else 1
                    grad_x[b, j] = grad_out[b, half, j]


def _arrays(*ndims):
    return lambda d: tuple(array_type(d, n) for n in ndims)


GSMELU_FORWARD = Kernel(_gsmelu_forward, lambda d: _arrays(1, 1)(d) + (compute_type(d),) * 7)
GSMELU_BACKWARD = Kernel(_gsmelu_backward, lambda d: _arrays(1, 1, 1)(d) + (compute_type(d),) * 6)
GSMELU_FORWARD_WORDS = Kernel(_gsmelu_forward_words, lambda d: _arrays(1, 1)(d) + (compute_type(d),) * 7)
GSMELU_BACKWARD_WORDS = Kernel(_gsmelu_backward_words, lambda d: _arrays(1, 1, 1)(d) + (compute_type(d),) * 6)
NCRELU_FORWARD = Kernel(_ncrelu_forward, _arrays(2, 3))
NCRELU_BACKWARD = Kernel(_ncrelu_backward, _arrays(3, 2, 2))
