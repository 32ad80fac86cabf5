"""GPU tier: correlation ops × dtypes × array kinds against the CPU mirror, both launchers."""
import numpy as np
import pytest

import gpuops
from gpuops import _launch
from helpers import assert_close, gpu_matrix, has_module, rounded, to_kind

torch = pytest.importorskip("torch")

CASES = [dict(kernel_size=1, patch_size=7, dilation_patch=2), dict(kernel_size=3, patch_size=4, padding=1,
                                                                    stride=2, dilation_patch=2)]


@gpu_matrix()
@pytest.mark.parametrize("params", CASES)
@pytest.mark.parametrize("launcher", ["fast", "numba"])
def test_sampler_matches_cpu_mirror(kind, dtype, params, launcher):
    if kind == "cupy" and not has_module("cupy"):
        pytest.skip("cupy not installed")
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (2, 16, 20, 37)), rng.uniform(-1, 1, (2, 16, 20, 37))
    ad, bd = to_kind(a, kind, dtype, "cuda"), to_kind(b, kind, dtype, "cuda")
    ca, cb = rounded(a, dtype), rounded(b, dtype)
    with _launch.use_fallback(launcher == "numba"):
        y = gpuops.spatial_correlation_sample(ad, bd, **params)
        expected = gpuops.spatial_correlation_sample(ca, cb, **params)
        assert_close(y, expected, dtype, scale=16)
        g = rng.uniform(-1, 1, expected.shape)
        gd = to_kind(g, kind, dtype, "cuda")
        got = gpuops.spatial_correlation_sample_backward(gd, ad, bd, **params)
        want = gpuops.spatial_correlation_sample_backward(rounded(g, dtype), ca, cb, **params)
        for x, w in zip(got, want):
            assert_close(x, w, dtype, scale=16)


def test_flownetc_correlation_on_gpu():
    import gpuops.torch as gt
    a = torch.randn(1, 32, 24, 32, device="cuda", requires_grad=True)
    b = torch.randn(1, 32, 24, 32, device="cuda", requires_grad=True)
    p = dict(pad_size=20, kernel_size=1, max_displacement=20, stride1=1, stride2=2)
    y = gt.correlation(a, b, **p)
    assert y.shape == (1, 441, 24, 32)
    ref = gpuops.correlation(a.detach().cpu().numpy(), b.detach().cpu().numpy(), **p)
    np.testing.assert_allclose(y.detach().cpu().numpy(), ref, rtol=1e-4, atol=1e-5)
    y.sum().backward()
    ga, gb = gpuops.correlation_backward(np.ones(ref.shape, np.float32), a.detach().cpu().numpy(),
                                         b.detach().cpu().numpy(), **p)
    np.testing.assert_allclose(a.grad.cpu().numpy(), ga, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.grad.cpu().numpy(), gb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("params", [dict(kernel_size=1, patch_size=21, dilation_patch=2),
                                    dict(kernel_size=3, patch_size=9, padding=1)], ids=["flownetc", "k3p9"])
def test_matches_the_sampler_peer(params):
    """Same inputs through spatial-correlation-sampler (when built on this machine) and gpuops, float64,
    forward and both input gradients.  Its documented departures (ops.md §12) do not arise here: stride
    1 and odd patch sizes."""
    sampler = pytest.importorskip("spatial_correlation_sampler").spatial_correlation_sample
    g0 = torch.Generator().manual_seed(11)
    a, b = (torch.randn(2, 16, 20, 24, generator=g0, dtype=torch.float64).cuda() for _ in range(2))
    ref = sampler(a, b, **params)
    out = gpuops.spatial_correlation_sample(a, b, **params)
    torch.testing.assert_close(out, ref.view(out.shape), rtol=1e-12, atol=1e-12)
    g = torch.randn(out.shape, generator=g0, dtype=torch.float64).cuda()
    ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
    want = torch.autograd.grad(sampler(ar, br, **params).view(out.shape), (ar, br), g)
    got = gpuops.spatial_correlation_sample_backward(g, a, b, **params)
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
