"""PyTorch ops and modules over the gpuops core (exposed as ``gpuops.torch``), generated from the op
declarations (`gpuops._ops.REGISTRY`).

For each declared op ``name`` this registers ``torch.ops.gpuops.<name>`` (one implementation for CPU and
CUDA: the core function), its fake (the declaration's shape function, so FakeTensor tracing and
torch.compile see the core's own errors) and its autograd, whose backward is the registered
``<name>_backward`` op (or, for linear ops, the adjoint op itself).  A ``<name>_backward`` op has no
gradient of its own: differentiating it again raises instead of returning a silently wrong zero.
Ops are defined with ``Library.define``/``impl`` rather than ``torch.library.custom_op``: the same
registrations and ``opcheck`` guarantees, with about half the per-call dispatcher cost.

The adapter holds no math: every formula is in gpuops/<family>.py and its kernels.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gpuops import _core, _ops

_LIB = torch.library.Library("gpuops", "DEF")
_PLAIN = (torch.Tensor, nn.Parameter)      # subclasses (FakeTensor, tensor subclasses) take the registered op

_is_compiling = torch.compiler.is_compiling
_is_tracing = torch._C._is_tracing
_functorch_active = torch._C._are_functorch_transforms_active
_grad_enabled = torch.is_grad_enabled
_any_autocast = torch._C._is_any_autocast_enabled


_DISPATCH, _DIRECT, _EAGER_AUTOGRAD = 0, 1, 2


def _eager_path(arrays) -> int:
    """How a call of plain tensors may skip the dispatcher: `_DIRECT` (run the core: nothing to record),
    `_EAGER_AUTOGRAD` (a torch.autograd.Function around the core: eager autograd only records), or
    `_DISPATCH` (the registered op: torch.jit.trace, torch.compile, torch.func transforms, tensor
    subclasses, sequence arguments)."""
    if _is_compiling() or _is_tracing() or _functorch_active():
        return _DISPATCH
    grad = _grad_enabled()
    path = _DIRECT
    for t in arrays:
        if t is None:
            continue
        if type(t) in (list, tuple):            # a sequence argument
            if _eager_path(t) != _DIRECT:
                return _DISPATCH
        elif type(t) not in _PLAIN:
            return _DISPATCH
        elif grad and t.requires_grad:
            path = _EAGER_AUTOGRAD
    return path


def _meta(name, t):
    return _core.meta(name, t.shape, t.dtype)


def _metas(spec, tensors):
    """Shape-only `gpuops._core.Arr` of each array argument (a tuple of them for a sequence argument)."""
    return [None if t is None else tuple(_meta(f"{name}[{i}]", e) for i, e in enumerate(t)) if seq else _meta(name, t)
            for name, seq, t in zip(spec.array_names, spec.sequence, tensors)]


def _schema_args(spec) -> str:
    arrays = [f"Tensor{'[]' if seq else '?' if optional else ''} {name}"
              for name, optional, seq in zip(spec.array_names, spec.optional, spec.sequence)]
    return ", ".join(arrays + [f"{p.torch_type} {p.name}" for p in spec.params])


def _define(schema: str, impl, fake):
    name = schema.split("(", 1)[0]
    _LIB.define(schema)
    _LIB.impl(name, impl, "CPU")
    _LIB.impl(name, impl, "CUDA")
    torch.library.register_fake(f"gpuops::{name}", fake, lib=_LIB)
    return getattr(torch.ops.gpuops, name).default


def _no_context(ctx, inputs, output):
    pass


def _autocast_eligible(a) -> bool:
    """A tensor that ``torch.autocast`` casts: floating, but not float64, which autocast leaves alone."""
    return isinstance(a, torch.Tensor) and a.is_floating_point() and a.dtype != torch.float64


def _register_autocast(op, name, device_type):
    """PyTorch's convolution policy for ``op``: inside ``torch.autocast(device_type)`` its floating tensor
    inputs are cast to the autocast dtype of that region (bfloat16 or float16, whichever it is; the
    library's ``register_autocast`` would fix one dtype at registration)."""
    key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    keyset = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def cast(a, dtype):
        if _autocast_eligible(a) and a.device.type == device_type:
            return a.to(dtype)
        if isinstance(a, (list, tuple)):
            return type(a)(cast(e, dtype) for e in a)
        return a

    @op.py_impl(getattr(torch._C.DispatchKey, key))         # what torch.compile traces
    def autocast_impl(*args):
        dtype = torch.get_autocast_dtype(device_type)
        with torch._C._ExcludeDispatchKeyGuard(keyset):
            return op(*(cast(a, dtype) for a in args))

    _LIB.impl(name, lambda _keyset, *args: autocast_impl(*args), key, with_keyset=True)


def _any_tensor(arrays):
    for a in arrays:
        if isinstance(a, (list, tuple)):
            if a:
                return a[0]
        elif a is not None:
            return a
    raise ValueError("an op needs at least one array argument")


class _Op:
    """The registered operators of one declaration."""

    def __init__(self, spec):
        self.spec, n = spec, len(spec.arrays)
        self.n_arrays, self.param_names = n, tuple(p.name for p in spec.params)

        def impl(*args):
            out = spec.forward(*args[:n], **dict(zip(self.param_names, args[n:])))
            return list(out) if spec.multi_output else out

        def fake(*args):
            shape = spec.output_shape(_metas(spec, args[:n]), dict(zip(self.param_names, args[n:])))
            like = _any_tensor(args[:n])
            if spec.multi_output:
                return [like.new_empty(s) for s in shape]
            if spec.channels_last is not None and spec.channels_last(*args[:n]):
                return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=torch.channels_last)
            return like.new_empty(shape)

        returns = "Tensor[]" if spec.multi_output else "Tensor"
        self.forward = _define(f"{spec.name}({_schema_args(spec)}) -> {returns}", impl, fake)
        if spec.autocast:
            for device_type in ("cpu", "cuda"):
                _register_autocast(self.forward, spec.name, device_type)
        self.backward = None if spec.backward is None else self._define_backward()
        torch.library.register_autograd(f"gpuops::{spec.name}", self._grad, setup_context=self._setup, lib=_LIB)
        self.eager = self._eager_function()

    def _eager_function(self):
        """The same forward, context and backward as the registered op's autograd, as a plain
        torch.autograd.Function: in eager mode it records the call without a trip through the dispatcher
        (about half of a small call's host time).  Ops with sequence arguments or several outputs keep
        the registered path."""
        op, spec = self, self.spec
        if spec.multi_output or any(spec.sequence):
            return None

        # the forward takes ctx itself (no separate setup_context): Function.apply would otherwise bind the
        # arguments to forward's signature with inspect on every call, about a fifth of a small call's host time
        def forward(ctx, *inputs):
            output = spec.forward(*inputs[:op.n_arrays], **dict(zip(op.param_names, inputs[op.n_arrays:])))
            op._setup(ctx, inputs, output)
            return output

        def backward(ctx, grad):
            return op._grad(ctx, grad, core=not torch.is_grad_enabled())

        # built with type(): autograd names the grad_fn class (``<op>_eagerBackward``) at class creation
        eager = type(f"{spec.name}_eager", (torch.autograd.Function,), dict(
            forward=staticmethod(forward), backward=staticmethod(backward)))
        return eager.apply

    def _define_backward(self):
        spec, n, name = self.spec, self.n_arrays, f"{self.spec.name}_backward"

        def placeholder(like):
            # an absent optional array has no gradient; the schema returns an empty tensor in its place
            return like.new_empty((0,))

        def impl(grad_out, *args):
            grads = spec.backward(tuple(grad_out) if spec.multi_output else grad_out, *args[:n],
                                  **dict(zip(self.param_names, args[n:])))
            grads = grads if n > 1 else (grads,)
            like = _any_tensor(args[:n])
            grads = tuple(list(g) if seq else placeholder(like) if g is None else g
                          for g, seq in zip(grads, spec.sequence))
            return grads if n > 1 else grads[0]

        def fake(grad_out, *args):
            like = _any_tensor(args[:n])
            grads = tuple([e.new_empty(e.shape) for e in a] if seq else placeholder(like) if a is None
                          else a.new_empty(a.shape) for a, seq in zip(args[:n], spec.sequence))
            if spec.channels_last is not None and spec.channels_last(*args[:n]):
                grads = (torch.empty_like(args[0], memory_format=torch.channels_last),) + grads[1:]
            return grads if n > 1 else grads[0]

        kinds = ["Tensor[]" if seq else "Tensor" for seq in spec.sequence]
        returns = kinds[0] if n == 1 else "(" + ", ".join(kinds) + ")"
        grad_type = "Tensor[]" if spec.multi_output else "Tensor"
        op = _define(f"{name}({grad_type} grad_out, {_schema_args(spec)}) -> {returns}", impl, fake)

        def no_double_backward(ctx, *grads):
            raise RuntimeError(f"gpuops.torch.{spec.name}: double backward (the gradient of its gradient, e.g. "
                               f"autograd.grad(..., create_graph=True) followed by another backward) is not "
                               f"supported; gpuops::{name} has no derivative")

        torch.library.register_autograd(f"gpuops::{name}", no_double_backward, setup_context=_no_context,
                                        lib=_LIB)
        return op

    def _setup(self, ctx, inputs, output):
        n = self.n_arrays
        arrays = inputs[:n]
        ctx.params = inputs[n:]
        ctx.absent = tuple(a is None for a in arrays)
        if self.spec.multi_output:
            ctx.outputs = [(o.shape, o.dtype, o.device) for o in output]
        if self.backward is None:
            ctx.metas = _metas(self.spec, arrays)
            return
        # save_for_backward takes tensors, not lists: sequence arguments are saved flat with their lengths
        ctx.lengths = [len(a) if seq else None for a, seq in zip(arrays, self.spec.sequence)]
        ctx.save_for_backward(*(t for a, seq in zip(arrays, self.spec.sequence) for t in (a if seq else (a,))))

    def _saved_arrays(self, ctx):
        saved, arrays = iter(ctx.saved_tensors), []
        for length in ctx.lengths:
            arrays.append(next(saved) if length is None else [next(saved) for _ in range(length)])
        return arrays

    def _grad(self, ctx, grad, core=False):
        """The gradients of the registered op's inputs (None for absent arrays and parameters).  ``core``:
        call the core backward itself (eager backward without create_graph: nothing to record, so no
        dispatcher trip; with create_graph the registered backward op runs, and it refuses double backward)."""
        spec, n = self.spec, self.n_arrays
        if spec.multi_output:       # outputs that did not reach the loss get no gradient: zeros
            grad = [torch.zeros(shape, dtype=dtype, device=device) if g is None else g
                    for g, (shape, dtype, device) in zip(grad, ctx.outputs)]
        if self.backward is None:
            other, params_of = spec.adjoint
            adjoint = _OPS[other]
            params = params_of(ctx.metas, dict(zip(self.param_names, ctx.params)))
            grads = (adjoint.forward(grad, *(params[name] for name in adjoint.param_names)),)
        elif core:
            grads = spec.backward(grad, *self._saved_arrays(ctx), **dict(zip(self.param_names, ctx.params)))
            grads = grads if n > 1 else (grads,)
        else:
            grads = self.backward(grad, *self._saved_arrays(ctx), *ctx.params)
            grads = grads if n > 1 else (grads,)
        return (*(None if absent else g for g, absent in zip(grads, ctx.absent)), *(None,) * len(ctx.params))

    def __call__(self, arrays, params, eager=False):
        """The registered op on bound arguments (`gpuops._ops.OpSpec.bind`), or with ``eager`` its
        `_eager_function` (the caller checks that it exists)."""
        arrays = tuple(list(a) if seq else a for a, seq in zip(arrays, self.spec.sequence))
        arrays += (None,) * (self.n_arrays - len(arrays))
        out = (self.eager if eager else self.forward)(*arrays, *(params[name] for name in self.param_names))
        return tuple(out) if self.spec.multi_output else out


def _autocast_to(a):
    """``a`` as PyTorch's convolution policy leaves it inside ``torch.autocast``: an `_autocast_eligible`
    tensor on a device whose autocast is on becomes that region's autocast dtype (differentiably); anything
    else is unchanged."""
    if type(a) in (list, tuple):
        return type(a)(_autocast_to(e) for e in a)
    if _autocast_eligible(a):
        device = a.device.type
        if torch.is_autocast_enabled(device):
            return a.to(torch.get_autocast_dtype(device))
    return a


def _function(spec, op: _Op):
    """``gpuops.torch.<name>``: the public signature of the core function, without ``out`` and ``stream``."""
    forward, bind, n = spec.forward, spec.bind, len(spec.arrays)
    autocast, array_names, array_set = spec.autocast, spec.array_names, frozenset(spec.array_names)

    def call(*args, **kwargs):
        if kwargs and len(args) < n and not array_set.isdisjoint(kwargs):
            # arrays given by keyword take their places, so that every path (and autograd) sees them
            kwargs = dict(kwargs)
            for i in range(len(args), n):
                if array_names[i] not in kwargs and i < spec.required:
                    raise TypeError(f"{spec.name}() missing required argument {array_names[i]!r}")
                args += (kwargs.pop(array_names[i], None),)
        if spec.direct and "out" not in kwargs and "stream" not in kwargs and "variant" not in kwargs:
            path = _eager_path(args[:n])
            if path != _DISPATCH and autocast and _any_autocast():
                # the casts of the Autocast kernel (`_register_autocast`), here, so that the eager path applies
                args = tuple(_autocast_to(a) if i < n else a for i, a in enumerate(args))
            if path == _DIRECT:
                return forward(*args, **kwargs)       # the core checks and binds exactly as `bind` does
            if path == _EAGER_AUTOGRAD and op.eager is not None:
                return op(*bind(args, kwargs, True), eager=True)
        arrays, params = bind(args, kwargs, not _is_compiling())
        return op(arrays, params)

    call.__name__ = call.__qualname__ = spec.name
    call.__doc__ = (f"`gpuops.{spec.name}` as a differentiable PyTorch op (CPU or CUDA tensors; autograd, "
                    f"torch.compile, torch.jit.trace).\n\n" + (forward.__doc__ or ""))
    return call


def _backward_function(spec, op: _Op):
    def call(grad_out, *args, **kwargs):
        arrays, params = spec.bind(args, kwargs)
        arrays = tuple(list(a) if seq else a for a, seq in zip(arrays, spec.sequence))
        arrays += (None,) * (op.n_arrays - len(arrays))
        grads = op.backward(list(grad_out) if spec.multi_output else grad_out, *arrays,
                            *(params[name] for name in op.param_names))
        if op.n_arrays == 1:
            return tuple(grads) if spec.sequence[0] else grads
        return tuple(tuple(g) if seq else None if a is None else g for g, a, seq in zip(grads, arrays, spec.sequence))

    call.__name__ = call.__qualname__ = f"{spec.name}_backward"
    call.__doc__ = f"`gpuops.{spec.name}_backward` as a PyTorch op.\n\n" + (spec.backward.__doc__ or "")
    return call


_OPS: dict = {}
_FUNCTIONS: dict = {}


def register(spec):
    """Register a declared op (`gpuops._ops.OpSpec`) with torch and return ``gpuops.torch.<name>``: done at
    import for every op of gpuops; ops declared later (outside gpuops) register themselves through it."""
    op = _OPS[spec.name] = _Op(spec)
    _FUNCTIONS[spec.name] = globals()[spec.name] = _function(spec, op)
    if op.backward is not None:
        _FUNCTIONS[f"{spec.name}_backward"] = globals()[f"{spec.name}_backward"] = _backward_function(spec, op)
    return _FUNCTIONS[spec.name]


for _spec in _ops.ops().values():
    register(_spec)


# ---------------------------------------------------------------------------------------------
# modules (each a thin holder of parameters around a generated function)


class GSmeLU(nn.Module):
    """Module form of `gsmelu`; parameters are fixed floats (``y = g₋x + Δt + (g₊ − g₋)h(x)``)."""

    def __init__(self, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1, delta_t=0.0):
        super().__init__()
        self.params = _checked("gsmelu", slope=slope, neg_slope=neg_slope, alpha=alpha, beta=beta, delta_t=delta_t)

    def forward(self, x):
        return gsmelu(x, **self.params)  # noqa: F821  (generated above)

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


def _checked(name, **params):
    """Parameters normalised and checked once, at construction, as the op would check them."""
    return _ops.REGISTRY[name].checked_params(**params)


class NCReLU(nn.Module):
    """Module form of `ncrelu`: concatenates relu(x) and min(x, 0) along channels."""

    def forward(self, x):
        return ncrelu(x)  # noqa: F821


class SpatialCorrelationSampler(nn.Module):
    """Module form of `spatial_correlation_sample`; called as ``m(input1, input2)``."""

    def __init__(self, kernel_size=1, patch_size=1, stride=1, padding=0, dilation=1, dilation_patch=1):
        super().__init__()
        self.params = _checked("spatial_correlation_sample", kernel_size=kernel_size, patch_size=patch_size,
                               stride=stride, padding=padding, dilation=dilation, dilation_patch=dilation_patch)

    def forward(self, input1, input2):
        return spatial_correlation_sample(input1, input2, **self.params)  # noqa: F821

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


class Correlation(nn.Module):
    """Module form of `correlation` (FlowNet/Caffe correlation layer); called as ``m(input1, input2)``."""

    def __init__(self, pad_size=0, kernel_size=1, max_displacement=0, stride1=1, stride2=1):
        super().__init__()
        self.params = _checked("correlation", pad_size=pad_size, kernel_size=kernel_size,
                               max_displacement=max_displacement, stride1=stride1, stride2=stride2)

    def forward(self, input1, input2):
        return correlation(input1, input2, **self.params)  # noqa: F821

    def extra_repr(self):
        return ", ".join(f"{k}={v}" for k, v in self.params.items())


class Conv2dDepthwise(nn.Module):
    """Depthwise convolution layer (``nn.Conv2d(C, C·m, k, groups=C)`` semantics, initialised like it).

    weight: (C·m, 1, kh, kw); bias: (C·m,) when ``bias=True``.
    """

    def __init__(self, in_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True, depth_multiplier=1):
        super().__init__()
        self.in_channels = _core.integer("in_channels", in_channels, minimum=1)
        self.depth_multiplier = _core.integer("depth_multiplier", depth_multiplier, minimum=1)
        self.kernel_size = _core.pair("kernel_size", kernel_size, minimum=1)
        window = _checked("conv2d_depthwise", stride=stride, padding=padding, dilation=dilation)
        self.stride, self.padding, self.dilation = window["stride"], window["padding"], window["dilation"]
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
        return conv2d_depthwise(x, self.weight, self.bias, stride=self.stride,  # noqa: F821
                                padding=self.padding, dilation=self.dilation)

    def extra_repr(self):
        return (f"{self.in_channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, bias={self.bias is not None}, depth_multiplier={self.depth_multiplier}")


def swap_depthwise(model: nn.Module) -> nn.Module:
    """Replace, in place, every depthwise ``nn.Conv2d`` of ``model`` (groups == in_channels, out_channels a
    multiple of it, zero padding) by a `Conv2dDepthwise` holding the same weight and bias Parameters (the
    same objects: optimisers and state dicts keep working); returns ``model``.  Other layers are left as
    they are; ``padding="same"`` is resolved to the equivalent symmetric padding where one exists."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Conv2d) and _is_depthwise(child):
            model._modules[name] = _depthwise_from(child)
        else:
            swap_depthwise(child)
    return model


def _is_depthwise(conv) -> bool:
    padding = conv.padding
    if isinstance(padding, str):
        if padding != "valid" and any(d * (k - 1) % 2 for k, d in zip(conv.kernel_size, conv.dilation)):
            return False                # "same" with an even window pads one side only
    return (conv.groups == conv.in_channels and conv.out_channels % conv.in_channels == 0
            and conv.padding_mode == "zeros")


def _depthwise_from(conv):
    padding = conv.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        padding = tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))
    layer = Conv2dDepthwise(conv.in_channels, conv.kernel_size, stride=conv.stride, padding=padding,
                            dilation=conv.dilation, bias=conv.bias is not None,
                            depth_multiplier=conv.out_channels // conv.in_channels)
    layer.weight = conv.weight
    if conv.bias is not None:
        layer.bias = conv.bias
    return layer.to(conv.weight.device)


__all__ = [*_FUNCTIONS, "register", "swap_depthwise", "GSmeLU", "NCReLU", "SpatialCorrelationSampler", "Correlation", "Conv2dDepthwise"]
