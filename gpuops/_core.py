"""The call path every op shares: array kinds, argument checks, output allocation, streams.

A core function (``gpuops.gsmelu`` …) takes the caller's arrays, wraps each one as an `Arr`
(`wrap`), validates it with the checks below (one wording for every op), allocates outputs of the
caller's kind (`empty`), then either runs the CPU mirror on numpy views (`cpu_views`) or launches a
CUDA kernel on the caller's stream (`stream_for`, `kernel_arg`, `gpuops._launch.Kernel.launch`): `run`.
Calls that repeat on arrays of one shape may take `launch` instead, which prepares the launch once per
shape, dtype and device and then only reads pointers, packs and launches (small elementwise calls).
`record` notes the prepared launches of one call as a `Replay`, which the JAX adapter re-issues on the
next call's buffers without running the core function again.

Array kinds: numpy; torch (CPU and CUDA, bfloat16 included); CuPy; numba device arrays and any other
``__cuda_array_interface__`` object; JAX ``buffer_callback`` buffers (the JAX adapter's); numba's
simulated device arrays under ``NUMBA_ENABLE_CUDASIM=1`` (the simulator test tier).
Nothing here imports torch, cupy, jax or numba at module import.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import threading

import numpy as np

from gpuops._dtypes import CPU_COMPUTE, FLOAT_DTYPES, STORAGE, dtype_name


from gpuops._grid import blocks_for  # noqa: E402,F401  (one definition, shared with the kernels)

CPU = -1


class Arr:
    """One array argument as the core sees it.  ``device`` is -1 on the host, else the CUDA ordinal."""

    # ``ptr``: the data pointer, read once per call by `data_ptr` (the word-alignment check and the launch
    # both need it; XLA buffers build a new interface dict per read)
    __slots__ = ("obj", "kind", "shape", "dtype", "device", "name", "size", "ptr")

    def __init__(self, obj, kind, shape, dtype, device, name, size=None):
        self.obj, self.kind, self.shape = obj, kind, tuple(shape)
        self.dtype, self.device, self.name = dtype, device, name
        self.size = math.prod(self.shape) if size is None else size
        self.ptr = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_cuda(self) -> bool:
        return self.device >= 0

    def __repr__(self):
        where = "cpu" if self.device < 0 else f"cuda:{self.device}"
        return f"Arr({self.name}: {self.kind.name} {self.dtype}{list(self.shape)} on {where})"


# ---------------------------------------------------------------------------------------------
# array kinds


class _Kind:
    """How the core handles one family of array objects."""

    name = "?"

    def wrap(self, obj, name) -> Arr: ...
    def contiguous(self, arr: Arr) -> Arr: ...
    def empty(self, arr: Arr, shape, dtype) -> Arr: ...
    def numpy(self, arr: Arr) -> np.ndarray:               # CPU data, zero-copy where possible
        raise TypeError(f"{arr.name}: {self.name} arrays have no host view")
    def write_back(self, arr: Arr, values: np.ndarray): # CPU outputs computed in a temporary
        self.numpy(arr)[...] = values
    def pointer(self, arr: Arr) -> tuple:               # (data pointer, byte strides) on a GPU
        raise TypeError(f"{arr.name}: {self.name} arrays are not on a GPU")
    def data_ptr(self, arr: Arr) -> int:                # just the pointer (callers use `data_ptr`)
        return self.pointer(arr)[0]
    def is_contiguous(self, arr: Arr) -> bool:          # C-contiguous, no overlap (outputs must be)
        return self.pointer(arr)[1] == _c_strides(arr.shape, STORAGE[arr.dtype][1])
    def stream(self, arr: Arr) -> int:                  # the caller's current stream
        return 0
    # channels-last memory (`nhwc`, `nchw`): an (N, C, H, W) array stored as a C-contiguous (N, H, W, C) one
    def nhwc_view(self, arr: Arr):                      # its (N, H, W, C) view where that is C-contiguous
        return None
    def nhwc_copy(self, arr: Arr) -> Arr:               # an (N, H, W, C) C-contiguous copy
        raise TypeError(f"{arr.name}: {self.name} arrays have no channels-last form here")
    def nchw_view(self, arr: Arr):                      # the (N, C, H, W) view of an (N, H, W, C) array
        raise TypeError(f"{arr.name}: {self.name} arrays have no channels-last form here")


_C_STRIDES: dict = {}


def _c_strides(shape, itemsize):
    key = (shape, itemsize)
    strides = _C_STRIDES.get(key)
    if strides is None:
        if len(_C_STRIDES) > 4096:          # shapes that vary without end must not grow it forever
            _C_STRIDES.clear()
        strides = _C_STRIDES[key] = _compute_c_strides(shape, itemsize)
    return strides


def _compute_c_strides(shape, itemsize):
    strides, step = [], itemsize
    for s in reversed(shape):
        strides.append(step)
        step *= max(s, 1)
    return tuple(reversed(strides))


def _np_dtype(name):
    if name == "bfloat16":
        import ml_dtypes
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class _Numpy(_Kind):
    name = "numpy"

    def wrap(self, obj, name):
        return Arr(obj, self, obj.shape, dtype_name(obj.dtype), CPU, name)

    def contiguous(self, arr):
        if arr.obj.flags.c_contiguous:
            return arr
        return self.wrap(np.ascontiguousarray(arr.obj), arr.name)

    def empty(self, arr, shape, dtype):
        return self.wrap(np.empty(shape, _np_dtype(dtype)), "out")

    def numpy(self, arr):
        return arr.obj

    def is_contiguous(self, arr):
        return arr.obj.flags.c_contiguous

    def nhwc_view(self, arr):
        view = arr.obj.transpose(0, 2, 3, 1)
        return self.wrap(view, arr.name) if view.flags.c_contiguous else None

    def nhwc_copy(self, arr):
        return self.wrap(np.ascontiguousarray(arr.obj.transpose(0, 2, 3, 1)), arr.name)

    def nchw_view(self, arr):
        return arr.obj.transpose(0, 3, 1, 2)


class _Torch(_Kind):
    name = "torch"

    def __init__(self):
        self._raw_stream = None
        self._dtypes = {}          # torch dtype <-> name, both ways (str() of a dtype costs ≈0.3 µs)

    def wrap(self, obj, name):
        device = obj.get_device()                  # -1 on the CPU; no torch.device object built
        if device < 0:
            if not obj.is_cpu:
                raise ValueError(f"{name} must be on a CPU or CUDA device, got a tensor on {obj.device}")
            device = CPU
        torch_dtype = obj.dtype
        dtype = self._dtypes.get(torch_dtype)
        if dtype is None:
            dtype = self._dtypes[torch_dtype] = str(torch_dtype)[6:]
            self._dtypes[dtype] = torch_dtype
        return Arr(obj, self, obj.shape, dtype, device, name)

    def contiguous(self, arr):
        if arr.obj.is_contiguous():
            return arr
        return Arr(arr.obj.detach().contiguous(), self, arr.shape, arr.dtype, arr.device, arr.name)

    def empty(self, arr, shape, dtype):
        obj = arr.obj
        if shape == arr.shape and dtype == arr.dtype and obj.is_contiguous():
            # the common case (an output like the input) at half the cost of new_empty; a contiguous
            # input's strides are C-contiguous ones, and empty_like keeps them
            return Arr(self._empty_like(obj), self, shape, dtype, arr.device, "out", arr.size)
        torch_dtype = self._dtypes.get(dtype)
        if torch_dtype is None:
            import torch
            torch_dtype = self._dtypes[dtype] = getattr(torch, dtype)
        return Arr(obj.new_empty(shape, dtype=torch_dtype), self, shape, dtype, arr.device, "out")

    def _empty_like(self, obj):
        import torch
        self._empty_like = torch.empty_like         # bound on first use (torch is imported by then)
        return torch.empty_like(obj)

    def numpy(self, arr):
        return arr.obj.detach().numpy() if arr.dtype != "bfloat16" else arr.obj.detach().float().numpy()

    def write_back(self, arr, values):
        import torch
        arr.obj.copy_(torch.from_numpy(values))

    def pointer(self, arr):
        t = arr.obj
        size = t.element_size()
        return t.data_ptr(), tuple(s * size for s in t.stride())

    def data_ptr(self, arr):
        return arr.obj.data_ptr()

    def is_contiguous(self, arr):
        return arr.obj.is_contiguous()

    def nhwc_view(self, arr):
        view = arr.obj.permute(0, 2, 3, 1)
        return Arr(view, self, view.shape, arr.dtype, arr.device, arr.name) if view.is_contiguous() else None

    def nhwc_copy(self, arr):
        view = arr.obj.detach().permute(0, 2, 3, 1).contiguous()
        return Arr(view, self, view.shape, arr.dtype, arr.device, arr.name)

    def nchw_view(self, arr):
        return arr.obj.permute(0, 3, 1, 2)

    def stream(self, arr):
        raw = self._raw_stream
        if raw is None:
            import torch
            # the private accessor costs 0.06 µs against 3.7 µs for current_stream(); keep both
            raw = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (
                lambda d: torch.cuda.current_stream(d).cuda_stream)
            self._raw_stream = raw
        return raw(arr.device)


class _Cai(_Kind):
    """numba device arrays and any other ``__cuda_array_interface__`` exporter (CuPy has its own)."""

    name = "cuda_array_interface"

    def wrap(self, obj, name):
        cai = obj.__cuda_array_interface__
        dtype = dtype_name(np.dtype(cai["typestr"]))
        return Arr(obj, self, cai["shape"], dtype, _pointer_device(cai["data"][0]), name)

    def pointer(self, arr):
        cai = arr.obj.__cuda_array_interface__
        strides = cai.get("strides")
        if strides is None:
            strides = _c_strides(arr.shape, np.dtype(cai["typestr"]).itemsize)
        return cai["data"][0], tuple(strides)

    def contiguous(self, arr):
        ptr, strides = self.pointer(arr)
        itemsize = STORAGE[arr.dtype][1] if arr.dtype in STORAGE else np.dtype(arr.dtype).itemsize
        if strides == _c_strides(arr.shape, itemsize):
            return arr
        from gpuops.cuda import _copy
        out = self.empty(arr, arr.shape, arr.dtype)
        _copy.copy_strided(arr, out, ptr, strides, stream_for(arr, None))
        return out

    def empty(self, arr, shape, dtype):
        from gpuops._toolchain import cuda
        with cuda.gpus[arr.device]:
            obj = cuda.device_array(shape, dtype=_np_dtype(dtype))
        return Arr(obj, self, shape, dtype, arr.device, "out")


class _Cupy(_Cai):
    name = "cupy"

    def contiguous(self, arr):
        import cupy
        if arr.obj.flags.c_contiguous:
            return arr
        with cupy.cuda.Device(arr.device):
            return self.wrap(cupy.ascontiguousarray(arr.obj), arr.name)

    def empty(self, arr, shape, dtype):
        import cupy
        with cupy.cuda.Device(arr.device):
            return self.wrap(cupy.empty(shape, dtype=dtype), "out")

    def stream(self, arr):
        import cupy
        return cupy.cuda.get_current_stream(arr.device).ptr

    def is_contiguous(self, arr):
        return arr.obj.flags.c_contiguous

    def nhwc_view(self, arr):
        view = arr.obj.transpose(0, 2, 3, 1)
        return self.wrap(view, arr.name) if view.flags.c_contiguous else None

    def nhwc_copy(self, arr):
        import cupy
        with cupy.cuda.Device(arr.device):
            return self.wrap(cupy.ascontiguousarray(arr.obj.transpose(0, 2, 3, 1)), arr.name)

    def nchw_view(self, arr):
        return arr.obj.transpose(0, 3, 1, 2)


class _XlaBuffer(_Kind):
    """The buffers a ``jax.experimental.buffer_callback`` receives (outputs are always given)."""

    name = "xla_buffer"

    def wrap(self, obj, name):
        kind, ordinal = obj.__dlpack_device__()
        return Arr(obj, self, obj.shape, dtype_name(obj.dtype), CPU if kind == 1 else ordinal, name)

    def contiguous(self, arr):
        return arr                      # XLA hands callbacks dense row-major buffers

    def is_contiguous(self, arr):
        return True

    def numpy(self, arr):
        return np.asarray(arr.obj)

    def pointer(self, arr):
        return data_ptr(arr), _c_strides(arr.shape, STORAGE[arr.dtype][1])

    def data_ptr(self, arr):
        return arr.obj.__cuda_array_interface__["data"][0]

    def stream(self, arr):
        raise ValueError("XLA buffers need the callback's stream: pass stream=ctx.stream")

    def empty(self, arr, shape, dtype):
        """Scratch space only (XLA provides the outputs): a numpy array, or a numba device array."""
        return (NUMPY if arr.device < 0 else CAI).empty(arr, shape, dtype)


class _Simulated(_Kind):
    """numba's simulated device arrays (NUMBA_ENABLE_CUDASIM=1): the CUDA path on host memory."""

    name = "simulated_cuda"

    def wrap(self, obj, name):
        return Arr(obj, self, obj.shape, dtype_name(obj.dtype), 0, name)

    def host(self, arr):
        return arr.obj._ary if hasattr(arr.obj, "_ary") else np.asarray(arr.obj)

    def data_ptr(self, arr):
        return self.host(arr).ctypes.data

    def is_contiguous(self, arr):
        return self.host(arr).flags.c_contiguous

    def contiguous(self, arr):
        if self.host(arr).flags.c_contiguous:
            return arr
        from gpuops._toolchain import cuda
        return self.wrap(cuda.to_device(np.ascontiguousarray(self.host(arr))), arr.name)

    def empty(self, arr, shape, dtype):
        from gpuops._toolchain import cuda
        return self.wrap(cuda.device_array(shape, dtype=_np_dtype(dtype)), "out")

    def nhwc_view(self, arr):
        if not self.host(arr).transpose(0, 2, 3, 1).flags.c_contiguous:
            return None
        return self.wrap(arr.obj.transpose((0, 2, 3, 1)), arr.name)

    def nhwc_copy(self, arr):
        from gpuops._toolchain import cuda
        return self.wrap(cuda.to_device(np.ascontiguousarray(self.host(arr).transpose(0, 2, 3, 1))), arr.name)

    def nchw_view(self, arr):
        return arr.obj.transpose((0, 3, 1, 2))


class _Meta(_Kind):
    """Shape-only arguments (torch fakes, JAX tracing): the checks run on them, nothing else does."""

    name = "shape-only"

    def contiguous(self, arr):
        return arr

    def is_contiguous(self, arr):
        return True


NUMPY, TORCH, CAI, CUPY, XLA, SIMULATED = _Numpy(), _Torch(), _Cai(), _Cupy(), _XlaBuffer(), _Simulated()
META = _Meta()


def meta(name: str, shape, dtype) -> Arr:
    """A shape-only argument of ``dtype`` (any dtype object or name) for the checks of an op declaration."""
    return Arr(None, META, tuple(int(s) for s in shape), dtype if isinstance(dtype, str) else dtype_name(dtype),
               CPU, name)
_KIND_BY_TYPE: dict = {}


def _kind_of(obj):
    cls = type(obj)
    kind = _KIND_BY_TYPE.get(cls)
    if kind is not None:
        return kind
    module = cls.__module__ or ""
    if isinstance(obj, np.ndarray):
        kind = NUMPY
    elif module.startswith("torch") and hasattr(obj, "data_ptr"):
        kind = TORCH
    elif module.startswith("cupy"):
        kind = CUPY
    elif module.startswith("jax.experimental.buffer_callback") or cls.__name__ == "Buffer" and hasattr(
            obj, "__dlpack_device__") and module.startswith("jax"):
        kind = XLA
    elif module.startswith("numba.cuda.simulator"):
        kind = SIMULATED
    elif hasattr(obj, "__cuda_array_interface__"):
        kind = CAI
    else:
        return None
    _KIND_BY_TYPE[cls] = kind
    return kind


def _pointer_device(ptr: int) -> int:
    """CUDA ordinal owning ``ptr`` (generic CAI objects do not say)."""
    from cuda.bindings import driver
    err, ordinal = driver.cuPointerGetAttribute(
        driver.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, ptr)
    return int(ordinal) if err == driver.CUresult.CUDA_SUCCESS else 0


# ---------------------------------------------------------------------------------------------
# argument checks: every message names the argument, what was expected and what was given


def wrap(name: str, obj) -> Arr:
    """Wrap one array argument; `TypeError` for anything that is not an array gpuops accepts."""
    if isinstance(obj, Arr):
        return obj
    kind = _kind_of(obj)
    if kind is None:
        hint = " (use gpuops.jax for JAX arrays)" if type(obj).__module__.startswith("jax") else ""
        raise TypeError(f"{name} must be an array (numpy, torch, CuPy or __cuda_array_interface__), "
                        f"got {type(obj).__name__}{hint}")
    return kind.wrap(obj, name)


def floating(name: str, obj, *, ndim=None, min_ndim=None) -> Arr:
    """`wrap` plus: a real floating dtype, and the rank the op needs."""
    arr = obj if isinstance(obj, Arr) else wrap(name, obj)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), "
                        f"got {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {list(arr.shape)}")
    if min_ndim is not None and arr.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {list(arr.shape)}")
    return arr


def same_dtype_and_device(*arrs: Arr):
    """`TypeError` for mixed dtypes or array kinds, `ValueError` for mixed devices."""
    first = arrs[0]
    for other in arrs[1:]:
        if other.dtype != first.dtype:
            raise TypeError(f"{other.name} must have the dtype of {first.name} ({first.dtype}), got {other.dtype}")
        if other.kind is not first.kind:
            raise TypeError(f"{other.name} must be a {first.kind.name} array like {first.name}, "
                            f"got {other.kind.name}")
        if other.device != first.device:
            raise ValueError(f"{other.name} must be on the device of {first.name} "
                             f"({_where(first.device)}), got {_where(other.device)}")


def same_shape(expected: Arr, *arrs: Arr):
    for other in arrs:
        if other.shape != expected.shape:
            raise ValueError(f"{other.name} must have the shape of {expected.name} {list(expected.shape)}, "
                             f"got {list(other.shape)}")


def real(name: str, value) -> float:
    """A real-number parameter (Python or numpy scalar; not bool)."""
    if type(value) is float:            # the common case, without the slow ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def flag(name: str, value) -> bool:
    """A bool parameter (Python or numpy bool; not an int)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def integer(name: str, value, *, minimum=None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if abs(value) >= 2**31:
        raise ValueError(f"{name} must be below 2**31 in magnitude, got {value}")
    return int(value)


def pair(name: str, value, *, minimum=0) -> tuple:
    """``int or (h, w)`` parameters, each entry an int >= ``minimum``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {value!r}")
        return (integer(name, value[0], minimum=minimum), integer(name, value[1], minimum=minimum))
    v = integer(name, value, minimum=minimum)
    return (v, v)


def window_out_size(name: str, size: int, kernel: int, pad: int, dilation: int, stride: int) -> int:
    """``(in + 2*pad - dil*(k-1) - 1) // stride + 1``; `ValueError` when below 1 or for an empty input."""
    if size < 1:
        raise ValueError(f"{name}: the input must be non-empty along this axis, got size {size}")
    out = (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    if out < 1:
        raise ValueError(f"{name}: output size would be {out} (input {size}, kernel {kernel}, padding {pad}, "
                         f"dilation {dilation}, stride {stride}); it must be >= 1")
    return out


def _where(device):
    return "cpu" if device < 0 else f"cuda:{device}"


# ---------------------------------------------------------------------------------------------
# outputs, streams, kernel arguments and CPU views


def empty(like: Arr, shape, dtype=None) -> Arr:
    """A fresh C-contiguous output of ``like``'s kind and device."""
    _not_replayable()
    return like.kind.empty(like, tuple(shape), dtype or like.dtype)


def output(out, like: Arr, shape, dtype=None, *, channels_last=False) -> Arr:
    """Allocate the output, or check a caller-given ``out`` (the JAX adapter passes XLA's buffers).

    ``channels_last``: the (N, C, H, W) output of ``shape`` is stored channels-last, and what comes back
    is its C-contiguous (N, H, W, C) `Arr` (``like`` is then an (N, H, W, C) one too); `nchw` gives the
    array to return.  A given ``out`` must then be (N, C, H, W) with channels-last memory."""
    if channels_last:
        N, C, H, W = shape
        if out is None:
            return empty(like, (N, H, W, C), dtype)
        arr = _given_out(out, like, shape, dtype)
        view = arr.kind.nhwc_view(arr)
        if view is None:
            raise ValueError("out must be channels-last (C the contiguous axis, as the input), got another layout")
        return view
    if out is None:
        return empty(like, shape, dtype)
    arr = _given_out(out, like, shape, dtype)
    if not arr.kind.is_contiguous(arr):
        raise ValueError("out must be C-contiguous (kernels write it densely), got a strided or expanded array")
    return arr


def _given_out(out, like, shape, dtype):
    arr = wrap("out", out)
    dtype = dtype or like.dtype
    if arr.shape != tuple(shape) or arr.dtype != dtype or arr.device != like.device:
        raise ValueError(f"out must be {dtype}{list(shape)} on {_where(like.device)}, "
                         f"got {arr.dtype}{list(arr.shape)} on {_where(arr.device)}")
    if arr.kind is not like.kind:
        raise TypeError(f"out must be a {like.kind.name} array like the inputs, got {arr.kind.name}")
    return arr


def channels_last(arr: Arr) -> bool:
    """True for a 4-D torch tensor stored channels-last (``torch.channels_last``: C the contiguous axis) and
    not C-contiguous as well (C == 1 or H·W == 1 are both): the layout an op that computes either way
    takes from its input, as PyTorch's convolutions do.  Other kinds are False (numpy keeps NCHW)."""
    if arr.kind is not TORCH or len(arr.shape) != 4:
        return False
    obj = arr.obj
    if obj.is_contiguous():
        return False
    fmt = _CHANNELS_LAST.get("torch")
    if fmt is None:
        import torch
        fmt = _CHANNELS_LAST["torch"] = torch.channels_last
    return obj.is_contiguous(memory_format=fmt)


_CHANNELS_LAST: dict = {}


def nhwc(arr: Arr) -> Arr:
    """The (N, H, W, C) C-contiguous `Arr` of a 4-D (N, C, H, W) array: a view where its memory is
    channels-last, else a copy in that order; `TypeError` for kinds without one (generic CUDA arrays)."""
    view = arr.kind.nhwc_view(arr)
    return view if view is not None else arr.kind.nhwc_copy(arr)


def has_nhwc(arr: Arr) -> bool:
    """Whether `nhwc` and `nchw` work on ``arr``'s kind (numpy, torch, CuPy, simulated)."""
    return arr.kind in (NUMPY, TORCH, CUPY, SIMULATED)


def nchw(arr: Arr):
    """The (N, C, H, W) array, channels-last in memory, over the (N, H, W, C) C-contiguous ``arr``."""
    return arr.kind.nchw_view(arr)


def out_tuple(out, names):
    """``out`` of a backward with several gradients: None, or one array (or None) per gradient."""
    if out is None:
        return (None,) * len(names)
    if not isinstance(out, (tuple, list)) or len(out) != len(names):
        raise TypeError(f"out must be None or a tuple ({', '.join(names)}), got {type(out).__name__}")
    return tuple(out)


def refuse_overlap(out, inputs):
    """`ValueError` when an ``out`` array (one, or a tuple with Nones) shares memory with one of ``inputs``
    ((name, value) pairs; values that are not arrays are skipped): kernels read inputs while they write
    outputs, so an aliased output would silently give wrong numbers.  Sequences (a sequence argument such
    as a pyramid, a nested tuple of outputs) are checked element by element, as ``name[i]``."""
    spans = None                        # the inputs' extents, measured once, at the first output
    for _, o in _flat_pairs((("out", out),)):
        if o is None or _kind_of(o) is None:
            continue
        o_span = _extent(wrap("out", o))
        if o_span is None:
            continue
        if spans is None:
            spans = [(name, _extent(wrap(name, value))) for name, value in _flat_pairs(inputs)
                     if value is not None and _kind_of(value) is not None]
        for name, span in spans:
            if span is not None and o_span[0] == span[0] and (o_span[1] < span[2] and span[1] < o_span[2]):
                raise ValueError(f"out must not share memory with {name}: gpuops kernels read their inputs "
                                 f"while writing their outputs; pass a separate array")


def _flat_pairs(pairs):
    """(name, value) pairs with tuple and list values expanded, recursively, into (name[i], element)."""
    for name, value in pairs:
        if isinstance(value, (tuple, list)):
            yield from _flat_pairs((f"{name}[{i}]", v) for i, v in enumerate(value))
        else:
            yield name, value


def _extent(arr: Arr):
    """(device, first byte, one past the last byte) that ``arr`` spans, or None where it cannot be told."""
    obj = arr.obj
    if arr.size == 0:
        return None
    if arr.kind is TORCH and obj.is_contiguous():       # the common case, without the strides
        ptr = obj.data_ptr()
        return (arr.device, ptr, ptr + arr.size * obj.element_size())
    if arr.kind is NUMPY or arr.kind is SIMULATED:
        host = obj if arr.kind is NUMPY else SIMULATED.host(arr)
        ptr, strides, itemsize = host.ctypes.data, host.strides, host.itemsize
    elif arr.kind in (TORCH, CAI, CUPY):
        ptr, strides = (arr.obj.data_ptr(), tuple(s * obj.element_size() for s in obj.stride())) \
            if arr.kind is TORCH else arr.kind.pointer(arr)
        itemsize = STORAGE[arr.dtype][1] if arr.dtype in STORAGE else np.dtype(arr.dtype).itemsize
    else:
        return None
    lo = ptr + sum((n - 1) * st for n, st in zip(arr.shape, strides) if st < 0)
    hi = ptr + sum((n - 1) * st for n, st in zip(arr.shape, strides) if st > 0) + itemsize
    return (arr.device, lo, hi)


def contiguous(arr: Arr) -> Arr:
    return arr.kind.contiguous(arr)


def stream_for(arr: Arr, stream) -> int:
    """The raw stream handle to launch on: explicit ``stream=`` wins, else the caller's current one.

    ``stream`` may be an int handle, a torch/CuPy/numba stream, or anything with ``__cuda_stream__``.
    """
    if stream is None:
        return arr.kind.stream(arr)
    if type(stream) is int:             # the JAX adapter's ctx.stream; skips the slow ABC check
        return stream
    if isinstance(stream, numbers.Integral):
        return int(stream)
    for attr in ("cuda_stream", "ptr", "handle"):
        handle = getattr(stream, attr, None)
        if isinstance(handle, numbers.Integral):
            return int(handle)
    if hasattr(stream, "__cuda_stream__"):
        return int(stream.__cuda_stream__()[1])
    raise TypeError(f"stream must be a CUDA stream or its int handle, got {type(stream).__name__}")


def kernel_arg(arr: Arr, shape=None):
    """The kernel-ABI view of a C-contiguous CUDA array, optionally reshaped (same element count)."""
    shape = arr.shape if shape is None else tuple(shape)
    if arr.kind is SIMULATED:
        host = SIMULATED.host(arr)
        return host.view(STORAGE[arr.dtype][0]).reshape(shape)
    layout = _LAYOUTS.get((shape, arr.dtype))
    if layout is None:
        layout = _layout(shape, arr.dtype)
    return _LAUNCH["device_array"](data_ptr(arr), layout, arr.obj)


_LAYOUTS: dict = {}


def _layout(shape, dtype):
    """The cached `gpuops._launch.Layout` of C-contiguous ``shape`` arrays of ``dtype``."""
    if "device_array" not in _LAUNCH:
        from gpuops._launch import Layout, device_array
        _LAUNCH["device_array"], _LAUNCH["Layout"] = device_array, Layout
    if len(_LAYOUTS) > 4096:            # shapes that vary without end must not grow it forever
        _LAYOUTS.clear()
    itemsize = STORAGE[dtype][1]
    layout = _LAYOUTS[(shape, dtype)] = _LAUNCH["Layout"](shape, _c_strides(shape, itemsize), itemsize,
                                                          _TYPESTR[dtype])
    return layout


def data_ptr(arr: Arr) -> int:
    """The device (or simulated host) address of ``arr``'s data; read once per `Arr`."""
    ptr = arr.ptr
    if ptr is None:
        ptr = arr.ptr = arr.kind.data_ptr(arr)
    return ptr


def word_aligned(*arrs: Arr) -> bool:
    """True when every (C-contiguous, CUDA) array starts on an 8-byte boundary and holds whole 64-bit words,
    so word kernels (64-bit loads of packed values) may run on it."""
    for arr in arrs:
        if arr.size * _ITEMSIZE[arr.dtype] % 8 or data_ptr(arr) % 8:
            return False
    return True


_ITEMSIZE = {name: itemsize for name, (_, itemsize, _) in STORAGE.items()}


_TYPESTR = {name: np.dtype(storage).str for name, (storage, _, _) in STORAGE.items()}


_LAUNCH: dict = {}          # gpuops._launch, imported on the first CUDA call (it imports numba)


@contextlib.contextmanager
def cpu_views(inputs, outputs):
    """numpy views of CPU arrays in the compute dtype (16-bit upcast to float32).

    Yields ``(input_views, output_views)``; outputs that could not be viewed directly are computed
    in temporaries and written back (cast to the output dtype) when the block ends.
    """
    ins = [_cpu_view(a) for a in inputs]
    outs, pending = [], []
    for arr in outputs:
        compute = CPU_COMPUTE[arr.dtype]
        if arr.dtype == compute:
            outs.append(arr.kind.numpy(arr))
        else:
            outs.append(np.empty(arr.shape, compute))
            pending.append((arr, outs[-1]))
    yield ins, outs
    for arr, tmp in pending:
        arr.kind.write_back(arr, tmp)


def _cpu_view(arr: Arr):
    view = arr.kind.numpy(arr)
    compute = CPU_COMPUTE[arr.dtype]
    return view if view.dtype == compute else view.astype(compute)


# ---------------------------------------------------------------------------------------------
# running one kernel: the CUDA launch or its CPU mirror, from one argument list


class In:
    """A kernel input argument: an `Arr`, optionally viewed with another (same-size) shape."""

    __slots__ = ("arr", "shape")

    def __init__(self, arr: Arr, shape=None):
        self.arr, self.shape = arr, arr.shape if shape is None else tuple(shape)


class Out(In):
    """A kernel output argument (written in place)."""

    __slots__ = ()


_FAMILIES: dict = {}
_CUDA_KERNELS: dict = {}


def family_module(side: str, family: str):
    """``gpuops.<side>.<family>`` (side "cuda" or "cpu"), imported on first use: the CPU path never
    imports the kernel modules (nor numba.cuda)."""
    mod = _FAMILIES.get((side, family))
    if mod is None:
        import importlib
        mod = _FAMILIES[(side, family)] = importlib.import_module(f"gpuops.{side}.{family}")
    return mod


def run(family: str, kernel: str, args, *, like: Arr, grid, block, stream=None, shmem=0):
    """Run ``kernel`` of ``family`` on ``like``'s device: the one way every kernel is launched.

    ``args`` are the kernel's arguments in order: `In`/`Out` arrays (C-contiguous, each viewed with its
    shape) and scalars.  On CUDA the launch is prepared once per (kernel, views, dtypes, geometry,
    device) — `gpuops._launch.Kernel.prepare` fixes the layouts and the argument packer — and each call
    reads the data pointers, packs and launches ``gpuops.cuda.<family>.<KERNEL>`` on the caller's stream;
    `record` notes it for a `Replay`.  On the host ``gpuops.cpu.<family>.<kernel>`` gets numpy views in
    the compute dtype (`cpu_views`) and the same scalars, floats cast to the compute dtype.  ``grid`` may
    be a callable (computed only for CUDA).
    """
    if like.device >= 0 and like.kind is not SIMULATED:
        if callable(grid):
            grid = grid()
        views = tuple((a.shape, a.arr.dtype) if isinstance(a, In) else None for a in args)
        key = (family, kernel, views, like.dtype, like.device, grid, block, shmem)
        prepared = _PREPARED.get(key)
        if prepared is None:
            prepared = _prepare_run(key)
        values = [data_ptr(a.arr) if isinstance(a, In) else a for a in args]
        prepared(like.kind.stream(like) if stream is None else stream_for(like, stream), *values)
        if _RECORDING.launches is not None:
            _RECORDING.launches.append((prepared, values, [i for i, v in enumerate(views) if v is not None]))
        return
    if like.device >= 0:                # the simulator: numba's own launch on simulated arrays
        compiled = _CUDA_KERNELS.get((family, kernel)) or _cuda_kernel(family, kernel)
        handle = like.kind.stream(like) if stream is None else stream_for(like, stream)
        compiled.launch(like.dtype, grid() if callable(grid) else grid, block, handle, like.device,
                        *[kernel_arg(a.arr, a.shape) if isinstance(a, In) else a for a in args], shmem=shmem)
        return
    cpu_mod = family_module("cpu", family)
    compute = np.dtype(CPU_COMPUTE[like.dtype]).type
    arrays_in = [a.arr for a in args if isinstance(a, In) and not isinstance(a, Out)]
    arrays_out = [a.arr for a in args if isinstance(a, Out)]
    with cpu_views(arrays_in, arrays_out) as (views_in, views_out):
        views_in, views_out = iter(views_in), iter(views_out)
        cpu_args = []
        for a in args:
            if isinstance(a, Out):
                cpu_args.append(next(views_out).reshape(a.shape))
            elif isinstance(a, In):
                cpu_args.append(next(views_in).reshape(a.shape))
            elif isinstance(a, float):
                cpu_args.append(compute(a))
            else:
                cpu_args.append(a)
        getattr(cpu_mod, kernel)(*cpu_args)


def _cuda_kernel(family, kernel):
    compiled = _CUDA_KERNELS[(family, kernel)] = getattr(family_module("cuda", family), kernel.upper())
    return compiled


_PREPARED: dict = {}


def _prepare_run(key):
    family, kernel, views, dtype, device, grid, block, shmem = key
    compiled = _CUDA_KERNELS.get((family, kernel)) or _cuda_kernel(family, kernel)
    layouts = [_LAYOUTS.get(v) or _layout(*v) for v in views if v is not None]
    if len(_PREPARED) > 4096:           # shapes that vary without end must not grow it forever
        _PREPARED.clear()
    prepared = _PREPARED[key] = compiled.prepare(dtype, device, layouts, grid, block, shmem)
    return prepared


def launch(family: str, plan, key: tuple, arrays, scalars=(), *, like: Arr, stream=None):
    """`run` for calls that repeat on arrays of one shape, where even building `run`'s key is the cost
    (small elementwise calls): the launch is looked up by (``plan``, ``key``, dtype, device) alone.

    Kernel arguments are ``arrays`` (C-contiguous `Arr`, of ``like``'s dtype and device; inputs, then
    the one output, which comes last) and then ``scalars``.  ``plan(like, *key)`` returns ``(kernel, views,
    grid, block)`` or ``(kernel, views, grid, block, shmem)``: the kernel of ``family``, the shape each
    array is viewed with, the launch geometry and the bytes of dynamic shared memory;
    ``key`` must hold everything the plan depends on besides dtype and device.  On the host and under the
    simulator this is `run` of the same plan.
    """
    if like.device >= 0 and like.kind is not SIMULATED:
        full_key = (plan, key, like.dtype, like.device)
        prepared = _PREPARED.get(full_key)
        if prepared is None:
            prepared = _prepare(family, plan, key, like)
        values = [data_ptr(a) for a in arrays]
        values += scalars
        prepared(like.kind.stream(like) if stream is None else stream_for(like, stream), *values)
        if _RECORDING.launches is not None:
            _RECORDING.launches.append((prepared, values, range(len(arrays))))
        return
    kernel, views, grid, block, *shmem = plan(like, *key)
    args = [In(a, v) for a, v in zip(arrays[:-1], views)]
    args.append(Out(arrays[-1], views[-1]))
    run(family, kernel, (*args, *scalars), like=like, grid=grid, block=block, stream=stream, shmem=sum(shmem))


def _prepare(family, plan, key, like):
    kernel, views, grid, block, *shmem = plan(like, *key)
    compiled = _CUDA_KERNELS.get((family, kernel)) or _cuda_kernel(family, kernel)
    layouts = [_LAYOUTS.get((tuple(v), like.dtype)) or _layout(tuple(v), like.dtype) for v in views]
    if len(_PREPARED) > 4096:           # shapes that vary without end must not grow it forever
        _PREPARED.clear()
    prepared = _PREPARED[(plan, key, like.dtype, like.device)] = compiled.prepare(
        like.dtype, like.device, layouts, grid, block, sum(shmem))
    return prepared


# ---------------------------------------------------------------------------------------------
# working memory of a call


_SCRATCH: dict = {}


def scratch(like: Arr, shape, dtype=None, stream=None) -> Arr:
    """Working memory of one call (partial sums, stand-ins), fully written before it is read.

    On a GPU: one buffer per (kind, device, stream, dtype, shape), reused by every call on that stream —
    work on one stream runs in order, so two calls never use it at once — which also lets a `Replay`
    re-issue launches that use it (on the same stream; the replay keeps the buffer alive).  On the host
    and under the simulator: a fresh array.
    """
    shape, dtype = tuple(shape), dtype or like.dtype
    if like.device < 0 or like.kind is SIMULATED:
        return like.kind.empty(like, shape, dtype)
    handle = like.kind.stream(like) if stream is None else stream_for(like, stream)
    key = (like.kind, like.device, handle, dtype, shape)
    arr = _SCRATCH.get(key)
    if arr is None:
        if len(_SCRATCH) > 256:         # shapes that vary without end must not grow it forever
            _SCRATCH.clear()
        arr = _SCRATCH[key] = like.kind.empty(like, shape, dtype)
    if _RECORDING.launches is not None:
        _RECORDING.scratch[data_ptr(arr)] = arr
        _RECORDING.streams.add(handle)
    return arr


# ---------------------------------------------------------------------------------------------
# replaying the launches of a call (the JAX adapter's callbacks)


class _Recording(threading.local):
    launches = None                     # a list while `record` runs on this thread
    replayable = True
    scratch = None                      # pointer -> scratch `Arr` used by the recorded call
    streams = None


_RECORDING = _Recording()


def _not_replayable():
    """Called by every step a `Replay` cannot repeat (allocations, host-side writes)."""
    if _RECORDING.launches is not None:
        _RECORDING.replayable = False


def record(body, pointers):
    """Run ``body()`` and return a `Replay` of the CUDA launches it made, or None where it cannot be replayed.

    ``pointers`` are the data pointers of the buffers ``body`` works on (a JAX callback's outputs and
    inputs).  A replay is possible when nothing was allocated (`scratch` is not an allocation), every
    launched array is one of the buffers or a scratch buffer (no views at an offset), and no two
    buffers share an address (so each launch argument names one).
    """
    if _RECORDING.launches is not None or len(set(pointers)) != len(pointers):
        body()
        return None
    _RECORDING.launches, _RECORDING.replayable, _RECORDING.scratch, _RECORDING.streams = [], True, {}, set()
    try:
        body()
        launches, replayable = _RECORDING.launches, _RECORDING.replayable
        scratch, streams = _RECORDING.scratch, _RECORDING.streams
    finally:
        _RECORDING.launches = _RECORDING.scratch = _RECORDING.streams = None
    slot = {p: i for i, p in enumerate(pointers)}
    recorded = []
    for prepared, values, positions in launches:
        slots = []
        for i in positions:
            if values[i] in slot:
                slots.append((i, slot[values[i]]))
            elif values[i] not in scratch:
                return None
        recorded.append((prepared, tuple(values), tuple(slots)))
    if not replayable or len(streams) > 1:
        return None
    return Replay(recorded, [p % _REPLAY_ALIGNMENT for p in pointers], list(scratch.values()),
                  next(iter(streams), None))


_REPLAY_ALIGNMENT = 256


class Replay:
    """The launches of one recorded call, re-issued on the pointers of another call's buffers (same
    shapes, dtypes, device and parameters: the caller keys its replays on them).

    Choices a core function makes from a pointer (16-bit word kernels need 8-byte alignment) depend on
    its alignment only, so a replay refuses buffers whose alignment modulo 256 differs from the
    recorded call's, buffers of which two share an address, and — when the call used `scratch`
    buffers, which belong to one stream — another stream: it returns False and the caller runs the
    core function instead.
    """

    __slots__ = ("launches", "alignment", "scratch", "stream")

    def __init__(self, launches, alignment, scratch=(), stream=None):
        self.launches, self.alignment, self.scratch, self.stream = launches, alignment, scratch, stream

    def __call__(self, stream: int, pointers) -> bool:
        if len(set(pointers)) != len(pointers) or self.scratch and stream != self.stream:
            return False
        for p, aligned in zip(pointers, self.alignment):
            if p % _REPLAY_ALIGNMENT != aligned:
                return False
        for prepared, values, slots in self.launches:
            values = list(values)
            for position, buffer in slots:
                values[position] = pointers[buffer]
            prepared(stream, *values)
        return True


def register_kind(cls, kind: _Kind):
    """Treat instances of ``cls`` as arrays of ``kind`` (adapters register their buffer views)."""
    _KIND_BY_TYPE[cls] = kind
