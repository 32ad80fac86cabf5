"""Tier 4: the per-pixel family's modules and drop-ins on CPU — gpuops.torch.Involution / WeightedFilter,
gpuops.jax.Involution (Flax, trained a few steps), compat.pytorch_cuda_ops.involution (the seed's
convention) and compat.layerdenoise — against torch expressions written from spec/ops.md §6, §11, §12 and
research/originals.md §2, §8 (the originals' own unfold/fold oracles)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import gpuops.torch as gt  # noqa: E402
from gpuops.compat import layerdenoise, pytorch_cuda_ops  # noqa: E402


def _t(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).requires_grad_()


def official_involution(x, w, stride, padding):
    """d-li14's involution_naive: unfold, then the per-group kernel."""
    N, C = x.shape[:2]
    _, G, K, _, Ho, Wo = w.shape
    cols = F.unfold(x, K, padding=padding, stride=stride).view(N, G, C // G, K * K, Ho, Wo)
    return (w.reshape(N, G, 1, K * K, Ho, Wo) * cols).sum(3).reshape(N, C, Ho, Wo)


def seed_involution(x, w, K, sx, sy, groups):
    """The seed's general oracle (any groups): the weight set of each channel times the unfolded windows."""
    N, C, H, W = x.shape
    E, Ho, Wo = -(-C // groups), w.shape[2], w.shape[3]
    Lh, Lw = (H - K) // sy + 1, (W - K) // sx + 1
    cols = F.unfold(x, K, stride=(sy, sx)).view(N, C, K * K, Lh, Lw)[..., :Ho, :Wo]
    return (w.view(N, E, K * K, Ho, Wo)[:, torch.arange(C) // groups] * cols).sum(2)


def kpn_filter(x, w, splat):
    N, C, H, W = x.shape
    K = int(round(w.shape[1] ** 0.5))
    if splat:
        return F.fold((x[:, :, None] * w[:, None]).reshape(N, C * K * K, H * W), (H, W), K, padding=K // 2)
    return (F.unfold(x, K, padding=K // 2).view(N, C, K * K, H, W) * w[:, None]).sum(2)


def _same_grads(y, ref, inputs):
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, inputs, g), torch.autograd.grad(ref, inputs, g))


# ---------------------------------------------------------------------------------------------
# gpuops.torch modules


@pytest.mark.parametrize("stride", [1, 2])
def test_involution_module_is_the_cvpr_block(stride):
    torch.manual_seed(0)
    m = gt.Involution(8, 3, stride, reduction_ratio=2, group_channels=4).double()
    x = _t(2, 8, 6, 8)
    y = m(x)
    assert y.shape == (2, 8, 6 // stride, 8 // stride)
    pooled = F.avg_pool2d(x, stride) if stride > 1 else x
    kernels = m.span(torch.relu(m.bn(m.reduce(pooled))))
    ref = official_involution(x, kernels.view(2, 2, 3, 3, *kernels.shape[-2:]), stride, 1)
    _same_grads(y, ref, [x, m.span.weight, m.reduce.weight])


def test_involution_module_trains_and_checks_its_parameters():
    torch.manual_seed(1)
    m = gt.Involution(8, 3, reduction_ratio=2, group_channels=4)
    x, target = torch.randn(4, 8, 6, 6), torch.randn(4, 8, 6, 6)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    losses = []
    for _ in range(5):
        loss = (m(x) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        gt.Involution(8, 4)
    with pytest.raises(ValueError, match="multiple of group_channels"):
        gt.Involution(24, 3, group_channels=16)
    with pytest.raises(ValueError, match="divisible by 2"):
        gt.Involution(16, 3, 2)(torch.randn(1, 16, 5, 6))


@pytest.mark.parametrize("splat", [False, True])
def test_weighted_filter_module(splat):
    m = gt.WeightedFilter(3, 5, splat=splat).double()
    assert torch.equal(m.bias, torch.zeros(3))
    with torch.no_grad():
        m.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x, w = _t(2, 3, 7, 6), _t(2, 25, 7, 6, seed=1)
    ref = kpn_filter(x, w, splat) + m.bias.view(1, 3, 1, 1)
    _same_grads(m(x, w), ref, [x, w, m.bias])
    assert gt.WeightedFilter(3, 3, bias=False).bias is None
    with pytest.raises(ValueError, match="kernel_size² = 25"):
        m(x, w[:, :9])
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        gt.WeightedFilter(3, 2)


# ---------------------------------------------------------------------------------------------
# drop-ins


@pytest.mark.parametrize("C,groups,K,sx,sy,H,W", [
    (5, 3, 3, 1, 2, 9, 8),        # groups does not divide C (the seed's own test case)
    (8, 2, 5, 2, 1, 11, 12),
    (4, 1, 2, 1, 1, 6, 7),        # even K, anchored at the top-left
    (4, 4, 3, 2, 2, 9, 9),
])
def test_seed_involution_drop_in(C, groups, K, sx, sy, H, W):
    N = 2
    E = -(-C // groups)
    Ho, Wo = (H - K) // sy + 1, (W - K) // sx + 1
    x, w = _t(N, C, H, W), _t(N, E * K * K, Ho, Wo, seed=1)
    y = pytorch_cuda_ops.involution(x, w, K, sx, sy, C, groups)
    _same_grads(y, seed_involution(x, w, K, sx, sy, groups), [x, w])
    # .sum().backward() hands a stride-0 gradient: the original raised "grad_output must be contiguous"
    pytorch_cuda_ops.involution(x, w, K, sx, sy, C, groups).sum().backward()
    assert x.grad.shape == x.shape


def test_seed_involution_smaller_output_grid_and_errors():
    x, w = _t(1, 4, 10, 10), _t(1, 2 * 9, 3, 4, seed=1)             # reads only the top-left 7×9 pixels
    _same_grads(pytorch_cuda_ops.involution(x, w, 3, 2, 2, 4, 2), seed_involution(x, w, 3, 2, 2, 2), [x, w])
    with pytest.raises(ValueError, match="reads 11×9 input pixels"):
        pytorch_cuda_ops.involution(x, _t(1, 18, 5, 4), 3, 2, 2, 4, 2)
    with pytest.raises(ValueError, match=r"weight must be \(N = 1, ceil\(channels / groups\)"):
        pytorch_cuda_ops.involution(x, w, 3, 2, 2, 4, 1)
    with pytest.raises(ValueError, match="channels = 5"):
        pytorch_cuda_ops.involution(x, w, 3, 2, 2, 5, 2)
    with pytest.raises(ValueError, match="stride_x must be >= 1"):
        pytorch_cuda_ops.involution(x, w, 3, 0, 2, 4, 2)


def test_seed_is_official_on_a_padded_input():
    """Seed ≡ official when the seed input is the official input zero-padded by (K−1)//2, groups = C // G."""
    x, w = _t(2, 6, 7, 7), _t(2, 3, 3, 3, 7, 7, seed=1)
    official = gt.involution(x, w, padding=1)
    seed = pytorch_cuda_ops.involution(F.pad(x, (1, 1, 1, 1)), w.reshape(2, 27, 7, 7), 3, 1, 1, 6, 2)
    torch.testing.assert_close(seed, official)
    torch.testing.assert_close(official, official_involution(x, w, 1, 1))


@pytest.mark.parametrize("splat", [False, True])
def test_layerdenoise_drop_in(splat):
    m = layerdenoise.WeightedFilter(2, 3, bias=True, splat=splat).double()
    with torch.no_grad():
        m.bias.normal_()
    x, w = _t(1, 2, 6, 5), _t(1, 9, 6, 5, seed=1)
    _same_grads(m(x, w), kpn_filter(x, w, splat) + m.bias.view(1, 2, 1, 1), [x, w, m.bias])
    y = layerdenoise.WeightedFilterFunction.apply(x, w, 3, splat)
    _same_grads(y, kpn_filter(x, w, splat), [x, w])
    y32 = layerdenoise.WeightedFilterFunction.apply(x.float(), w.float(), 3, splat)
    torch.testing.assert_close(y32, y.float())
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        layerdenoise.WeightedFilter(2, 4)
    with pytest.raises(ValueError, match="kernel_size² = 25"):
        layerdenoise.WeightedFilterFunction.apply(x, w, 5, splat)


# ---------------------------------------------------------------------------------------------
# Flax


def test_flax_involution_trains():
    jax = pytest.importorskip("jax")
    pytest.importorskip("flax")
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    import gpuops.jax as gj

    for stride in (2,):             # the pooled kernel branch; stride 1 is the same code without the pool
        m = gj.Involution(channels=8, kernel_size=3, stride=stride, reduction_ratio=2, group_channels=4)
        x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 6, 6), jnp.float32)
        target = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 6 // stride, 6 // stride), jnp.float32)
        variables = m.init(jax.random.PRNGKey(2), x)
        params, stats = variables["params"], variables["batch_stats"]
        opt = optax.sgd(0.1)
        state = opt.init(params)

        @jax.jit
        def step(params, stats, state):
            def loss_fn(p):
                y, updates = m.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"])
                return jnp.mean((y - target) ** 2), updates["batch_stats"]
            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, state = opt.update(grads, state)
            return optax.apply_updates(params, updates), stats, state, loss

        losses = []
        for _ in range(5):
            params, stats, state, loss = step(params, stats, state)
            losses.append(float(loss))
        assert losses[-1] < losses[0], losses
        y = m.apply({"params": params, "batch_stats": stats}, x, train=False)
        assert y.shape == target.shape
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        gj.Involution(channels=8, kernel_size=2, group_channels=4).init(jax.random.PRNGKey(0), x)
