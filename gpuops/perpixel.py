"""The per-pixel-kernel family: involution and the KPN weighted filter.

Contract: docs/ops.md §6 (involution), §11 (weighted_filter).  Kernels: gpuops/cuda/perpixel.py; CPU
mirrors: gpuops/cpu/perpixel.py.

One family: a gather-mode weighted filter with a K×K kernel *is* an involution with one group, stride 1,
padding (K−1)/2 and dilation 1 — its weight (N, K², H, W) is the involution weight (N, 1, K, K, H, W) in
the same memory — and splat is its adjoint.  Three kernels therefore compute every forward and gradient
of both ops, with the arrays in different roles (see gpuops.cuda.perpixel):

==================  ==========================  ===========================  ==========================
                    forward                     grad_x                       grad_weight
==================  ==========================  ===========================  ==========================
involution, gather  gather(x)                   transpose(grad_out)          wgrad(grad_out, x)
splat               transpose(x)                gather(grad_out)             wgrad(x, grad_out)
==================  ==========================  ===========================  ==========================

No unfold-sized temporaries; the weight gradient is one thread's sum per entry (deterministic), the
bias gradient a fixed-order two/three-stage sum.  The kernels are register-blocked (a thread owns a strip of
rows × a chunk of one group's channels and reads each weight entry once for the chunk); groups of at most
PERPIXEL_FEW channels (KPN's RGB) take their _FEW forms, with tiles for few channels (`_plan`, `_wgrad`).

Decisions where the spec is silent:

* ``involution``: x must have at least one channel; (Ho, Wo) of the weight must equal the windowed output
  size exactly (a smaller weight is refused, not cropped).  Kernel sizes may be even or non-square.
* ``weighted_filter``: H, W >= 1; bias must be (C,); K = 1 is allowed (a per-pixel scale).  ``splat``
  is a bool (`TypeError` for anything else).
* Empty batches give empty outputs and zero weight/bias gradients (no launch but the bias sums).
"""
import math


from gpuops import _core, _ops, reference
from gpuops._constants import (PERPIXEL_CHUNK, PERPIXEL_CHUNK_F64, PERPIXEL_FEW, PERPIXEL_FEW_F64, PERPIXEL_FEW_ROWS,
                               PERPIXEL_ROWS, PERPIXEL_THREADS, PERPIXEL_WGRAD_FEW_ROWS, PERPIXEL_WGRAD_ROWS)
from gpuops._core import In, Out
from gpuops._dtypes import STORAGE
from gpuops._ops import OpSpec, Param

_THREADS = PERPIXEL_THREADS
_CHUNK = PERPIXEL_CHUNK
_CHUNK_F64 = PERPIXEL_CHUNK_F64
_ROWS = PERPIXEL_ROWS
_WGRAD_ROWS = PERPIXEL_WGRAD_ROWS
_FEW = PERPIXEL_FEW
_FEW_F64 = PERPIXEL_FEW_F64
_FEW_ROWS = PERPIXEL_FEW_ROWS
_WGRAD_FEW_ROWS = PERPIXEL_WGRAD_FEW_ROWS
_BIAS_THREADS = 65536   # stage-1 threads aimed at by the bias-gradient sum
_BIAS_LANES = 256       # segments per channel left for the final (sequential) stage


def _window_params(stride, padding, dilation):
    return (_core.pair("stride", stride, minimum=1), _core.pair("padding", padding, minimum=0),
            _core.pair("dilation", dilation, minimum=1))


# ---------------------------------------------------------------------------------------------
# geometry and checks


def _involution_geometry(x_shape, w_shape, stride, padding, dilation):
    """The kernels' geometry ``(C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw)``, or `ValueError`."""
    N, C, H, W = x_shape
    Nw, G, kh, kw, Hw, Ww = w_shape
    if C < 1:
        raise ValueError(f"x must have at least one channel, got shape {list(x_shape)}")
    if Nw != N:
        raise ValueError(f"weight must have x's batch size N = {N} at axis 0 (shape (N, G, kh, kw, Ho, Wo)), "
                         f"got shape {list(w_shape)}")
    if G < 1 or C % G:
        raise ValueError(f"weight.shape[1] is the number of kernel groups G and must divide C = x.shape[1] = {C}, "
                         f"got G = {G} (weight shape {list(w_shape)})")
    if kh < 1 or kw < 1:
        raise ValueError(f"weight must have kernel sizes kh, kw >= 1 at axes 2, 3, got shape {list(w_shape)}")
    (sh, sw), (ph, pw), (dh, dw) = _window_params(stride, padding, dilation)
    Ho = _core.window_out_size("output height", H, kh, ph, dh, sh)
    Wo = _core.window_out_size("output width", W, kw, pw, dw, sw)
    if (Hw, Ww) != (Ho, Wo):
        raise ValueError(f"weight must have the output size (Ho, Wo) = {(Ho, Wo)} at axes 4, 5 (x is {H}×{W}, "
                         f"kernel {kh}×{kw}, stride {(sh, sw)}, padding {(ph, pw)}, dilation {(dh, dw)}), "
                         f"got {(Hw, Ww)} (weight shape {list(w_shape)})")
    return (C, C // G, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw)


def _check_involution(x, weight, stride, padding, dilation):
    x = _core.contiguous(_core.floating("x", x, ndim=4))
    weight = _core.contiguous(_core.floating("weight", weight, ndim=6))
    _core.same_dtype_and_device(x, weight)
    return x, weight, _involution_geometry(x.shape, weight.shape, stride, padding, dilation)


def kernel_size_of(taps: int) -> int:
    """K for a weight with ``taps`` = K² channels, K odd; `ValueError` otherwise."""
    K = math.isqrt(taps) if taps >= 0 else 0
    if K * K != taps or K % 2 == 0:
        raise ValueError(f"weight.shape[1] must be K² for an odd kernel size K (1, 9, 25, 49, ...), got {taps}")
    return K


def _filter_geometry(x_shape, w_shape, bias_shape):
    N, C, H, W = x_shape
    if C < 1:
        raise ValueError(f"x must have at least one channel, got shape {list(x_shape)}")
    if H < 1 or W < 1:
        raise ValueError(f"x must have H, W >= 1, got shape {list(x_shape)}")
    K = kernel_size_of(w_shape[1])
    if (w_shape[0], w_shape[2], w_shape[3]) != (N, H, W):
        raise ValueError(f"weight must have shape (N, K², H, W) = {[N, K * K, H, W]} (x's N, H, W), "
                         f"got {list(w_shape)}")
    if bias_shape is not None and tuple(bias_shape) != (C,):
        raise ValueError(f"bias must have shape [{C}] (x.shape[1]), got {list(bias_shape)}")
    r = K // 2
    return (C, C, 1, H, W, H, W, K, K, 1, 1, r, r, 1, 1)


def _check_filter(x, weight, bias):
    x = _core.contiguous(_core.floating("x", x, ndim=4))
    weight = _core.contiguous(_core.floating("weight", weight, ndim=4))
    _core.same_dtype_and_device(x, weight)
    if bias is not None:
        bias = _core.contiguous(_core.floating("bias", bias, ndim=1))
        _core.same_dtype_and_device(x, bias)
    return x, weight, bias, _filter_geometry(x.shape, weight.shape, None if bias is None else bias.shape)


def _check_grad_out(grad_out, x, shape):
    grad_out = _core.contiguous(_core.floating("grad_out", grad_out, ndim=4))
    _core.same_dtype_and_device(x, grad_out)
    if grad_out.shape != tuple(shape):
        raise ValueError(f"grad_out must have shape {list(shape)} (the forward output), got {list(grad_out.shape)}")
    return grad_out


# ---------------------------------------------------------------------------------------------
# the three kernels and the bias sum


def _items(N, G, chunks, rows_out, cols, rows_per_thread):
    """Work items of a register-blocked launch: (image, group, chunk, strip of rows, column)."""
    return N * G * chunks * -(-rows_out // rows_per_thread) * cols


def _plan(cpg, like):
    """``(kernel suffix, rows, chunks)`` of PP_GATHER / PP_TRANSPOSE for groups of cpg channels: groups of at
    most PERPIXEL_FEW channels take the _FEW kernels; the channel tile is dtype-dependent."""
    f64 = like.dtype == "float64"
    if cpg <= _FEW:
        return "_few", _FEW_ROWS, -(-cpg // (_FEW_F64 if f64 else _FEW))
    return "", _ROWS, -(-cpg // (_CHUNK_F64 if f64 else _CHUNK))


def _grid(items):
    return lambda: (_core.blocks_for(items, _THREADS),)


def _gather(src, w, bias, dst, geo, stream):
    """dst (N, C, Ho, Wo) = the window sums of src (N, C, H, W) with per-pixel taps w (+ bias)."""
    has_bias, b = (0, w) if bias is None else (1, bias)      # a stand-in the kernel never reads
    C, cpg, G, _, _, Ho, Wo = geo[:7]
    suffix, rows, chunks = _plan(cpg, src)
    items = _items(dst.size // (C * Ho * Wo), G, chunks, Ho, Wo, rows)
    _core.run("perpixel", "pp_gather" + suffix, (In(src, (src.size,)), In(w, (w.size,)), In(b, (b.size,)),
                                                 Out(dst, (dst.size,)), has_bias) + geo,
              like=src, grid=_grid(items), block=(_THREADS,), stream=stream)


def _transpose(src, w, bias, dst, geo, stream):
    """dst (N, C, H, W) = the adjoint of `_gather` applied to src (N, C, Ho, Wo) (+ bias)."""
    has_bias, b = (0, w) if bias is None else (1, bias)
    C, cpg, G, H, W = geo[:5]
    suffix, rows, chunks = _plan(cpg, src)
    items = _items(dst.size // (C * H * W), G, chunks, H, W, rows)
    _core.run("perpixel", "pp_transpose" + suffix, (In(src, (src.size,)), In(w, (w.size,)), In(b, (b.size,)),
                                                    Out(dst, (dst.size,)), has_bias) + geo,
              like=src, grid=_grid(items), block=(_THREADS,), stream=stream)


def _wgrad(center, shifted, gw, geo, stream):
    """gw (N, G, kh, kw, Ho, Wo) = Σ over each group's channels of center (Ho, Wo grid) × shifted windows;
    groups of at most PERPIXEL_FEW channels take the kernel with the smaller channel tile (PP_WGRAD_FEW)."""
    C, cpg, G, _, _, Ho, Wo, kh, kw = geo[:9]
    kernel, rows = ("pp_wgrad_few", _WGRAD_FEW_ROWS) if cpg <= _FEW else ("pp_wgrad", _WGRAD_ROWS)
    items = _items(gw.size // (G * kh * kw * Ho * Wo), G, 1, Ho, Wo, rows)
    _core.run("perpixel", kernel, (In(center, (center.size,)), In(shifted, (shifted.size,)),
                                   Out(gw, (gw.size,))) + geo,
              like=center, grid=_grid(items), block=(_THREADS,), stream=stream)


def _bias_grad(g, gb, C, plane_size, stream):
    """gb[c] = Σ_{n,y,x} g[n,c,y,x]: per-channel partial sums over segments, then the segments in order."""
    compute = STORAGE[g.dtype][2]
    segments = max(1, min(plane_size, _BIAS_THREADS // C))
    partial = _core.scratch(g, (C * segments,), compute, stream)
    _core.run("perpixel", "pp_bias_partial", (In(g, (g.size,)), Out(partial), C, plane_size, segments),
              like=g, grid=(_core.blocks_for(C * segments, _THREADS),), block=(_THREADS,), stream=stream)
    if segments > _BIAS_LANES:      # a second pass, so that the last stage sums few values per channel
        fewer = _core.scratch(g, (C * _BIAS_LANES,), compute, stream)
        _core.run("perpixel", "pp_bias_partial_sums", (In(partial), Out(fewer), C, segments, _BIAS_LANES),
                  like=g, grid=(_core.blocks_for(C * _BIAS_LANES, _THREADS),), block=(_THREADS,), stream=stream)
        partial, segments = fewer, _BIAS_LANES
    _core.run("perpixel", "pp_bias_final", (In(partial), Out(gb, (C,)), segments),
              like=g, grid=(_core.blocks_for(C, _THREADS),), block=(_THREADS,), stream=stream)


# ---------------------------------------------------------------------------------------------
# involution


@_ops.guards_out
def involution(x, weight, *, stride=1, padding=0, dilation=1, out=None, stream=None):
    """Involution (Li et al., CVPR 2021): a per-pixel kernel shared by each group of channels.

    x: (N, C, H, W); weight: (N, G, kh, kw, Ho, Wo), G divides C; channel c uses group c // (C // G)::

        out[n, c, h, w] = Σ_{i<kh, j<kw} weight[n, c // (C//G), i, j, h, w] · x[n, c, h·sh − ph + i·dh, w·sw − pw + j·dw]

    (zero padding).  stride/padding/dilation: int or (h, w).  (Ho, Wo) must be the windowed output size
    ``(H + 2·ph − dh·(kh−1) − 1) // sh + 1`` (`ValueError` otherwise).  Returns (N, C, Ho, Wo), x's dtype;
    16-bit inputs accumulate in float32.

    >>> import numpy as np, gpuops
    >>> gpuops.involution(np.ones((1, 2, 3, 3)), np.ones((1, 1, 3, 3, 3, 3)), padding=1)[0, 0]
    array([[4., 6., 4.],
           [6., 9., 6.],
           [4., 6., 4.]])
    """
    x, weight, geo = _check_involution(x, weight, stride, padding, dilation)
    out = _core.output(out, x, (x.shape[0], geo[0], geo[5], geo[6]))
    if out.size:
        _gather(x, weight, None, out, geo, stream)
    return out.obj


@_ops.guards_out
def involution_backward(grad_out, x, weight, *, stride=1, padding=0, dilation=1, out=None, stream=None):
    """Gradients of `involution`: ``(grad_x, grad_weight)``; ``out``: optional (grad_x, grad_weight) arrays.

    grad_out: (N, C, Ho, Wo), any strides.  grad_x is the exact adjoint (a gather per input pixel);
    ``grad_weight[n, g, i, j, h, w] = Σ_{c in group g} grad_out[n, c, h, w] · x[n, c, h·sh − ph + i·dh, w·sw − pw + j·dw]``,
    one thread's sum per entry (deterministic, no atomics).
    """
    x, weight, geo = _check_involution(x, weight, stride, padding, dilation)
    grad_out = _check_grad_out(grad_out, x, (x.shape[0], geo[0], geo[5], geo[6]))
    out_x, out_w = _core.out_tuple(out, ("grad_x", "grad_weight"))
    grad_x = _core.output(out_x, x, x.shape)
    grad_w = _core.output(out_w, x, weight.shape)
    if grad_x.size:
        _transpose(grad_out, weight, None, grad_x, geo, stream)
    if grad_w.size:
        _wgrad(grad_out, x, grad_w, geo, stream)
    return grad_x.obj, grad_w.obj


# ---------------------------------------------------------------------------------------------
# weighted_filter


@_ops.guards_out
def weighted_filter(x, weight, bias=None, *, splat=False, out=None, stream=None):
    """Per-pixel K×K kernels applied to every channel (kernel-predicting networks, layerdenoise).

    x: (N, C, H, W); weight: (N, K², H, W), K odd (inferred; `ValueError` if weight.shape[1] is not an odd
    square); bias: (C,) or None.  With r = (K−1)/2 and tap t = fy·K + fx (zero padding)::

        gather: out[n,c,y,x] = Σ_t w[n,t,y,x] · x[n,c,y+fy−r, x+fx−r]
        splat : every pixel (y', x') adds w[n,t,y',x'] · x[n,c,y',x'] onto (y'+fy−r, x'+fx−r)
        then out += bias[c]

    Returns (N, C, H, W) in x's dtype.  Gather is `involution` with G = 1, stride 1, padding r; splat is
    its adjoint in x, computed as a gather (no atomics).
    """
    splat = _core.flag("splat", splat)
    x, weight, bias, geo = _check_filter(x, weight, bias)
    out = _core.output(out, x, x.shape)
    if out.size:
        (_transpose if splat else _gather)(x, weight, bias, out, geo, stream)
    return out.obj


@_ops.guards_out
def weighted_filter_backward(grad_out, x, weight, bias=None, *, splat=False, out=None, stream=None):
    """Gradients of `weighted_filter`: ``(grad_x, grad_weight, grad_bias)`` (grad_bias None without bias).

    gather: grad_x[c,y',x'] = Σ_t grad_out[c, y'−fy+r, x'−fx+r] · w[t, y'−fy+r, x'−fx+r],
            grad_w[t,y,x]   = Σ_c grad_out[c,y,x] · x[c, y+fy−r, x+fx−r]
    splat : grad_x[c,y',x'] = Σ_t grad_out[c, y'+fy−r, x'+fx−r] · w[t,y',x'],
            grad_w[t,y',x'] = Σ_c grad_out[c, y'+fy−r, x'+fx−r] · x[c,y',x']
    grad_bias[c] = Σ_{n,y,x} grad_out[n,c,y,x].  Every sum has a fixed order (no atomics).
    """
    splat = _core.flag("splat", splat)
    x, weight, bias, geo = _check_filter(x, weight, bias)
    grad_out = _check_grad_out(grad_out, x, x.shape)
    out_x, out_w, out_b = _core.out_tuple(out, ("grad_x", "grad_weight", "grad_bias"))
    grad_x = _core.output(out_x, x, x.shape)
    grad_w = _core.output(out_w, x, weight.shape)
    grad_b = None if bias is None else _core.output(out_b, x, bias.shape)
    if grad_x.size:
        (_gather if splat else _transpose)(grad_out, weight, None, grad_x, geo, stream)
        if splat:
            _wgrad(x, grad_out, grad_w, geo, stream)
        else:
            _wgrad(grad_out, x, grad_w, geo, stream)
    if grad_b is not None:
        _bias_grad(grad_out, grad_b, geo[0], geo[3] * geo[4], stream)
    return grad_x.obj, grad_w.obj, None if grad_b is None else grad_b.obj


# ---------------------------------------------------------------------------------------------
# declarations


_WINDOW = (Param("stride", "pair", 1, minimum=1), Param("padding", "pair", 0), Param("dilation", "pair", 1, minimum=1))


def _involution_shapes(x, weight, *, stride, padding, dilation):
    x, _, geo = _check_involution(x, weight, stride, padding, dilation)
    return (x.shape[0], geo[0], geo[5], geo[6])


def _involution_example(rng, batch):
    # G = 2 groups of 2 channels, a 3×2 kernel, stride (2, 1), padding 1, dilation (1, 2): (Ho, Wo) = (3, 7)
    u = rng.uniform
    return ((u(-1, 1, (batch, 4, 6, 7)), u(-1, 1, (batch, 2, 3, 2, 3, 7))),
            dict(stride=(2, 1), padding=1, dilation=(1, 2)))


def _filter_shapes(x, weight, bias=None, *, splat):
    _core.flag("splat", splat)
    return _check_filter(x, weight, bias)[0].shape


def _filter_example(rng, batch):
    u = rng.uniform
    return (u(-1, 1, (batch, 2, 5, 6)), u(-1, 1, (batch, 9, 5, 6)), u(-1, 1, (2,))), dict(splat=False)


INVOLUTION = _ops.declare(OpSpec(
    name="involution", forward=involution, backward=involution_backward, arrays=("x", "weight"), params=_WINDOW,
    shapes=_involution_shapes, vmap="fold", example=_involution_example, reference=reference.involution, autocast=True,
    reference_backward=reference.involution_backward))

WEIGHTED_FILTER = _ops.declare(OpSpec(
    name="weighted_filter", forward=weighted_filter, backward=weighted_filter_backward,
    arrays=("x", "weight", "bias?"), params=(Param("splat", "bool", False),), shapes=_filter_shapes, autocast=True,
    batch=(True, True, False),
    example=_filter_example, reference=reference.weighted_filter,
    reference_backward=reference.weighted_filter_backward))
