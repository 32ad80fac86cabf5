"""GPU tier: patch_correlate and corr_lookup on CUDA in every dtype against the CPU mirror (float64 for the
reference values), bit-identical repeats of the backward (the bucketed map gradient: integer atomics
place the queries, the sort fixes the order), CorrBlock against RAFT's CorrBlock computed by torch on
the GPU, and the drop-in.  Shapes are RAFT-like but small."""
import math

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import gpuops  # noqa: E402
import gpuops.torch as gt  # noqa: E402
from gpuops.compat import pytorch_cuda_ops  # noqa: E402

DTYPES = {"float16": (torch.float16, 2e-2), "bfloat16": (torch.bfloat16, 6e-2), "float32": (torch.float32, 1e-4),
          "float64": (torch.float64, 1e-10)}
REPEATS = 3


def _flow_coords(N, H, W, spread, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")[::-1]).to(dtype)
    return grid[None] + torch.randn(N, 2, H, W, generator=g, dtype=dtype) * spread


def _features(N, C, H, W, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, C, H, W, generator=g, dtype=torch.float64)


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


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("l1", [False, True])
def test_patch_correlate_every_dtype_vs_cpu_mirror(dtype, l1):
    tdt, tol = DTYPES[dtype]
    base, inp = _features(2, 32, 12, 20, 0), _features(2, 32, 14, 17, 1)
    coords = _flow_coords(2, 12, 20, 4.0, 2).permute(0, 2, 3, 1).contiguous()
    coords[0, 3, 4] = float("nan")
    cuda = [t.to(tdt).cuda() for t in (base, inp, coords)]
    cpu = [t.double().cpu() for t in cuda]                        # the inputs the GPU saw, in float64
    y = gpuops.patch_correlate(*cuda, radius=3, l1=l1)
    assert y.dtype == tdt and y.is_cuda
    _compare(y, gpuops.patch_correlate(*cpu, radius=3, l1=l1), tol)
    g = torch.randn(y.shape, dtype=torch.float64).to(tdt)
    grads = gpuops.patch_correlate_backward(g.cuda(), *cuda, radius=3, l1=l1)
    wants = gpuops.patch_correlate_backward(g.double(), *cpu, radius=3, l1=l1)
    for a, b in zip(grads, wants):
        _compare(a, b, tol * 10)
    _same_every_time(lambda: gpuops.patch_correlate_backward(g.cuda(), *cuda, radius=3, l1=l1))


@pytest.mark.parametrize("variant", ["window", "direct"])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_corr_lookup_every_dtype_vs_cpu_mirror_and_deterministic(dtype, variant):
    tdt, tol = DTYPES[dtype]
    f1, f2 = _features(2, 64, 23, 40, 3), _features(2, 64, 23, 40, 4)
    coords = _flow_coords(2, 23, 40, 5.0, 5)
    coords[1, :, 4, 7] = float("inf")
    cuda = [t.to(tdt).cuda() for t in (f1, f2, coords)]
    cpu = [t.double().cpu() for t in cuda]
    y = gpuops.corr_lookup(*cuda, radius=4, num_levels=4, variant=variant)
    assert y.shape == (2, 4 * 81, 23, 40) and y.dtype == tdt
    _compare(y, gpuops.corr_lookup(*cpu, radius=4, num_levels=4), tol)
    g = torch.randn(y.shape, dtype=torch.float64).to(tdt)
    grads = gpuops.corr_lookup_backward(g.cuda(), *cuda, radius=4, num_levels=4, variant=variant)
    wants = gpuops.corr_lookup_backward(g.double(), *cpu, radius=4, num_levels=4)
    for a, b in zip(grads, wants):
        _compare(a, b, tol * 10)
    _same_every_time(lambda: gpuops.corr_lookup_backward(g.cuda(), *cuda, radius=4, num_levels=4, variant=variant))


@pytest.mark.parametrize("channels,radius", [(40, 3), (7, 0), (33, 8)])
def test_corr_lookup_channel_counts_and_radii(channels, radius):
    # lanes left idle (C not a multiple of 32), radius 0, and a radius beyond the window kernels (direct)
    f1, f2 = _features(1, channels, 17, 21, 14), _features(1, channels, 17, 21, 15)
    coords = _flow_coords(1, 17, 21, 6.0, 16)
    cuda = [t.float().cuda() for t in (f1, f2, coords)]
    cpu = [t.double().cpu() for t in cuda]
    _compare(gpuops.corr_lookup(*cuda, radius=radius, num_levels=3), gpuops.corr_lookup(*cpu, radius=radius,
                                                                                       num_levels=3), 1e-4)
    g = torch.randn(1, 3 * (2 * radius + 1) ** 2, 17, 21, dtype=torch.float64)
    got = gpuops.corr_lookup_backward(g.float().cuda(), *cuda, radius=radius, num_levels=3)
    for a, b in zip(got, gpuops.corr_lookup_backward(g.float().double(), *cpu, radius=radius, num_levels=3)):
        _compare(a, b, 1e-3)


def test_many_queries_in_one_cell_deterministic():
    # a converging flow: every query of an image samples around one point (one bucket holds 4096)
    f1, f2 = (_features(1, 16, 64, 64, s).float().cuda() for s in (6, 7))
    coords = torch.full((1, 2, 64, 64), 20.3, device="cuda")
    g = torch.randn(1, 2 * 49, 64, 64, device="cuda")
    _same_every_time(lambda: gpuops.corr_lookup_backward(g, f1, f2, coords, radius=3, num_levels=2))
    want = gpuops.corr_lookup_backward(g.double().cpu(), f1.double().cpu(), f2.double().cpu(), coords.double().cpu(),
                                       radius=3, num_levels=2)
    for a, b in zip(gpuops.corr_lookup_backward(g, f1, f2, coords, radius=3, num_levels=2), want):
        _compare(a, b, 1e-3)


def _raft_corr_block(fmap1, fmap2, coords, num_levels, radius):
    batch, dim, ht, wd = fmap1.shape
    corr = torch.matmul(fmap1.view(batch, dim, ht * wd).transpose(1, 2), fmap2.view(batch, dim, ht * wd))
    corr = corr.view(batch * ht * wd, 1, ht, wd) / math.sqrt(dim)
    r = radius
    d = torch.linspace(-r, r, 2 * r + 1, device=coords.device, dtype=coords.dtype)
    delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), -1).view(1, 2 * r + 1, 2 * r + 1, 2)
    centroid = coords.permute(0, 2, 3, 1).reshape(batch * ht * wd, 1, 1, 2)
    out = []
    for i in range(num_levels):
        lvl = centroid / 2 ** i + delta
        H, W = corr.shape[-2:]
        grid = torch.cat([2 * lvl[..., :1] / (W - 1) - 1, 2 * lvl[..., 1:] / (H - 1) - 1], -1)
        out.append(F.grid_sample(corr, grid, align_corners=True).view(batch, ht, wd, -1))
        corr = F.avg_pool2d(corr, 2, stride=2)
    return torch.cat(out, -1).permute(0, 3, 1, 2).contiguous().float()


@pytest.mark.parametrize("alternate", [False, True])
def test_corr_block_matches_raft_on_cuda(alternate):
    f1, f2 = (_features(2, 64, 32, 48, s).cuda().requires_grad_() for s in (8, 9))
    coords = _flow_coords(2, 32, 48, 3.0, 10).cuda().requires_grad_()
    out = gt.CorrBlock(f1, f2, alternate=alternate)(coords)
    ref = _raft_corr_block(f1, f2, coords, 4, 4)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (f1, f2, coords), g), torch.autograd.grad(ref, (f1, f2, coords), g)):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7)


def test_drop_in_on_cuda():
    base, inp = _features(1, 8, 10, 12, 11).float().cuda(), _features(1, 8, 10, 12, 12).float().cuda()
    coords = _flow_coords(1, 10, 12, 2.0, 13).float().cuda().permute(0, 2, 3, 1).contiguous()
    out = pytorch_cuda_ops.patch_correlate(base, inp, coords, 2, True)
    want = 64 * gpuops.patch_correlate(base.cpu(), inp.cpu(), coords.cpu(), radius=2, l1=True)
    torch.testing.assert_close(out.cpu(), want, rtol=1e-5, atol=1e-4)
    assert pytorch_cuda_ops.patch_correlate(base, inp, coords, 0).shape == (1, 1, 10, 12)


def _alternate_corr_block():
    try:
        from benchmarks.raft import _alt_cuda_corr_function, alternate_corr_block
        apply = _alt_cuda_corr_function()
    except ImportError as err:
        pytest.skip(f"RAFT's alt_cuda_corr is not built here ({err})")
    return lambda f1, f2, c: alternate_corr_block(f1, f2, c, apply)


def test_corr_lookup_matches_raft_alt_cuda_corr():
    alternate = _alternate_corr_block()
    f1, f2 = (_features(2, 128, 30, 44, s).float().cuda().requires_grad_() for s in (17, 18))
    coords = _flow_coords(2, 30, 44, 4.0, 19).float().cuda()
    ours = gt.corr_lookup(f1, f2, coords, radius=4, num_levels=4)
    theirs = alternate(f1, f2, coords)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, (f1, f2), g), torch.autograd.grad(theirs, (f1, f2), g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
