"""Tier 4: gpuops.torch.CorrBlock against RAFT's CorrBlock as RAFT's code computes it (written here from the
spec: all-pairs volume by torch.matmul, F.avg_pool2d pyramid, F.grid_sample(align_corners=True) lookups,
``.float()``), values and gradients in float64 on CPU, both modes (alternate=False: the pyramid built once
by corr_pyramid, looked up by corr_pyramid_lookup, RAFT's refinement loop of several lookups with one
backward; alternate=True: corr_lookup); and the drop-in gpuops.compat.pytorch_cuda_ops.patch_correlate
(the seed's ×C L1 scale, radius 0).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gpuops.torch as gt
from gpuops import reference as R
from gpuops.compat import pytorch_cuda_ops


def raft_corr_block(fmap1, fmap2, coords, num_levels, radius):
    """RAFT core/corr.py CorrBlock(fmap1, fmap2, num_levels, radius)(coords), step by step."""
    batch, dim, ht, wd = fmap1.shape
    corr = torch.matmul(fmap1.view(batch, dim, ht * wd).transpose(1, 2), fmap2.view(batch, dim, ht * wd))
    corr = corr.view(batch * ht * wd, 1, ht, wd) / torch.sqrt(torch.tensor(dim).float())
    pyramid = [corr]
    for _ in range(num_levels - 1):
        corr = F.avg_pool2d(corr, 2, stride=2)
        pyramid.append(corr)
    r = radius
    coords = coords.permute(0, 2, 3, 1)
    out = []
    for i in range(num_levels):
        dx = torch.linspace(-r, r, 2 * r + 1)
        dy = torch.linspace(-r, r, 2 * r + 1)
        delta = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), axis=-1)
        lvl = coords.reshape(batch * ht * wd, 1, 1, 2) / 2 ** i + delta.view(1, 2 * r + 1, 2 * r + 1, 2)
        H, W = pyramid[i].shape[-2:]
        x, y = lvl.split([1, 1], dim=-1)
        grid = torch.cat([2 * x / (W - 1) - 1, 2 * y / (H - 1) - 1], dim=-1)
        out.append(F.grid_sample(pyramid[i], grid, align_corners=True).view(batch, ht, wd, -1))
    return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous().float()


def _maps(N=2, C=5, H=8, W=12, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    f1 = torch.randn(N, C, H, W, generator=g, dtype=dtype)
    f2 = torch.randn(N, C, H, W, generator=g, dtype=dtype)
    base = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")[::-1]).to(dtype)
    flow = torch.randn(N, 2, H, W, generator=g, dtype=dtype) * 3
    return f1, f2, base[None] + flow          # RAFT's coords_grid + flow


@pytest.mark.parametrize("alternate", [False, True])
@pytest.mark.parametrize("num_levels,radius", [(3, 2), (2, 0)])
def test_corr_block_matches_raft(alternate, num_levels, radius):
    f1, f2, coords = _maps()
    ours_in = [t.clone().requires_grad_() for t in (f1, f2, coords)]
    ref_in = [t.clone().requires_grad_() for t in (f1, f2, coords)]
    out = gt.CorrBlock(ours_in[0], ours_in[1], num_levels=num_levels, radius=radius, alternate=alternate)(ours_in[2])
    ref = raft_corr_block(*ref_in, num_levels, radius)
    assert out.shape == ref.shape == (2, num_levels * (2 * radius + 1) ** 2, 8, 12)
    assert out.dtype == ref.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    ours = torch.autograd.grad(out, ours_in, g)
    refs = torch.autograd.grad(ref, ref_in, g)
    for a, b in zip(ours, refs):
        assert a.dtype == torch.float64
        # RAFT divides by √C computed in float32 (torch.tensor(dim).float()): ~1e-8 relative from 1/√C
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7)


def test_corr_block_default_raft_parameters_and_16_bit_maps():
    f1, f2, coords = _maps(N=1, C=3, H=16, W=16, dtype=torch.float32)   # level 3 is 2x2 (RAFT: NaN at 1 pixel)
    block = gt.CorrBlock(f1.half(), f2.bfloat16())           # upcast to float32 at construction
    out = block(coords)
    assert out.shape == (1, 4 * 81, 16, 16) and out.dtype == torch.float32
    ref = raft_corr_block(f1.half().float(), f2.bfloat16().float(), coords, 4, 4)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert "num_levels=4, radius=4, alternate=False" in repr(block)


def test_corr_block_refuses_bad_arguments_at_construction():
    f1, f2, _ = _maps(N=1, C=2, H=4, W=6)
    with pytest.raises(ValueError, match="num_levels=4 would pool the 4x6 feature maps to an empty level 3"):
        gt.CorrBlock(f1, f2)
    with pytest.raises(ValueError, match="radius must be >= 0"):
        gt.CorrBlock(f1, f2, num_levels=2, radius=-1)
    with pytest.raises(ValueError, match="fmap2 must have the shape of fmap1"):
        gt.CorrBlock(f1, f2[..., :4], num_levels=2)
    with pytest.raises(TypeError, match="alternate must be a bool"):
        gt.CorrBlock(f1, f2, num_levels=2, alternate="yes")
    with pytest.raises(TypeError, match="fmap1 must be a torch.Tensor"):
        gt.CorrBlock(f1.numpy(), f2, num_levels=2)


def test_corr_block_builds_the_pyramid_once_and_looks_it_up(monkeypatch):
    from gpuops.adapters import torch_raft
    f1, f2, coords = _maps(N=1, C=4, H=8, W=8)
    block = gt.CorrBlock(f1, f2, num_levels=4, radius=1)
    assert isinstance(block.pyramid, tuple) and len(block.pyramid) == 4
    assert [tuple(p.shape) for p in block.pyramid] == [(1, 8, 8, 8 >> i, 8 >> i) for i in range(4)]
    assert not hasattr(block, "fmap1")                       # the volume holds what the lookups need

    def no_corr_lookup(*args, **kwargs):
        raise AssertionError("alternate=False must look up the pyramid, not call corr_lookup")
    monkeypatch.setattr(torch_raft, "corr_lookup", no_corr_lookup)
    out = block(coords)                # level 3 is 1x1, where RAFT's grid_sample normalisation divides by 0
    want = R.corr_lookup(*(t.numpy() for t in (f1, f2, coords)), radius=1, num_levels=4)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6, atol=1e-6)


def test_corr_block_refinement_loop_gradients_match_raft_and_the_alternate_block():
    """RAFT's update loop: one block per frame pair, several lookups at moving coordinates, one backward."""
    f1, f2, coords = _maps(N=2, C=3, H=8, W=10, seed=4)
    flows = [torch.randn(coords.shape, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
             for s in range(3)]
    g = [torch.randn(2, 2 * 25, 8, 10, generator=torch.Generator().manual_seed(10 + s)) for s in range(3)]
    grads = {}
    for mode in ("pyramid", "alternate", "raft"):
        inputs = [t.clone().requires_grad_() for t in (f1, f2)]
        block = None if mode == "raft" else gt.CorrBlock(*inputs, num_levels=2, radius=2,
                                                         alternate=mode == "alternate")
        loss = 0
        for flow, w in zip(flows, g):
            c = coords + flow
            out = raft_corr_block(*inputs, c, 2, 2) if block is None else block(c)
            loss = loss + (out * w).sum()
        grads[mode] = torch.autograd.grad(loss, inputs)
    for mode in ("pyramid", "alternate"):
        for a, b in zip(grads[mode], grads["raft"]):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def _training_loss(block, coords, flows, weights):
    return sum((block(coords + flow) * w).sum() for flow, w in zip(flows, weights))


def _training_case(seed=6):
    f1, f2, coords = _maps(N=1, C=3, H=6, W=8, seed=seed)
    flows = [torch.randn(coords.shape, generator=torch.Generator().manual_seed(seed + s), dtype=torch.float64)
             for s in range(3)]
    weights = [torch.randn(1, 3 * 9, 6, 8, generator=torch.Generator().manual_seed(20 + s), dtype=torch.float64)
               for s in range(3)]
    return f1, f2, coords, flows, weights


def _alternate_gradients(f1, f2, coords, flows, weights, wrt_coords=False):
    inputs = [t.clone().requires_grad_() for t in (f1, f2)] + ([coords.clone().requires_grad_()] if wrt_coords else [])
    block = gt.CorrBlock(inputs[0], inputs[1], num_levels=3, radius=1, alternate=True)
    return torch.autograd.grad(_training_loss(block, inputs[2] if wrt_coords else coords, flows, weights), inputs)


def test_corr_block_training_path_sums_level_gradients_in_place(monkeypatch):
    """The eager training path (maps requiring grad): lookups add into one buffer per level, the pyramid's backward
    runs once; the gradients of maps and coordinates are the alternate block's (corr_lookup, no pyramid)."""
    from gpuops.adapters import torch_raft
    f1, f2, coords, flows, weights = _training_case()
    want = _alternate_gradients(f1, f2, coords, flows, weights, wrt_coords=True)
    pyramid_backwards = []
    plain_backward = torch_raft.pyramid.corr_pyramid_backward
    monkeypatch.setattr(torch_raft.pyramid, "corr_pyramid_backward",
                        lambda *a, **k: pyramid_backwards.append(1) or plain_backward(*a, **k))
    a, b, c = (t.clone().requires_grad_() for t in (f1, f2, coords))
    block = gt.CorrBlock(a, b, num_levels=3, radius=1)
    assert block._grads is not None and all(p.grad_fn is None for p in block.pyramid)
    got = torch.autograd.grad(_training_loss(block, c, flows, weights), (a, b, c))
    assert len(pyramid_backwards) == 1 and not block._grads.passes      # summed once, buffers released
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)


def test_corr_block_training_path_across_backward_passes():
    f1, f2, coords, flows, weights = _training_case(seed=7)
    want = _alternate_gradients(f1, f2, coords, flows, weights)
    a, b, c = (t.clone().requires_grad_() for t in (f1, f2, coords))
    block = gt.CorrBlock(a, b, num_levels=3, radius=1)
    loss = _training_loss(block, c, flows, weights)
    # a pass for the coordinates alone runs the lookups' backwards but not the pyramid's: nothing may carry over
    torch.autograd.grad(loss, c, retain_graph=True)
    assert not block._grads.passes
    first = torch.autograd.grad(loss, (a, b), retain_graph=True)
    loss.backward()                                     # a second full pass, into .grad
    for x, y, acc in zip(first, want, (a.grad, b.grad)):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(acc, y, rtol=1e-9, atol=1e-9)


def test_corr_block_training_path_one_map_and_a_pass_inside_another():
    f1, f2, coords, flows, weights = _training_case(seed=10)
    want = _alternate_gradients(f1, f2, coords, flows, weights)
    a = f1.clone().requires_grad_()                    # fmap2 needs no gradient
    block = gt.CorrBlock(a, f2, num_levels=3, radius=1)
    torch.testing.assert_close(torch.autograd.grad(_training_loss(block, coords, flows, weights), a)[0], want[0],
                               rtol=1e-9, atol=1e-9)
    # a hook on one lookup's output starts a second backward pass through another lookup of the same block while
    # the first pass is under way: each pass sums its own lookups
    a, b = (t.clone().requires_grad_() for t in (f1, f2))
    block = gt.CorrBlock(a, b, num_levels=3, radius=1)
    outs = [block(coords + flow) for flow in flows]
    first_alone = (outs[0] * weights[0]).sum()           # a branch of its own, which the outer pass does not run
    inner = []
    outs[1].register_hook(lambda g: inner.append(torch.autograd.grad(first_alone, a, retain_graph=True)[0]))
    got = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)), (a, b))
    assert len(inner) == 1
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)
    alone = _alternate_gradients(f1, f2, coords, flows[:1], weights[:1])[0]
    torch.testing.assert_close(inner[0], alone, rtol=1e-9, atol=1e-9)


def test_corr_block_training_path_frees_the_pyramid_with_the_block():
    """The graph keeps no pyramid after its backward: a loss kept alive (RAFT's loop holds the last one into the
    next iteration) does not keep the block's O((H·W)²) levels."""
    import gc
    import weakref
    f1, f2, coords, flows, weights = _training_case(seed=11)
    a, b = (t.clone().requires_grad_() for t in (f1, f2))
    block = gt.CorrBlock(a, b, num_levels=3, radius=1)
    loss = _training_loss(block, coords, flows, weights)
    level = weakref.ref(block.pyramid[0])
    loss.backward()
    del block
    gc.collect()
    assert level() is None and loss.requires_grad


def test_corr_block_training_path_refuses_double_backward_and_compile():
    f1, f2, coords, flows, weights = _training_case(seed=8)
    a, b = (t.clone().requires_grad_() for t in (f1, f2))
    block = gt.CorrBlock(a, b, num_levels=3, radius=1)
    ga, _ = torch.autograd.grad(_training_loss(block, coords, flows, weights), (a, b), create_graph=True)
    torch.testing.assert_close(ga, _alternate_gradients(f1, f2, coords, flows, weights)[0], rtol=1e-9, atol=1e-9)
    with pytest.raises(RuntimeError, match="CorrBlock: double backward"):
        torch.autograd.grad(ga.sum(), a)
    compiled = torch.compile(block, backend="eager", fullgraph=True)
    with pytest.raises(Exception, match="built for eager training"):
        compiled(coords)


def test_corr_block_built_inside_torch_compile_trains_with_the_registered_ops():
    f1, f2, coords, flows, weights = _training_case(seed=9)
    want = _alternate_gradients(f1, f2, coords, flows, weights)

    @torch.compile(backend="aot_eager", fullgraph=True)
    def loss_of(a, b):
        return _training_loss(gt.CorrBlock(a, b, num_levels=3, radius=1), coords, flows, weights)
    a, b = (t.clone().requires_grad_() for t in (f1, f2))
    for x, y in zip(torch.autograd.grad(loss_of(a, b), (a, b)), want):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)


def test_corr_block_inference_and_torch_compile():
    f1, f2, coords = _maps(N=1, C=4, H=8, W=8, dtype=torch.float32, seed=5)
    with torch.no_grad():
        block = gt.CorrBlock(f1.half(), f2.half(), num_levels=3, radius=2)
        assert all(p.grad_fn is None and p.dtype == torch.float32 for p in block.pyramid)
        eager = block(coords)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(coords), eager)
    torch.testing.assert_close(eager, gt.CorrBlock(f1.half(), f2.half(), num_levels=3, radius=2, alternate=True)(coords),
                               rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# the drop-in


def _patch_inputs(dtype=torch.float64, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((2, 4, 3, 5))
    inp = rng.standard_normal((2, 4, 6, 7))
    coords = rng.integers(-2, 8, (2, 3, 5, 2)) + rng.uniform(0.2, 0.8, (2, 3, 5, 2))
    return [torch.from_numpy(a).to(dtype) for a in (base, inp, coords)]


def test_drop_in_patch_correlate_dot_and_scaled_l1():
    base, inp, coords = _patch_inputs()
    out = pytorch_cuda_ops.patch_correlate(base, inp, coords)            # r = 4 by default
    assert out.shape == (2, 81, 3, 5)
    np.testing.assert_allclose(out.numpy(), R.patch_correlate(base, inp, coords, radius=4), rtol=1e-12, atol=1e-12)
    out = pytorch_cuda_ops.patch_correlate(base, inp, coords, 2, True)
    C = 4
    seed_l1 = C * R.patch_correlate(base, inp, coords, radius=2, l1=True) * C      # C · Σ_c |…| = C² · mean
    np.testing.assert_allclose(out.numpy(), seed_l1, rtol=1e-12, atol=1e-12)


def test_drop_in_radius_zero_is_a_real_result_with_gradients():
    tensors = [t.requires_grad_() for t in _patch_inputs()]
    out = pytorch_cuda_ops.patch_correlate(*tensors, r=0)
    assert out.shape == (2, 1, 3, 5)
    np.testing.assert_allclose(out.detach().numpy(), R.patch_correlate(*[t.detach() for t in tensors], radius=0),
                               rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: pytorch_cuda_ops.patch_correlate(*t, r=1, l1=True), tensors)
    with pytest.raises(ValueError, match="radius must be >= 0"):
        pytorch_cuda_ops.patch_correlate(*tensors, r=-1)


def test_drop_in_in_float32_matches_the_seed_formula_with_grid_sample():
    base, inp, coords = _patch_inputs(torch.float32, seed=3)
    C, r = base.shape[1], 1
    H, W = inp.shape[-2:]
    want = []
    for dx in range(-r, r + 1):
        for dy in range(-r, r + 1):
            grid = torch.stack([2 * (coords[..., 0] + dx) / (W - 1) - 1, 2 * (coords[..., 1] + dy) / (H - 1) - 1], -1)
            s = F.grid_sample(inp, grid, align_corners=True, padding_mode="zeros")
            want.append((base * s).sum(1) / math.sqrt(C))
    torch.testing.assert_close(pytorch_cuda_ops.patch_correlate(base, inp, coords, r), torch.stack(want, 1),
                               rtol=1e-5, atol=1e-5)


def test_drop_in_casts_coordinates_to_the_features_dtype():
    base, inp, coords = _patch_inputs(torch.float32, seed=4)
    out = pytorch_cuda_ops.patch_correlate(base.half(), inp.half(), coords, 1)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), pytorch_cuda_ops.patch_correlate(base.half().float(), inp.half().float(),
                                                                             coords.half().float(), 1),
                               rtol=2e-3, atol=2e-3)
