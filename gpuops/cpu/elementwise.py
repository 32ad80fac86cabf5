"""CPU mirrors of gpuops.cuda.elementwise: same arguments (flat float32/float64 arrays, scalars in
the compute type), same formulas, parallel over elements."""
from gpuops._toolchain import CPU_JIT, njit, prange


@njit(cache=True, inline="always")
def _gsmelu_value(v, neg_slope, delta_t, alpha, beta, slope_gap, inv_two_width, half_asym):
    line = neg_slope * v + delta_t
    if v <= -alpha:
        return line
    if v <= beta:
        return line + slope_gap * (v + alpha) * (v + alpha) * inv_two_width
    return line + slope_gap * (v + half_asym)


@njit(cache=True, inline="always")
def _gsmelu_slope(v, neg_slope, slope, alpha, beta, slope_gap, inv_two_width):
    if v <= -alpha:
        return neg_slope
    if v <= beta:
        return neg_slope + slope_gap * (v + alpha) * (inv_two_width + inv_two_width)
    return slope


@njit(**CPU_JIT)
def gsmelu_forward(x, out, neg_slope, delta_t, alpha, beta, slope_gap, inv_two_width, half_asym):
    for i in prange(x.size):
        out[i] = _gsmelu_value(x[i], neg_slope, delta_t, alpha, beta, slope_gap, inv_two_width, half_asym)


@njit(**CPU_JIT)
def gsmelu_backward(grad_out, x, grad_x, neg_slope, slope, alpha, beta, slope_gap, inv_two_width):
    for i in prange(x.size):
        grad_x[i] = grad_out[i] * _gsmelu_slope(x[i], neg_slope, slope, alpha, beta, slope_gap, inv_two_width)


# the word kernels only change how CUDA loads memory: on the host they are the same loops
gsmelu_forward_words = gsmelu_forward
gsmelu_backward_words = gsmelu_backward


@njit(**CPU_JIT)
def ncrelu_forward(x, out):
    """x (N, plane), out (N, 2, plane)."""
    batch, plane = x.shape
    for b in prange(batch):
        for j in range(plane):
            v = x[b, j]
            if v >= 0:
                out[b, 0, j] = v
                out[b, 1, j] = 0.0
            else:
                out[b, 0, j] = 0.0
                out[b, 1, j] = v


@njit(**CPU_JIT)
def ncrelu_backward(grad_out, x, grad_x):
    batch, plane = x.shape
    for b in prange(batch):
        for j in range(plane):
            grad_x[b, j] = grad_out[b, 0, j] if x[b, j] >= 0 else grad_out[b, 1, j]
