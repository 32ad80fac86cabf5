"""Tier 2: every per-pixel kernel (gpuops.cuda.perpixel) under the CUDA simulator against the CPU mirror.

Simulated device arrays take the CUDA path of the core; shapes are tiny (one OS thread per CUDA thread).
Every case runs twice: with the shipped launch constants and with small ones (`SMALL`: 3-channel chunks,
3-row strips, 2-channel weight-gradient chunks, the _FEW kernels for groups of at most 2 channels, 16-thread
blocks and a grid of at most two blocks), so that on these shapes a group is cut into several chunks (the last
one shorter), strips end early, the weight gradient walks several chunks of centre values and threads loop
over several work items.  Groups of at most 4 channels (2 with the small constants) take PP_GATHER_FEW,
PP_TRANSPOSE_FEW and PP_WGRAD_FEW, larger ones the others: the cases have both.  The cases cover strides,
padding, dilation, even and non-square kernels, strides larger than the window, windows wholly in the
padding, gather and splat with a bias, float64 (its own register tile) and 16-bit data; outputs start as NaN,
so an element no thread writes fails.  The kernels are also called directly with a last group of fewer
channels (cpg not dividing C: the seed drop-in's convention), which the ops never produce.
"""
import ml_dtypes
import numpy as np
import pytest

from gpuops._toolchain import SIMULATOR

pytestmark = pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (run in its own process)")

if SIMULATOR:
    from numba import cuda

    import gpuops.cuda.perpixel as kernels
    import gpuops.perpixel as pp
    from gpuops import _core

DTYPES = {"float32": (np.float32, 1e-5), "bfloat16": (ml_dtypes.bfloat16, 2e-2), "float64": (np.float64, 1e-12),
          "float16": (np.float16, 5e-3)}
RNG = np.random.default_rng(11)

#: small launch constants: (kernel-module values, host values)
SMALL = (dict(CHUNK=3, CHUNK64=2, ROWS=3, WCHUNK=2, WCHUNK64=3, WROWS=3, FEW=2, FEW64=1, FEW_ROWS=5, WFEW_ROWS=2),
         dict(_CHUNK=3, _CHUNK_F64=2, _ROWS=3, _WGRAD_ROWS=3, _FEW=2, _FEW_F64=1, _FEW_ROWS=5, _WGRAD_FEW_ROWS=2,
              _THREADS=16))


@pytest.fixture(params=["shipped", "small"])
def constants(request, monkeypatch):
    """The launch constants a case runs with (the simulator reads the kernel module's globals per call)."""
    if request.param == "small":
        device, host = SMALL
        for name, value in device.items():
            monkeypatch.setattr(kernels, name, value)
        monkeypatch.setattr(kernels, "TILE", device["ROWS"] * device["CHUNK"])
        monkeypatch.setattr(kernels, "TILE64", device["ROWS"] * device["CHUNK64"])
        monkeypatch.setattr(kernels, "WTILE", device["WROWS"] * device["WCHUNK"])
        monkeypatch.setattr(kernels, "WTILE64", device["WROWS"] * device["WCHUNK64"])
        monkeypatch.setattr(kernels, "FEW_TILE", device["FEW_ROWS"] * device["FEW"])
        monkeypatch.setattr(kernels, "FEW_TILE64", device["FEW_ROWS"] * device["FEW64"])
        monkeypatch.setattr(kernels, "WFEW_TILE", device["WFEW_ROWS"] * device["FEW"])
        for name, value in host.items():
            monkeypatch.setattr(pp, name, value)
        monkeypatch.setattr(pp, "_grid", lambda items: lambda: (min(2, -(-items // 16)),))
    return request.param


def _dev(a):
    return None if a is None else cuda.to_device(a)


def _nan(shape, dtype):
    return cuda.to_device(np.full(shape, np.nan, dtype))


def _close(got, want, tol):
    assert (got is None) == (want is None)
    if want is None:
        return
    want = np.asarray(want, np.float64)
    got = np.asarray(got.copy_to_host() if hasattr(got, "copy_to_host") else got, np.float64)
    assert got.shape == want.shape
    assert np.isfinite(got).all(), "an output element was never written"
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))


def _rand(shape, dtype):
    return RNG.uniform(-1, 1, shape).astype(dtype)


def _window(size, k, p, d, s):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


INVOLUTION = {
    # name: (N, C, G, H, W, (kh, kw), stride, padding, dilation)
    "s21-d12-k23": (1, 4, 2, 6, 5, (2, 3), (2, 1), (1, 2), (1, 2)),
    "k3-cpg5": (2, 10, 2, 7, 6, (3, 3), 1, 1, 1),                 # 5 channels per group: a short chunk
    "k5-cpg18": (1, 18, 1, 9, 8, (5, 5), 1, 2, 1),                # several chunks; weight gradient in chunks
    "k7-cpg16": (1, 32, 2, 11, 10, (7, 7), 1, 3, 1),              # RedNet's group width
    "s2-d3": (1, 6, 3, 13, 11, (3, 3), 2, 3, 3),                  # strip rows share input rows every 6
    "s3-k1": (1, 4, 2, 10, 9, (1, 1), 3, 0, 1),                   # stride beyond the window: rows no tap reads
    "s32-k2": (2, 6, 2, 9, 12, (2, 2), (3, 2), (2, 1), (2, 3)),
    "pad-only": (1, 2, 1, 4, 3, (3, 3), (1, 2), (4, 1), 1),        # windows that lie wholly in the padding
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64"])
@pytest.mark.parametrize("case", list(INVOLUTION))
def test_involution_kernels_match_mirror(constants, dtype, case):
    np_dtype, tol = DTYPES[dtype]
    N, C, G, H, W, (kh, kw), s, p, d = INVOLUTION[case]
    (sh, sw), (ph, pw), (dh, dw) = _pair(s), _pair(p), _pair(d)
    Ho, Wo = _window(H, kh, ph, dh, sh), _window(W, kw, pw, dw, sw)
    params = dict(stride=s, padding=p, dilation=d)
    x, w = _rand((N, C, H, W), np_dtype), _rand((N, G, kh, kw, Ho, Wo), np_dtype)
    y = pp.involution(x, w, **params)
    _close(pp.involution(_dev(x), _dev(w), out=_nan(y.shape, np_dtype), **params), y, tol)
    g = _rand(y.shape, np_dtype)
    want = pp.involution_backward(g, x, w, **params)
    got = pp.involution_backward(_dev(g), _dev(x), _dev(w), out=(_nan(x.shape, np_dtype), _nan(w.shape, np_dtype)),
                                 **params)
    for a, b in zip(got, want):
        _close(a, b, tol)


FILTER = {
    # name: (N, C, H, W, K, bias)
    "k3-c2": (2, 2, 5, 4, 3, True),
    "k5-c3": (1, 3, 7, 9, 5, True),        # KPN: RGB
    "k1-c9": (1, 9, 4, 5, 1, True),        # a per-pixel scale; 9 channels: two chunks of the shipped 8
    "k5-small-image": (1, 1, 2, 3, 5, False),
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64", "float16"])
@pytest.mark.parametrize("splat", [False, True], ids=["gather", "splat"])
@pytest.mark.parametrize("case", list(FILTER))
def test_weighted_filter_kernels_match_mirror(constants, dtype, splat, case):
    np_dtype, tol = DTYPES[dtype]
    N, C, H, W, K, with_bias = FILTER[case]
    x, w = _rand((N, C, H, W), np_dtype), _rand((N, K * K, H, W), np_dtype)
    b = _rand((C,), np_dtype) if with_bias else None
    y = pp.weighted_filter(x, w, b, splat=splat)
    _close(pp.weighted_filter(_dev(x), _dev(w), _dev(b), splat=splat, out=_nan(x.shape, np_dtype)), y, tol)
    g = _rand(y.shape, np_dtype)
    want = pp.weighted_filter_backward(g, x, w, b, splat=splat)
    outs = (_nan(x.shape, np_dtype), _nan(w.shape, np_dtype), None if b is None else _nan(b.shape, np_dtype))
    got = pp.weighted_filter_backward(_dev(g), _dev(x), _dev(w), _dev(b), splat=splat, out=outs)
    for a, c in zip(got, want):
        _close(a, c, tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("C,cpg,kind", [(5, 3, "k3"), (11, 4, "s2"), (19, 9, "k3"), (7, 17, "k3")],
                         ids=["C5-cpg3", "C11-cpg4-s2", "C19-cpg9", "C7-cpg17"])
def test_last_group_with_fewer_channels(constants, dtype, C, cpg, kind):
    """The kernels serve groups of cpg channels with a last, shorter group (G = ceil(C / cpg)), which the
    seed drop-in's convention needs: each of the three kernels against its CPU mirror."""
    np_dtype, tol = DTYPES[dtype]
    G = -(-C // cpg)
    N, H, W = 2, 7, 8
    kh, kw, sh, sw, ph, pw, dh, dw = (3, 3, 1, 1, 1, 1, 1, 1) if kind == "k3" else (3, 2, 2, 1, 1, 0, 1, 2)
    Ho, Wo = _window(H, kh, ph, dh, sh), _window(W, kw, pw, dw, sw)
    geo = (C, cpg, G, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw)
    x, w, g = _rand((N, C, H, W), np_dtype), _rand((N, G, kh, kw, Ho, Wo), np_dtype), _rand((N, C, Ho, Wo), np_dtype)
    bias = _rand((C,), np_dtype)

    def run(step, inputs, shape, device):
        arrays = [_core.wrap(f"a{i}", _dev(a) if device else a) for i, a in enumerate(inputs)]
        out = _core.wrap("out", _nan(shape, np_dtype) if device else np.full(shape, np.nan, np_dtype))
        step(*arrays, out)
        return out.obj

    steps = {
        "gather": (lambda s, ww, b, o: pp._gather(s, ww, b, o, geo, None), (x, w, bias), (N, C, Ho, Wo)),
        "transpose": (lambda s, ww, b, o: pp._transpose(s, ww, b, o, geo, None), (g, w, bias), (N, C, H, W)),
        "wgrad": (lambda c, s, o: pp._wgrad(c, s, o, geo, None), (g, x), w.shape),
    }
    for name, (step, inputs, shape) in steps.items():
        want = run(step, inputs, shape, device=False)
        assert np.isfinite(want).all(), name
        _close(run(step, inputs, shape, device=True), want, tol)


def test_bias_sum_middle_stage(monkeypatch):
    """More segments than the last stage takes: PP_BIAS_PARTIAL_SUMS runs (thresholds shrunk for the simulator)."""
    monkeypatch.setattr(pp, "_BIAS_THREADS", 64)
    monkeypatch.setattr(pp, "_BIAS_LANES", 4)
    x, w, b = _rand((1, 2, 4, 5), np.float32), _rand((1, 1, 4, 5), np.float32), _rand((2,), np.float32)
    g = _rand(x.shape, np.float32)
    want = pp.weighted_filter_backward(g, x, w, b)
    got = pp.weighted_filter_backward(_dev(g), _dev(x), _dev(w), _dev(b))
    for a, c in zip(got, want):
        _close(a, c, 1e-5)
    np.testing.assert_allclose(want[2], g.astype(np.float64).sum((0, 2, 3)), rtol=1e-5)


def test_empty_batch_on_device():
    x, w, b = (np.zeros((0, 2, 3, 3), np.float32), np.zeros((0, 1, 3, 3), np.float32), _rand((2,), np.float32))
    got = pp.weighted_filter_backward(_dev(x), _dev(x), _dev(w), _dev(b), splat=True)
    assert got[0].shape == x.shape and got[1].shape == w.shape
    np.testing.assert_array_equal(got[2].copy_to_host(), 0)
