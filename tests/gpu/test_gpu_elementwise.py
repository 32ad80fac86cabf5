"""GPU tier (marker `gpu`, run on the GPU machine): every elementwise op × dtype × array kind
against the CPU mirror, all three launch paths (packed cuLaunchKernel, cuda.core, numba), the caller's
stream, CUDA-graph capture, JAX on GPU, and > 2**31 elements."""
import numpy as np
import pytest

import gpuops
from gpuops import _launch
from helpers import assert_close, gpu_matrix, has_module, rounded, to_f64, to_kind

torch = pytest.importorskip("torch")

PARAMS = dict(slope=1.3, neg_slope=0.05, alpha=0.2, beta=0.4, delta_t=0.1)


def _x(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape)


def _skip_missing(kind):
    if kind == "cupy" and not has_module("cupy"):
        pytest.skip("cupy not installed")


@gpu_matrix()
@pytest.mark.parametrize("launcher", ["fast", "core", "numba"])
def test_ops_match_cpu_mirror(kind, dtype, launcher):
    _skip_missing(kind)
    x, g = _x((3, 4, 1000)), _x((3, 4, 1000), 1)
    gn = _x((3, 8, 1000), 2)
    xd, gd, gnd = (to_kind(a, kind, dtype, "cuda") for a in (x, g, gn))
    cx, cg, cgn = (rounded(a, dtype) for a in (x, g, gn))
    with _launch.use_launcher(launcher):
        y = gpuops.gsmelu(xd, **PARAMS)
        assert type(y).__module__.split(".")[0] == type(xd).__module__.split(".")[0]
        assert_close(y, gpuops.gsmelu(cx, **PARAMS), dtype)
        assert_close(gpuops.gsmelu_backward(gd, xd, **PARAMS), gpuops.gsmelu_backward(cg, cx, **PARAMS), dtype)
        assert_close(gpuops.ncrelu(xd), gpuops.ncrelu(cx), dtype)
        assert_close(gpuops.ncrelu_backward(gnd, xd), gpuops.ncrelu_backward(cgn, cx), dtype)


def test_bfloat16_exact_against_torch():
    x = torch.randn(4097, device="cuda", dtype=torch.bfloat16)
    y = gpuops.gsmelu(x, neg_slope=1.0, slope=1.0, alpha=0.0, beta=1e-30)   # identity up to rounding
    assert torch.equal(y, x)


def test_noncontiguous_torch_and_numba_inputs():
    from numba import cuda
    x = torch.randn(64, 33, device="cuda", dtype=torch.float64)
    torch.testing.assert_close(gpuops.gsmelu(x.t()), torch.from_numpy(gpuops.gsmelu(x.t().cpu().numpy())).cuda())
    d = cuda.to_device(x.cpu().numpy())[:, ::3]
    np.testing.assert_allclose(to_f64(gpuops.gsmelu(d)), gpuops.gsmelu(x.cpu().numpy()[:, ::3]))


def test_side_stream_ordering():
    """Work queued on a torch side stream must be seen: gpuops launches on the current stream."""
    s = torch.cuda.Stream()
    bad = 0
    for _ in range(5):
        x = torch.zeros(1 << 24, device="cuda")
        torch.cuda.synchronize()
        with torch.cuda.stream(s):
            x.add_(torch.ones_like(x) * 3)        # still running when gpuops launches
            y = gpuops.gsmelu(x, slope=2.0)
        s.synchronize()
        bad += int(not torch.allclose(y, torch.full_like(y, 6.0)))   # 0.01·3 + 1.99·3
    assert bad == 0


def test_explicit_stream_argument():
    s = torch.cuda.Stream()
    x = torch.randn(10000, device="cuda")
    y = gpuops.gsmelu(x, stream=s)
    s.synchronize()
    torch.testing.assert_close(y.cpu(), torch.from_numpy(gpuops.gsmelu(x.cpu().numpy())))


def test_cuda_graph_capture():
    import gpuops.torch as gt
    x = torch.randn(1 << 16, device="cuda")
    gt.gsmelu(x)                                  # compile and load outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = gt.gsmelu(x, **PARAMS)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(y.cpu(), torch.from_numpy(gpuops.gsmelu(x.cpu().numpy(), **PARAMS)))


def test_torch_adapter_on_gpu():
    import gpuops.torch as gt
    x = torch.randn(2, 3, 40, device="cuda", dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gt.gsmelu(gt.ncrelu(t), **PARAMS), (x,))
    torch.library.opcheck(torch.ops.gpuops.gsmelu.default, (x.detach().float().requires_grad_(), 1.0, 0.01,
                                                            0.1, 0.1, 0.0))
    f = torch.compile(lambda t: gt.gsmelu(t).sum(), fullgraph=True)
    assert torch.allclose(f(x.detach()), gt.gsmelu(x.detach()).sum())


def test_jax_on_gpu():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    import gpuops.jax as gj
    if jax.default_backend() != "gpu":
        pytest.skip("jax has no GPU backend here")
    x = jnp.linspace(-1, 1, 4096, dtype=jnp.float32).reshape(4, 8, 128)
    y = jax.jit(lambda t: gj.gsmelu(t * 2, **PARAMS) + 1)(x)
    np.testing.assert_allclose(np.asarray(y), gpuops.gsmelu(np.asarray(x) * 2, **PARAMS) + 1, rtol=1e-6, atol=1e-6)
    g = jax.jit(jax.grad(lambda t: (gj.ncrelu(t) ** 2).sum()))(x)
    np.testing.assert_allclose(np.asarray(g), 2 * np.asarray(x), rtol=1e-6)
    gv = jax.vmap(jax.grad(lambda t: gj.gsmelu(t).sum()))(x)
    np.testing.assert_allclose(np.asarray(gv), gpuops.gsmelu_backward(np.ones(x.shape, np.float32), np.asarray(x)),
                               rtol=1e-6)
    yb = jax.jit(gj.gsmelu)(x.astype(jnp.bfloat16))
    np.testing.assert_allclose(np.asarray(yb, np.float32), gpuops.gsmelu(np.asarray(x)), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_jax_replayed_calls_follow_their_inputs(dtype):
    """Repeated jitted calls replay the first call's launches (gpuops.adapters.jax._replaying): every call
    must still read its own inputs and write its own output, forward and backward, odd sizes included."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    import gpuops.jax as gj
    if jax.default_backend() != "gpu":
        pytest.skip("jax has no GPU backend here")
    fwd = jax.jit(lambda t: gj.gsmelu(t, **PARAMS))
    grad = jax.jit(jax.grad(lambda t: (gj.ncrelu(t).astype(jnp.float32) ** 2).sum()))
    for shape in ((3, 1001), (2, 64)):
        for seed in range(4):
            x = _x(shape, seed)
            xj = jnp.asarray(x, dtype=getattr(jnp, dtype))
            cx = rounded(x, dtype)
            assert_close(np.asarray(fwd(xj), np.float64), gpuops.gsmelu(cx, **PARAMS), dtype)
            assert_close(np.asarray(grad(xj), np.float64), 2 * cx, dtype)


def test_more_than_2_31_elements():
    n = 2**31 + 1000
    free, _ = torch.cuda.mem_get_info()
    if free < 3 * 2 * n:
        pytest.skip("not enough GPU memory")
    x = torch.empty(n, device="cuda", dtype=torch.float16)
    x[-2000:] = torch.linspace(-1, 1, 2000, device="cuda", dtype=torch.float16)
    y = gpuops.gsmelu(x[-2000:].contiguous())
    tail = gpuops.gsmelu(x)[-2000:]
    assert torch.equal(tail, y)
    del x, tail
    torch.cuda.empty_cache()
