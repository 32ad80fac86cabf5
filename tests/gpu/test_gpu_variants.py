"""Every kernel variant, forced with ``variant=``, on CUDA against the CPU mirror: the cases that make a
compute-sanitizer run (benchmarks/gpu_session.sh sanitize) launch every variant, not only the ones the
battery's small examples pick."""
import numpy as np
import pytest

import gpuops.conv as cv
import gpuops.correlations as gc
import gpuops.pyramid as pyramid
import gpuops.raft as raft
from gpuops._variants import names
from helpers import assert_close, rounded, to_kind

torch = pytest.importorskip("torch")


def _u(shape, seed):
    return np.random.default_rng(seed).uniform(-1, 1, shape)


@pytest.mark.parametrize("variant", names(cv.CORRELATE_VARIANTS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_depthwise_variants(variant, dtype):
    x, w, b = _u((2, 4, 19, 17), 0), _u((4, 1, 3, 3), 1), _u((4,), 2)      # 4 channels: whole words (nhwc_fast)
    cuda = [to_kind(a, "torch", dtype, "cuda") for a in (x, w, b)]
    seen = [rounded(a, dtype) for a in (x, w, b)]
    y = cv.conv2d_depthwise(*cuda, padding=1, variant=variant)
    assert_close(y, cv.conv2d_depthwise(*seen, padding=1), dtype, scale=4)
    g = _u(tuple(y.shape), 3)
    got = cv.conv2d_depthwise_backward(to_kind(g, "torch", dtype, "cuda"), *cuda, padding=1, variant=variant)
    want = cv.conv2d_depthwise_backward(rounded(g, dtype), *seen, padding=1)
    for a, e in zip(got, want):
        assert_close(a, e, dtype, scale=16)


@pytest.mark.parametrize("direction,variants", [("forward", gc.FORWARD_VARIANTS), ("backward", gc.BACKWARD_VARIANTS)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_correlation_variants(direction, variants, dtype):
    params = dict(kernel_size=1, patch_size=9, dilation_patch=2)
    a, b = _u((2, 4, 12, 40), 0), _u((2, 4, 12, 40), 1)
    cuda = [to_kind(t, "torch", dtype, "cuda") for t in (a, b)]
    seen = [rounded(t, dtype) for t in (a, b)]
    want = gc.spatial_correlation_sample(*seen, **params)
    g = _u(want.shape, 2)
    for variant in names(variants):
        if direction == "forward":
            assert_close(gc.spatial_correlation_sample(*cuda, **params, variant=variant), want, dtype, scale=4)
            continue
        got = gc.spatial_correlation_sample_backward(to_kind(g, "torch", dtype, "cuda"), *cuda, **params,
                                                     variant=variant)
        for t, e in zip(got, gc.spatial_correlation_sample_backward(rounded(g, dtype), *seen, **params)):
            assert_close(t, e, dtype, scale=16)


@pytest.mark.parametrize("variant", names(cv.WEIGHT_GRAD_VARIANTS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_depthwise_weight_gradient_variants(variant, dtype):
    x, w, b, g = _u((2, 4, 19, 17), 0), _u((4, 1, 3, 3), 1), _u((4,), 2), _u((2, 4, 19, 17), 3)
    cuda = [to_kind(a, "torch", dtype, "cuda") for a in (g, x, w, b)]
    got = cv.conv2d_depthwise_backward(*cuda, padding=1, weight_variant=variant)
    want = cv.conv2d_depthwise_backward(*[rounded(a, dtype) for a in (g, x, w, b)], padding=1)
    for a, e in zip(got[1:], want[1:]):
        assert_close(a, e, dtype, scale=64)


@pytest.mark.parametrize("variant", names(cv.STRIDED_GRAD_X_VARIANTS))
def test_depthwise_strided_input_gradient_variants(variant):
    x, w, g = _u((2, 4, 19, 17), 0), _u((4, 1, 3, 3), 1), _u((2, 4, 10, 9), 2)
    cuda = [to_kind(a, "torch", "float32", "cuda") for a in (g, x, w)]
    got = cv.conv2d_depthwise_backward(*cuda, stride=2, padding=1, variant=variant)[0]
    assert_close(got, cv.conv2d_depthwise_backward(g, x, w, stride=2, padding=1)[0], "float32", scale=4)


@pytest.mark.parametrize("variant", names(raft.FORWARD_VARIANTS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_raft_lookup_variants(variant, dtype):
    rng = np.random.default_rng(4)
    f1, f2 = _u((2, 40, 9, 14), 5), _u((2, 40, 9, 14), 6)
    coords = rng.uniform(-3, 16, (2, 2, 9, 14))
    cuda = [to_kind(a, "torch", dtype, "cuda") for a in (f1, f2, coords)]
    seen = [rounded(a, dtype) for a in (f1, f2, coords)]
    y = raft.corr_lookup(*cuda, radius=2, num_levels=3, variant=variant)
    assert_close(y, raft.corr_lookup(*seen, radius=2, num_levels=3), dtype, scale=8)
    g = _u(tuple(y.shape), 7)
    got = raft.corr_lookup_backward(to_kind(g, "torch", dtype, "cuda"), *cuda, radius=2, num_levels=3, variant=variant)
    want = raft.corr_lookup_backward(rounded(g, dtype), *seen, radius=2, num_levels=3)
    for a, e in zip(got, want):
        assert_close(a, e, dtype, scale=64)


@pytest.mark.parametrize("variant", names(pyramid.GEMM_VARIANTS)[1:])         # the GPU GEMMs of corr_pyramid
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_pyramid_gemm_variants(variant, dtype):
    import importlib.util
    if variant == "cupy" and (importlib.util.find_spec("cupy") is None or dtype == "bfloat16"):
        pytest.skip("CuPy is not installed, or the dtype is bfloat16 (CuPy has none)")
    f1, f2 = _u((2, 37, 5, 13), 0), _u((2, 37, 5, 13), 1)       # ragged tiles: 65 queries, 37 channels
    cuda = [to_kind(a, "torch", dtype, "cuda") for a in (f1, f2)]
    seen = [rounded(a, dtype) for a in (f1, f2)]
    levels = pyramid.corr_pyramid(*cuda, num_levels=2, variant=variant)
    for a, e in zip(levels, pyramid.corr_pyramid(*seen, num_levels=2)):
        assert_close(a, e, dtype, scale=4)
    g = tuple(_u(tuple(a.shape), 2 + i) for i, a in enumerate(levels))
    got = pyramid.corr_pyramid_backward(tuple(to_kind(a, "torch", dtype, "cuda") for a in g), *cuda, num_levels=2,
                                        variant=variant)
    for a, e in zip(got, pyramid.corr_pyramid_backward(tuple(rounded(a, dtype) for a in g), *seen, num_levels=2)):
        assert_close(a, e, dtype, scale=16)
