"""The one way gpuops launches a CUDA kernel.

`Kernel` wraps a plain Python kernel function.  It is compiled lazily, once per (storage dtype,
device), with numba-cuda's on-disk cache, for the explicit signature its family declares.  Launches
then bypass numba's per-call dispatch (≈44 µs with torch tensors) and go straight to
``cuda.core.launch`` with numba's flattened kernel ABI (≈4 µs):

    array argument  -> meminfo=0, parent=0, nitems, itemsize, data_ptr, *shape, *strides_in_bytes
    scalar argument -> numpy scalar of the exact signature type

That relies on numba-cuda beyond its documented API in two ways, both kept in the section "numba-cuda
internals" at the end of this file: the driver kernel of a compiled kernel (`_cuda_core_kernel`), and the
flattened layout of array arguments (`check_kernel_abi`, run before the first compile: if an upgrade
changes the array data model, launches fail with a clear message instead of passing mis-packed
arguments).  The ordinary ``dispatcher[grid, block, stream, shmem](...)`` launch stays as the fallback:
always under the CUDA simulator, whenever the kernel handle is out of reach, and on request
(``GPUOPS_LAUNCHER=numba`` or `use_fallback`).  Both paths are tested.

The fast path has two forms.  By default (``GPUOPS_LAUNCHER=fast``) the flattened arguments are packed
with one precompiled `struct.Struct` per (kernel, dtype, device) into a per-thread buffer of 8-byte
slots, and ``cuda.bindings.driver.cuLaunchKernel`` gets the (fixed) array of pointers to those slots:
no per-argument Python objects, and scalars need no numpy conversion (struct rounds a float to
float32 exactly as ``np.float32`` does).  ``GPUOPS_LAUNCHER=core`` (or `use_launcher`) keeps
``cuda.core.launch`` with numpy scalars; the packed form also falls back to it for a call whose
values do not pack (a scalar out of its type's range) and for kernels it cannot describe.

Array arguments are `DeviceArray` descriptors (raw pointer, shape, byte strides) on a GPU, and plain
numpy arrays under the simulator; family modules build them with `gpuops._core.kernel_arg`.  This module
imports nothing from gpuops._core (which imports it lazily): the layering is core -> launcher -> numba.
`Kernel.prepare` fixes everything of a launch but its pointers, scalars and stream, for calls that
repeat on arrays of one shape (`gpuops._core.launch`); it packs the same slots and falls back to
`Kernel.launch` wherever the packed launch would.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import struct
import threading
import warnings

import numpy as np

from gpuops._dtypes import FLOAT_DTYPES, STORAGE
from gpuops._toolchain import SIMULATOR, cuda, numba_cuda_version, nt

#: every Kernel ever defined, for the compile/ABI checks of the test suite
KERNELS: list["Kernel"] = []

_SCALAR_TYPES = {
    nt.float32: np.float32, nt.float64: np.float64, nt.int32: np.int32, nt.int64: np.int64,
    nt.uint32: np.uint32, nt.uint64: np.uint64, nt.boolean: np.bool_,
}

#: struct codes of scalar parameters, each in its own 8-byte slot (little-endian, value first)
_PACK_CODES = {
    nt.float32: "f4x", nt.float64: "d", nt.int32: "i4x", nt.int64: "q",
    nt.uint32: "I4x", nt.uint64: "Q", nt.boolean: "?7x",
}
_MAX_SLOTS = 512            # parameters per kernel the packed launch handles (more: cuda.core.launch)

_LAUNCHER = os.environ.get("GPUOPS_LAUNCHER", "fast")
if _LAUNCHER not in ("fast", "core", "numba"):
    warnings.warn(f"gpuops: unknown GPUOPS_LAUNCHER={_LAUNCHER!r}; using 'fast'", RuntimeWarning, stacklevel=1)
    _LAUNCHER = "fast"
_force_fallback = _LAUNCHER == "numba"
_packed_enabled = _LAUNCHER == "fast"


class DeviceArray:
    """A device buffer as the kernel ABI sees it: pointer, shape, strides in bytes, storage dtype.

    ``abi`` is the flattened form the fast launch passes.  `device_array` builds one from a cached
    `Layout` (the hot path); the constructor takes the pieces."""

    __slots__ = ("ptr", "layout", "owner", "abi")

    def __init__(self, ptr, shape: tuple, strides: tuple, itemsize, typestr, owner=None, size=None):
        layout = Layout(tuple(shape), tuple(strides), itemsize, typestr, size)
        self.ptr, self.layout, self.owner = ptr, layout, owner
        self.abi = (*layout.head, ptr, *layout.tail)

    shape = property(lambda self: self.layout.shape)
    strides = property(lambda self: self.layout.strides)
    itemsize = property(lambda self: self.layout.itemsize)
    typestr = property(lambda self: self.layout.typestr)

    def as_numba(self):
        """A numba device array over the same memory (fallback launches only)."""
        desc = {"shape": self.shape, "strides": self.strides, "typestr": self.typestr,
                "data": (self.ptr, False), "version": 2}
        return cuda.from_cuda_array_interface(desc, owner=self.owner, sync=False)


class Layout:
    """Shape, byte strides and element type of kernel array arguments; ``head`` and ``tail`` are the
    ABI fields before and after the data pointer (cached per shape and dtype by `gpuops._core`)."""

    __slots__ = ("shape", "strides", "itemsize", "typestr", "head", "tail")

    def __init__(self, shape: tuple, strides: tuple, itemsize, typestr, size=None):
        if size is None:
            size = 1
            for s in shape:
                size *= s
        self.shape, self.strides, self.itemsize, self.typestr = shape, strides, itemsize, typestr
        self.head, self.tail = (0, 0, size, itemsize), shape + strides


_new_device_array = DeviceArray.__new__


def device_array(ptr, layout: Layout, owner=None) -> DeviceArray:
    """`DeviceArray` of ``ptr`` with a prepared ``layout`` (no per-call shape work)."""
    arr = _new_device_array(DeviceArray)
    arr.ptr, arr.layout, arr.owner = ptr, layout, owner
    arr.abi = (*layout.head, ptr, *layout.tail)
    return arr


class _Compiled:
    """One (kernel, dtype, device): the cuda.core kernel, scalar converters, and the packed launch
    (``pack(slots, *args)`` writes the flattened arguments into a slot buffer, ``pack_pointers(slots,
    layouts, *args)`` the same from raw pointers and their layouts' ABI fields, ``function`` is the driver
    handle; all None when the packed launch is unavailable)."""

    __slots__ = ("kernel", "converters", "fast", "pack", "pack_pointers", "function")

    def __init__(self, kernel, converters, fast, sig=None):
        self.kernel, self.converters, self.fast = kernel, converters, fast
        self.pack = self.pack_pointers = self.function = None
        if fast and sig is not None:
            self.pack, self.pack_pointers, self.function = _packed_launch(kernel, sig)


class Kernel:
    """A ``@cuda.jit`` kernel with one explicit signature per storage dtype.

    ``signature(dtype_name)`` returns the tuple of numba types of the kernel's arguments for that
    storage dtype (see `array_type`, `compute_type`).  ``dtypes`` lists the storage dtypes the kernel
    is built for; the compile checks build every one of them.
    """

    def __init__(self, pyfunc, signature, *, dtypes=FLOAT_DTYPES, **jit_options):
        self.pyfunc = pyfunc
        self.name = f"{pyfunc.__module__}.{pyfunc.__qualname__}"
        self.signature = signature
        self.dtypes = tuple(dtypes)
        # numba's disk cache locates a kernel by its source file: generated kernels that had to be run from
        # memory (gpuops.cuda._generate's last fallback) have none, and compile in every process
        self.jit_options = {"cache": not SIMULATOR and _has_source_file(pyfunc), **jit_options}
        self._dispatcher = None
        self._compiled: dict = {}
        KERNELS.append(self)

    def __repr__(self):
        return f"Kernel({self.name})"

    @property
    def dispatcher(self):
        if self._dispatcher is None:
            options = {} if SIMULATOR else self.jit_options
            self._dispatcher = cuda.jit(**options)(self.pyfunc)
        return self._dispatcher

    def _compile(self, dtype, device):
        sig = tuple(self.signature(dtype))
        converters = tuple(None if isinstance(t, nt.Array) else _SCALAR_TYPES[t] for t in sig)
        fast = not (SIMULATOR or _force_fallback)
        kernel = None
        if fast:
            if not _ABI_CHECKED:
                check_kernel_abi()           # raises KernelAbiError before anything could be mis-packed
            with cuda.gpus[device]:
                compiled = self.dispatcher.compile(sig)
                compiled.bind()              # loads (and sets up) its module in this device's context
                try:
                    kernel = _cuda_core_kernel(compiled)
                except AttributeError as err:  # numba-cuda internals moved: degrade, do not break
                    warnings.warn(f"gpuops: fast launch unavailable ({err}); using numba's launcher",
                                  RuntimeWarning, stacklevel=3)
                    fast = False
        entry = self._compiled[(dtype, device)] = _Compiled(kernel, converters, fast, sig)
        return entry

    def launch(self, dtype, grid, block, stream, device, *args, shmem=0):
        """Launch on ``stream`` (a raw cudaStream_t int, 0 = legacy default) of ``device``."""
        entry = self._compiled.get((dtype, device))
        if entry is None:
            entry = self._compile(dtype, device)
        if entry.fast and not _force_fallback:
            if entry.pack is not None and _packed_enabled:
                state = _THREAD
                try:
                    entry.pack(state.slots, *args)
                except (struct.error, OverflowError, TypeError):
                    pass                      # a value numpy converts differently: take cuda.core's path
                else:
                    dims = _DIMS.get((grid, block))
                    if dims is None:
                        dims = _launch_dims(grid, block)
                    _launch_packed(state, entry.function, dims, shmem, stream, device)
                    return
            self._launch_core(entry, grid, block, stream, device, args, shmem)
            return
        self._launch_numba(entry, grid, block, stream, device, args, shmem)

    def prepare(self, dtype, device, layouts, grid, block, shmem=0):
        """``launch(stream, *args)``: this kernel with everything but its pointers, scalars and stream fixed.

        Each array argument is then passed as its raw device pointer, with the (C-contiguous) `Layout`
        of the same position in ``layouts``.  For calls that repeat on arrays of one shape, where the host
        path is the cost: the packed launch with nothing looked up per call.  Whenever that path would
        not be taken, `launch` runs with `DeviceArray` descriptors rebuilt from the pointers, so every
        launcher behaves as it does there."""
        entry = self._compiled.get((dtype, device))
        if entry is None:
            entry = self._compile(dtype, device)
        dims = _launch_dims(grid, block)
        converters, pack, function = entry.converters, entry.pack_pointers, entry.function
        abi = tuple(part for layout in layouts for part in (layout.head, layout.tail))

        def described(stream, args):
            arrays = iter(layouts)
            args = [device_array(a, next(arrays)) if conv is None else a for conv, a in zip(converters, args)]
            self.launch(dtype, grid, block, stream, device, *args, shmem=shmem)

        def launch(stream, *args):
            if pack is not None and _packed_enabled and not _force_fallback:
                state = _THREAD
                try:
                    pack(state.slots, abi, *args)
                except (struct.error, OverflowError, TypeError):
                    pass
                else:
                    _launch_packed(state, function, dims, shmem, stream, device)
                    return
            described(stream, args)

        return launch

    def _launch_core(self, entry, grid, block, stream, device, args, shmem):
        flat = []
        for conv, arg in zip(entry.converters, args):
            if conv is None:
                flat.extend(arg.abi)
            else:
                # converting a Python scalar costs ≈0.3 µs; parameters repeat from call to call
                key = (conv, arg)
                value = _SCALARS.get(key)
                if value is None:
                    if len(_SCALARS) > 4096:
                        _SCALARS.clear()
                    value = _SCALARS[key] = conv(arg)
                flat.append(value)
        config = _launch_config(grid, block, shmem)
        if _THREAD.device != device:
            _make_current(device)
        try:
            _core_launch(_core_stream(stream), config, entry.kernel, *flat)
        except Exception as err:          # the thread's context changed under us (torch.cuda.set_device …)
            if "CONTEXT" not in str(err) and "HANDLE" not in str(err):
                raise
            _make_current(device)
            _core_launch(_core_stream(stream), config, entry.kernel, *flat)

    def _launch_numba(self, entry, grid, block, stream, device, args, shmem):
        converted = [arg if conv is None else conv(arg) for conv, arg in zip(entry.converters, args)]
        if SIMULATOR:
            self.dispatcher[grid, block, 0, shmem](*converted)
            return
        converted = [a.as_numba() if isinstance(a, DeviceArray) else a for a in converted]
        with cuda.gpus[device]:
            self.dispatcher[grid, block, _numba_stream(stream), shmem](*converted)


# ---------------------------------------------------------------------------------------------
# signature helpers

def array_type(dtype: str, ndim: int, layout: str = "C"):
    """numba array type of a kernel argument holding ``dtype`` data (bfloat16 as uint16 bits)."""
    return nt.Array(getattr(nt, STORAGE[dtype][0]), ndim, layout)


def compute_type(dtype: str):
    """numba scalar type kernels accumulate in for ``dtype``."""
    return getattr(nt, STORAGE[dtype][2])


@contextlib.contextmanager
def use_fallback(enabled: bool = True):
    """Route launches through numba's own dispatcher inside the block (for tests and debugging)."""
    global _force_fallback
    saved, _force_fallback = _force_fallback, enabled
    try:
        yield
    finally:
        _force_fallback = saved


@contextlib.contextmanager
def use_launcher(name: str):
    """Launch with ``"fast"`` (packed cuLaunchKernel), ``"core"`` (cuda.core.launch) or ``"numba"``
    (numba's dispatcher) inside the block, like ``GPUOPS_LAUNCHER`` (for tests and measurements)."""
    global _force_fallback, _packed_enabled
    if name not in ("fast", "core", "numba"):
        raise ValueError(f"launcher must be 'fast', 'core' or 'numba', got {name!r}")
    saved = _force_fallback, _packed_enabled
    _force_fallback, _packed_enabled = name == "numba", name == "fast"
    try:
        yield
    finally:
        _force_fallback, _packed_enabled = saved


# ---------------------------------------------------------------------------------------------
# cached launch machinery: creating a stream object per call costs ≈40 µs, so cache by handle

_CORE = {}
_STREAMS: dict = {}
_NUMBA_STREAMS: dict = {}
_CONFIGS: dict = {}
_SCALARS: dict = {}


class _ThreadState(threading.local):
    device = None

    def __init__(self):
        # the packed launch's parameter slots and the fixed array of pointers to them, per thread
        # (cuLaunchKernel drops the GIL; the driver has copied the values when it returns)
        self.slots = (ctypes.c_uint64 * _MAX_SLOTS)()
        base = ctypes.addressof(self.slots)
        self._pointers = (ctypes.c_void_p * _MAX_SLOTS)(*range(base, base + 8 * _MAX_SLOTS, 8))
        self.params = ctypes.addressof(self._pointers)


# cuda.core launches in the calling thread's current context.  torch runs backward passes on its own
# threads, which may have none bound yet: bind the device's primary context (the one numba, torch and
# JAX share) once per thread and device.
_THREAD = _ThreadState()


def _make_current(device: int):
    from cuda.core import Device
    Device(device).set_current()
    _THREAD.device = device


def _core_launch(stream, config, kernel, *args):
    launch = _CORE.get("launch")
    if launch is None:
        from cuda.core import launch
        _CORE["launch"] = launch
    launch(stream, config, kernel, *args)


def _core_stream(handle: int):
    stream = _STREAMS.get(handle)
    if stream is None:
        from cuda.core import Stream
        stream = _STREAMS[handle] = Stream.from_handle(handle)
    return stream


def _launch_config(grid, block, shmem):
    key = (grid, block, shmem)
    config = _CONFIGS.get(key)
    if config is None:
        if len(_CONFIGS) > 4096:
            _CONFIGS.clear()
        from cuda.core import LaunchConfig
        config = _CONFIGS[key] = LaunchConfig(grid=grid, block=block, shmem_size=shmem)
    return config


# ---------------------------------------------------------------------------------------------
# the packed launch: cuda.bindings' cuLaunchKernel with kernelParams pointing at per-thread slots

_DIMS: dict = {}
_CU_STREAMS: dict = {}
_cu_launch = None                   # driver.cuLaunchKernel, once cuda.bindings is imported
_CU_SUCCESS = None


def _packed_launch(kernel, sig):
    """(``pack(slots, *args)``, ``pack_pointers(slots, layouts, *args)``, driver function handle) for
    ``sig``, or three Nones when the packed launch cannot describe the kernel or cuda.bindings lacks what
    it needs.  ``layouts`` holds (head, tail) of each array argument's `Layout`, flattened."""
    global _CU_SUCCESS, _cu_launch
    codes, parts, pointer_parts, arrays = [], [], [], 0
    for i, t in enumerate(sig):
        if isinstance(t, nt.Array):
            # meminfo, parent, nitems, itemsize, data, *shape, *strides: each an 8-byte slot
            codes.append("qqqqQ" + "q" * (2 * t.ndim))
            parts.append(f"*a{i}.abi")
            pointer_parts.append(f"*l[{2 * arrays}], a{i}, *l[{2 * arrays + 1}]")
            arrays += 1
        elif t in _PACK_CODES:
            codes.append(_PACK_CODES[t])
            parts.append(f"a{i}")
            pointer_parts.append(f"a{i}")
        else:
            return None, None, None
    packer = struct.Struct("<" + "".join(codes))
    if packer.size > 8 * _MAX_SLOTS:
        return None, None, None
    # generated functions per signature: a single call flattens and packs, with no Python loop
    names = ", ".join(f"a{i}" for i in range(len(sig)))
    namespace = {"pack_into": packer.pack_into}
    exec(f"def pack(slots, {names}):\n    pack_into(slots, 0, {', '.join(parts)})\n"
         f"def pack_pointers(slots, l, {names}):\n    pack_into(slots, 0, {', '.join(pointer_parts)})\n",
         namespace)
    pack, pack_pointers = namespace["pack"], namespace["pack_pointers"]
    try:
        from cuda.bindings import driver
        function = driver.CUfunction(int(kernel.handle))   # a CUkernel launches as a CUfunction (CUDA ≥ 12)
        _CU_SUCCESS = driver.CUresult.CUDA_SUCCESS
        if _cu_launch is None:
            _cu_launch = driver.cuLaunchKernel
    except (ImportError, AttributeError, TypeError) as err:
        warnings.warn(f"gpuops: packed launch unavailable ({err}); using cuda.core.launch",
                      RuntimeWarning, stacklevel=4)
        return None, None, None
    return pack, pack_pointers, function


def _launch_dims(grid, block):
    """(gx, gy, gz, bx, by, bz) of an int or 1–3-tuple grid and block."""
    dims = []
    for value in (grid, block):
        value = (value,) if isinstance(value, int) else tuple(value)
        if not 1 <= len(value) <= 3 or any(not isinstance(v, int) or v < 1 for v in value):
            raise ValueError(f"grid and block must be 1 to 3 positive ints, got grid={grid!r}, block={block!r}")
        dims.extend(value + (1,) * (3 - len(value)))
    dims = tuple(dims)
    if len(_DIMS) > 4096:
        _DIMS.clear()
    _DIMS[(grid, block)] = dims
    return dims


def _cu_stream(handle: int):
    stream = _CU_STREAMS.get(handle)
    if stream is None:
        from cuda.bindings import driver
        stream = _CU_STREAMS[handle] = driver.CUstream(handle)
    return stream


def _launch_packed(state, function, dims, shmem, stream, device):
    """cuLaunchKernel of the arguments packed into ``state``'s slots (the calling thread's)."""
    if state.device != device:
        _make_current(device)
    result = _cu_launch(function, *dims, shmem, _cu_stream(stream), state.params, 0)[0]
    if result is not _CU_SUCCESS:
        _packed_failed(result, function, dims, shmem, stream, device)


def _packed_failed(result, function, dims, shmem, stream, device):
    """A packed launch returned ``result``: rebind the device's context and retry once when the thread's
    context changed under us (torch.cuda.set_device …), else raise."""
    from cuda.bindings import driver
    codes = driver.CUresult
    if result in (codes.CUDA_ERROR_INVALID_CONTEXT, codes.CUDA_ERROR_CONTEXT_IS_DESTROYED,
                  codes.CUDA_ERROR_INVALID_HANDLE):
        _make_current(device)
        result = _cu_launch(function, *dims, shmem, _cu_stream(stream), _THREAD.params, 0)[0]
        if result is _CU_SUCCESS:
            return
    raise RuntimeError(f"gpuops: cuLaunchKernel failed with {getattr(result, 'name', result)} "
                       f"(grid/block {dims}, shared memory {shmem} bytes)")


def _numba_stream(handle: int):
    stream = _NUMBA_STREAMS.get(handle)
    if stream is None:
        stream = cuda.default_stream() if handle == 0 else cuda.external_stream(handle)
        _NUMBA_STREAMS[handle] = stream
    return stream


def _has_source_file(pyfunc) -> bool:
    code = getattr(pyfunc, "__code__", None)
    return code is not None and os.path.isfile(code.co_filename)


# ---------------------------------------------------------------------------------------------
# numba-cuda internals: the only place gpuops reaches past numba-cuda's documented API.
#
# Checked against numba-cuda 0.30.x (pyproject.toml pins the minor).  `Dispatcher.compile`, `bind`, the data
# model manager and the argument packer are public numba(-cuda) objects; what is not documented is
#
# * `_cuda_core_kernel`: the cuda.core kernel behind a compiled kernel, ``.library.get_cufunc().kernel``
#   (an AttributeError makes `Kernel` fall back to numba's own launch, with a warning);
# * the flattened form numba gives an array argument, which `DeviceArray.abi` / `Layout` and the packers of
#   `_packed_launch` write by hand: `check_kernel_abi` asserts it before the first compile.

#: the fields of numba-cuda's array data model, in order, as `Layout` and `_packed_launch` flatten them:
#: meminfo and parent (always 0), nitems, itemsize, the data pointer, then ``ndim`` extents and ``ndim``
#: byte strides (the shape and strides tuples) — each one 8-byte kernel parameter
ARRAY_FIELDS = ("meminfo", "parent", "nitems", "itemsize", "data", "shape", "strides")
#: fields holding an ``ndim``-tuple of 64-bit integers (every other field is one 8-byte parameter)
_TUPLE_FIELDS = ("shape", "strides")

_ABI_CHECKED = False


class ByDtype:
    """Two kernels over the same arguments, one for float64 (its shared memory or accumulators in float64),
    one for the narrower dtypes: launched and prepared like a `Kernel`."""

    def __init__(self, narrow: Kernel, wide: Kernel):
        self.narrow, self.wide = narrow, wide

    def kernel(self, dtype) -> Kernel:
        return self.wide if dtype == "float64" else self.narrow

    def launch(self, dtype, *args, **kwargs):
        self.kernel(dtype).launch(dtype, *args, **kwargs)

    def prepare(self, dtype, *args, **kwargs):
        return self.kernel(dtype).prepare(dtype, *args, **kwargs)


class KernelAbiError(RuntimeError):
    """numba-cuda lays kernel arguments out differently from what this launcher packs."""


def _cuda_core_kernel(compiled):
    """The cuda.core `Kernel` of a compiled (and bound) numba-cuda kernel, in the current context."""
    return compiled.library.get_cufunc().kernel


def _cuda_target_context():
    from numba.cuda.descriptor import cuda_target
    return cuda_target.target_context


def _abi_problems(ctx, fields=None) -> list:
    """What differs between numba-cuda's kernel parameters and what the packers write (empty: nothing)."""
    fields = ARRAY_FIELDS if fields is None else tuple(fields)
    problems = []
    for ndim in (1, 3):
        ty = nt.Array(nt.float32, ndim, "C")
        model = ctx.data_model_manager.lookup(ty)
        try:
            count = model.field_count
            positions = [model.get_field_position(f) for f in fields]
        except (AttributeError, KeyError, ValueError) as err:
            actual = getattr(model, "_fields", None)
            problems.append(f"array fields: expected {fields}, numba-cuda has {actual} "
                            f"({type(err).__name__}: {err})")
            break
        if count != len(fields) or positions != list(range(len(fields))):
            actual = getattr(model, "_fields", None)
            problems.append(f"array fields: expected {fields}, numba-cuda has {actual}")
            break
        intp = nt.int64
        for f in fields:
            member = model.get_member_fe_type(f)
            want = nt.UniTuple(intp, ndim) if f in _TUPLE_FIELDS else None
            if want is not None and member != want:
                problems.append(f"array field {f!r} of a {ndim}-d array: expected {want}, numba-cuda has {member}")
        params = ctx.get_arg_packer([ty]).argument_types
        want_params = len(fields) - len(_TUPLE_FIELDS) + len(_TUPLE_FIELDS) * ndim
        sizes = [ctx.get_abi_sizeof(p) for p in params]
        if len(params) != want_params or any(size != 8 for size in sizes):
            problems.append(f"a {ndim}-d array argument: expected {want_params} parameters of 8 bytes, numba-cuda "
                            f"passes {len(params)} of {sizes} bytes")
    for ty, code in _PACK_CODES.items():
        params = ctx.get_arg_packer([ty]).argument_types
        value_bytes = struct.calcsize("<" + code.rstrip("0123456789x"))
        sizes = [ctx.get_abi_sizeof(p) for p in params]
        if sizes != [value_bytes]:
            problems.append(f"a {ty} argument: expected one parameter of {value_bytes} bytes, "
                            f"numba-cuda passes {sizes}")
    return problems


def check_kernel_abi(fields=None):
    """Raise `KernelAbiError` unless numba-cuda flattens array and scalar kernel arguments exactly as
    `DeviceArray.abi`, `Layout` and `_packed_launch` write them (``fields``: the array fields expected, by
    default `ARRAY_FIELDS`).  `Kernel` runs it once, before its first compile for a fast launch."""
    global _ABI_CHECKED
    problems = _abi_problems(_cuda_target_context(), fields)
    if problems:
        raise KernelAbiError(
            f"gpuops: numba-cuda {numba_cuda_version()} lays out kernel arguments differently from what "
            f"gpuops._launch packs, so launches would pass wrong values: " + "; ".join(problems) + ".  gpuops "
            f"supports numba-cuda 0.30.x (pyproject.toml); install that, or set GPUOPS_LAUNCHER=numba to launch "
            f"through numba-cuda's own dispatcher.")
    _ABI_CHECKED = True
