"""The single doorway to numba and numba-cuda.

Every kernel module imports numba through here, so that

* the numpy >= 2.5 compatibility shim is in place before numba-cuda compiles anything:
  numba-cuda 0.30 registers an overload for ``np.row_stack``, which numpy 2.5 removed, and upstream
  declined to fix it (NVIDIA/numba-cuda#907, PR #916).  Restoring the alias is harmless: it is
  exactly what numpy < 2.5 exported;
* swapping the CUDA backend later (numba-cuda-mlir) touches one module.

Importing this module imports numba; ``import gpuops`` does not import it.
"""
import numpy as np

if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

import numba  # noqa: E402
from numba import njit, prange  # noqa: E402,F401
from numba import cuda  # noqa: E402
from numba.cuda import libdevice  # noqa: E402,F401
from numba.cuda import types as nt  # noqa: E402,F401
from numba.cuda.extending import intrinsic, overload  # noqa: E402,F401

#: True when NUMBA_ENABLE_CUDASIM=1 made numba.cuda the CPU-thread simulator
SIMULATOR = bool(numba.config.ENABLE_CUDASIM)

#: njit options shared by every CPU mirror
CPU_JIT = dict(parallel=True, cache=True, nogil=True)


def numba_cuda_version() -> str:
    from importlib.metadata import version
    return version("numba-cuda")


__all__ = ["np", "numba", "njit", "prange", "cuda", "libdevice", "nt", "intrinsic", "overload", "SIMULATOR", "CPU_JIT"]
