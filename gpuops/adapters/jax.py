"""JAX ops over the gpuops core (exposed as ``gpuops.jax``).

Each op is a ``jax.custom_vjp`` function whose forward and backward are
``jax.experimental.buffer_callback`` calls: XLA hands the callback its own buffers (zero-copy numpy
views on CPU, ``__cuda_array_interface__`` device memory on GPU) and, on GPU, its stream, and the
callback runs the same core function as every other entry point, writing into XLA's output buffer.
No host round-trips.  Static parameters travel by closure, and one callback object is cached per
static configuration: a new callback object per call would recompile the XLA computation each time.

Works under ``jax.jit``, ``jax.grad``, ``jax.vmap`` (batched buffers are folded into the op's own
leading axis where the op allows it) and inside Flax modules.  The adapter holds no math.
"""
from __future__ import annotations

import functools

import jax
import numpy as np
from jax.experimental.buffer_callback import buffer_callback

from gpuops import _core, conv, diag, elementwise
from gpuops import correlations as _corr

_KDL_CUDA = 2


class _BufferView:
    """A callback buffer seen with another shape of the same size (folding vmap's batch axes)."""

    __slots__ = ("buffer", "shape", "dtype")

    def __init__(self, buffer, shape):
        self.buffer, self.shape, self.dtype = buffer, tuple(shape), buffer.dtype

    def __dlpack_device__(self):
        return self.buffer.__dlpack_device__()

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.buffer).reshape(self.shape)

    @property
    def __cuda_array_interface__(self):
        return {**self.buffer.__cuda_array_interface__, "shape": self.shape, "strides": None}


_core.register_kind(_BufferView, _core.XLA)


def _replaying(body):
    """The buffer_callback running ``body(stream, outs, *inputs)`` (a core call; stream None on CPU).

    On CUDA the first call for given buffer shapes and dtypes runs the core function while
    `gpuops._core.record` notes its launches; later calls replay them on the new buffers' pointers
    (the validation, wrapping and planning were done for the same shapes: they cost ≈17 of the ≈27 µs a
    small call spent in its callback on an H200).  Calls that cannot be replayed (allocations, unprepared
    launches) always run the core function.
    """
    replays = {}

    def callback(ctx, outs, *inputs):
        buffers = (*outs, *inputs) if isinstance(outs, (tuple, list)) else (outs, *inputs)
        device_type, device = buffers[0].__dlpack_device__()
        if device_type != _KDL_CUDA:
            body(None, outs, *inputs)
            return
        stream = ctx.stream
        pointers = [b.__cuda_array_interface__["data"][0] for b in buffers]
        key = (device, *((b.shape, b.dtype) for b in buffers))
        replay = replays.get(key, False)
        if replay and replay(stream, pointers):
            return
        if replay is not False or len(set(pointers)) != len(pointers):
            body(stream, outs, *inputs)     # not replayable, or a one-off (aliased, realigned) call
            return
        if len(replays) > 256:              # shapes that vary without end must not grow it forever
            replays.clear()
        replays[key] = _core.record(lambda: body(stream, outs, *inputs), pointers)

    return callback


def _folded(buffer, rank: int):
    """View a buffer with any extra (vmapped) leading axes merged into its first axis."""
    extra = buffer.ndim - rank
    if extra <= 0:
        return buffer
    shape = tuple(buffer.shape)
    lead = 1
    for s in shape[:extra + 1]:
        lead *= s
    return _BufferView(buffer, (lead,) + shape[extra + 1:])


def _call(callback, result, *args, vmap_method="broadcast_all"):
    return buffer_callback(callback, result, vmap_method=vmap_method)(*args)


def _like(x, shape=None):
    return jax.ShapeDtypeStruct(x.shape if shape is None else shape, x.dtype)


# ---------------------------------------------------------------------------------------------
# one custom_vjp wiring for every op


def _array_op(forward, backward, out_shape, ranks=None, vmap_method=None):
    """A custom_vjp function ``f(*arrays, params)`` over a core forward and its backward.

    ``forward(*arrays, out=, stream=, **params)`` and ``backward(grad, *arrays, out=(one per array),
    stream=, **params)`` are core functions; ``params`` is a hashable tuple of (keyword, value) pairs;
    ``out_shape(shapes, params)`` gives the output shape.  ``ranks`` (one per array, then the output)
    lets vmap fold its batch axis into each array's leading axis (ops that are independent per leading
    index); without it vmap loops over the batch, unless ``vmap_method`` says otherwise
    ("broadcast_all" for elementwise ops, which take any leading axes as they are).
    """

    def fold(buffer, i):
        return buffer if ranks is None else _folded(buffer, ranks[i])

    @functools.lru_cache(maxsize=None)
    def forward_callback(params):
        kwargs = dict(params)

        def body(stream, out, *arrays):
            forward(*(fold(a, i) for i, a in enumerate(arrays)), out=fold(out, -1), stream=stream, **kwargs)
        return _replaying(body)

    @functools.lru_cache(maxsize=None)
    def backward_callback(params):
        kwargs = dict(params)

        def body(stream, outs, grad, *arrays):
            backward(fold(grad, -1), *(fold(a, i) for i, a in enumerate(arrays)),
                     out=tuple(fold(o, i) for i, o in enumerate(outs)), stream=stream, **kwargs)
        return _replaying(body)

    if vmap_method is None:
        vmap_method = "sequential" if ranks is None else "broadcast_all"

    @functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
    def op(params, *arrays):
        shape = out_shape([a.shape for a in arrays], params)
        return _call(forward_callback(params), _like(arrays[0], shape), *arrays, vmap_method=vmap_method)

    def op_fwd(params, *arrays):
        return op(params, *arrays), arrays

    def op_bwd(params, arrays, grad):
        return _call(backward_callback(params), tuple(_like(a) for a in arrays), grad, *arrays,
                     vmap_method=vmap_method)

    op.defvjp(op_fwd, op_bwd)
    return op


def _check_floating(name, x):
    if jax.numpy.dtype(x.dtype).name not in _core.FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), "
                        f"got {jax.numpy.dtype(x.dtype).name}")


def _single_grad(backward):
    """A one-input core backward in `_array_op`'s form (its ``out`` is a tuple of one)."""
    def adapted(grad, x, *, out, stream, **params):
        backward(grad, x, out=out[0], stream=stream, **params)
    return adapted


# ---------------------------------------------------------------------------------------------
# gsmelu (elementwise: vmapped buffers pass through with their extra axes)

_GSMELU_KEYS = ("slope", "neg_slope", "alpha", "beta", "delta_t")
_gsmelu = _array_op(elementwise.gsmelu, _single_grad(elementwise.gsmelu_backward), lambda shapes, params: shapes[0],
                    vmap_method="broadcast_all")


def gsmelu(x, *, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1, delta_t=0.0):
    """`gpuops.gsmelu` as a differentiable JAX function (any shape; jit, grad, vmap).

    y = g₋·x + Δt + (g₊ − g₋)·h(x), h = 0 (x ≤ −α), (x+α)²/(2(α+β)) (−α < x ≤ β), x + (α−β)/2 otherwise.
    The parameters are static (Python floats).
    """
    _check_floating("x", x)
    params = tuple(zip(_GSMELU_KEYS, elementwise._gsmelu_params(slope, neg_slope, alpha, beta, delta_t)))
    return _gsmelu(params, x)


# ---------------------------------------------------------------------------------------------
# ncrelu (per leading index: vmapped batches fold into N)


@functools.lru_cache(maxsize=None)
def _ncrelu_op(rank):
    return _array_op(elementwise.ncrelu, _single_grad(elementwise.ncrelu_backward),
                     lambda shapes, params: elementwise.ncrelu_shape(shapes[0]), ranks=(rank, rank))


def ncrelu(x):
    """`gpuops.ncrelu` as a differentiable JAX function: (N, C, ...) -> (N, 2C, ...)."""
    _check_floating("x", x)
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions, got shape {list(x.shape)}")
    return _ncrelu_op(x.ndim)((), x)


# ---------------------------------------------------------------------------------------------
# spatial_correlation_sample and correlation: per-image ops, so vmapped batches fold into N


def _check_pair(input1, input2):
    _check_floating("input1", input1)
    _check_floating("input2", input2)
    if input1.ndim != 4 or input1.shape != input2.shape or input1.dtype != input2.dtype:
        raise ValueError(f"input1 and input2 must be 4-D (N, C, H, W) arrays of one shape and dtype, got "
                         f"{input1.dtype}{list(input1.shape)} and {input2.dtype}{list(input2.shape)}")


def _sampler_shape(shapes, params):
    geo = _corr._sampler_geometry(tuple(shapes[0]), *(v for _, v in params), "spatial_correlation_sample")
    return (geo.N, geo.p[0], geo.p[1], geo.oH, geo.oW)


def _correlation_shape(shapes, params):
    geo = _corr._correlation_geometry(tuple(shapes[0]), *(v for _, v in params))
    return (geo.N, geo.p[0] * geo.p[1], geo.oH, geo.oW)


_sampler = _array_op(_corr.spatial_correlation_sample, _corr.spatial_correlation_sample_backward, _sampler_shape,
                     ranks=(4, 4, 5))
_correlation = _array_op(_corr.correlation, _corr.correlation_backward, _correlation_shape, ranks=(4, 4, 4))


def spatial_correlation_sample(input1, input2, *, kernel_size=1, patch_size=1, stride=1, padding=0, dilation=1,
                               dilation_patch=1):
    """`gpuops.spatial_correlation_sample` as a differentiable JAX function: (N, C, H, W) × 2 ->
    (N, pH, pW, oH, oW) raw sums (spec/ops.md §7).  Parameters are static."""
    _check_pair(input1, input2)
    params = (("kernel_size", kernel_size), ("patch_size", patch_size), ("stride", stride), ("padding", padding),
              ("dilation", dilation), ("dilation_patch", dilation_patch))
    params = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in params)
    return _sampler(params, input1, input2)


def correlation(input1, input2, *, pad_size=0, kernel_size=1, max_displacement=0, stride1=1, stride2=1):
    """`gpuops.correlation` as a differentiable JAX function: (N, C, H, W) × 2 -> (N, D², Ho, Wo), Caffe/FlowNet
    semantics (spec/ops.md §8).  Parameters are static."""
    _check_pair(input1, input2)
    params = (("pad_size", pad_size), ("kernel_size", kernel_size), ("max_displacement", max_displacement),
              ("stride1", stride1), ("stride2", stride2))
    return _correlation(params, input1, input2)


# ---------------------------------------------------------------------------------------------
# im2col / col2im (per channel, so vmapped batches fold into the leading axis) and dgmm / cdgmm


def _window_params(**values):
    return tuple((k, _core.pair(k, v, minimum=1 if k != "padding" else 0)) for k, v in values.items())


def _im2col_shape(shapes, params):
    return conv.im2col_shape(tuple(shapes[0]), **dict(params))


def _im2col_backward(grad_out, x, *, out, stream, **params):
    conv.im2col_backward(grad_out, tuple(x.shape), out=out[0], stream=stream, **params)


def _col2im_shape(shapes, params):
    return conv.col2im_shape(tuple(shapes[0]), **dict(params))


def _col2im_backward(grad_out, cols, *, out, stream, input_size, **params):
    conv.col2im_backward(grad_out, out=out[0], stream=stream, **params)


@functools.lru_cache(maxsize=None)
def _im2col_op(rank):
    return _array_op(conv.im2col, _im2col_backward, _im2col_shape, ranks=(rank, rank + 2))


@functools.lru_cache(maxsize=None)
def _col2im_op(rank):
    return _array_op(conv.col2im, _col2im_backward, _col2im_shape, ranks=(rank, rank - 2))


def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1):
    """`gpuops.im2col` as a differentiable JAX function: (N, C, H, W) -> (N, C, kh, kw, Ho, Wo) (or without N)."""
    _check_floating("x", x)
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {list(x.shape)}")
    params = _window_params(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)
    return _im2col_op(x.ndim)(params, x)


def col2im(cols, kernel_size, *, stride=1, padding=0, dilation=1, input_size=None):
    """`gpuops.col2im` as a differentiable JAX function: the adjoint of `im2col`."""
    _check_floating("cols", cols)
    if cols.ndim not in (5, 6):
        raise ValueError(f"cols must be 5-D or 6-D, got shape {list(cols.shape)}")
    params = _window_params(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)
    size = conv.col2im_shape(tuple(cols.shape), input_size=input_size, **dict(params))[-2:]
    params += (("input_size", size),)
    return _col2im_op(cols.ndim)(params, cols)


_dgmm = _array_op(diag.dgmm, diag.dgmm_backward, lambda shapes, params: shapes[0])
_cdgmm = _array_op(diag.cdgmm, diag.cdgmm_backward, lambda shapes, params: shapes[0])


def dgmm(a, x, *, side="auto"):
    """`gpuops.dgmm` as a differentiable JAX function: ``a @ diag(x)`` (side right) or ``diag(x) @ a``."""
    _check_floating("a", a)
    _check_floating("x", x)
    return _dgmm((("side", side),), a, x)


def cdgmm(a, x, *, side="auto"):
    """`gpuops.cdgmm` as a differentiable JAX function: real pairs (M, K, 2) × (K, 2)/(M, 2), or complex
    (M, K) × (K,)/(M,) (computed on the pair view and returned complex).  JAX's complex gradient
    convention is the conjugate of PyTorch's; `jax.grad` of a real loss gives the same numbers as torch."""
    if jax.numpy.iscomplexobj(a) or jax.numpy.iscomplexobj(x):
        pairs = _cdgmm((("side", side),), _as_pairs(a), _as_pairs(x))
        return jax.lax.complex(pairs[..., 0], pairs[..., 1])
    _check_floating("a", a)
    return _cdgmm((("side", side),), a, x)


def _as_pairs(z):
    return jax.numpy.stack([jax.numpy.real(z), jax.numpy.imag(z)], axis=-1)


# ---------------------------------------------------------------------------------------------
# conv2d_depthwise (weights are shared across the batch, so vmap loops)


def _conv_shape(shapes, params):
    p = dict(params)
    (N, C, H, W), (Cm, _, kh, kw) = shapes[0], shapes[1]
    (sh, sw), (ph, pw), (dh, dw) = p["stride"], p["padding"], p["dilation"]
    return (N, Cm, _core.window_out_size("output height", H, kh, ph, dh, sh),
            _core.window_out_size("output width", W, kw, pw, dw, sw))


def _conv_backward(grad_out, x, weight, bias=None, *, out, stream, **params):
    conv.conv2d_depthwise_backward(grad_out, x, weight, bias, out=tuple(out) + (None,) * (3 - len(out)),
                                   stream=stream, **params)


_conv = _array_op(conv.conv2d_depthwise, _conv_backward, _conv_shape)


def conv2d_depthwise(x, weight, bias=None, *, stride=1, padding=0, dilation=1):
    """`gpuops.conv2d_depthwise` as a differentiable JAX function: x (N, C, H, W), weight (C·m, 1, kh, kw),
    bias (C·m,) or None -> (N, C·m, Ho, Wo), exactly ``lax.conv_general_dilated(..., feature_group_count=C)``."""
    for name, a in (("x", x), ("weight", weight)) + ((("bias", bias),) if bias is not None else ()):
        _check_floating(name, a)
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"x and weight must be 4-D, got shapes {list(x.shape)} and {list(weight.shape)}")
    params = _window_params(stride=stride, padding=padding, dilation=dilation)
    arrays = (x, weight) if bias is None else (x, weight, bias)
    return _conv(params, *arrays)


__all__ = ["gsmelu", "ncrelu", "spatial_correlation_sample", "correlation", "im2col", "col2im", "dgmm", "cdgmm",
           "conv2d_depthwise"]
