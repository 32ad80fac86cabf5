"""GPU tier: involution and weighted_filter (gather, splat) × dtypes × array kinds against the CPU mirror,
both launchers (groups of 4, 16 and 40 channels: one and several channel chunks of the register-blocked
kernels); bit-identical repeats of every gradient (no atomics); a bias sum large enough for its middle stage;
tensors of more than 2**31 elements; the torch modules and drop-ins on CUDA; the compiled peers (the official
involution CuPy kernels, layerdenoise's WeightedFilter extension) when they load."""
import numpy as np
import pytest

import gpuops
from gpuops import _launch
from helpers import assert_close, gpu_matrix, has_module, rounded, to_kind

torch = pytest.importorskip("torch")

INVOLUTION = [dict(stride=1, padding=3, dilation=1, k=7, G=2, C=8), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2),
                                                                          k=3, G=4, C=8),
              dict(stride=1, padding=3, dilation=1, k=7, G=2, C=32),     # RedNet's 16 channels per group
              dict(stride=1, padding=2, dilation=1, k=5, G=1, C=40)]     # several chunks, in the weight gradient too


def _skip(kind):
    if kind == "cupy" and not has_module("cupy"):
        pytest.skip("cupy not installed")


def _window(size, k, p, d, s):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


@gpu_matrix()
@pytest.mark.parametrize("case", INVOLUTION, ids=["k7", "k3s21", "k7-cpg16", "k5-cpg40"])
@pytest.mark.parametrize("launcher", ["fast", "numba"])
def test_involution_matches_cpu_mirror(kind, dtype, case, launcher):
    _skip(kind)
    rng = np.random.default_rng(0)
    N, C, H, W, k = 2, case["C"], 23, 31, case["k"]
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


def test_more_than_2_31_elements():
    """x, the output and grad_x of 2**31 + 65536 float16 elements: the int64 offsets of all three kernels.  The
    last channels (offsets beyond 2**31) against torch; the weight gradient (a sum over all 32769 channels, in
    chunks of the kernel's) against torch in float32, 1024 channels at a time."""
    import torch.nn.functional as F
    if torch.cuda.mem_get_info()[0] < 32 * 2**30:
        pytest.skip("needs 32 GiB of free GPU memory")
    N, C, H, W, K = 1, 32769, 256, 256, 3
    gen = torch.Generator(device="cuda").manual_seed(7)
    x = torch.randn(N, C, H, W, device="cuda", dtype=torch.float16, generator=gen)
    g = torch.randn(N, C, H, W, device="cuda", dtype=torch.float16, generator=gen)
    w = (torch.rand(N, K * K, H, W, device="cuda", generator=gen) / (K * K)).half()
    tail = slice(C - 3, C)

    def gather(a):
        return (F.unfold(a.float(), K, padding=1).view(N, -1, K * K, H, W) * w.float()[:, None]).sum(2)

    def splat(a):
        return F.fold((a.float()[:, :, None] * w.float()[:, None]).reshape(N, -1, H * W), (H, W), K, padding=1)

    for is_splat, ref in ((False, gather), (True, splat)):
        y = gpuops.weighted_filter(x, w, splat=is_splat)
        _rel_close(y[:, tail], ref(x[:, tail]), 2e-3)
        del y
    gx, gw, _ = gpuops.weighted_filter_backward(g, x, w)
    _rel_close(gx[:, tail], splat(g[:, tail]), 2e-3)        # the gather's input gradient is the splat of g
    del gx
    want = torch.zeros(N, K * K, H, W, device="cuda")
    for c0 in range(0, C, 1024):
        cols = F.unfold(x[:, c0:c0 + 1024].float(), K, padding=1).view(N, -1, K * K, H, W)
        want += (g[:, c0:c0 + 1024].float()[:, :, None] * cols).sum(1)
    _rel_close(gw, want, 2e-3)


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


# ---------------------------------------------------------------------------------------------
# the compiled peers (benchmarks/perpixel.py loads them; each test skips, saying why, when its peer is absent)


def _bench():
    try:
        import benchmarks.perpixel as bench
    except ImportError:
        import pathlib
        import sys
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
        import benchmarks.perpixel as bench
    return bench


PEER_INVOLUTION = [dict(N=2, C=32, G=2, H=15, W=15, k=7, stride=1, padding=3, dilation=1),
                   dict(N=2, C=24, G=3, H=13, W=17, k=3, stride=2, padding=1, dilation=2),
                   dict(N=1, C=12, G=4, H=9, W=20, k=5, stride=1, padding=2, dilation=1)]
PEER_TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _rel_close(got, want, tol):
    scale = want.double().abs().max().clamp_min(1.0)
    assert (got.double() - want.double()).abs().max().item() <= tol * scale.item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", PEER_INVOLUTION, ids=["k7-cpg16", "k3-s2-d2", "k5-cpg3"])
def test_involution_matches_the_official_cupy_kernels(dtype, case):
    """gpuops.involution against d-li14's CuPy kernels (`_involution`), forward and both gradients."""
    peer, why = _bench().involution_peer()
    if peer is None:
        pytest.skip(why)
    g0 = torch.Generator().manual_seed(5)
    N, C, G, H, W, k = (case[n] for n in ("N", "C", "G", "H", "W", "k"))
    s, p, d = case["stride"], case["padding"], case["dilation"]
    Ho, Wo = _window(H, k, p, d, s), _window(W, k, p, d, s)
    x = torch.randn(N, C, H, W, generator=g0, dtype=torch.float64).to("cuda", dtype)
    w = torch.randn(N, G, k, k, Ho, Wo, generator=g0, dtype=torch.float64).to("cuda", dtype)
    g = torch.randn(N, C, Ho, Wo, generator=g0, dtype=torch.float64).to("cuda", dtype)
    params = dict(stride=s, padding=p, dilation=d)
    xq, wq = x.clone().requires_grad_(), w.clone().requires_grad_()
    want = peer(xq, wq, s, p, d)
    want_x, want_w = torch.autograd.grad(want, (xq, wq), g)
    tol = PEER_TOL[dtype] * k * k
    _rel_close(gpuops.involution(x, w, **params), want, tol)
    got_x, got_w = gpuops.involution_backward(g, x, w, **params)
    _rel_close(got_x, want_x, tol)
    _rel_close(got_w, want_w, tol * C // G)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("splat", [False, True], ids=["gather", "splat"])
@pytest.mark.parametrize("K", [3, 5, 11])
def test_weighted_filter_matches_layerdenoise(dtype, splat, K):
    """gpuops.weighted_filter against layerdenoise's CUDA extension, forward and both gradients.  The
    extension is float32 only: the float64 case runs gpuops in float64 on the same (float32-exact) inputs and
    compares with the peer's float32 results at float32 tolerance."""
    ext, why = _bench().layerdenoise_peer()
    if ext is None:
        pytest.skip(why)
    g0 = torch.Generator().manual_seed(6)
    x, g = (torch.randn(2, 3, 37, 45, generator=g0).cuda() for _ in range(2))
    w = torch.rand(2, K * K, 37, 45, generator=g0).cuda() / (K * K)
    want = ext.weighted_filter_forward(x, w, K, splat)
    want_x, want_w = ext.weighted_filter_backward(g, x, w, K, splat)
    xs, ws, gs = (t.to(dtype) for t in (x, w, g))
    tol = PEER_TOL[torch.float32] * K
    _rel_close(gpuops.weighted_filter(xs, ws, splat=splat), want, tol)
    got_x, got_w, got_b = gpuops.weighted_filter_backward(gs, xs, ws, splat=splat)
    assert got_b is None
    _rel_close(got_x, want_x, tol * K)
    _rel_close(got_w, want_w, tol)
