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


@njit(**CPU_JIT)
def ncrelu_forward(x, out, plane):
    for i in prange(x.size):
        v = x[i]
        pos = i + (i // plane) * plane
        if v >= 0:
            out[pos] = v
            out[pos + plane] = 0.0
        else:
            out[pos] = 0.0
            out[pos + plane] = v


@njit(**CPU_JIT)
def ncrelu_backward(grad_out, x, grad_x, plane):
    for i in prange(x.size):
        pos = i + (i // plane) * plane
        grad_x[i] = grad_out[pos] if x[i] >= 0 else grad_out[pos + plane]
