"""The one way gpuops launches a CUDA kernel.

`Kernel` wraps a plain Python kernel function.  It is compiled lazily, once per (storage dtype,
device), with numba-cuda's on-disk cache, for the explicit signature its family declares.  Launches
then bypass numba's per-call dispatch (≈44 µs with torch tensors) and go straight to
``cuda.core.launch`` with numba's flattened kernel ABI (≈4 µs):

    array argument  -> meminfo=0, parent=0, nitems, itemsize, data_ptr, *shape, *strides_in_bytes
    scalar argument -> numpy scalar of the exact signature type

That relies on one numba-cuda internal (``_codelibrary.get_cufunc().kernel``), so the ordinary
``dispatcher[grid, block, stream, shmem](...)`` launch stays as the fallback: always under the CUDA
simulator, whenever the internal is missing, and on request (``GPUOPS_LAUNCHER=numba`` or
`use_fallback`).  Both paths are tested.

Array arguments are `DeviceArray` descriptors (raw pointer, shape, byte strides) on a GPU, and plain
numpy arrays under the simulator; family modules build them with `gpuops._core.kernel_arg`.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings

import numpy as np

from gpuops._core import blocks_for  # noqa: F401  (kernel modules import it from here)
from gpuops._dtypes import FLOAT_DTYPES, STORAGE
from gpuops._toolchain import SIMULATOR, cuda, nt

#: every Kernel ever defined, for the compile/ABI checks of the test suite
KERNELS: list["Kernel"] = []

_SCALAR_TYPES = {
    nt.float32: np.float32, nt.float64: np.float64, nt.int32: np.int32, nt.int64: np.int64,
    nt.uint32: np.uint32, nt.uint64: np.uint64, nt.boolean: np.bool_,
}

_force_fallback = os.environ.get("GPUOPS_LAUNCHER", "fast") == "numba"


class DeviceArray:
    """A device buffer as the kernel ABI sees it: pointer, shape, strides in bytes, storage dtype."""

    __slots__ = ("ptr", "shape", "strides", "itemsize", "typestr", "owner", "abi")

    def __init__(self, ptr, shape: tuple, strides: tuple, itemsize, typestr, owner=None, size=None):
        self.ptr, self.shape, self.strides = ptr, shape, strides
        self.itemsize, self.typestr, self.owner = itemsize, typestr, owner
        if size is None:
            size = 1
            for s in shape:
                size *= s
        self.abi = (0, 0, size, itemsize, ptr, *shape, *strides)

    def as_numba(self):
        """A numba device array over the same memory (fallback launches only)."""
        desc = {"shape": self.shape, "strides": self.strides, "typestr": self.typestr,
                "data": (self.ptr, False), "version": 2}
        return cuda.from_cuda_array_interface(desc, owner=self.owner, sync=False)


class _Compiled:
    __slots__ = ("kernel", "converters", "fast")

    def __init__(self, kernel, converters, fast):
        self.kernel, self.converters, self.fast = kernel, converters, fast


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
        self.jit_options = {"cache": not SIMULATOR, **jit_options}
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
            try:
                with cuda.gpus[device]:
                    kernel = self.dispatcher.compile(sig)._codelibrary.get_cufunc().kernel
            except AttributeError as err:  # numba-cuda internals moved: degrade, do not break
                warnings.warn(f"gpuops: fast launch unavailable ({err}); using numba's launcher",
                              RuntimeWarning, stacklevel=3)
                fast = False
        entry = self._compiled[(dtype, device)] = _Compiled(kernel, converters, fast)
        return entry

    def launch(self, dtype, grid, block, stream, device, *args, shmem=0):
        """Launch on ``stream`` (a raw cudaStream_t int, 0 = legacy default) of ``device``."""
        entry = self._compiled.get((dtype, device))
        if entry is None:
            entry = self._compile(dtype, device)
        if entry.fast and not _force_fallback:
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
            return
        self._launch_numba(entry, grid, block, stream, device, args, shmem)

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


# ---------------------------------------------------------------------------------------------
# cached launch machinery: creating a stream object per call costs ≈40 µs, so cache by handle

_CORE = {}
_STREAMS: dict = {}
_NUMBA_STREAMS: dict = {}
_CONFIGS: dict = {}
_SCALARS: dict = {}


class _ThreadState(threading.local):
    device = None


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


def _numba_stream(handle: int):
    stream = _NUMBA_STREAMS.get(handle)
    if stream is None:
        stream = cuda.default_stream() if handle == 0 else cuda.external_stream(handle)
        _NUMBA_STREAMS[handle] = stream
    return stream
