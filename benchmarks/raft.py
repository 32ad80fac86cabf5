"""Workloads of the RAFT family: ``corr_lookup`` (RAFT's correlation lookup without the all-pairs volume)
against RAFT's CorrBlock written in pure torch (all-pairs volume by matmul, F.avg_pool2d pyramid,
F.grid_sample lookups), forward and backward, and the peak memory of each (the runner's last column).

RAFT shapes: 1/8-resolution features of a 440×1024 frame (55×128, C 256, batch 1 and 4) and of a
1080p frame (135×240, batch 1: the volume alone is 4.2 GB in float32), 4 levels, radius 4.  The peer
builds its volume and pyramid inside the timed call, as corr_lookup does (RAFT builds them once per
frame pair and looks up ~12 times: the "lookup only" rows time the peer's lookup with the pyramid
prebuilt).  Importing this module needs neither torch nor a GPU.
"""
import importlib.util
import math

from benchmarks.runner import workload

_TOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 3e-2}
LEVELS, RADIUS = 4, 4


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def _pyramid(fmap1, fmap2):
    import torch.nn.functional as F
    N, C, H, W = fmap1.shape
    corr = (fmap1.reshape(N, C, H * W).transpose(1, 2) @ fmap2.reshape(N, C, H * W)) / math.sqrt(C)
    corr = corr.reshape(N * H * W, 1, H, W)
    levels = [corr]
    for _ in range(LEVELS - 1):
        levels.append(F.avg_pool2d(levels[-1], 2, stride=2))
    return levels


def _lookup(levels, coords):
    import torch
    import torch.nn.functional as F
    N, _, H, W = coords.shape
    r = RADIUS
    d = torch.linspace(-r, r, 2 * r + 1, device=coords.device, dtype=coords.dtype)
    delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), -1).view(1, 2 * r + 1, 2 * r + 1, 2)
    centroid = coords.permute(0, 2, 3, 1).reshape(N * H * W, 1, 1, 2)
    out = []
    for i, corr in enumerate(levels):
        lvl = centroid / 2 ** i + delta
        Hl, Wl = corr.shape[-2:]
        grid = torch.cat([2 * lvl[..., :1] / (Wl - 1) - 1, 2 * lvl[..., 1:] / (Hl - 1) - 1], -1)
        out.append(F.grid_sample(corr, grid, align_corners=True).view(N, H, W, -1))
    return torch.cat(out, -1).permute(0, 3, 1, 2).contiguous()


def torch_corr_block(fmap1, fmap2, coords):
    """RAFT's CorrBlock(fmap1, fmap2, 4, 4)(coords) in pure torch (without its final .float())."""
    return _lookup(_pyramid(fmap1, fmap2), coords)


def _inputs(N, C, H, W, dtype):
    import torch
    dt = getattr(torch, dtype)
    g = torch.Generator(device="cuda").manual_seed(0)
    fmap1 = torch.randn(N, C, H, W, device="cuda", generator=g).to(dt)
    fmap2 = torch.randn(N, C, H, W, device="cuda", generator=g).to(dt)
    grid = torch.stack(torch.meshgrid(torch.arange(H, device="cuda"), torch.arange(W, device="cuda"),
                                      indexing="ij")[::-1]).float()
    flow = torch.randn(N, 2, H, W, device="cuda", generator=g) * 4      # a few pixels of motion
    return fmap1, fmap2, (grid[None] + flow).to(dt)


def _case(N, C, H, W, dtype, mode):
    import torch

    import gpuops
    fmap1, fmap2, coords = _inputs(N, C, H, W, dtype)
    channels = LEVELS * (2 * RADIUS + 1) ** 2
    item = fmap1.element_size()
    out_bytes = N * channels * H * W * item
    if mode == "fwd":
        def ours():
            return gpuops.corr_lookup(fmap1, fmap2, coords, radius=RADIUS, num_levels=LEVELS)

        def peer():
            return torch_corr_block(fmap1, fmap2, coords)

        def check():
            ref = torch_corr_block(fmap1.double(), fmap2.double(), coords.double())
            return _rel(ours(), ref) < _TOL[dtype]
        nbytes = 2 * fmap1.numel() * item + coords.numel() * item + out_bytes
        return dict(gpuops=ours, peer=peer, peer_name="torch CorrBlock (matmul volume, pyramid, grid_sample)",
                    check=check, bytes=nbytes)
    if mode == "lookup":
        levels = _pyramid(fmap1, fmap2)

        def ours():
            return gpuops.corr_lookup(fmap1, fmap2, coords, radius=RADIUS, num_levels=LEVELS)

        def peer():
            return _lookup(levels, coords)

        def check():
            return _rel(ours(), peer()) < _TOL[dtype]
        return dict(gpuops=ours, peer=peer, peer_name="torch CorrBlock lookup only (pyramid prebuilt)", check=check,
                    bytes=2 * fmap1.numel() * item + out_bytes)
    g = torch.randn(N, channels, H, W, device="cuda").to(fmap1.dtype)
    f1, f2, c = (t.detach().requires_grad_() for t in (fmap1, fmap2, coords))
    out = torch_corr_block(f1, f2, c)

    def ours():
        return gpuops.corr_lookup_backward(g, fmap1, fmap2, coords, radius=RADIUS, num_levels=LEVELS)

    def peer():
        return torch.autograd.grad(out, (f1, f2, c), g, retain_graph=True)

    def check():
        d1, d2, dc = (t.detach().double().requires_grad_() for t in (fmap1, fmap2, coords))
        refs = list(torch.autograd.grad(torch_corr_block(d1, d2, dc), (d1, d2, dc), g.double()))
        got = list(ours())
        # at an integer coordinate (on any level) the two sides take opposite one-sided derivatives: gpuops the
        # right-hand one (docs/ops.md), grid_sample whichever side its (W-1)-normalised round trip lands on;
        # at 1080p about one float32 coordinate in 32400 queries is an exact integer.  Compare elsewhere.
        c = coords.double()
        kink = torch.zeros_like(c[:, :1], dtype=torch.bool)
        for i in range(LEVELS):
            kink |= ((c / 2 ** i) == (c / 2 ** i).floor()).any(1, keepdim=True)
        got[2], refs[2] = got[2].masked_fill(kink, 0), refs[2].masked_fill(kink, 0)
        errors = [_rel(o, r) for o, r in zip(got, refs)]
        if max(errors) >= _TOL[dtype] * 10:
            raise AssertionError(f"relative errors (fmap1, fmap2, coords) {['%.2e' % e for e in errors]}")
        return True
    nbytes = (4 * fmap1.numel() + 2 * coords.numel()) * item + out_bytes
    return dict(gpuops=ours, peer=peer, peer_name="torch CorrBlock autograd", check=check, bytes=nbytes)


def _alt_cuda_corr_function():
    """RAFT's AltCudaCorr (autograd over the ``alt_cuda_corr`` extension, built on the GPU machine)."""
    import alt_cuda_corr
    import torch

    class AltCudaCorr(torch.autograd.Function):
        @staticmethod
        def forward(ctx, fmap1, fmap2, coords, r):
            ctx.save_for_backward(fmap1, fmap2, coords)
            ctx.r = r
            return alt_cuda_corr.forward(fmap1, fmap2, coords, r)[0]

        @staticmethod
        def backward(ctx, grad):
            fmap1, fmap2, coords = ctx.saved_tensors
            g1, g2, gc = alt_cuda_corr.backward(fmap1, fmap2, coords, grad.contiguous(), ctx.r)
            return g1, g2, gc, None
    return AltCudaCorr.apply


def alternate_corr_block(fmap1, fmap2, coords, apply):
    """RAFT's AlternateCorrBlock(fmap1, fmap2, 4, 4)(coords): the pyramid of fmap2 and the NHWC copies are
    made per call, as RAFT does; float32 only (the extension's kernels are)."""
    import torch
    import torch.nn.functional as F
    N, C, H, W = fmap1.shape
    c = coords.permute(0, 2, 3, 1)
    f1 = fmap1.permute(0, 2, 3, 1).contiguous()
    f2, out = fmap2, []
    for i in range(LEVELS):
        if i:
            f2 = F.avg_pool2d(f2, 2, stride=2)
        out.append(apply(f1, f2.permute(0, 2, 3, 1).contiguous(), (c / 2 ** i).reshape(N, 1, H, W, 2).contiguous(),
                         RADIUS).squeeze(1))
    return torch.stack(out, dim=1).reshape(N, -1, H, W) / math.sqrt(C)


def _alt_case(N, C, H, W, mode):
    import torch

    import gpuops
    fmap1, fmap2, coords = _inputs(N, C, H, W, "float32")
    apply = _alt_cuda_corr_function()
    if mode == "fwd":
        def ours():
            return gpuops.corr_lookup(fmap1, fmap2, coords, radius=RADIUS, num_levels=LEVELS)

        def peer():
            return alternate_corr_block(fmap1, fmap2, coords, apply)

        def check():
            return _rel(ours(), peer()) < _TOL["float32"]
        return dict(gpuops=ours, peer=peer, peer_name="RAFT AlternateCorrBlock (alt_cuda_corr)", check=check)
    g = torch.randn(N, LEVELS * (2 * RADIUS + 1) ** 2, H, W, device="cuda")
    f1, f2 = (t.detach().requires_grad_() for t in (fmap1, fmap2))
    out = alternate_corr_block(f1, f2, coords, apply)

    def ours():
        return gpuops.corr_lookup_backward(g, fmap1, fmap2, coords, radius=RADIUS, num_levels=LEVELS)

    def peer():
        return torch.autograd.grad(out, (f1, f2), g, retain_graph=True)

    def check():        # the extension returns no coordinate gradient: compare the feature gradients
        return all(_rel(o, r) < _TOL["float32"] * 10 for o, r in zip(ours()[:2], peer()))
    return dict(gpuops=ours, peer=peer, peer_name="RAFT AlternateCorrBlock autograd (alt_cuda_corr, no coords grad)",
                check=check)


# RAFT at 440×1024 (1/8: 55×128), batch 1 and 4; 1080p (1/8: 135×240), batch 1
for _n, _h, _w in ((1, 55, 128), (4, 55, 128), (1, 135, 240)):
    for _mode in ("fwd", "bwd", "lookup"):
        if _mode == "lookup" and _h > 55:
            continue
        workload("corr_lookup", f"RAFT B{_n} C256 {_h}x{_w} L4 r4 {_mode}", "float32")(
            lambda n=_n, h=_h, w=_w, mode=_mode: _case(n, 256, h, w, "float32", mode))
workload("corr_lookup", "RAFT B4 C256 55x128 L4 r4 fwd", "bfloat16")(
    lambda: _case(4, 256, 55, 128, "bfloat16", "fwd"))
# 16-bit features (issue #15: no slower than float32), forward and backward at B1
for _dtype in ("bfloat16", "float16"):
    for _mode in ("fwd", "bwd"):
        workload("corr_lookup", f"RAFT B1 C256 55x128 L4 r4 {_mode}", _dtype)(
            lambda dtype=_dtype, mode=_mode: _case(1, 256, 55, 128, dtype, mode))
if importlib.util.find_spec("alt_cuda_corr") is not None:
    for _n, _h, _w in ((1, 55, 128), (4, 55, 128), (1, 135, 240)):
        for _mode in ("fwd", "bwd"):
            workload("corr_lookup", f"RAFT B{_n} C256 {_h}x{_w} L4 r4 {_mode} vs alt_cuda_corr", "float32")(
                lambda n=_n, h=_h, w=_w, mode=_mode: _alt_case(n, 256, h, w, mode))


# ---------------------------------------------------------------------------------------------
# RAFT's fast path (issue #15): the pyramid built once per frame pair (corr_pyramid), looked up every
# refinement iteration (corr_pyramid_lookup), through gpuops.torch.CorrBlock(alternate=False), against RAFT's
# own CorrBlock (core/corr.py of the peer checkout in .peer/raft_peer when present, else the pure-torch
# transcription above).  One timed call = construction + ITERS lookups at moving coordinates (+ one backward
# of their weighted sum to the feature maps for "fwd+bwd", RAFT's training step; RAFT detaches coords).
# The runner's last column is the peak memory of each side (both hold the O((H·W)²) pyramid).  No "bytes":
# the volume is a GEMM, compute-bound, so a copy floor says nothing.

ITERS = 12


def _raft_peer_block():
    """(CorrBlock class, its name): RAFT's core/corr.py when the peer checkout is importable, else the
    transcription above (`_pyramid`, `_lookup`)."""
    import pathlib
    import sys
    core = pathlib.Path(__file__).resolve().parents[1] / ".peer" / "raft_peer" / "core"
    if (core / "corr.py").exists():
        sys.path.insert(0, str(core))
        try:
            from corr import CorrBlock
            return CorrBlock, "RAFT CorrBlock (core/corr.py)"
        except ImportError:
            pass
        finally:
            sys.path.remove(str(core))

    class CorrBlock:
        def __init__(self, fmap1, fmap2, num_levels=LEVELS, radius=RADIUS):
            self.levels = _pyramid(fmap1, fmap2)

        def __call__(self, coords):
            return _lookup(self.levels, coords).float()
    return CorrBlock, "torch CorrBlock (transcription of RAFT's)"


def _pyramid_case(N, C, H, W, dtype, mode):
    import torch

    import gpuops.torch as gt
    fmap1, fmap2, coords = _inputs(N, C, H, W, dtype)
    steps = [coords + 0.25 * k for k in range(ITERS)]          # the flow moves the coordinates every iteration
    Peer, peer_name = _raft_peer_block()

    def ours_block(a, b):
        return gt.CorrBlock(a, b, num_levels=LEVELS, radius=RADIUS)

    def peer_block(a, b):
        return Peer(a, b, num_levels=LEVELS, radius=RADIUS)

    if mode == "fwd":
        def forward(block_of):
            block = block_of(fmap1, fmap2)
            return [block(c) for c in steps]

        def check():
            return all(_rel(a, b) < _TOL[dtype] for a, b in zip(forward(ours_block), forward(peer_block)))
        return dict(gpuops=lambda: forward(ours_block), peer=lambda: forward(peer_block),
                    peer_name=f"{peer_name}, {ITERS} lookups", check=check)
    channels = LEVELS * (2 * RADIUS + 1) ** 2
    weights = [torch.randn(N, channels, H, W, device="cuda") for _ in steps]
    f1, f2 = (t.detach().requires_grad_() for t in (fmap1, fmap2))

    def train_step(block_of):
        block = block_of(f1, f2)
        loss = sum((block(c) * w).sum() for c, w in zip(steps, weights))
        return torch.autograd.grad(loss, (f1, f2))

    def check():
        return all(_rel(a, b) < _TOL[dtype] * 10 for a, b in zip(train_step(ours_block), train_step(peer_block)))
    return dict(gpuops=lambda: train_step(ours_block), peer=lambda: train_step(peer_block),
                peer_name=f"{peer_name}, {ITERS} lookups, autograd", check=check)


for _h, _w in ((55, 128), (135, 240)):          # 440×1024 and 1080p inputs
    for _mode in ("fwd", "fwd+bwd"):
        workload("corr_pyramid", f"RAFT B1 C256 {_h}x{_w} L4 r4 pyramid + {ITERS} lookups {_mode}", "float32")(
            lambda h=_h, w=_w, mode=_mode: _pyramid_case(1, 256, h, w, "float32", mode))
