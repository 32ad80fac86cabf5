"""GPU tier: every backward with a reduction is deterministic (bit-identical over repeated calls: no
float atomics, fixed reduction order), and dgmm/cdgmm on shapes large enough for several segments of
the reduced axis match gpuops.reference (float64)."""
import numpy as np
import pytest

import gpuops
from gpuops import reference as R

torch = pytest.importorskip("torch")

REPEATS = 3


def _same_every_time(fn):
    first = [t.clone() for t in fn()]
    for _ in range(REPEATS):
        for a, b in zip(first, fn()):
            assert torch.equal(a, b), "backward differs between identical calls"


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dgmm_backward_deterministic_and_exact(side, dtype):
    g0 = torch.Generator().manual_seed(5)
    M, K = (3001, 1537) if side == "right" else (37, 9001)    # several segments, ragged tiles
    a, g = (torch.randn(M, K, generator=g0).cuda().to(dtype) for _ in range(2))
    x = torch.randn(K if side == "right" else M, generator=g0).cuda().to(dtype)
    _same_every_time(lambda: gpuops.dgmm_backward(g, a, x, side=side))
    ga, gx = gpuops.dgmm_backward(g, a, x, side=side)
    ad, xd, gd = (t.double().cpu().numpy() for t in (a, x, g))
    want_a, want_x = R.dgmm_backward(gd, ad, xd, side=side)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(ga.double().cpu(), want_a, **tol)
    # a sum of thousands of products: compare against its scale
    scale = (np.abs(gd) * np.abs(ad)).sum(0 if side == "right" else 1).max()
    assert np.abs(gx.double().cpu().numpy() - want_x).max() <= tol["rtol"] * scale
    y = gpuops.dgmm(a, x, side=side)
    np.testing.assert_allclose(y.double().cpu(), R.dgmm(ad, xd, side=side), **tol)


@pytest.mark.parametrize("side", ["right", "left"])
def test_cdgmm_backward_deterministic_and_exact(side):
    g0 = torch.Generator().manual_seed(6)
    M, K = (2049, 700) if side == "right" else (21, 5000)
    a, g = (torch.randn(M, K, dtype=torch.complex64, generator=g0).cuda() for _ in range(2))
    x = torch.randn(K if side == "right" else M, dtype=torch.complex64, generator=g0).cuda()
    _same_every_time(lambda: gpuops.cdgmm_backward(g, a, x, side=side))
    ga, gx = gpuops.cdgmm_backward(g, a, x, side=side)
    want_a, want_x = R.cdgmm_backward(*(t.cpu().numpy() for t in (g, a, x)), side=side)
    np.testing.assert_allclose(ga.cpu().numpy(), want_a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx.cpu().numpy(), want_x, rtol=1e-4, atol=1e-3)


def test_depthwise_backward_deterministic():
    g0 = torch.Generator().manual_seed(7)
    x = torch.randn(8, 32, 40, 40, generator=g0).cuda()
    w = torch.randn(32, 1, 3, 3, generator=g0).cuda()
    b = torch.randn(32, generator=g0).cuda()
    g = torch.randn(8, 32, 40, 40, generator=g0).cuda()
    _same_every_time(lambda: gpuops.conv2d_depthwise_backward(g, x, w, b, padding=1))


def test_correlation_backward_deterministic():
    g0 = torch.Generator().manual_seed(8)
    a, b = (torch.randn(2, 32, 24, 32, generator=g0).cuda() for _ in range(2))
    params = dict(kernel_size=1, patch_size=21, dilation_patch=2)
    g = torch.randn(gpuops.spatial_correlation_sample(a, b, **params).shape, generator=g0).cuda()
    _same_every_time(lambda: gpuops.spatial_correlation_sample_backward(g, a, b, **params))
