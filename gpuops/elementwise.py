"""The elementwise family: gsmelu (generalized smooth ReLU) and ncrelu (negative concatenated ReLU).

Contract: docs/ops.md (gsmelu, ncrelu).  Kernels: gpuops/cuda/elementwise.py; CPU mirrors: gpuops/cpu/elementwise.py.
"""
import functools
import struct

from gpuops import _constants as K
from gpuops import _core, _ops, _variants, reference
from gpuops._ops import OpSpec, Param
from gpuops._variants import Variant

_THREADS = K.ELEMENTWISE_THREADS
_ITEMS = K.ELEMENTWISE_ITEMS
_FORWARD_ITEMS = K.ELEMENTWISE_FORWARD_ITEMS
_WORDS = K.ELEMENTWISE_WORDS
_MAX_GRID_Y = K.MAX_GRID_YZ


def _gsmelu_params(slope, neg_slope, alpha, beta, delta_t):
    slope, neg_slope = _core.real("slope", slope), _core.real("neg_slope", neg_slope)
    alpha, beta, delta_t = _core.real("alpha", alpha), _core.real("beta", beta), _core.real("delta_t", delta_t)
    if not alpha + beta > 0:
        raise ValueError(f"alpha + beta must be > 0, got alpha={alpha}, beta={beta}")
    return slope, neg_slope, alpha, beta, delta_t


def _forward_scalars(slope, neg_slope, alpha, beta, delta_t):
    slope, neg_slope, alpha, beta, delta_t = _gsmelu_params(slope, neg_slope, alpha, beta, delta_t)
    return neg_slope, delta_t, alpha, beta, slope - neg_slope, 0.5 / (alpha + beta), 0.5 * (alpha - beta)


def _backward_scalars(slope, neg_slope, alpha, beta, delta_t):
    slope, neg_slope, alpha, beta, _ = _gsmelu_params(slope, neg_slope, alpha, beta, delta_t)
    return neg_slope, slope, alpha, beta, slope - neg_slope, 0.5 / (alpha + beta)


_SCALARS: dict = {}
_AS_DOUBLES = struct.Struct("<5d").pack


def _scalars(derive, slope, neg_slope, alpha, beta, delta_t):
    """``derive(...)``'s kernel scalars, memoised: parameters repeat from call to call.  The key holds each
    parameter's type (True == 1 == 1.0 must not share an entry: bool is rejected) and its value as the
    double the kernel math starts from (bytes tell -0.0 from 0.0); only validated parameters are kept."""
    try:
        key = (derive, type(slope), type(neg_slope), type(alpha), type(beta), type(delta_t),
               _AS_DOUBLES(slope, neg_slope, alpha, beta, delta_t))
    except (struct.error, OverflowError, TypeError, ValueError):
        return derive(slope, neg_slope, alpha, beta, delta_t)         # raises the parameter's error
    scalars = _SCALARS.get(key)
    if scalars is None:
        scalars = derive(slope, neg_slope, alpha, beta, delta_t)
        if len(_SCALARS) > 4096:
            _SCALARS.clear()
        _SCALARS[key] = scalars
    return scalars


def _flat_plan(x, kernel, items, words, n, arrays):
    """Launch plan of a gsmelu kernel on ``arrays`` flat views of ``n`` elements: the word kernel (64-bit
    loads) when every array allows it on a GPU (``words``), else the element kernel."""
    if words:
        kernel, grid = kernel + "_words", _core.blocks_for(n * _core.STORAGE[x.dtype][1] // 8, _THREADS, _WORDS)
    else:
        grid = _core.blocks_for(n, _THREADS, items)
    return kernel, ((n,),) * arrays, (grid,), (_THREADS,)


def _words_can_run(call):
    arrays = call[2]
    if arrays[0].device < 0:
        return "needs CUDA arrays"
    return None if _core.word_aligned(*arrays) else "needs every array 8-byte aligned and whole 64-bit words"


def _launch_flat(call, words):
    kernel, items, arrays, scalars, stream = call
    _core.launch("elementwise", _flat_plan, (kernel, items, words, arrays[0].size, len(arrays)), arrays, scalars,
                 like=arrays[0], stream=stream)


#: gsmelu's kernels: 64-bit word loads of packed values, or one element at a time (also the CPU mirror)
FLAT_VARIANTS = (Variant("words", _words_can_run, functools.partial(_launch_flat, words=True)),
                 Variant("elements", lambda call: None, functools.partial(_launch_flat, words=False)))


def _run_flat(kernel, items, arrays, scalars, stream, variant):
    call = (kernel, items, arrays, scalars, stream)
    if variant is None and not _variants.LOG:
        # the small-call host path (≈13 µs a call): the variants' own rule without the dispatch around it
        _launch_flat(call, _words_can_run(call) is None)
        return
    _variants.choose(kernel, FLAT_VARIANTS, call, variant)


@_ops.guards_out
def gsmelu(x, *, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1, delta_t=0.0, out=None, stream=None,
           variant=None):
    """Generalized smooth ReLU, elementwise.

    x: any shape, float16/bfloat16/float32/float64 (CPU: float32/float64; 16-bit is upcast).
    Returns an array of x's shape, dtype and kind.  With g₊ = slope, g₋ = neg_slope, α, β, Δt:

        h(x) = 0 (x <= -α);  (x + α)² / (2(α + β)) (-α < x <= β);  x + (α - β)/2 otherwise (and NaN)
        y    = g₋·x + Δt + (g₊ - g₋)·h(x)

    C¹ everywhere; requires α + β > 0.  ``out`` (an array to write into) and ``stream`` (CUDA stream;
    default: the caller's current one) are optional; ``variant`` forces one of `FLAT_VARIANTS`.

    >>> import numpy as np, gpuops
    >>> gpuops.gsmelu(np.array([-1.0, 0.0, 1.0]), neg_slope=0.0)
    array([0.   , 0.025, 1.   ])
    """
    x = _core.contiguous(_core.floating("x", x))
    scalars = _scalars(_forward_scalars, slope, neg_slope, alpha, beta, delta_t)
    out = _core.output(out, x, x.shape)
    if x.size:
        _run_flat("gsmelu_forward", _FORWARD_ITEMS, (x, out), scalars, stream, variant)
    return out.obj


@_ops.guards_out
def gsmelu_backward(grad_out, x, *, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1, delta_t=0.0, out=None,
                    stream=None, variant=None):
    """Gradient of `gsmelu` w.r.t. x: ``grad_out · y'(x)``.

    grad_out, x: same shape and dtype (grad_out may have any strides, stride 0 included).
    y'(x) = g₋ (x <= -α);  g₋ + (g₊ - g₋)(x + α)/(α + β) (-α < x <= β);  g₊ otherwise (also NaN x).
    ``delta_t`` is accepted for symmetry with the forward and does not enter the gradient.
    """
    x = _core.contiguous(_core.floating("x", x))
    grad_out = _core.contiguous(_core.floating("grad_out", grad_out))
    _core.same_dtype_and_device(x, grad_out)
    _core.same_shape(x, grad_out)
    scalars = _scalars(_backward_scalars, slope, neg_slope, alpha, beta, delta_t)
    out = _core.output(out, x, x.shape)
    if x.size:
        _run_flat("gsmelu_backward", _ITEMS, (grad_out, x, out), scalars, stream, variant)
    return out.obj


def ncrelu_shape(shape):
    """Output shape of ncrelu: (N, C, ...) -> (N, 2C, ...)."""
    return (shape[0], 2 * shape[1]) + tuple(shape[2:])


def _ncrelu_plan(x, kernel, shape):
    """Launch plan of an ncrelu kernel: x, grad_x as (N, plane), out, grad_out as (N, 2, plane); blockIdx.y
    walks the batch."""
    batch, plane = shape[0], x.size // max(shape[0], 1)
    flat, doubled = (batch, plane), (batch, 2, plane)
    views = (flat, doubled) if kernel == "ncrelu_forward" else (doubled, flat, flat)
    return kernel, views, (_core.blocks_for(plane, _THREADS, _ITEMS), max(1, min(batch, _MAX_GRID_Y))), (_THREADS,)


@_ops.guards_out
def ncrelu(x, *, out=None, stream=None):
    """Negative concatenated ReLU: (N, C, ...) -> (N, 2C, ...).

    x: ndim >= 2, floating.  ``out[:, :C] = x if x >= 0 else 0``, ``out[:, C:] = 0 if x >= 0 else x``
    (NaN goes to the second half).

    >>> import numpy as np, gpuops
    >>> gpuops.ncrelu(np.array([[1.0, -2.0]]))
    array([[ 1.,  0.,  0., -2.]])
    """
    x = _core.contiguous(_core.floating("x", x, min_ndim=2))
    out = _core.output(out, x, ncrelu_shape(x.shape))
    if x.size:
        _core.launch("elementwise", _ncrelu_plan, ("ncrelu_forward", x.shape), (x, out), like=x, stream=stream)
    return out.obj


@_ops.guards_out
def ncrelu_backward(grad_out, x, *, out=None, stream=None):
    """Gradient of `ncrelu`: ``grad_x = grad_out[:, c] if x >= 0 else grad_out[:, C + c]``.

    grad_out: (N, 2C, ...), x: (N, C, ...); at x == 0 the gradient comes from the first half.
    """
    x = _core.contiguous(_core.floating("x", x, min_ndim=2))
    grad_out = _core.contiguous(_core.floating("grad_out", grad_out))
    _core.same_dtype_and_device(x, grad_out)
    if grad_out.shape != ncrelu_shape(x.shape):
        raise ValueError(f"grad_out must have shape {list(ncrelu_shape(x.shape))} for x of shape "
                         f"{list(x.shape)}, got {list(grad_out.shape)}")
    out = _core.output(out, x, x.shape)
    if x.size:
        _core.launch("elementwise", _ncrelu_plan, ("ncrelu_backward", x.shape), (grad_out, x, out), like=x,
                     stream=stream)
    return out.obj


# ---------------------------------------------------------------------------------------------
# declarations


def _gsmelu_shapes(x, *, slope, neg_slope, alpha, beta, delta_t):
    shape = _core.floating("x", x).shape
    _gsmelu_params(slope, neg_slope, alpha, beta, delta_t)
    return shape


def _gsmelu_example(rng, batch):
    return (rng.uniform(-1, 1, (batch, 3, 5)),), dict(slope=1.2, neg_slope=0.05, alpha=0.2, beta=0.3, delta_t=0.1)


GSMELU = _ops.declare(OpSpec(
    name="gsmelu", forward=gsmelu, backward=gsmelu_backward, arrays=("x",),
    params=(Param("slope", "float", 1.0), Param("neg_slope", "float", 0.01), Param("alpha", "float", 0.1),
            Param("beta", "float", 0.1), Param("delta_t", "float", 0.0)),
    shapes=_gsmelu_shapes, vmap="elementwise", example=_gsmelu_example,
    check_params=lambda **p: _gsmelu_params(**p),
    reference=reference.gsmelu, reference_backward=reference.gsmelu_backward))


def _ncrelu_shapes(x):
    return ncrelu_shape(_core.floating("x", x, min_ndim=2).shape)


NCRELU = _ops.declare(OpSpec(
    name="ncrelu", forward=ncrelu, backward=ncrelu_backward, arrays=("x",), shapes=_ncrelu_shapes, vmap="fold",
    example=lambda rng, batch: ((rng.uniform(-1, 1, (batch, 3, 4, 5)),), {}),
    reference=reference.ncrelu, reference_backward=reference.ncrelu_backward))
