"""A strided-to-contiguous copy for ``__cuda_array_interface__`` arrays that have no framework to
make them contiguous (numba device array slices, foreign exporters).  torch and CuPy use their own.

Dimensions are padded to six (size-1 axes, stride 0), which covers every layout up to 6-D; the
kernel gathers ``dst.flat[i] = src[unravel(i)]`` with 64-bit indices.

gpuops._core calls `copy_strided` (importing this module lazily); nothing here imports gpuops._core.
"""
import numpy as np

from gpuops._dtypes import STORAGE
from gpuops._grid import blocks_for
from gpuops._launch import DeviceArray, Kernel, array_type
from gpuops._toolchain import cuda, nt

MAX_NDIM = 6
THREADS = 256


def _copy6(src, dst):
    i = nt.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = nt.int64(cuda.gridDim.x) * cuda.blockDim.x
    n0, n1, n2, n3, n4, n5 = src.shape
    while i < dst.size:
        r = i
        i5 = r % n5
        r //= n5
        i4 = r % n4
        r //= n4
        i3 = r % n3
        r //= n3
        i2 = r % n2
        r //= n2
        i1 = r % n1
        i0 = r // n1
        dst[i0, i1, i2, i3, i4, i5] = src[i0, i1, i2, i3, i4, i5]
        i += step


# the copy never converts, so one "dtype" per storage width
COPY = Kernel(_copy6, lambda dtype: (array_type(dtype, MAX_NDIM, "A"), array_type(dtype, MAX_NDIM, "C")))


def _c_strides(shape, itemsize):
    strides, step = [], itemsize
    for s in reversed(shape):
        strides.append(step)
        step *= max(s, 1)
    return tuple(reversed(strides))


def copy_strided(src, dst, ptr: int, strides, stream: int):
    """Copy ``src`` (a `gpuops._core.Arr` with data at ``ptr`` and byte ``strides``) into the C-contiguous
    CUDA array ``dst`` (an `Arr` of the same shape and dtype) on ``stream``."""
    if src.ndim > MAX_NDIM:
        raise ValueError(f"{src.name}: non-contiguous arrays of more than {MAX_NDIM} dimensions are not "
                         f"supported, got shape {list(src.shape)}; pass a contiguous array")
    pad = MAX_NDIM - src.ndim
    shape = (1,) * pad + tuple(src.shape)
    storage, itemsize, _ = STORAGE[src.dtype]
    typestr = np.dtype(storage).str
    source = DeviceArray(ptr, shape, (0,) * pad + tuple(strides), itemsize, typestr, src.obj)
    dst_ptr = dst.ptr
    if dst_ptr is None:                      # as gpuops._core.data_ptr: read once per Arr
        dst_ptr = dst.ptr = dst.kind.data_ptr(dst)
    target = DeviceArray(dst_ptr, shape, _c_strides(shape, itemsize), itemsize, typestr, dst.obj, dst.size)
    n = max(src.size, 1)
    COPY.launch(src.dtype, (blocks_for(n, THREADS),), (THREADS,), stream, src.device, source, target)
