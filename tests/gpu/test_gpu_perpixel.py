"""GPU tier: involution and weighted_filter (gather, splat) × dtypes × array kinds against the CPU mirror,
both launchers; bit-identical repeats of every gradient (no atomics); a bias sum large enough for its middle
stage; the torch modules and drop-ins on CUDA."""
import numpy as np
import pytest

import gpuops
from gpuops import _launch
from helpers import assert_close, gpu_matrix, has_module, rounded, to_kind

torch = pytest.importorskip("torch")

INVOLUTION = [dict(stride=1, padding=3, dilation=1, k=7, G=2), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2),
                                                                     k=3, G=4)]


def _skip(kind):
    if kind == "cupy" and not has_module("cupy"):
        pytest.skip("cupy not installed")


def _window(size, k, p, d, s):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


@gpu_matrix()
@pytest.mark.parametrize("case", INVOLUTION, ids=["k7", "k3s21"])
@pytest.mark.parametrize("launcher", ["fast", "numba"])
def test_involution_matches_cpu_mirror(kind, dtype, case, launcher):
    _skip(kind)
    rng = np.random.default_rng(0)
    N, C, H, W, k = 2, 8, 23, 31, case["k"]
    p = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    (sh, sw), (ph, pw), (dh, dw) = _pair(p["stride"]), _pair(p["padding"]), _pair(p["dilation"])
    Ho, Wo = _window(H, k, ph, dh, sh), _window(W, k, pw, dw, sw)
    x, w = rng.uniform(-1, 1, (N, C, H, W)), rng.uniform(-1, 1, (N, case["G"], k, k, Ho, Wo))
    dev = [to_kind(a, kind, dtype, "cuda") for a in (x, w)]
    cpu = [rounded(a, dtype) for a in (x, w)]
    with _launch.use_fallback(launcher == "numba"):
        ref = gpuops.involution(*cpu, **p)
        assert_close(gpuops.involution(*dev, **p), ref, dtype, scale=k)
        g = rng.uniform(-1, 1, ref.shape)
        got = gpuops.involution_backward(to_kind(g, kind, dtype, "cuda"), *dev, **p)
        want = gpuops.involution_backward(rounded(g, dtype), *cpu, **p)
        for a, e in zip(got, want):
            assert_close(a, e, dtype, scale=k * k)


@gpu_matrix()
@pytest.mark.parametrize("splat", [False, True], ids=["gather", "splat"])
@pytest.mark.parametrize("K", [3, 11])
def test_weighted_filter_matches_cpu_mirror(kind, dtype, splat, K):
    _skip(kind)
    rng = np.random.default_rng(1)
    x, w, b = rng.uniform(-1, 1, (2, 3, 40, 37)), rng.uniform(-1, 1, (2, K * K, 40, 37)), rng.uniform(-1, 1, 3)
    dev = [to_kind(a, kind, dtype, "cuda") for a in (x, w, b)]
    cpu = [rounded(a, dtype) for a in (x, w, b)]
    ref = gpuops.weighted_filter(*cpu, splat=splat)
    assert_close(gpuops.weighted_filter(*dev, splat=splat), ref, dtype, scale=K)
    g = rng.uniform(-1, 1, ref.shape)
    got = gpuops.weighted_filter_backward(to_kind(g, kind, dtype, "cuda"), *dev, splat=splat)
    want = gpuops.weighted_filter_backward(rounded(g, dtype), *cpu, splat=splat)
    for name, a, e in zip(("grad_x", "grad_w", "grad_b"), got, want):
        assert_close(a, e, dtype, scale=K * K if name == "grad_x" else 300.0)


def _same_every_time(fn, repeats=3):
    first = [t.clone() for t in fn() if t is not None]
    for _ in range(repeats):
        for a, b in zip(first, [t for t in fn() if t is not None]):
            assert torch.equal(a, b), "backward differs between identical calls"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_gradients_are_bit_identical_and_bias_sum_is_exact(dtype):
    g0 = torch.Generator().manual_seed(3)
    # one image of 1080×1920 would do too; 3 × 512 × 700 pixels already takes the bias sum's three stages
    x, g = (torch.randn(1, 3, 512, 700, generator=g0).cuda().to(dtype) for _ in range(2))
    w, b = torch.randn(1, 25, 512, 700, generator=g0).cuda().to(dtype), torch.randn(3, generator=g0).cuda().to(dtype)
    for splat in (False, True):
        _same_every_time(lambda: gpuops.weighted_filter_backward(g, x, w, b, splat=splat))
    gb = gpuops.weighted_filter_backward(g, x, w, b)[2]
    scale = g.double().abs().sum((0, 2, 3)).max().item()
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]      # bf16: the rounded result
    assert (gb.double() - g.double().sum((0, 2, 3))).abs().max().item() <= tol * scale
    xi, wi = (torch.randn(2, 32, 28, 28, generator=g0).cuda().to(dtype),
              torch.randn(2, 2, 7, 7, 28, 28, generator=g0).cuda().to(dtype))
    gi = torch.randn(2, 32, 28, 28, generator=g0).cuda().to(dtype)
    _same_every_time(lambda: gpuops.involution_backward(gi, xi, wi, padding=3))


def test_modules_and_drop_ins_on_cuda():
    import gpuops.torch as gt
    from gpuops.compat import layerdenoise, pytorch_cuda_ops
    torch.manual_seed(0)
    m = gt.Involution(32, 7, 2).cuda()
    x = torch.randn(2, 32, 16, 16, device="cuda", requires_grad=True)
    y = m(x)
    y.square().sum().backward()
    assert y.shape == (2, 32, 8, 8) and torch.isfinite(x.grad).all()
    f = gt.WeightedFilter(3, 5, splat=True).cuda()
    img, k = torch.randn(1, 3, 30, 20, device="cuda"), torch.randn(1, 25, 30, 20, device="cuda")
    torch.testing.assert_close(f(img, k).cpu(), f.cpu()(img.cpu(), k.cpu()), rtol=1e-5, atol=1e-5)
    d = layerdenoise.WeightedFilter(3, 5).cuda()
    torch.testing.assert_close(d(img, k).cpu(), gpuops.weighted_filter(img.cpu(), k.cpu(), torch.zeros(3)),
                               rtol=1e-5, atol=1e-5)
    xs, ws = torch.randn(1, 5, 12, 12, device="cuda").half(), torch.randn(1, 18, 10, 10, device="cuda").half()
    got = pytorch_cuda_ops.involution(xs, ws, 3, 1, 1, 5, 3)
    want = pytorch_cuda_ops.involution(xs.cpu().float(), ws.cpu().float(), 3, 1, 1, 5, 3)
    torch.testing.assert_close(got.cpu().float(), want, rtol=2e-2, atol=2e-2)
