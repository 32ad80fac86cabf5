"""GPU tier: corr_pyramid and corr_pyramid_lookup on CUDA in every dtype against the CPU path (float64 for the
reference values), every GEMM variant forced (torch, CuPy when installed, the numba tiled fallback; numba
and CuPy device arrays too), agreement with gpuops.corr_lookup on CUDA, RAFT's own CorrBlock
(.peer/raft_peer/core, skipped when absent) against gpuops.torch.CorrBlock, explicit streams, and
bit-identical repeated backwards (no float atomics).  Shapes are RAFT-like but small."""
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import gpuops  # noqa: E402
import gpuops.torch as gt  # noqa: E402
from gpuops import pyramid  # noqa: E402
from gpuops._variants import names  # noqa: E402

DTYPES = {"float16": (torch.float16, 2e-2), "bfloat16": (torch.bfloat16, 6e-2), "float32": (torch.float32, 1e-4),
          "float64": (torch.float64, 1e-10)}
REPEATS = 3
PEER = pathlib.Path(__file__).resolve().parents[2] / ".peer" / "raft_peer" / "core"


def _features(N, C, H, W, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, C, H, W, generator=g, dtype=torch.float64)


def _flow_coords(N, H, W, spread, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")[::-1]).to(dtype)
    return grid[None] + torch.randn(N, 2, H, W, generator=g, dtype=dtype) * spread


def _compare(got, want, tol):
    """got (CUDA, any dtype) against want (CPU float64), relative to want's scale."""
    got, want = got.double().cpu(), want.double()
    scale = max(1.0, want.abs().max().item())
    assert torch.allclose(got, want, rtol=tol, atol=tol * scale), (got - want).abs().max().item()


def _same_every_time(fn):
    first = [t.clone() for t in fn()]
    for _ in range(REPEATS):
        for a, b in zip(first, fn()):
            assert torch.equal(a, b), "backward differs between identical calls"


def _flat(result):
    return [t for part in result for t in (part if isinstance(part, tuple) else (part,))]


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_pyramid_every_dtype_vs_cpu_and_deterministic(dtype):
    tdt, tol = DTYPES[dtype]
    f1, f2 = _features(2, 64, 23, 40, 0), _features(2, 64, 23, 40, 1)
    cuda = [t.to(tdt).cuda() for t in (f1, f2)]
    cpu = [t.double().cpu() for t in cuda]                     # the inputs the GPU saw, in float64
    levels = gpuops.corr_pyramid(*cuda, num_levels=4)
    assert [tuple(a.shape) for a in levels] == [(2, 23, 40, 23 >> i, 40 >> i) for i in range(4)]
    assert all(a.dtype == tdt and a.is_cuda for a in levels)
    for a, b in zip(levels, gpuops.corr_pyramid(*cpu, num_levels=4)):
        _compare(a, b, tol)
    g = tuple(torch.randn(a.shape, dtype=torch.float64).to(tdt) for a in levels)
    got = gpuops.corr_pyramid_backward(tuple(t.cuda() for t in g), *cuda, num_levels=4)
    for a, b in zip(got, gpuops.corr_pyramid_backward(tuple(t.double() for t in g), *cpu, num_levels=4)):
        _compare(a, b, tol * 10)
    _same_every_time(lambda: gpuops.corr_pyramid_backward(tuple(t.cuda() for t in g), *cuda, num_levels=4))


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_lookup_every_dtype_vs_cpu_and_deterministic(dtype):
    tdt, tol = DTYPES[dtype]
    f1, f2 = _features(2, 32, 23, 40, 2), _features(2, 32, 23, 40, 3)
    coords = _flow_coords(2, 23, 40, 5.0, 4)
    coords[0, :, 3, 4] = float("nan")
    levels = [a.to(tdt).cuda() for a in gpuops.corr_pyramid(f1, f2, num_levels=4)]
    c = coords.to(tdt).cuda()
    cpu_levels, cpu_c = [a.double().cpu() for a in levels], c.double().cpu()
    y = gpuops.corr_pyramid_lookup(levels, c, radius=4)
    assert y.shape == (2, 4 * 81, 23, 40) and y.dtype == tdt
    _compare(y, gpuops.corr_pyramid_lookup(cpu_levels, cpu_c, radius=4), tol)
    g = torch.randn(y.shape, dtype=torch.float64).to(tdt)
    got = gpuops.corr_pyramid_lookup_backward(g.cuda(), levels, c, radius=4)
    want = gpuops.corr_pyramid_lookup_backward(g.double(), cpu_levels, cpu_c, radius=4)
    for a, b in zip(_flat(got), _flat(want)):
        _compare(a, b, tol * 10)
    _same_every_time(lambda: _flat(gpuops.corr_pyramid_lookup_backward(g.cuda(), levels, c, radius=4)))


@pytest.mark.parametrize("variant", names(pyramid.GEMM_VARIANTS)[1:])         # every GPU GEMM
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_gemm_variants(variant, dtype):
    if variant == "cupy" and importlib.util.find_spec("cupy") is None:
        pytest.skip("CuPy is not installed")
    if variant == "cupy" and dtype == "bfloat16":
        pytest.skip("CuPy has no bfloat16")
    tdt, tol = DTYPES[dtype]
    f1, f2 = _features(2, 70, 9, 37, 5), _features(2, 70, 9, 37, 6)    # ragged: 333 queries, C 70
    cuda = [t.to(tdt).cuda() for t in (f1, f2)]
    cpu = [t.double().cpu() for t in cuda]
    levels = gpuops.corr_pyramid(*cuda, num_levels=2, variant=variant)
    for a, b in zip(levels, gpuops.corr_pyramid(*cpu, num_levels=2)):
        _compare(a, b, tol)
    g = tuple(torch.randn(a.shape, dtype=torch.float64).to(tdt) for a in levels)
    got = gpuops.corr_pyramid_backward(tuple(t.cuda() for t in g), *cuda, num_levels=2, variant=variant)
    for a, b in zip(got, gpuops.corr_pyramid_backward(tuple(t.double() for t in g), *cpu, num_levels=2)):
        _compare(a, b, tol * 10)
    _same_every_time(lambda: gpuops.corr_pyramid_backward(tuple(t.cuda() for t in g), *cuda, num_levels=2,
                                                          variant=variant))


@pytest.mark.parametrize("kind", ["numba", "cupy"])
def test_other_cuda_arrays_take_cupy_or_the_numba_gemm(kind):
    if kind == "cupy" and importlib.util.find_spec("cupy") is None:
        pytest.skip("CuPy is not installed")
    from helpers import to_f64, to_kind
    f1, f2 = (_features(1, 16, 12, 20, s).numpy() for s in (7, 8))
    coords = _flow_coords(1, 12, 20, 3.0, 9).numpy()
    dev = [to_kind(a, kind, "float32") for a in (f1, f2, coords)]
    levels = gpuops.corr_pyramid(dev[0], dev[1], num_levels=3)
    y = gpuops.corr_pyramid_lookup(levels, dev[2], radius=3)
    want = gpuops.corr_lookup(f1, f2, coords, radius=3, num_levels=3)
    np.testing.assert_allclose(to_f64(y), want, rtol=1e-4, atol=1e-4)


def test_pyramid_lookup_equals_corr_lookup_on_cuda():
    f1, f2 = (_features(2, 64, 32, 48, s).float().cuda() for s in (10, 11))
    coords = _flow_coords(2, 32, 48, 4.0, 12).float().cuda()
    levels = gpuops.corr_pyramid(f1, f2, num_levels=4)
    y = gpuops.corr_pyramid_lookup(levels, coords, radius=4)
    torch.testing.assert_close(y, gpuops.corr_lookup(f1, f2, coords, radius=4, num_levels=4), rtol=1e-4, atol=1e-4)
    g = torch.randn_like(y)
    level_grads, gc = gpuops.corr_pyramid_lookup_backward(g, levels, coords, radius=4)
    g1, g2 = gpuops.corr_pyramid_backward(level_grads, f1, f2, num_levels=4)
    for a, b in zip((g1, g2, gc), gpuops.corr_lookup_backward(g, f1, f2, coords, radius=4, num_levels=4)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_explicit_streams():
    f1, f2 = (_features(1, 32, 16, 24, s).float().cuda() for s in (13, 14))
    coords = _flow_coords(1, 16, 24, 3.0, 15).float().cuda()
    want = gpuops.corr_pyramid_lookup(gpuops.corr_pyramid(f1, f2, num_levels=3), coords, radius=2)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    for variant in ("torch", "numba"):
        with torch.cuda.stream(side):               # the caller's current stream
            got = gpuops.corr_pyramid_lookup(gpuops.corr_pyramid(f1, f2, num_levels=3, variant=variant), coords,
                                             radius=2)
        side.synchronize()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        levels = gpuops.corr_pyramid(f1, f2, num_levels=3, variant=variant, stream=side)     # an explicit stream=
        got = gpuops.corr_pyramid_lookup(levels, coords, radius=2, stream=side)
        side.synchronize()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _raft_corr_block():
    """RAFT's CorrBlock from the peer checkout (its core/ on sys.path, as RAFT's scripts put it), or None."""
    if not (PEER / "corr.py").exists():
        return None
    sys.path.insert(0, str(PEER))
    try:
        from corr import CorrBlock
    except ImportError:
        return None
    finally:
        sys.path.remove(str(PEER))
    return CorrBlock


@pytest.mark.parametrize("alternate", [False, True])
def test_corr_block_matches_raft_peer_on_cuda(alternate):
    RaftCorrBlock = _raft_corr_block()
    if RaftCorrBlock is None:
        pytest.skip("RAFT's core/corr.py is not in .peer/raft_peer")
    f1, f2 = (_features(2, 64, 32, 48, s).float().cuda().requires_grad_() for s in (16, 17))
    coords = _flow_coords(2, 32, 48, 3.0, 18).float().cuda().requires_grad_()
    ours = gt.CorrBlock(f1, f2, num_levels=4, radius=4, alternate=alternate)
    theirs = RaftCorrBlock(f1, f2, num_levels=4, radius=4)
    loss_ours = loss_theirs = 0
    for step in range(3):                           # RAFT's refinement loop: one pyramid, several lookups
        c = coords + 0.5 * step
        out, ref = ours(c), theirs(c)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        w = torch.randn_like(out)
        loss_ours, loss_theirs = loss_ours + (out * w).sum(), loss_theirs + (ref * w).sum()
    for a, b in zip(torch.autograd.grad(loss_ours, (f1, f2, coords)), torch.autograd.grad(loss_theirs, (f1, f2, coords))):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_jax_corr_block_on_gpu():
    jax = pytest.importorskip("jax")
    if not any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("JAX sees no GPU")
    import gpuops.jax as gj
    f1, f2 = (_features(1, 32, 16, 24, s).float().numpy() for s in (19, 20))
    coords = _flow_coords(1, 16, 24, 3.0, 21).float().numpy()
    fn = jax.jit(lambda a, b, c: gj.CorrBlock(a, b, num_levels=3, radius=2)(c))
    for shift in (0.0, 0.5):                        # the second call may replay the first one's launches
        want = gpuops.corr_lookup(*(np.asarray(a, np.float64) for a in (f1, f2, coords + shift)), radius=2,
                                  num_levels=3)
        np.testing.assert_allclose(np.asarray(fn(f1, f2, coords + shift)), want, rtol=1e-4, atol=1e-4)
