"""PyTorch ops and modules over the gpuops core (exposed as ``gpuops.torch``).

Each op is a ``torch.library`` operator in the ``gpuops`` namespace with a CPU and a CUDA kernel (both
call the framework-agnostic core function), a fake (shape-only) kernel for torch.compile and
FakeTensor tracing, and autograd whose backward is itself a registered op.  Ops are defined with
``Library.define``/``impl`` rather than ``torch.library.custom_op``: the same registrations and
``opcheck`` guarantees, with about half the per-call dispatcher cost (≈6 against ≈11 µs).

The adapter holds no math: every formula is in gpuops/<family>.py and its kernels.
"""
from __future__ import annotations

import torch
from torch import nn

import math

from gpuops import _core, conv, diag, elementwise
from gpuops import correlations as _corr

_LIB = torch.library.Library("gpuops", "DEF")


def _define(schema: str, impl, fake):
    """Register ``gpuops::<schema>`` with one implementation for CPU and CUDA, and its fake."""
    name = schema.split("(", 1)[0]
    _LIB.define(schema)
    _LIB.impl(name, impl, "CPU")
    _LIB.impl(name, impl, "CUDA")
    torch.library.register_fake(f"gpuops::{name}", fake, lib=_LIB)
    return getattr(torch.ops.gpuops, name).default


_PLAIN = (torch.Tensor, nn.Parameter)      # subclasses (FakeTensor, tensor subclasses) take the registered op


_is_compiling = torch.compiler.is_compiling
_grad_enabled = torch.is_grad_enabled


def _direct(*tensors) -> bool:
    """True when a call may skip the dispatcher and run the core directly: plain tensors, no autograd
    to record, no tracing.  The registered op costs ≈20 µs of dispatch per call; small eager
    inference calls would otherwise pay that several times over."""
    if _is_compiling():
        return False
    grad = _grad_enabled()
    for t in tensors:
        if t is not None and (type(t) not in _PLAIN or grad and t.requires_grad):
            return False
    return True


def _direct1(x) -> bool:
    """`_direct` of one tensor (the elementwise ops' hot path)."""
    return not _is_compiling() and type(x) in _PLAIN and not (x.requires_grad and _grad_enabled())


def _fake_like(x: torch.Tensor, shape=None) -> torch.Tensor:
    return x.new_empty(tuple(x.shape) if shape is None else tuple(shape))


# ---------------------------------------------------------------------------------------------
# gsmelu

_GSMELU_PARAMS = "float slope, float neg_slope, float alpha, float beta, float delta_t"


def _gsmelu_impl(x, slope, neg_slope, alpha, beta, delta_t):
    return elementwise.gsmelu(x, slope=slope, neg_slope=neg_slope, alpha=alpha, beta=beta, delta_t=delta_t)


def _gsmelu_fake(x, slope, neg_slope, alpha, beta, delta_t):
    _core.floating("x", x)
    elementwise._gsmelu_params(slope, neg_slope, alpha, beta, delta_t)
    return _fake_like(x)


def _gsmelu_backward_impl(grad_out, x, slope, neg_slope, alpha, beta, delta_t):
    return elementwise.gsmelu_backward(grad_out, x, slope=slope, neg_slope=neg_slope, alpha=alpha, beta=beta,
                                       delta_t=delta_t)


def _gsmelu_backward_fake(grad_out, x, slope, neg_slope, alpha, beta, delta_t):
    return _fake_like(x)


_gsmelu_op = _define(f"gsmelu(Tensor x, {_GSMELU_PARAMS}) -> Tensor", _gsmelu_impl, _gsmelu_fake)
_gsmelu_backward_op = _define(f"gsmelu_backward(Tensor grad_out, Tensor x, {_GSMELU_PARAMS}) -> Tensor",
                              _gsmelu_backward_impl, _gsmelu_backward_fake)


def _gsmelu_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.params = inputs[1:]


def _gsmelu_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return (_gsmelu_backward_op(grad, x, *ctx.params),) + (None,) * 5


torch.library.register_autograd("gpuops::gsmelu", _gsmelu_grad, setup_context=_gsmelu_setup, lib=_LIB)


def gsmelu(x: torch.Tensor, *, slope: float = 1.0, neg_slope: float = 0.01, alpha: float = 0.1,
           beta: float = 0.1, delta_t: float = 0.0) -> torch.Tensor:
    """`gpuops.gsmelu` as a differentiable PyTorch op (any shape; CPU or CUDA).

    y = g₋·x + Δt + (g₊ − g₋)·h(x), h = 0 (x ≤ −α), (x+α)²/(2(α+β)) (−α < x ≤ β), x + (α−β)/2 otherwise.

    >>> import torch, gpuops.torch
    >>> gpuops.torch.gsmelu(torch.tensor([-1.0, 0.0, 1.0]), neg_slope=0.0)
    tensor([0.0000, 0.0250, 1.0000])
    """
    if _direct1(x):
        return elementwise.gsmelu(x, slope=slope, neg_slope=neg_slope, alpha=alpha, beta=beta, delta_t=delta_t)
    return _gsmelu_op(x, float(slope), float(neg_slope), float(alpha), float(beta), float(delta_t))


def gsmelu_backward(grad_out, x, *, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1, delta_t=0.0):
    """`gpuops.gsmelu_backward` as a PyTorch op: ``grad_out · y'(x)``."""
    return _gsmelu_backward_op(grad_out, x, float(slope), float(neg_slope), float(alpha), float(beta),
                               float(delta_t))


class GSmeLU(nn.Module):
    """Module form of `gsmelu`; parameters are fixed floats (``y = g₋x + Δt + (g₊ − g₋)h(x)``)."""

    def __init__(self, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1, delta_t=0.0):
        super().__init__()
        elementwise._gsmelu_params(slope, neg_slope, alpha, beta, delta_t)
        self.slope, self.neg_slope, self.alpha, self.beta, self.delta_t = (
            float(slope), float(neg_slope), float(alpha), float(beta), float(delta_t))

    def forward(self, x):
        return gsmelu(x, slope=self.slope, neg_slope=self.neg_slope, alpha=self.alpha, beta=self.beta,
                      delta_t=self.delta_t)

    def extra_repr(self):
        return (f"slope={self.slope}, neg_slope={self.neg_slope}, alpha={self.alpha}, beta={self.beta}, "
                f"delta_t={self.delta_t}")


# ---------------------------------------------------------------------------------------------
# ncrelu


def _ncrelu_fake(x):
    _core.floating("x", x, min_ndim=2)
    return _fake_like(x, elementwise.ncrelu_shape(x.shape))


_ncrelu_op = _define("ncrelu(Tensor x) -> Tensor", elementwise.ncrelu, _ncrelu_fake)
_ncrelu_backward_op = _define("ncrelu_backward(Tensor grad_out, Tensor x) -> Tensor", elementwise.ncrelu_backward,
                              lambda grad_out, x: _fake_like(x))


def _ncrelu_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _ncrelu_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return _ncrelu_backward_op(grad, x)


torch.library.register_autograd("gpuops::ncrelu", _ncrelu_grad, setup_context=_ncrelu_setup, lib=_LIB)


def ncrelu(x: torch.Tensor) -> torch.Tensor:
    """`gpuops.ncrelu` as a differentiable PyTorch op: (N, C, ...) -> (N, 2C, ...).

    >>> import torch, gpuops.torch
    >>> gpuops.torch.ncrelu(torch.tensor([[1.0, -2.0]]))
    tensor([[ 1.,  0.,  0., -2.]])
    """
    if _direct1(x):
        return elementwise.ncrelu(x)
    return _ncrelu_op(x)


def ncrelu_backward(grad_out, x):
    """`gpuops.ncrelu_backward` as a PyTorch op."""
    return _ncrelu_backward_op(grad_out, x)


class NCReLU(nn.Module):
    """Module form of `ncrelu`: concatenates relu(x) and min(x, 0) along channels."""

    def forward(self, x):
        return ncrelu(x)


# ---------------------------------------------------------------------------------------------
# spatial_correlation_sample and correlation

_SAMPLER_KEYS = ("kernel_size", "patch_size", "stride", "padding", "dilation", "dilation_patch")
_SAMPLER_SCHEMA = ", ".join(f"int[2] {k}" for k in _SAMPLER_KEYS)
_CORRELATION_KEYS = ("pad_size", "kernel_size", "max_displacement", "stride1", "stride2")
_CORRELATION_SCHEMA = ", ".join(f"int {k}" for k in _CORRELATION_KEYS)


def _sampler_fake(input1, input2, *params):
    _core.same_shape(_core.floating("input1", input1, ndim=4), _core.floating("input2", input2, ndim=4))
    geo = _corr._sampler_geometry(tuple(input1.shape), *params, "spatial_correlation_sample")
    return _fake_like(input1, (geo.N, geo.p[0], geo.p[1], geo.oH, geo.oW))


def _correlation_fake(input1, input2, *params):
    _core.same_shape(_core.floating("input1", input1, ndim=4), _core.floating("input2", input2, ndim=4))
    geo = _corr._correlation_geometry(tuple(input1.shape), *params)
    return _fake_like(input1, (geo.N, geo.p[0] * geo.p[1], geo.oH, geo.oW))


def _pair_grads_fake(grad_out, input1, input2, *params):
    return _fake_like(input1), _fake_like(input2)


def _keyword_impl(fn, keys):
    def impl(*args):
        tensors, params = args[:-len(keys)], args[-len(keys):]
        return fn(*tensors, **dict(zip(keys, params)))
    return impl


_sampler_op = _define(f"spatial_correlation_sample(Tensor input1, Tensor input2, {_SAMPLER_SCHEMA}) -> Tensor",
                      _keyword_impl(_corr.spatial_correlation_sample, _SAMPLER_KEYS), _sampler_fake)
_sampler_backward_op = _define(
    f"spatial_correlation_sample_backward(Tensor grad_out, Tensor input1, Tensor input2, {_SAMPLER_SCHEMA})"
    " -> (Tensor, Tensor)", _keyword_impl(_corr.spatial_correlation_sample_backward, _SAMPLER_KEYS),
    _pair_grads_fake)
_correlation_op = _define(f"correlation(Tensor input1, Tensor input2, {_CORRELATION_SCHEMA}) -> Tensor",
                          _keyword_impl(_corr.correlation, _CORRELATION_KEYS), _correlation_fake)
_correlation_backward_op = _define(
    f"correlation_backward(Tensor grad_out, Tensor input1, Tensor input2, {_CORRELATION_SCHEMA}) -> (Tensor, Tensor)",
    _keyword_impl(_corr.correlation_backward, _CORRELATION_KEYS), _pair_grads_fake)


def _save_inputs_and_params(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])
    ctx.params = inputs[2:]


def _pair_grad(backward_op, n_params):
    def grad(ctx, grad_out):
        input1, input2 = ctx.saved_tensors
        grad1, grad2 = backward_op(grad_out, input1, input2, *ctx.params)
        return (grad1, grad2) + (None,) * n_params
    return grad


torch.library.register_autograd("gpuops::spatial_correlation_sample", _pair_grad(_sampler_backward_op, 6),
                                setup_context=_save_inputs_and_params, lib=_LIB)
torch.library.register_autograd("gpuops::correlation", _pair_grad(_correlation_backward_op, 5),
                                setup_context=_save_inputs_and_params, lib=_LIB)


def _pairs(*values):
    return [list(_core.pair(k, v, minimum=0)) for k, v in zip(_SAMPLER_KEYS, values)]


def spatial_correlation_sample(input1, input2, *, kernel_size=1, patch_size=1, stride=1, padding=0, dilation=1,
                               dilation_patch=1):
    """`gpuops.spatial_correlation_sample` as a differentiable PyTorch op.

    input1, input2: (N, C, H, W) -> (N, pH, pW, oH, oW) raw sums (FlowNetC correlation, spec/ops.md §7).
    """
    return _sampler_op(input1, input2, *_pairs(kernel_size, patch_size, stride, padding, dilation, dilation_patch))


def correlation(input1, input2, *, pad_size=0, kernel_size=1, max_displacement=0, stride1=1, stride2=1):
    """`gpuops.correlation` as a differentiable PyTorch op: (N, C, H, W) × 2 -> (N, D², Ho, Wo), Caffe/FlowNet
    semantics (divided by k²·C, y-displacement-major), spec/ops.md §8."""
    return _correlation_op(input1, input2, *[_core.integer(k, v) for k, v in zip(
        _CORRELATION_KEYS, (pad_size, kernel_size, max_displacement, stride1, stride2))])


class SpatialCorrelationSampler(nn.Module):
    """Module form of `spatial_correlation_sample`; called as ``m(input1, input2)``."""

    def __init__(self, kernel_size=1, patch_size=1, stride=1, padding=0, dilation=1, dilation_patch=1):
        super().__init__()
        self.params = dict(kernel_size=kernel_size, patch_size=patch_size, stride=stride, padding=padding,
                           dilation=dilation, dilation_patch=dilation_patch)

    def forward(self, input1, input2):
        return spatial_correlation_sample(input1, input2, **self.params)

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


class Correlation(nn.Module):
    """Module form of `correlation` (FlowNet/Caffe correlation layer); called as ``m(input1, input2)``."""

    def __init__(self, pad_size=0, kernel_size=1, max_displacement=0, stride1=1, stride2=1):
        super().__init__()
        self.params = dict(pad_size=pad_size, kernel_size=kernel_size, max_displacement=max_displacement,
                           stride1=stride1, stride2=stride2)

    def forward(self, input1, input2):
        return correlation(input1, input2, **self.params)

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


# ---------------------------------------------------------------------------------------------
# conv2d_depthwise

_WINDOW = "int[2] stride, int[2] padding, int[2] dilation"


def _conv_impl(x, weight, bias, stride, padding, dilation):
    return conv.conv2d_depthwise(x, weight, bias, stride=stride, padding=padding, dilation=dilation)


def _conv_fake(x, weight, bias, stride, padding, dilation):
    _, _, _, dims = conv._check_depthwise(x, weight, bias, stride, padding, dilation)
    N, _, _, _, Cm, _, _, Ho, Wo = dims[:9]
    return _fake_like(x, (N, Cm, Ho, Wo))


def _conv_backward_impl(grad_out, x, weight, bias, stride, padding, dilation):
    grad_x, grad_w, grad_b = conv.conv2d_depthwise_backward(grad_out, x, weight, bias, stride=stride,
                                                            padding=padding, dilation=dilation)
    return grad_x, grad_w, grad_b if grad_b is not None else weight.new_zeros((0,))


def _conv_backward_fake(grad_out, x, weight, bias, stride, padding, dilation):
    return _fake_like(x), _fake_like(weight), _fake_like(bias) if bias is not None else weight.new_empty((0,))


_conv_op = _define(f"conv2d_depthwise(Tensor x, Tensor weight, Tensor? bias, {_WINDOW}) -> Tensor",
                   _conv_impl, _conv_fake)
_conv_backward_op = _define(
    f"conv2d_depthwise_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor? bias, {_WINDOW})"
    " -> (Tensor, Tensor, Tensor)", _conv_backward_impl, _conv_backward_fake)


def _conv_setup(ctx, inputs, output):
    x, weight, bias = inputs[:3]
    ctx.save_for_backward(x, weight, bias)
    ctx.window = inputs[3:]


def _conv_grad(ctx, grad):
    x, weight, bias = ctx.saved_tensors
    grad_x, grad_w, grad_b = _conv_backward_op(grad, x, weight, bias, *ctx.window)
    return grad_x, grad_w, grad_b if bias is not None else None, None, None, None


torch.library.register_autograd("gpuops::conv2d_depthwise", _conv_grad, setup_context=_conv_setup, lib=_LIB)


def _window(stride, padding, dilation):
    return ([*_core.pair("stride", stride, minimum=1)], [*_core.pair("padding", padding)],
            [*_core.pair("dilation", dilation, minimum=1)])


def conv2d_depthwise(x, weight, bias=None, *, stride=1, padding=0, dilation=1):
    """`gpuops.conv2d_depthwise` as a differentiable PyTorch op: x (N, C, H, W), weight (C·m, 1, kh, kw),
    bias (C·m,) or None -> (N, C·m, Ho, Wo); exactly ``F.conv2d(..., groups=C)``."""
    if _direct(x, weight, bias):
        return conv.conv2d_depthwise(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    return _conv_op(x, weight, bias, *_window(stride, padding, dilation))


class Conv2dDepthwise(nn.Module):
    """Depthwise convolution layer (``nn.Conv2d(C, C·m, k, groups=C)`` semantics, initialised like it).

    weight: (C·m, 1, kh, kw); bias: (C·m,) when ``bias=True``.
    """

    def __init__(self, in_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True, depth_multiplier=1):
        super().__init__()
        self.in_channels = _core.integer("in_channels", in_channels, minimum=1)
        self.depth_multiplier = _core.integer("depth_multiplier", depth_multiplier, minimum=1)
        self.kernel_size = _core.pair("kernel_size", kernel_size, minimum=1)
        self.stride, self.padding, self.dilation = _window(stride, padding, dilation)
        out_channels = self.in_channels * self.depth_multiplier
        self.weight = nn.Parameter(torch.empty(out_channels, 1, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # nn.Conv2d's initialisation: kaiming_uniform(a=√5) weights, bias U(±1/√fan_in)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.kernel_size[0] * self.kernel_size[1])
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return conv2d_depthwise(x, self.weight, self.bias, stride=self.stride, padding=self.padding,
                                dilation=self.dilation)

    def extra_repr(self):
        return (f"{self.in_channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, bias={self.bias is not None}, depth_multiplier={self.depth_multiplier}")


# ---------------------------------------------------------------------------------------------
# im2col / col2im (linear maps; each one's gradient is the other)


def _im2col_fake(x, kernel_size, stride, padding, dilation):
    _core.floating("x", x)
    return _fake_like(x, conv.im2col_shape(tuple(x.shape), kernel_size, stride=stride, padding=padding,
                                           dilation=dilation))


def _col2im_fake(cols, kernel_size, stride, padding, dilation, input_size):
    _core.floating("cols", cols)
    return _fake_like(cols, conv.col2im_shape(tuple(cols.shape), kernel_size, stride=stride, padding=padding,
                                              dilation=dilation, input_size=input_size))


def _im2col_impl(x, kernel_size, stride, padding, dilation):
    return conv.im2col(x, kernel_size, stride=stride, padding=padding, dilation=dilation)


def _col2im_impl(cols, kernel_size, stride, padding, dilation, input_size):
    return conv.col2im(cols, kernel_size, stride=stride, padding=padding, dilation=dilation, input_size=input_size)


_im2col_op = _define(f"im2col(Tensor x, int[2] kernel_size, {_WINDOW}) -> Tensor", _im2col_impl, _im2col_fake)
_col2im_op = _define(f"col2im(Tensor cols, int[2] kernel_size, {_WINDOW}, int[]? input_size) -> Tensor",
                     _col2im_impl, _col2im_fake)


def _im2col_setup(ctx, inputs, output):
    ctx.params = inputs[1:]
    ctx.input_size = list(inputs[0].shape[-2:])


def _col2im_setup(ctx, inputs, output):
    ctx.params = inputs[1:5]


torch.library.register_autograd(
    "gpuops::im2col", lambda ctx, g: (_col2im_op(g, *ctx.params, ctx.input_size), None, None, None, None),
    setup_context=_im2col_setup, lib=_LIB)
torch.library.register_autograd(
    "gpuops::col2im", lambda ctx, g: (_im2col_op(g, *ctx.params), None, None, None, None, None),
    setup_context=_col2im_setup, lib=_LIB)


def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1):
    """`gpuops.im2col` as a differentiable PyTorch op: (N, C, H, W) -> (N, C, kh, kw, Ho, Wo) (or without N)."""
    return _im2col_op(x, [*_core.pair("kernel_size", kernel_size, minimum=1)], *_window(stride, padding, dilation))


def col2im(cols, kernel_size, *, stride=1, padding=0, dilation=1, input_size=None):
    """`gpuops.col2im` as a differentiable PyTorch op: the adjoint of `im2col` (sums overlapping entries)."""
    size = None if input_size is None else [*_core.pair("input_size", input_size, minimum=1)]
    return _col2im_op(cols, [*_core.pair("kernel_size", kernel_size, minimum=1)], *_window(stride, padding, dilation),
                      size)


# ---------------------------------------------------------------------------------------------
# dgmm / cdgmm


def _diag_ops(name, forward, backward):
    def fake(a, x, side):
        return _fake_like(a)

    def backward_fake(grad_out, a, x, side):
        return _fake_like(a), _fake_like(x)

    op = _define(f"{name}(Tensor a, Tensor x, str side) -> Tensor", lambda a, x, side: forward(a, x, side=side), fake)
    backward_op = _define(f"{name}_backward(Tensor grad_out, Tensor a, Tensor x, str side) -> (Tensor, Tensor)",
                          lambda g, a, x, side: backward(g, a, x, side=side), backward_fake)

    def setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])
        ctx.side = inputs[2]

    def grad(ctx, g):
        a, x = ctx.saved_tensors
        return (*backward_op(g, a, x, ctx.side), None)

    torch.library.register_autograd(f"gpuops::{name}", grad, setup_context=setup, lib=_LIB)
    return op, backward_op


_dgmm_op, _dgmm_backward_op = _diag_ops("dgmm", diag.dgmm, diag.dgmm_backward)
_cdgmm_op, _cdgmm_backward_op = _diag_ops("cdgmm", diag.cdgmm, diag.cdgmm_backward)


def dgmm(a, x, *, side="auto"):
    """`gpuops.dgmm` as a differentiable PyTorch op: ``a @ diag(x)`` (side right) or ``diag(x) @ a`` (left)."""
    return _dgmm_op(a, x, side)


def cdgmm(a, x, *, side="auto"):
    """`gpuops.cdgmm` as a differentiable PyTorch op: complex diagonal multiply, real pairs (M, K, 2) or
    complex64/complex128 (M, K); gradients follow PyTorch's complex convention (grad_a = g·conj(x))."""
    return _cdgmm_op(a, x, side)


__all__ = ["gsmelu", "gsmelu_backward", "GSmeLU", "ncrelu", "ncrelu_backward", "NCReLU",
           "spatial_correlation_sample", "correlation", "SpatialCorrelationSampler", "Correlation",
           "conv2d_depthwise", "Conv2dDepthwise", "im2col", "col2im", "dgmm", "cdgmm"]
