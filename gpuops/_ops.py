"""The op declaration: one `OpSpec` per op, the single source of every layer's wiring.

A family module (gpuops/<family>.py) writes its kernels' host side as plain core functions (numpy,
torch, CuPy, …) and then declares each op once::

    GSMELU = declare(OpSpec(name="gsmelu", forward=gsmelu, backward=gsmelu_backward, arrays=("x",),
                            params=(Param("slope", "float", 1.0), ...), shapes=_gsmelu_shapes,
                            vmap="elementwise", example=..., reference=reference.gsmelu, ...))

From the declaration, and nothing else, come the ``torch.library`` operators with their fakes and
autograd (gpuops/adapters/torch.py), the ``gpuops.torch`` and ``gpuops.jax`` functions, the rows of
``python -m gpuops`` and the contract-test battery (tests/adapters/test_op_battery.py).

Nothing here imports numba, torch or JAX.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Callable

from gpuops import _core

#: the largest output an op may declare, in elements: the shape-only paths (torch fakes, JAX tracing)
#: must refuse what no allocator could hold before XLA or torch try (and abort)
MAX_OUTPUT_ELEMENTS = 2 ** 48


@dataclasses.dataclass(frozen=True)
class Param:
    """A static (non-array) parameter.

    kind: "float", "int", "bool", "pair" (an int or (h, w)), "pair?" (a pair or None) or "str".
    ``minimum`` bounds ints and pairs.  `normalize` gives the canonical value (pairs as tuples), with
    the core's own error messages.
    """

    name: str
    kind: str
    default: object = None
    minimum: int = 0
    positional: bool = False        # may also be passed by position, after the arrays (im2col's kernel_size)

    def normalize(self, value):
        if self.kind == "float":
            return _core.real(self.name, value)
        if self.kind == "int":
            return _core.integer(self.name, value, minimum=self.minimum)
        if self.kind == "bool":
            return _core.flag(self.name, value)
        if self.kind == "pair" or self.kind == "pair?" and value is not None:
            return _core.pair(self.name, value, minimum=self.minimum)
        if self.kind == "pair?":
            return None
        if self.kind == "str":
            if not isinstance(value, str):
                raise TypeError(f"{self.name} must be a str, got {type(value).__name__}")
            return value
        raise AssertionError(self.kind)

    @property
    def torch_type(self) -> str:
        return {"float": "float", "int": "int", "bool": "bool", "pair": "int[2]", "pair?": "int[]?",
                "str": "str"}[self.kind]


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """Everything the adapters, the demo and the contract tests need to know about one op.

    name:       the public name (``gpuops.<name>``, ``gpuops.torch.<name>``, ``gpuops.jax.<name>``,
                ``torch.ops.gpuops.<name>``).
    forward:    the core function ``forward(*arrays, *, **params, out=None, stream=None)``; with
                ``multi_output`` it returns a tuple of arrays (and takes a tuple ``out``).
    backward:   the core gradient ``backward(grad_out, *arrays, **params, out=, stream=)``: one gradient
                array for a one-array op, else a tuple with one entry per declared array (None for an
                absent optional array, a tuple for a sequence argument); ``out`` likewise; ``grad_out``
                is a tuple with ``multi_output``.  None when ``adjoint`` says it instead.
    arrays:     names of the array arguments, in order; a trailing ``?`` marks an optional one (None), a
                trailing ``*`` a sequence of arrays (one argument: a tuple or list, e.g. a pyramid).
    multi_output: the op returns a tuple of arrays (its count may depend on the parameters).
    params:     the static parameters.
    shapes:     ``shapes(*arrays, **params) -> output shape`` (a list of shapes with ``multi_output``;
                a sequence argument arrives as a tuple): validates every argument with the core's
                messages and needs nothing but ``.shape``/``.dtype``: it receives `gpuops._core.Arr`
                objects, real ones from the core and shape-only ones (`gpuops._core.meta`) from torch
                fakes and JAX tracing, so all three raise the same errors.
    vmap:       how ``jax.vmap`` batches the op: "elementwise" (any leading axes pass through), "fold"
                (the op is independent per index of every array's and the output's first axis: a vmapped
                axis folds into it) or "sequential" (a loop).
    batch:      per declared array, whether its first axis is the batch axis: the op is independent per
                batch index, and every output's first axis is that batch axis too.  An array marked False
                (a weight) is read whole by every batch index; a sequence argument's flag covers each of
                its arrays.  None: the op cannot be split along a batch axis.  ``gpuops.jax`` runs a
                batch-sharded call per shard from it (docs/architecture.md, "Several devices").  Left
                out, it follows ``vmap``: every array batched for "elementwise" and "fold", None for
                "sequential".
    direct:     ``gpuops.torch`` may skip the dispatcher for plain tensors with nothing to record (no
                autograd, tracing or compiling): the registered op costs ≈20 µs of host time per call.
    adjoint:    for linear ops whose gradient is another declared op: ``(other op's name,
                params_of(arrays, params) -> the other op's params)``; the gradient is then that op
                itself, in both adapters (so it is differentiable again).
    example:    ``example(rng, batch) -> (arrays, params)``: small float64 numpy inputs (``batch`` = 0
                gives empty ones where the op allows it) for the demo and the contract battery.
    reference / reference_backward: ``gpuops.reference`` functions with the core's argument order.
    check_params: ``check_params(**params)`` raises for rules between parameters (gsmelu's α + β > 0), so
                modules can refuse them at construction.
    autocast:   under ``torch.autocast`` the floating array inputs are cast to the autocast dtype first, as
                PyTorch does for convolutions (set for the convolution-like ops); otherwise the op runs in
                its inputs' dtype, like PyTorch's elementwise ops.
    channels_last: ``channels_last(*arrays) -> bool``, for ops whose core stores a 4-D output channels-last
                for some inputs (conv2d_depthwise): True when, given these arrays (torch tensors, real or fake)
                and no ``out``, the output and the gradient of the first array are stored channels-last; the
                torch fakes then allocate them so (torch.compile checks the real strides against them).
    """

    name: str
    forward: Callable
    arrays: tuple
    shapes: Callable
    params: tuple = ()
    backward: Callable | None = None
    vmap: str = "sequential"
    batch: tuple | None | str = "from vmap"
    direct: bool = True
    adjoint: tuple | None = None
    example: Callable | None = None
    reference: Callable | None = None
    reference_backward: Callable | None = None
    check_params: Callable | None = None
    multi_output: bool = False
    autocast: bool = False
    channels_last: Callable | None = None

    # derived once from ``arrays`` (plain attributes: bind reads them on every call, and torch.compile
    # cannot trace into functools.cached_property's lock)
    array_names: tuple = dataclasses.field(init=False, repr=False)     # names without their ? or *
    optional: tuple = dataclasses.field(init=False, repr=False)        # per argument: may be None
    sequence: tuple = dataclasses.field(init=False, repr=False)        # per argument: a sequence of arrays
    required: int = dataclasses.field(init=False, repr=False)          # how many leading arrays must be given

    def __post_init__(self):
        derived = dict(array_names=tuple(a.rstrip("?*") for a in self.arrays),
                       optional=tuple(a.endswith("?") for a in self.arrays),
                       sequence=tuple(a.endswith("*") for a in self.arrays))
        derived["required"] = sum(1 for o in derived["optional"] if not o)
        if self.batch == "from vmap":
            derived["batch"] = None if self.vmap == "sequential" else (True,) * len(self.arrays)
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def bind(self, args, kwargs, memo=True):
        """``(arrays, params)`` of a call ``f(*args, **kwargs)`` with the op's public signature:
        arrays first (optional ones may be omitted or None), then positional parameters, the rest by
        keyword.  Params are normalised; trailing absent optional arrays are dropped.

        Parameters repeat from call to call: normalised ones are memoised per exact values and types
        (``True`` must not share an entry with ``1``), which keeps a call's host time low; ``memo=False``
        for tracers that must not see the memo (torch.compile would guard on it)."""
        n = len(self.arrays)
        arrays, extra = args[:n], args[n:]
        key = _memo_key(extra, kwargs) if memo else None
        params = None if key is None else _PARAMS.get((self.name, key))
        if params is None:
            params = self._bind_params(extra, kwargs)
            if key is not None:
                if len(_PARAMS) > 4096:         # parameters that vary without end must not grow it forever
                    _PARAMS.clear()
                _PARAMS[(self.name, key)] = params
        if len(arrays) < self.required:
            missing = self.array_names[len(arrays)]
            if missing in kwargs:
                raise TypeError(f"{self.name}() takes its arrays by position; got {missing!r} by keyword")
            raise TypeError(f"{self.name}() missing required argument {missing!r}")
        while arrays and arrays[-1] is None and self.optional[len(arrays) - 1]:
            arrays = arrays[:-1]
        return tuple(arrays), params

    def _bind_params(self, extra, kwargs) -> dict:
        positional = tuple(p.name for p in self.params if p.positional)
        if len(extra) > len(positional):
            raise TypeError(f"{self.name}() takes {len(self.arrays) + len(positional)} positional arguments but "
                            f"{len(self.arrays) + len(extra)} were given")
        values = dict(zip(positional, extra))
        for key, value in kwargs.items():
            if key in values:
                raise TypeError(f"{self.name}() got multiple values for argument {key!r}")
            values[key] = value
        params = {}
        for p in self.params:
            params[p.name] = p.normalize(values.pop(p.name, p.default))
        if values:
            raise TypeError(f"{self.name}() got an unexpected keyword argument {next(iter(values))!r}")
        return params

    def checked_params(self, **values) -> dict:
        """Every parameter normalised (defaults for those not given) and checked, without arrays: what a
        module validates at construction."""
        unknown = set(values) - {p.name for p in self.params}
        if unknown:
            raise TypeError(f"{self.name}() got an unexpected keyword argument {sorted(unknown)[0]!r}")
        params = {p.name: p.normalize(values.get(p.name, p.default)) for p in self.params}
        if self.check_params is not None:
            self.check_params(**params)
        return params

    def output_shape(self, arrays, params):
        """`shapes` of validated arguments (a list of shapes with ``multi_output``), refusing outputs no
        allocator could hold."""
        result = self.shapes(*arrays, **params)
        shapes = [tuple(int(s) for s in shape) for shape in (result if self.multi_output else (result,))]
        for shape in shapes:
            if math.prod(shape) > MAX_OUTPUT_ELEMENTS:
                raise ValueError(f"{self.name}: the output would have shape {list(shape)}, "
                                 f"{math.prod(shape):.3g} elements; check the parameters")
        return shapes if self.multi_output else shapes[0]


def guards_out(fn):
    """Decorate a core function so that an ``out=`` sharing memory with one of its array arguments raises
    (`gpuops._core.refuse_overlap`) instead of giving silently wrong numbers; free when ``out`` is None."""
    names = tuple(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def guarded(*args, out=None, **kwargs):
        if out is not None:
            _core.refuse_overlap(out, (*zip(names, args), *kwargs.items()))
        return fn(*args, out=out, **kwargs)
    return guarded


_PARAMS: dict = {}
_SCALARS = (int, float, str, type(None))


def _memo_key(extra, kwargs):
    """A key telling apart every parameter value and type (bools are never keyed), or None."""
    key = []
    for value in (*extra, *kwargs.values()):
        cls = value.__class__
        if cls is tuple:
            if not all(e.__class__ is int for e in value):
                return None
        elif cls not in _SCALARS:
            return None
        key.append((cls, value))
    return (len(extra), tuple(kwargs), tuple(key))


#: every declared op, in declaration order
REGISTRY: dict[str, OpSpec] = {}


def declare(spec: OpSpec) -> OpSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"op {spec.name!r} is declared twice")
    if (spec.backward is None) == (spec.adjoint is None):
        raise ValueError(f"op {spec.name!r} needs exactly one of backward and adjoint")
    if spec.vmap not in ("elementwise", "fold", "sequential"):
        raise ValueError(f"op {spec.name!r}: vmap must be 'elementwise', 'fold' or 'sequential'")
    if spec.batch is not None and (not isinstance(spec.batch, tuple) or len(spec.batch) != len(spec.arrays)
                                   or not all(isinstance(b, bool) for b in spec.batch) or not any(spec.batch)):
        raise ValueError(f"op {spec.name!r}: batch must be None or one bool per array, at least one True")
    if (spec.multi_output or any(spec.sequence)) and (spec.vmap != "sequential" or spec.adjoint is not None):
        raise ValueError(f"op {spec.name!r}: sequence arguments and several outputs need vmap='sequential' and "
                         f"a backward")
    REGISTRY[spec.name] = spec
    return spec


def ops() -> dict:
    """The registry, with every family module imported (each declares its ops at import)."""
    import gpuops  # noqa: F401  (imports every family module)
    return REGISTRY
