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


# ---------------------------------------------------------------------------------------------
# channels-last (NHWC) depthwise: CUDA torch tensors stored channels_last take the channels-last kernels

CL_CASES = [
    # C, m, k, stride, padding, dilation: the generated kernels (K 3/5/7, stride 1/2; odd and even padding at
    # stride 2), then the general ones (multiplier, dilation, channels in no whole 64-bit word)
    dict(C=16, m=1, k=3, stride=1, padding=1, dilation=1), dict(C=24, m=1, k=3, stride=2, padding=1, dilation=1),
    dict(C=8, m=1, k=5, stride=1, padding=2, dilation=1), dict(C=40, m=1, k=5, stride=2, padding=2, dilation=1),
    dict(C=72, m=1, k=7, stride=1, padding=3, dilation=1), dict(C=8, m=1, k=7, stride=2, padding=2, dilation=1),
    dict(C=6, m=2, k=3, stride=2, padding=(1, 2), dilation=(1, 2)), dict(C=6, m=1, k=3, stride=1, padding=2,
                                                                         dilation=2),
    dict(C=10, m=1, k=3, stride=1, padding=1, dilation=1),
]


def _cl_case_id(c):
    return f"C{c['C']}m{c['m']}k{c['k']}s{c['stride']}d{c['dilation'] if isinstance(c['dilation'], int) else 'x'}"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("case", CL_CASES, ids=_cl_case_id)
def test_depthwise_channels_last_matches_cpu_mirror(case, dtype):
    """Channels-last CUDA inputs: outputs and grad_x channels-last (as cuDNN gives them), values equal to the
    CPU mirror on the same (rounded) inputs, forward and backward, with and without a contiguous grad_out."""
    rng = np.random.default_rng(5)
    C, m, k = case["C"], case["m"], case["k"]
    p = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"])
    x, w, b = rng.uniform(-1, 1, (2, C, 23, 19)), rng.uniform(-1, 1, (C * m, 1, k, k)), rng.uniform(-1, 1, C * m)
    dev = [to_kind(a, "torch", dtype, "cuda") for a in (x, w, b)]
    dev[0] = dev[0].contiguous(memory_format=torch.channels_last)
    cpu = [rounded(a, dtype) for a in (x, w, b)]
    y = gpuops.conv2d_depthwise(*dev, **p)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    ref = gpuops.conv2d_depthwise(*cpu, **p)
    assert_close(y, ref, dtype, scale=k)
    g = rng.uniform(-1, 1, ref.shape)
    want = gpuops.conv2d_depthwise_backward(rounded(g, dtype), *cpu, **p)
    gd = to_kind(g, "torch", dtype, "cuda")
    for grad_out in (gd.contiguous(memory_format=torch.channels_last), gd):
        got = gpuops.conv2d_depthwise_backward(grad_out, *dev, **p)
        assert got[0].is_contiguous(memory_format=torch.channels_last) and got[1].is_contiguous()
        for name, a, e in zip(("grad_x", "grad_w", "grad_b"), got, want):
            assert_close(a, e, dtype, scale=k * k if name == "grad_x" else 300.0)


@pytest.mark.parametrize("variant", ["nhwc_fast", "nhwc"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_depthwise_channels_last_weight_gradient_is_deterministic(variant, dtype):
    """The channels-last weight gradients are fixed-order sums: two calls give the same bits."""
    torch.manual_seed(0)
    dt = getattr(torch, dtype)
    x = torch.randn(8, 64, 56, 56, device="cuda", dtype=dt).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(64, 1, 3, 3, device="cuda", dtype=dt), torch.randn(64, device="cuda", dtype=dt)
    g = torch.randn(8, 64, 56, 56, device="cuda", dtype=dt).contiguous(memory_format=torch.channels_last)
    first = gpuops.conv2d_depthwise_backward(g, x, w, b, padding=1, weight_variant=variant, variant=variant)
    second = gpuops.conv2d_depthwise_backward(g, x, w, b, padding=1, weight_variant=variant, variant=variant)
    for a, e in zip(first, second):
        assert torch.equal(a, e)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_depthwise_channels_last_torch_autograd(dtype):
    """gpuops.torch on channels-last CUDA tensors requiring grad: values and gradients as F.conv2d's (cuDNN),
    outputs and input gradients channels-last like cuDNN's."""
    import torch.nn.functional as F

    import gpuops.torch as gt
    torch.manual_seed(1)
    x = torch.randn(4, 32, 28, 28, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = (torch.randn(32, 1, 5, 5, device="cuda", dtype=dtype) / 5).requires_grad_()
    b = torch.randn(32, device="cuda", dtype=dtype).requires_grad_()
    for stride in (1, 2):
        y = gt.conv2d_depthwise(x, w, b, stride=stride, padding=2)
        ref = F.conv2d(x, w, b, stride, 2, 1, 32)
        assert y.is_contiguous(memory_format=torch.channels_last)
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=5e-2)
        torch.testing.assert_close(y, ref, **tol)
        g = torch.randn_like(ref)
        got = torch.autograd.grad(y, (x, w, b), g)
        want = torch.autograd.grad(ref, (x, w, b), g)
        assert got[0].is_contiguous(memory_format=torch.channels_last)
        for a, e in zip(got, want):
            scale = max(1.0, e.abs().max().item())
            torch.testing.assert_close(a.float(), e.float(), rtol=tol["rtol"], atol=tol["atol"] * scale)
