"""Tier 2: every conv kernel under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) against the CPU mirror.

Simulated device arrays (``numba.cuda.to_device``) take the CUDA path of the core.  Shapes are tiny:
the simulator runs one OS thread per CUDA thread.  The direct (non-tiled) fallbacks are forced by
shrinking the shared-memory budget the core plans with.
"""
import ml_dtypes
import numpy as np
import pytest

from gpuops._toolchain import SIMULATOR

pytestmark = pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run in its own process)")

if SIMULATOR:
    from numba import cuda

    import gpuops.conv as cv

DTYPES = {"float32": (np.float32, 1e-5), "bfloat16": (ml_dtypes.bfloat16, 2e-2), "float16": (np.float16, 4e-3),
          "float64": (np.float64, 1e-12)}
RNG = np.random.default_rng(7)

CASES = [
    # N, C, m, H, W, (kh, kw), stride, padding, dilation, bias
    (1, 2, 1, 6, 7, (3, 3), 1, 1, 1, True),
    (1, 1, 2, 7, 5, (2, 3), (2, 1), (1, 2), (1, 2), False),
]


def _dev(a):
    return cuda.to_device(a)


def _host(a):
    return np.asarray(a.copy_to_host(), np.float64)


def _close(got, want, tol):
    want = np.asarray(want, np.float64)
    np.testing.assert_allclose(_host(got), want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))


def _depthwise(case, dtype, tol):
    N, C, m, H, W, k, s, p, d, with_bias = case
    x = RNG.standard_normal((N, C, H, W)).astype(dtype)
    w = RNG.standard_normal((C * m, 1, *k)).astype(dtype)
    b = RNG.standard_normal(C * m).astype(dtype) if with_bias else None
    kw = dict(stride=s, padding=p, dilation=d)
    y = cv.conv2d_depthwise(x, w, b, **kw)
    _close(cv.conv2d_depthwise(_dev(x), _dev(w), None if b is None else _dev(b), **kw), y, tol)
    g = RNG.standard_normal(y.shape).astype(dtype)
    ref = cv.conv2d_depthwise_backward(g, x, w, b, **kw)
    got = cv.conv2d_depthwise_backward(_dev(g), _dev(x), _dev(w), None if b is None else _dev(b), **kw)
    for r, o in zip(ref, got):
        assert (r is None) == (o is None)
        if r is not None:
            _close(o, r, tol)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=["s1-bias", "strided-multiplier"])
def test_depthwise_tiled(case, dtype):
    _depthwise(case, *DTYPES[dtype])


def test_depthwise_tiled_float64():
    _depthwise(CASES[0], *DTYPES["float64"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_depthwise_direct_fallbacks(monkeypatch, dtype):
    """DW_DIRECT (forward and stride-1 input gradient) and DW_WGRAD_DIRECT."""
    monkeypatch.setattr(cv, "_SHARED", 0)
    _depthwise((1, 1, 2, 5, 6, (3, 2), 1, (1, 0), 1, True), *DTYPES[dtype])


FAST_CASES = [
    # N, C, m, H, W, (k, k), stride, padding, dilation, bias: the generated kernels (k3/k5/k7, s1/s2)
    (1, 2, 1, 10, 9, (3, 3), 1, 1, 1, True),
    (1, 1, 2, 9, 11, (3, 3), 2, 1, 1, False),
    (1, 1, 1, 11, 6, (5, 5), 1, 2, 1, True),
    (1, 1, 1, 7, 12, (5, 5), 2, 2, 1, True),
    (1, 1, 1, 12, 7, (7, 7), 1, 3, 1, True),
    (2, 1, 1, 9, 5, (7, 7), 2, 3, 1, True),
]


@pytest.mark.parametrize("case", FAST_CASES, ids=lambda c: f"k{c[5][0]}s{c[6]}")
def test_depthwise_fast_kernels(case, monkeypatch):
    """Every generated kernel (forward / stride-1 input gradient, weight-gradient bands) runs and
    matches the CPU mirror; the launches really take the fast path."""
    from gpuops import _core
    names = []
    real_run = _core.run

    def spy(family, kernel, *args, **kwargs):
        names.append(kernel)
        return real_run(family, kernel, *args, **kwargs)
    monkeypatch.setattr(_core, "run", spy)
    dtype = "bfloat16" if case[5][0] == 3 and case[6] == 1 else "float32"
    _depthwise(case, *DTYPES[dtype])
    k, s = case[5][0], case[6]
    cuda_names = set(names)
    assert f"dw_fast_{k}_{s}" in cuda_names
    assert f"dw_wgrad_fast_{k}_{s}_0" in cuda_names
    if k > 3:
        assert f"dw_wgrad_fast_{k}_{s}_1" in cuda_names


TILE_CASES = [
    # stride-1 planes >= 16 wide take the shared-memory tile kernels (forward and input gradient)
    (1, 2, 1, 19, 17, (3, 3), 1, 1, 1, True),
    (1, 1, 2, 9, 18, (3, 3), 1, 0, 1, False),
    (1, 1, 1, 17, 18, (5, 5), 1, 2, 1, True),
    (1, 1, 1, 11, 20, (7, 7), 1, 3, 1, True),
    (1, 1, 1, 8, 70, (3, 3), 1, (2, 1), 1, False),
    (2, 1, 1, 8, 16, (7, 7), 1, 3, 1, True),          # one warp per block: fewer threads than taps
]


@pytest.mark.parametrize("case", TILE_CASES, ids=lambda c: f"k{c[5][0]}-{c[3]}x{c[4]}-m{c[2]}")
def test_depthwise_tile_kernels(case, monkeypatch):
    from gpuops import _core
    names = []
    real_run = _core.run

    def spy(family, kernel, *args, **kwargs):
        names.append(kernel)
        return real_run(family, kernel, *args, **kwargs)
    monkeypatch.setattr(_core, "run", spy)
    dtype = "bfloat16" if case[3] == 19 else "float32"
    _depthwise(case, *DTYPES[dtype])
    k, m = case[5][0], case[2]
    assert names.count(f"dw_tile_{k}") == (1 if m > 1 else 2), names
    assert f"dw_wgrad_tile_{k}" in names


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_im2col_col2im(dtype):
    dt, tol = DTYPES[dtype]
    x = RNG.standard_normal((2, 2, 5, 6)).astype(dt)
    kw = dict(stride=(2, 1), padding=1, dilation=(1, 2))
    cols = cv.im2col(x, (2, 3), **kw)
    _close(cv.im2col(_dev(x), (2, 3), **kw), cols, tol)
    c = RNG.standard_normal(cols.shape).astype(dt)
    back = cv.col2im(c, (2, 3), input_size=(5, 6), **kw)
    _close(cv.col2im(_dev(c), (2, 3), input_size=(5, 6), **kw), back, tol)
    _close(cv.im2col_backward(_dev(c), (5, 6), (2, 3), **kw), back, tol)
    _close(cv.col2im_backward(_dev(x), (2, 3), **kw), cols, tol)
    # unbatched
    _close(cv.im2col(_dev(x[0]), 2), cv.im2col(x[0], 2), tol)


def test_strided_grad_x_grid_stride_loops():
    """The strided input gradient walks planes, rows and column blocks with grid strides: a 1×2×1 grid
    of 32-thread blocks (far fewer than planes × rows × columns) gives the full-grid result."""
    from gpuops.cuda.conv import DW_GRAD_X_STRIDED
    N, C, m, H, W, kh, kw, s, p = 2, 2, 2, 5, 40, 3, 2, 2, 1
    Ho, Wo = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    g = RNG.standard_normal((N, C * m, Ho, Wo)).astype(np.float32)
    w = RNG.standard_normal((C * m, 1, kh, kw)).astype(np.float32)
    x = np.zeros((N, C, H, W), np.float32)
    want = cv.conv2d_depthwise_backward(g, x, w, stride=s, padding=p)[0]
    gx = cuda.device_array(N * C * H * W, np.float32)
    DW_GRAD_X_STRIDED.dispatcher[(1, 2, 1), (32,)](_dev(g.ravel()), _dev(w.ravel()), gx, C, m, H, W, Ho, Wo,
                                                  kh, kw, s, s, p, p, 1, 1, N * C)
    _close(gx, want.ravel(), 1e-5)


@pytest.mark.parametrize("variant", ["tile", "fast", "tiled", "direct"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_depthwise_every_correlate_variant(variant, dtype):
    """Each variant of the forward and the stride-1 input gradient, forced with ``variant=``, matches the
    CPU mirror on a call every variant can run (K3, stride 1, a plane 17 wide)."""
    from gpuops._variants import names
    assert variant in names(cv.CORRELATE_VARIANTS)
    dt, tol = DTYPES[dtype]
    x = RNG.standard_normal((1, 2, 9, 17)).astype(dt)
    w = RNG.standard_normal((2, 1, 3, 3)).astype(dt)
    b = RNG.standard_normal(2).astype(dt)
    y = cv.conv2d_depthwise(x, w, b, padding=1)
    _close(cv.conv2d_depthwise(_dev(x), _dev(w), _dev(b), padding=1, variant=variant), y, tol)
    g = RNG.standard_normal(y.shape).astype(dt)
    want = cv.conv2d_depthwise_backward(g, x, w, b, padding=1)
    got = cv.conv2d_depthwise_backward(_dev(g), _dev(x), _dev(w), _dev(b), padding=1, variant=variant)
    for r, o in zip(want, got):
        _close(o, r, tol)


def test_a_forced_variant_that_cannot_run_says_why():
    x, w = _dev(np.ones((1, 1, 5, 5), np.float32)), _dev(np.ones((1, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="variant 'tile' cannot run this call: needs .* K = 3/5/7"):
        cv.conv2d_depthwise(x, w, variant="tile")


@pytest.mark.parametrize("variant", ["tile", "fast", "tiled", "direct"])
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_every_weight_gradient_variant(variant, bias):
    """Each weight-gradient variant (gpuops.conv.WEIGHT_GRAD_VARIANTS), forced with ``weight_variant=``, on
    a call all four can run (K3, stride 1, a plane 17 wide), against the CPU mirror."""
    assert variant in [v.name for v in cv.WEIGHT_GRAD_VARIANTS]
    x = RNG.standard_normal((2, 2, 9, 17)).astype(np.float32)
    w = RNG.standard_normal((2, 1, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(2).astype(np.float32) if bias else None
    g = RNG.standard_normal((2, 2, 9, 17)).astype(np.float32)
    want = cv.conv2d_depthwise_backward(g, x, w, b, padding=1)
    got = cv.conv2d_depthwise_backward(_dev(g), _dev(x), _dev(w), None if b is None else _dev(b), padding=1,
                                       weight_variant=variant)
    for r, o in zip(want[1:], got[1:]):
        assert (r is None) == (o is None)
        if r is not None:
            _close(o, r, 1e-5)


@pytest.mark.parametrize("variant", ["fixed", "strided"])
def test_depthwise_every_strided_input_gradient_variant(variant):
    """Both stride-2 input-gradient kernels (gpuops.conv.STRIDED_GRAD_X_VARIANTS), forced, against the mirror."""
    assert variant in [v.name for v in cv.STRIDED_GRAD_X_VARIANTS]
    x = RNG.standard_normal((1, 2, 9, 11)).astype(np.float32)
    w = RNG.standard_normal((2, 1, 3, 3)).astype(np.float32)
    g = RNG.standard_normal((1, 2, 5, 6)).astype(np.float32)
    want = cv.conv2d_depthwise_backward(g, x, w, stride=2, padding=1)[0]
    got = cv.conv2d_depthwise_backward(_dev(g), _dev(x), _dev(w), stride=2, padding=1, variant=variant)[0]
    _close(got, want, 1e-5)


# ---------------------------------------------------------------------------------------------
# channels-last (NHWC) kernels: forced with variant=/weight_variant= on NCHW simulated arrays (the core
# converts them to NHWC and returns channels-last results), against the CPU mirror (NCHW kernels, numpy)

NHWC_FAST_CASES = [
    # N, C, m, H, W, k, stride, padding, dilation, bias, dtype: the generated kernels, every (K, stride) with
    # both word widths (2 float32 / 4 16-bit channels), taps in registers (K3) and in shared memory (K5, K7),
    # odd and even padding at stride 2
    (1, 4, 1, 6, 7, 3, 1, 1, 1, True, "float32"),
    (2, 8, 1, 5, 9, 3, 1, 0, 1, False, "bfloat16"),
    (1, 8, 1, 7, 9, 3, 2, 1, 1, False, "bfloat16"),
    (1, 4, 1, 9, 11, 3, 2, 0, 1, True, "float32"),
    (1, 4, 1, 6, 9, 5, 1, 2, 1, True, "float32"),
    (1, 8, 1, 6, 5, 5, 1, 2, 1, True, "float16"),
    (1, 2, 1, 5, 7, 5, 2, 1, 1, False, "float32"),
    (1, 4, 1, 7, 8, 5, 2, 2, 1, True, "bfloat16"),
    (1, 2, 1, 8, 9, 7, 1, 3, 1, True, "float32"),
    (1, 4, 1, 9, 8, 7, 1, 3, 1, False, "bfloat16"),
    (2, 4, 1, 7, 6, 7, 2, 3, 1, True, "float16"),
    (1, 2, 1, 9, 9, 7, 2, 2, 1, True, "float32"),
]


def _nhwc(case, variant, weight_variant=None, tol=None):
    """The forward and backward of ``case`` with the channels-last variants forced; returns the kernels run."""
    from gpuops import _core
    N, C, m, H, W, k, s, p, d, with_bias, dtype = case
    dt, tol0 = DTYPES[dtype]
    tol = tol or tol0
    x = RNG.standard_normal((N, C, H, W)).astype(dt)
    w = RNG.standard_normal((C * m, 1, *((k, k) if isinstance(k, int) else k))).astype(dt)
    b = RNG.standard_normal(C * m).astype(dt) if with_bias else None
    kw = dict(stride=s, padding=p, dilation=d)
    y = cv.conv2d_depthwise(x, w, b, **kw)
    g = RNG.standard_normal(y.shape).astype(dt)
    want = cv.conv2d_depthwise_backward(g, x, w, b, **kw)
    names = []
    real_run = _core.run

    def spy(family, kernel, *args, **kwargs):
        names.append(kernel)
        return real_run(family, kernel, *args, **kwargs)
    _core.run = spy
    try:
        dev_b = None if b is None else _dev(b)
        got_y = cv.conv2d_depthwise(_dev(x), _dev(w), dev_b, variant=variant, **kw)
        got = cv.conv2d_depthwise_backward(_dev(g), _dev(x), _dev(w), dev_b, variant=variant,
                                           weight_variant=weight_variant or variant, **kw)
    finally:
        _core.run = real_run
    _close(got_y, y, tol)
    for r, o in zip(want, got):
        assert (r is None) == (o is None)
        if r is not None:
            _close(o, r, tol)
    return names


@pytest.mark.parametrize("case", NHWC_FAST_CASES, ids=lambda c: f"k{c[5]}s{c[6]}-{c[10]}")
def test_nhwc_fast_kernels(case):
    """Every generated channels-last kernel (forward, strided input gradient, weight-gradient stage 1) runs
    and matches the CPU mirror."""
    names = _nhwc(case, "nhwc_fast")
    k, s = case[5], case[6]
    assert names.count(f"dw_nhwc_fast_{k}_{s}") == (2 if s == 1 else 1), names
    if s > 1:
        assert f"dw_nhwc_grad_x_fast_{k}_{s}" in names
    assert f"dw_nhwc_wgrad_fast_{k}_{s}" in names and "dw_nhwc_wgrad_final" in names


@pytest.mark.parametrize("blocks", [1, 8], ids=["one-block-row", "groups"])
def test_nhwc_fast_grid_stride_loops_chunks_and_groups(monkeypatch, blocks):
    """Small blocks and grids: the channels span several chunks of words; with one block per chunk each thread
    walks several strips, with 8 the weight gradient sums several groups; several strips per (word, tap row)
    add up in shared memory."""
    monkeypatch.setattr(cv, "_NHWC_THREADS", 48)
    monkeypatch.setattr(cv, "_NHWC_BLOCKS", blocks)
    monkeypatch.setattr(cv, "_NHWC_WGRAD_BLOCKS", blocks)
    monkeypatch.setattr(cv, "_NHWC_STRIPS", 8)
    monkeypatch.setattr(cv, "_NHWC_WGRAD_STRIPS", 1)
    monkeypatch.setattr(cv, "_NHWC_WORD", 4)
    grids = []
    real_run = cv._core.run

    def spy(family, kernel, *args, **kwargs):
        grids.append((kernel, kwargs["grid"], kwargs["block"]))
        return real_run(family, kernel, *args, **kwargs)
    monkeypatch.setattr(cv._core, "run", spy)
    for case in [(2, 12, 1, 7, 9, 3, 1, 1, 1, True, "float32"), (1, 20, 1, 6, 7, 5, 2, 2, 1, True, "bfloat16")]:
        _nhwc(case, "nhwc_fast")
    fast = {kernel: (grid, block) for kernel, grid, block in grids if "fast" in kernel}
    assert all(grid[0] >= 2 for grid, _ in fast.values())                     # several chunks of words
    if blocks == 1:
        assert fast["dw_nhwc_fast_3_1"][0][1] * fast["dw_nhwc_fast_3_1"][1][0] // 3 < 2 * 7 * 3   # strips to walk
    else:
        assert fast["dw_nhwc_wgrad_fast_3_1"][0][1] > 1                       # several groups


@pytest.mark.parametrize("one_block", [False, True], ids=["grid", "one-block"])
def test_nhwc_weight_gradient_sums_more_groups_than_rows(monkeypatch, one_block):
    """Stage 2 of the channels-last weight gradient with more groups than its rows of threads (each row sums
    every rows-th group, then the rows add up in order), more outputs than one block's 32, and (one_block)
    a single block that walks them all with its grid-stride loop, reusing its shared sums across barriers;
    `_nhwc` compares every gradient with the CPU mirror."""
    from gpuops import _constants as K
    monkeypatch.setattr(cv, "_NHWC_THREADS", 9)          # 3 words × 3 tap rows: one strip per block row
    monkeypatch.setattr(cv, "_NHWC_WGRAD_BLOCKS", 64)
    monkeypatch.setattr(cv, "_NHWC_WGRAD_STRIPS", 1)
    launches = []
    real_run = cv._core.run

    def spy(family, kernel, *args, **kwargs):
        launches.append((kernel, args[0], kwargs["grid"]))
        if one_block and kernel == "dw_nhwc_wgrad_final":
            kwargs["grid"] = (1,)
        return real_run(family, kernel, *args, **kwargs)
    monkeypatch.setattr(cv._core, "run", spy)
    _nhwc((2, 12, 1, 7, 9, 3, 1, 1, 1, True, "float32"), "nhwc_fast")
    final = [(args, grid) for kernel, args, grid in launches if kernel == "dw_nhwc_wgrad_final"]
    groups = final[0][0][3]
    assert groups > K.CONV_WGRAD_FINAL_ROWS and groups % K.CONV_WGRAD_FINAL_ROWS, groups
    outputs = 12 * (9 + 1)                               # channels × (taps + bias), not a multiple of 32
    grid = final[0][1]
    assert (grid() if callable(grid) else grid)[0] == -(-outputs // 32)


NHWC_GENERAL_CASES = [
    # the general channels-last kernels: any taps, stride, dilation, depth multiplier, dtype
    (1, 2, 2, 7, 6, (2, 3), (2, 1), (1, 2), (1, 2), True, "float32"),
    (2, 3, 1, 6, 7, (3, 3), 2, 1, 1, False, "float32"),
    (1, 1, 3, 6, 5, (3, 2), 1, (1, 0), 1, True, "float64"),
    (1, 3, 1, 5, 6, (3, 3), 1, 1, 2, True, "bfloat16"),
]


@pytest.mark.parametrize("case", NHWC_GENERAL_CASES, ids=["m2-dilated-strided", "s2", "m3-f64", "dilated-bf16"])
def test_nhwc_general_kernels(case):
    names = _nhwc(case, "nhwc")
    s = case[6]
    assert "dw_nhwc_direct" in names and "dw_nhwc_wgrad" in names and "dw_nhwc_wgrad_final" in names
    if s != 1:
        assert "dw_nhwc_grad_x" in names


def test_nhwc_fast_refuses_what_it_does_not_cover():
    x, w = _dev(np.ones((1, 3, 6, 6), np.float32)), _dev(np.ones((3, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="variant 'nhwc_fast' cannot run this call: needs channels in whole"):
        cv.conv2d_depthwise(x, w, variant="nhwc_fast")                  # 3 float32 channels: not whole words
    x4, w8 = _dev(np.ones((1, 4, 6, 6), np.float32)), _dev(np.ones((8, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="depth multiplier 1"):
        cv.conv2d_depthwise(x4, w8, variant="nhwc_fast")
    with pytest.raises(ValueError, match="different layouts"):
        cv.conv2d_depthwise_backward(_dev(np.ones((1, 4, 4, 4), np.float32)), x4,
                                     _dev(np.ones((4, 1, 3, 3), np.float32)), variant="nhwc", weight_variant="tile")


def test_nhwc_inputs_given_channels_last_are_used_in_place():
    """A channels-last simulated input (a transposed NHWC array) is read as it is (no copy); the output of a
    forced channels-last variant is channels-last, and an ``out`` must be."""
    from numba import cuda as sim
    x = RNG.standard_normal((1, 4, 6, 7)).astype(np.float32)
    w = RNG.standard_normal((4, 1, 3, 3)).astype(np.float32)
    xl = sim.to_device(np.ascontiguousarray(x.transpose(0, 2, 3, 1))).transpose((0, 3, 1, 2))
    y = cv.conv2d_depthwise(xl, _dev(w), padding=1, variant="nhwc_fast")
    assert y._ary.transpose(0, 2, 3, 1).flags.c_contiguous
    _close(y, cv.conv2d_depthwise(x, w, padding=1), 1e-5)
    out = sim.to_device(np.zeros((1, 6, 7, 4), np.float32)).transpose((0, 3, 1, 2))
    assert cv.conv2d_depthwise(xl, _dev(w), padding=1, variant="nhwc", out=out) is out
    _close(out, cv.conv2d_depthwise(x, w, padding=1), 1e-5)
    with pytest.raises(ValueError, match="out must be channels-last"):
        cv.conv2d_depthwise(xl, _dev(w), padding=1, variant="nhwc", out=_dev(np.zeros((1, 4, 6, 7), np.float32)))
