"""GPU tier: conv2d_depthwise, im2col, col2im, dgmm, cdgmm × dtypes × array kinds against the CPU
mirror, both launchers; torch adapter and JAX on the GPU."""
import numpy as np
import pytest

import gpuops
from gpuops import _launch
from gpuops import reference as R
from helpers import assert_close, gpu_matrix, has_module, rounded, to_kind

torch = pytest.importorskip("torch")

CONV = [dict(stride=1, padding=1, dilation=1, k=3, m=1), dict(stride=2, padding=(2, 1), dilation=(1, 2), k=5, m=2),
        dict(stride=1, padding=3, dilation=1, k=7, m=1)]


def _skip(kind):
    if kind == "cupy" and not has_module("cupy"):
        pytest.skip("cupy not installed")


@gpu_matrix()
@pytest.mark.parametrize("case", CONV, ids=["k3", "k5s2m2", "k7"])
@pytest.mark.parametrize("launcher", ["fast", "numba"])
def test_depthwise_matches_cpu_mirror(kind, dtype, case, launcher):
    _skip(kind)
    rng = np.random.default_rng(0)
    C, m, k = 8, case["m"], case["k"]
    x, w, b = rng.uniform(-1, 1, (3, C, 37, 45)), rng.uniform(-1, 1, (C * m, 1, k, k)), rng.uniform(-1, 1, C * m)
    p = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    dev = [to_kind(a, kind, dtype, "cuda") for a in (x, w, b)]
    cpu = [rounded(a, dtype) for a in (x, w, b)]
    with _launch.use_fallback(launcher == "numba"):
        y = gpuops.conv2d_depthwise(*dev, **p)
        ref = gpuops.conv2d_depthwise(*cpu, **p)
        assert_close(y, ref, dtype, scale=k)
        g = rng.uniform(-1, 1, ref.shape)
        got = gpuops.conv2d_depthwise_backward(to_kind(g, kind, dtype, "cuda"), *dev, **p)
        want = gpuops.conv2d_depthwise_backward(rounded(g, dtype), *cpu, **p)
        for name, a, e in zip(("grad_x", "grad_w", "grad_b"), got, want):
            assert_close(a, e, dtype, scale=k * k if name == "grad_x" else 300.0)


@gpu_matrix()
def test_im2col_col2im_dgmm_match_cpu_mirror(kind, dtype):
    _skip(kind)
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 5, 17, 13))
    cols = gpuops.im2col(to_kind(x, kind, dtype, "cuda"), 3, stride=2, padding=1, dilation=(1, 2))
    assert_close(cols, gpuops.im2col(rounded(x, dtype), 3, stride=2, padding=1, dilation=(1, 2)), dtype)
    c = rng.uniform(-1, 1, (2, 5, 3, 3, 9, 6))
    assert_close(gpuops.col2im(to_kind(c, kind, dtype, "cuda"), 3, stride=2, padding=1, dilation=(1, 2),
                               input_size=(17, 13)),
                 gpuops.col2im(rounded(c, dtype), 3, stride=2, padding=1, dilation=(1, 2), input_size=(17, 13)),
                 dtype, scale=9)
    a, v = rng.uniform(-1, 1, (300, 70)), rng.uniform(-1, 1, 70)
    assert_close(gpuops.dgmm(to_kind(a, kind, dtype, "cuda"), to_kind(v, kind, dtype, "cuda")),
                 gpuops.dgmm(rounded(a, dtype), rounded(v, dtype)), dtype)
    g = rng.uniform(-1, 1, a.shape)
    got = gpuops.dgmm_backward(*(to_kind(t, kind, dtype, "cuda") for t in (g, a, v)))
    want = gpuops.dgmm_backward(*(rounded(t, dtype) for t in (g, a, v)))
    for o, e in zip(got, want):
        assert_close(o, e, dtype, scale=300.0)


def test_cdgmm_complex_on_gpu():
    rng = np.random.default_rng(2)
    a = torch.from_numpy(rng.standard_normal((64, 33)) + 1j * rng.standard_normal((64, 33))).cuda()
    x = torch.from_numpy(rng.standard_normal(64) + 1j * rng.standard_normal(64)).cuda()
    np.testing.assert_allclose(gpuops.cdgmm(a, x).cpu(), R.cdgmm(a.cpu(), x.cpu()), rtol=1e-7, atol=1e-7)
    g = torch.randn_like(a)
    for got, want in zip(gpuops.cdgmm_backward(g, a, x), R.cdgmm_backward(g.cpu(), a.cpu(), x.cpu())):
        np.testing.assert_allclose(got.cpu(), want, rtol=1e-7, atol=1e-7)


def test_torch_module_and_jax_on_gpu():
    import torch.nn.functional as F

    import gpuops.torch as gt
    m = gt.Conv2dDepthwise(16, 3, padding=1).cuda()
    x = torch.randn(4, 16, 20, 20, device="cuda", requires_grad=True)
    y = m(x)
    ref = F.conv2d(x, m.weight, m.bias, 1, 1, 1, 16)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    y.square().sum().backward()
    gw = m.weight.grad.clone()
    m.weight.grad = None
    ref.square().sum().backward()
    torch.testing.assert_close(gw, m.weight.grad, rtol=1e-3, atol=1e-3)
    jax = pytest.importorskip("jax")
    if jax.default_backend() != "gpu":
        pytest.skip("jax has no GPU backend")
    import jax.numpy as jnp

    import gpuops.jax as gj
    xj = jnp.asarray(np.random.default_rng(3).standard_normal((2, 3, 9, 8)), jnp.float32)
    cols = jax.jit(lambda t: gj.im2col(t, 3, padding=1))(xj)
    np.testing.assert_allclose(np.asarray(cols), gpuops.im2col(np.asarray(xj), 3, padding=1), rtol=1e-6)
    gd = jax.grad(lambda a: gj.dgmm(a, jnp.ones(8)).sum())(jnp.ones((5, 8)))
    np.testing.assert_allclose(np.asarray(gd), np.ones((5, 8)))
