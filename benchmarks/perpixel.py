"""Workloads of the per-pixel family (spec/performance.md): involution (B32 C256 56×56, K7, G16) against the
official unfold-based pure-torch form, and the KPN weighted filter (1×3×1080×1920, K = 5 / 11 / 21, gather
and splat) against unfold + sum (gather) and fold (splat) in torch.

Every workload checks gpuops against the peer on the same random inputs before timing.  ``bytes`` is the
least device-memory traffic (each input read once, each output written once) for the floor.  Nothing here
touches CUDA at import.
"""
from benchmarks.runner import workload

B, C, H, W, K, G = 32, 256, 56, 56, 7, 16
KPN = (1, 3, 1080, 1920)
_TOL = {"float32": 1e-4, "bfloat16": 5e-2}


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def _unfold_involution(x, w, k, padding):
    """d-li14's involution_naive: unfold (N, C·K², H·W), then the per-group kernel and a sum over the taps."""
    import torch.nn.functional as F
    N, Cc, Hh, Ww = x.shape
    groups = w.shape[1]
    cols = F.unfold(x, k, padding=padding).view(N, groups, Cc // groups, k * k, Hh, Ww)
    return (w.reshape(N, groups, 1, k * k, Hh, Ww) * cols).sum(3).view(N, Cc, Hh, Ww)


def _involution_case(dtype, backward):
    import torch

    import gpuops
    dt = getattr(torch, dtype)
    x = torch.randn(B, C, H, W, device="cuda", dtype=dt)
    w = torch.randn(B, G, K, K, H, W, device="cuda", dtype=dt) / K
    item = x.element_size()
    p = (K - 1) // 2
    if not backward:
        def ours():
            return gpuops.involution(x, w, padding=p)

        def peer():
            return _unfold_involution(x, w, K, p)

        def check():
            return _rel(ours(), _unfold_involution(x.float(), w.float(), K, p)) < _TOL[dtype]
        return dict(gpuops=ours, peer=peer, peer_name="unfold-based torch (involution_naive)", check=check,
                    bytes=(2 * x.numel() + w.numel()) * item)
    g = torch.randn(B, C, H, W, device="cuda", dtype=dt)
    xq, wq = (t.detach().requires_grad_() for t in (x, w))
    out = _unfold_involution(xq, wq, K, p)

    def ours():
        return gpuops.involution_backward(g, x, w, padding=p)

    def peer():
        return torch.autograd.grad(out, (xq, wq), g, retain_graph=True)

    def check():
        xr, wr = (t.detach().float().requires_grad_() for t in (x, w))
        refs = torch.autograd.grad(_unfold_involution(xr, wr, K, p), (xr, wr), g.float())
        return all(_rel(o, r) < _TOL[dtype] for o, r in zip(ours(), refs))
    # read g, x, w; write grad_x, grad_w
    return dict(gpuops=ours, peer=peer, peer_name="unfold-based torch autograd", check=check,
                bytes=(3 * x.numel() + 2 * w.numel()) * item)


for _dtype in ("float32", "bfloat16"):
    for _bwd in (False, True):
        workload("involution", f"B{B} C{C} {H}x{W} K{K} G{G} {'bwd' if _bwd else 'fwd'}", _dtype)(
            lambda dtype=_dtype, bwd=_bwd: _involution_case(dtype, bwd))


def _torch_filter(x, w, k, splat):
    """layerdenoise's oracles: unfold + sum over the taps (gather), fold of the per-pixel products (splat)."""
    import torch.nn.functional as F
    N, Cc, Hh, Ww = x.shape
    if splat:
        return F.fold((x[:, :, None] * w[:, None]).reshape(N, Cc * k * k, Hh * Ww), (Hh, Ww), k, padding=k // 2)
    return (F.unfold(x, k, padding=k // 2).view(N, Cc, k * k, Hh, Ww) * w[:, None]).sum(2)


def _filter_case(k, splat, backward):
    import torch

    import gpuops
    N, Cc, Hh, Ww = KPN
    x = torch.randn(N, Cc, Hh, Ww, device="cuda")
    w = torch.rand(N, k * k, Hh, Ww, device="cuda") / (k * k)
    if not backward:
        def ours():
            return gpuops.weighted_filter(x, w, splat=splat)

        def peer():
            return _torch_filter(x, w, k, splat)
        return dict(gpuops=ours, peer=peer, peer_name=f"torch {'fold' if splat else 'unfold + sum'}",
                    check=lambda: _rel(ours(), peer()) < _TOL["float32"],
                    bytes=(2 * x.numel() + w.numel()) * 4)
    g = torch.randn_like(x)
    xq, wq = (t.detach().requires_grad_() for t in (x, w))
    out = _torch_filter(xq, wq, k, splat)

    def ours():
        return gpuops.weighted_filter_backward(g, x, w, splat=splat)[:2]

    def peer():
        return torch.autograd.grad(out, (xq, wq), g, retain_graph=True)

    def check():
        return all(_rel(o, r) < _TOL["float32"] for o, r in zip(ours(), peer()))
    return dict(gpuops=ours, peer=peer, peer_name=f"torch {'fold' if splat else 'unfold + sum'} autograd",
                check=check, bytes=(3 * x.numel() + 2 * w.numel()) * 4)


for _k in (5, 11, 21):
    for _splat in (False, True):
        for _bwd in (False, True):
            workload("weighted_filter", f"KPN 1x3x1080x1920 K{_k} {'splat' if _splat else 'gather'} "
                                        f"{'bwd' if _bwd else 'fwd'}", "float32")(
                lambda k=_k, splat=_splat, bwd=_bwd: _filter_case(k, splat, bwd))
