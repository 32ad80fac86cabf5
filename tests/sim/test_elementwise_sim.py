"""Tier 2: the CUDA kernels of the elementwise family under numba's CUDA simulator (bounds-checked),
through the full core call path, against the CPU mirrors.  Own process: NUMBA_ENABLE_CUDASIM=1."""
import numpy as np
import pytest

import gpuops
from gpuops._toolchain import SIMULATOR
from helpers import FLOAT_DTYPES, assert_close, rounded, to_f64, to_kind

pytestmark = pytest.mark.skipif(not SIMULATOR, reason="run with NUMBA_ENABLE_CUDASIM=1 (make test-sim)")

# 1024 elements fill one gsmelu block (256 threads × 4): this covers the unrolled path and the tail
SIZE = 1024 + 37
PARAMS = dict(slope=1.3, neg_slope=0.05, alpha=0.2, beta=0.4, delta_t=0.1)


def _x(shape, seed=0):
    x = np.random.default_rng(seed).uniform(-1, 1, shape)
    x.flat[:4] = [np.nan, -0.2, 0.4, 0.0]
    return x


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("size", [SIZE, SIZE - 1], ids=["element-kernels", "word-kernels"])
def test_gsmelu_kernels_match_mirror(dtype, size):
    import gpuops.elementwise as ew
    from gpuops import _core
    x, g = _x(size), _x(size, 1)
    expected_kernel = "gsmelu_forward_words" if size % 4 == 0 or dtype == "float64" else "gsmelu_forward"
    xa = _core.wrap("x", to_kind(x, "simulated", dtype))
    picked = ew._flat_plan(xa, "gsmelu_forward", 4, _core.word_aligned(xa, xa), size, 2)[0]
    assert picked == expected_kernel
    xd, gd = to_kind(x, "simulated", dtype), to_kind(g, "simulated", dtype)
    cpu_x, cpu_g = rounded(x, dtype), rounded(g, dtype)
    assert_close(gpuops.gsmelu(xd, **PARAMS), gpuops.gsmelu(cpu_x, **PARAMS), dtype)
    assert_close(gpuops.gsmelu_backward(gd, xd, **PARAMS), gpuops.gsmelu_backward(cpu_g, cpu_x, **PARAMS), dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_ncrelu_kernels_match_mirror(dtype):
    x, g = _x((2, 3, 5, 7)), _x((2, 6, 5, 7), 1)
    xd, gd = to_kind(x, "simulated", dtype), to_kind(g, "simulated", dtype)
    y = gpuops.ncrelu(xd)
    assert y.shape == (2, 6, 5, 7)
    assert_close(y, gpuops.ncrelu(rounded(x, dtype)), dtype)
    assert_close(gpuops.ncrelu_backward(gd, xd), gpuops.ncrelu_backward(rounded(g, dtype), rounded(x, dtype)), dtype)


def test_bfloat16_is_never_read_as_float16():
    import ml_dtypes
    x = np.array([1.5, -3.0, 100.0, 1e-3], dtype=ml_dtypes.bfloat16)
    y = to_f64(gpuops.gsmelu(to_kind(x.astype(np.float64), "simulated", "bfloat16"), neg_slope=0.0, alpha=0.0,
                             beta=1e-3))
    np.testing.assert_allclose(y[:3], [1.5 - 5e-4, 0.0, 100.0], rtol=1e-2)


def test_bfloat16_rounding_is_nearest_even():
    import ml_dtypes
    vals = np.array([1.0 + 2**-8, 1.0 + 3 * 2**-8, 65504.0, -7.3e-5, 3.3e38], dtype=np.float64)
    y = to_f64(gpuops.gsmelu(to_kind(vals, "simulated", "float32"), neg_slope=1.0, slope=1.0, alpha=0.0,
                             beta=1e-30))
    yb = to_f64(gpuops.gsmelu(to_kind(vals, "simulated", "bfloat16"), neg_slope=1.0, slope=1.0, alpha=0.0,
                              beta=1e-30))
    np.testing.assert_array_equal(yb, y.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64))


def test_noncontiguous_simulated_input_is_made_contiguous():
    x = _x((6, 9))
    xd = to_kind(x, "simulated", "float32")[:, ::2]
    assert_close(gpuops.gsmelu(xd), gpuops.gsmelu(rounded(x, "float32")[:, ::2]), "float32")


def test_strided_copy_kernel():
    from numpy.lib.stride_tricks import as_strided

    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    from gpuops.cuda import _copy
    src = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    view = src.transpose(2, 0, 3, 1)[:, :, ::2]                    # a strided 4-D view
    padded = as_strided(view, (1, 1) + view.shape, (0, 0) + view.strides)
    dst = np.zeros((1, 1) + view.shape, np.float32)
    _copy.COPY.launch("float32", (2,), (32,), 0, 0, FakeCUDAArray(padded), dst)
    np.testing.assert_array_equal(dst[0, 0], view)


@pytest.mark.parametrize("variant", ["words", "elements"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gsmelu_every_variant_forced(variant, dtype):
    """Both kernels of gsmelu (gpuops.elementwise.FLAT_VARIANTS), forced with ``variant=`` on a size both
    can run (whole 64-bit words), against the CPU mirror."""
    import gpuops.elementwise as ew
    assert variant in [v.name for v in ew.FLAT_VARIANTS]
    x, g = _x(SIZE - 1), _x(SIZE - 1, 1)
    xd, gd = to_kind(x, "simulated", dtype), to_kind(g, "simulated", dtype)
    cpu_x, cpu_g = rounded(x, dtype), rounded(g, dtype)
    assert_close(gpuops.gsmelu(xd, **PARAMS, variant=variant), gpuops.gsmelu(cpu_x, **PARAMS), dtype)
    assert_close(gpuops.gsmelu_backward(gd, xd, **PARAMS, variant=variant),
                 gpuops.gsmelu_backward(cpu_g, cpu_x, **PARAMS), dtype)
