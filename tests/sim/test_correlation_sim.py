"""Tier 2: every correlation CUDA kernel under the CUDA simulator against the CPU mirror, on tiny
shapes (the simulator runs one OS thread per CUDA thread: a few blocks per launch).

Run in its own process: ``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/sim/test_correlation_sim.py``.
Kernels covered: SAMPLE_FORWARD (float32, float16), SAMPLE_FORWARD64, SAMPLE_FORWARD_DIRECT (window
larger than the tile region), SAMPLE_BACKWARD (float32, float16; both gradients from one launch),
SAMPLE_BACKWARD64, through spatial_correlation_sample and correlation.
"""
import numpy as np
import pytest

from gpuops._toolchain import SIMULATOR

pytestmark = pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (own process)")

import gpuops.correlations as gc  # noqa: E402

TOL = {"float16": 2e-2, "float32": 1e-5, "float64": 1e-12}


def _dev(a):
    from numba import cuda
    return cuda.to_device(a)


def _host(d):
    return d.copy_to_host()


def _pair(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)


def _check(dtype, shape, params, fwd=gc.spatial_correlation_sample, bwd=gc.spatial_correlation_sample_backward):
    a, b = _pair(shape, dtype, 0)
    want = fwd(a, b, **params)                                       # CPU mirror
    got = fwd(_dev(a), _dev(b), **params)                            # CUDA kernels, simulated
    assert type(got).__module__.startswith("numba.cuda.simulator")
    got = _host(got)
    assert got.dtype == want.dtype == np.dtype(dtype)
    tol = TOL[dtype]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol)
    g = np.random.default_rng(1).standard_normal(want.shape).astype(dtype)
    wa, wb = bwd(g, a, b, **params)
    ga, gb = bwd(_dev(g), _dev(a), _dev(b), **params)
    np.testing.assert_allclose(_host(ga).astype(np.float64), wa.astype(np.float64), rtol=tol, atol=tol * 4)
    np.testing.assert_allclose(_host(gb).astype(np.float64), wb.astype(np.float64), rtol=tol, atol=tol * 4)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_tiled_kernels_patch_and_dilation(dtype):
    # even patch width with dilation_patch 2, kernel 1: one tile, 2 patch rows -> 2 blocks forward
    _check(dtype, (1, 3, 5, 9), dict(patch_size=(2, 4), dilation_patch=(1, 2), padding=(0, 1)))


def test_tiled_kernels_window_stride_two_groups():
    # kernel 3 with stride and padding; patch width 23 > G = 21 splits the columns into two groups
    _check("float32", (1, 2, 4, 6), dict(kernel_size=(3, 2), patch_size=(1, 23), stride=(1, 2), padding=1,
                                         dilation=(1, 2)))


def test_multiple_channel_chunks_and_batch():
    # C = 17 > the forward chunk (8) and the backward channel block (16); N = 2
    _check("float32", (2, 17, 3, 4), dict(patch_size=(1, 3)))


def test_direct_forward_kernel():
    # window extent 9 rows > the 8-row tile region: SAMPLE_FORWARD_DIRECT (backward stays tiled)
    _check("float32", (1, 2, 10, 3), dict(kernel_size=(3, 1), dilation=(4, 1), patch_size=(1, 2)))


def test_correlation_negative_internal_padding():
    _check("float32", (1, 2, 6, 7), dict(pad_size=1, kernel_size=3, max_displacement=2, stride1=2, stride2=2),
           fwd=gc.correlation, bwd=gc.correlation_backward)


def test_register_tiled_kernels_group9_phase2():
    # patch width 5, dilation_patch 2: SAMPLE_FORWARD_RT9 and SAMPLE_BACKWARD_RT9 (2 x-phases, padding)
    _check("float32", (1, 3, 5, 9), dict(patch_size=(2, 5), dilation_patch=(1, 2), padding=(0, 1)))


def test_register_tiled_kernels_group21_and_fp16():
    # patch width 21: SAMPLE_FORWARD_RT21 / SAMPLE_BACKWARD_RT21; k3 stride 2 forward (box sum), dp 4
    _check("float16", (1, 2, 4, 7), dict(patch_size=(1, 21), dilation_patch=(2, 1)))
    _check("float32", (1, 2, 6, 7), dict(pad_size=3, kernel_size=1, max_displacement=4, stride1=1, stride2=2),
           fwd=gc.correlation, bwd=gc.correlation_backward)


@pytest.mark.parametrize("direction,variant", [("forward", "register_tiled"), ("forward", "tiled"),
                                               ("forward", "direct"), ("backward", "register_tiled"),
                                               ("backward", "tiled")])
def test_every_variant_forced(direction, variant):
    """Each variant, forced with ``variant=``, matches the CPU mirror on a call every variant can run
    (kernel 1, stride 1, a patch 5 wide with dilation_patch 2)."""
    names = {"forward": gc.FORWARD_VARIANTS, "backward": gc.BACKWARD_VARIANTS}[direction]
    assert variant in [v.name for v in names]
    params = dict(kernel_size=1, patch_size=5, dilation_patch=2)
    a, b = _pair((1, 2, 5, 9), "float32", 3)
    want = gc.spatial_correlation_sample(a, b, **params)
    if direction == "forward":
        got = gc.spatial_correlation_sample(_dev(a), _dev(b), **params, variant=variant)
        np.testing.assert_allclose(_host(got), want, rtol=1e-5, atol=1e-5)
        return
    g = np.random.default_rng(1).standard_normal(want.shape).astype(np.float32)
    for w, o in zip(gc.spatial_correlation_sample_backward(g, a, b, **params),
                    gc.spatial_correlation_sample_backward(_dev(g), _dev(a), _dev(b), **params, variant=variant)):
        np.testing.assert_allclose(_host(o), w, rtol=1e-5, atol=4e-5)
