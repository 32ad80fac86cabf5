"""The single doorway to numba and numba-cuda.

Every kernel module imports numba through here, so that

* the numpy >= 2.5 compatibility shim is in place before numba-cuda compiles anything:
  numba-cuda 0.30 registers an overload for ``np.row_stack``, which numpy 2.5 removed, and upstream
  declined to fix it (NVIDIA/numba-cuda#907, PR #916).  Restoring the alias is harmless: it is
  exactly what numpy < 2.5 exported;
* the CPU mirrors run on numba's TBB threading layer (`_use_tbb`);
* swapping the CUDA backend later (numba-cuda-mlir) touches one module.

``njit``, ``prange``, ``CPU_JIT`` and ``SIMULATOR`` only need numba.  ``cuda``, ``libdevice``, ``nt``,
``intrinsic`` and ``overload`` import numba.cuda (about 0.75 s) on first access (`__getattr__`), so the
CPU path never pays for it; ``from gpuops._toolchain import cuda`` works as before.

Importing this module imports numba; ``import gpuops`` does not import it.
"""
import ctypes
import importlib
import os
import warnings

import numpy as np

if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

import numba  # noqa: E402
from numba import njit, prange  # noqa: E402,F401

#: True when NUMBA_ENABLE_CUDASIM=1 made numba.cuda the CPU-thread simulator (numba's own config: reading it
#: imports nothing of numba.cuda)
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)

#: njit options shared by every CPU mirror.  A parallel function must only be called from Python, never
#: from another njit function: a cached caller of a parallel function segfaults once loaded from the disk
#: cache (numba#8578; tests/core/test_processes.py checks the rule).
CPU_JIT = dict(parallel=True, cache=True, nogil=True)

# name -> (module, attribute): resolved on first access, as numba.cuda is needed by the CUDA path only
_CUDA_NAMES = {
    "cuda": ("numba.cuda", None),
    "libdevice": ("numba.cuda.libdevice", None),
    "nt": ("numba.cuda.types", None),
    "intrinsic": ("numba.cuda.extending", "intrinsic"),
    "overload": ("numba.cuda.extending", "overload"),
}


def __getattr__(name):
    try:
        module, attr = _CUDA_NAMES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value      # later lookups are plain module attributes
    return value


_TBB_LIBRARIES = ("libtbb.so.12", "tbb12.dll", "libtbb.12.dylib")


def _preload_pip_tbb():
    """Load the libtbb of the pip ``tbb`` package, if installed.

    pip puts it in ``<prefix>/lib``, which the dynamic loader does not search for a virtualenv's python
    (numba#6108), so numba would not find it and would fall back to OpenMP.  Once loaded by path, numba's
    own load by soname finds it.  It is also preferred over an older system TBB that numba rejects."""
    from importlib.metadata import PackageNotFoundError, distribution
    try:
        files = distribution("tbb").files or ()
    except PackageNotFoundError:
        return                  # a conda or system TBB is on the loader's path already, if any
    for file in files:
        if file.name in _TBB_LIBRARIES:
            try:
                ctypes.CDLL(str(file.locate()), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass            # numba reports the missing layer on the first parallel call
            return


def _use_tbb():
    """Make numba's TBB layer the CPU mirrors' threading layer, before any parallel function runs.

    The mirrors run in forked children (multiprocessing, DataLoader workers) and in several threads at
    once (nogil, JAX callbacks).  GNU OpenMP, numba's pick when TBB is not found, aborts forked children
    of a process that used it; workqueue aborts on concurrent calls.  TBB is safe for both.  It is a
    declared dependency (pyproject.toml); where it is missing (pip has no TBB wheel for Linux aarch64, a
    machine where nothing can be installed) the CPU ops still run on numba's default layer, with a
    warning that forked children are not safe.  NUMBA_THREADING_LAYER, when set, is always respected."""
    explicit = "NUMBA_THREADING_LAYER" in os.environ
    try:
        layer = numba.threading_layer()     # raises until the first parallel function has run
    except ValueError:
        _preload_pip_tbb()                  # also for an explicit "tbb"
        if explicit:
            return
        if _tbb_loads():
            numba.config.THREADING_LAYER = "tbb"
        else:
            # a machine without TBB (an image where nothing can be installed, a platform pip has no wheel
            # for) still runs the CPU ops, on numba's default layer, and says what it gives up
            warnings.warn("TBB is not installed (pip install tbb): gpuops' CPU ops run on numba's default "
                          "threading layer, which is not safe in forked children (multiprocessing with fork, "
                          "DataLoader workers)", RuntimeWarning, stacklevel=2)
        return
    if layer != "tbb" and not explicit:
        warnings.warn(f"numba's threading layer was already started as {layer!r} before gpuops was "
                      "used: its CPU ops are then not safe in forked children (run gpuops before other "
                      "parallel numba code, or start Python with NUMBA_THREADING_LAYER=tbb)",
                      RuntimeWarning, stacklevel=2)


def _tbb_loads() -> bool:
    """Whether numba's TBB layer can start (numba checks the TBB version when it imports its pool)."""
    try:
        importlib.import_module("numba.np.ufunc.tbbpool")
    except ImportError:
        return False
    return True


_use_tbb()


def numba_cuda_version() -> str:
    from importlib.metadata import version
    return version("numba-cuda")


__all__ = ["np", "numba", "njit", "prange", "cuda", "libdevice", "nt", "intrinsic", "overload", "SIMULATOR", "CPU_JIT"]
