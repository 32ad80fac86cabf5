"""Workloads of the conv family: depthwise convolution (forward, backward) against cuDNN
(``F.conv2d(groups=C)`` on NCHW tensors, with channels_last columns: gpuops and cuDNN on channels_last tensors),
a MobileNetV2-like sweep, the depthwise layers of MobileNetV2 (3×3), EfficientNet-B0 (5×5) and ConvNeXt-T
(7×7) in float32 and bfloat16, training-mode rows (forward + backward through autograd with inputs requiring
grad, ``cudnn.benchmark=True``), host time per call in training mode, im2col/col2im against
F.unfold/F.fold, and dgmm against ``a * x[None, :]``.

Every workload checks gpuops against the peer on the same random inputs before timing.  ``bytes``
is the least device-memory traffic (each input read once, each output written once) for the floor.
"""
from benchmarks.runner import workload

B, C, H, W = 32, 256, 56, 56
_TOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


def _torch_dtype(name):
    import torch
    return getattr(torch, name)


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def _cl(t):
    import torch
    return t.contiguous(memory_format=torch.channels_last)


def _via_nchw(backward, g, x):
    """The channels-last backward run by the NCHW kernels: grad_out and x copied to NCHW, grad_x copied back."""
    gx, gw, gb = backward(g.contiguous(), x.contiguous())
    return _cl(gx), gw, gb


def _depthwise_case(N, Cc, Hh, Ww, k, stride, dtype, backward):
    """gpuops against cuDNN on NCHW tensors; more sides: both on channels_last tensors (gpuops then runs its
    channels-last kernels and returns channels-last results, as cuDNN does)."""
    import torch
    import torch.nn.functional as F

    import gpuops
    dt = _torch_dtype(dtype)
    p = k // 2
    x = torch.randn(N, Cc, Hh, Ww, device="cuda", dtype=dt)
    w = torch.randn(Cc, 1, k, k, device="cuda", dtype=dt) / k
    b = torch.randn(Cc, device="cuda", dtype=dt)
    xc = _cl(x)
    Ho = (Hh + 2 * p - k) // stride + 1
    Wo = (Ww + 2 * p - k) // stride + 1
    item = x.element_size()
    if not backward:
        def ours(x=x):
            return gpuops.conv2d_depthwise(x, w, b, stride=stride, padding=p)

        def peer(x=x):
            return F.conv2d(x, w, b, stride, p, 1, Cc)

        def check():
            ref = F.conv2d(x.double(), w.double(), b.double(), stride, p, 1, Cc)
            y = ours(xc)
            return (_rel(ours(), ref) < _TOL[dtype] and _rel(y, ref) < _TOL[dtype]
                    and y.is_contiguous(memory_format=torch.channels_last))
        nbytes = (x.numel() + N * Cc * Ho * Wo) * item
        return dict(gpuops=ours, peer=peer, peer_name="cuDNN F.conv2d(groups=C) NCHW", check=check, bytes=nbytes,
                    extra={"gpuops channels_last": lambda: ours(xc), "cuDNN channels_last": lambda: peer(xc),
                           "gpuops NCHW kernels + layout copies": lambda: _cl(ours(xc.contiguous()))})
    g = torch.randn(N, Cc, Ho, Wo, device="cuda", dtype=dt)
    gc = _cl(g)
    xq, wq, bq = (t.detach().requires_grad_() for t in (x, w, b))
    xcq = _cl(x).detach().requires_grad_()
    out = F.conv2d(xq, wq, bq, stride, p, 1, Cc)
    out_cl = F.conv2d(xcq, wq, bq, stride, p, 1, Cc)

    def ours(g=g, x=x):
        return gpuops.conv2d_depthwise_backward(g, x, w, b, stride=stride, padding=p)

    def peer():
        return torch.autograd.grad(out, (xq, wq, bq), g, retain_graph=True)

    def check():
        xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
        refs = torch.autograd.grad(F.conv2d(xr, wr, br, stride, p, 1, Cc), (xr, wr, br), g.double())
        cl = ours(gc, xc)
        return (all(_rel(o, r) < _TOL[dtype] for o, r in zip(ours(), refs))
                and all(_rel(o, r) < _TOL[dtype] for o, r in zip(cl, refs))
                and cl[0].is_contiguous(memory_format=torch.channels_last))
    # grad_x: read g, write grad_x; grad_w: read x and g
    nbytes = (2 * g.numel() + 2 * x.numel()) * item
    return dict(gpuops=ours, peer=peer, peer_name="cuDNN autograd (groups=C) NCHW", check=check, bytes=nbytes,
                extra={"gpuops channels_last": lambda: ours(gc, xc),
                       "cuDNN channels_last": lambda: torch.autograd.grad(out_cl, (xcq, wq, bq), gc,
                                                                          retain_graph=True),
                       "gpuops NCHW kernels + layout copies": lambda: _via_nchw(ours, gc, xc)})


def _depthwise_train_case(N, Cc, Hh, Ww, k, stride, dtype):
    """Training mode: forward + backward through autograd, inputs requiring grad, ``cudnn.benchmark=True``:
    gpuops.torch.conv2d_depthwise against F.conv2d, NCHW; more sides: both on channels_last tensors."""
    import torch
    import torch.nn.functional as F

    import gpuops.torch as gt
    dt = _torch_dtype(dtype)
    p = k // 2
    x = torch.randn(N, Cc, Hh, Ww, device="cuda", dtype=dt)
    w = (torch.randn(Cc, 1, k, k, device="cuda", dtype=dt) / k).requires_grad_()
    b = torch.randn(Cc, device="cuda", dtype=dt).requires_grad_()
    xn, xc = x.detach().requires_grad_(), _cl(x).detach().requires_grad_()
    Ho = (Hh + 2 * p - k) // stride + 1
    g = torch.randn(N, Cc, Ho, (Ww + 2 * p - k) // stride + 1, device="cuda", dtype=dt)
    gc = _cl(g)

    def step(conv, x, g):
        return torch.autograd.grad(conv(x, w, b), (x, w, b), g)

    def ours(x, w, b):
        return gt.conv2d_depthwise(x, w, b, stride=stride, padding=p)

    def peer(x, w, b):
        return F.conv2d(x, w, b, stride, p, 1, Cc)

    def check():
        xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
        yr = F.conv2d(xr, wr, br, stride, p, 1, Cc)
        refs = (yr,) + torch.autograd.grad(yr, (xr, wr, br), g.double())
        for xs, gs in ((xn, g), (xc, gc)):
            y = ours(xs, w, b)
            got = (y,) + torch.autograd.grad(y, (xs, w, b), gs)
            if not all(_rel(o, r) < _TOL[dtype] for o, r in zip(got, refs)):
                return False
        return True
    nbytes = (3 * g.numel() + 3 * x.numel()) * x.element_size()     # forward, grad_x, grad_w
    return dict(gpuops=lambda: step(ours, xn, g), peer=lambda: step(peer, xn, g),
                peer_name="cuDNN F.conv2d autograd NCHW", check=check, bytes=nbytes, cudnn_benchmark=True,
                extra={"gpuops channels_last": lambda: step(ours, xc, gc),
                       "cuDNN channels_last": lambda: step(peer, xc, gc)})


def _depthwise_host_case(backward):
    """Host time per call in training mode (inputs requiring grad) on a small layer, so that the host is what
    is timed: gpuops.torch.conv2d_depthwise (its registered op and autograd) against F.conv2d; forward alone,
    or forward + backward (autograd.grad)."""
    import torch
    import torch.nn.functional as F

    import gpuops.torch as gt
    x = torch.randn(1, 32, 16, 16, device="cuda", requires_grad=True)
    w = torch.randn(32, 1, 3, 3, device="cuda", requires_grad=True)
    b = torch.randn(32, device="cuda", requires_grad=True)
    g = torch.randn(1, 32, 16, 16, device="cuda")

    def ours():
        y = gt.conv2d_depthwise(x, w, b, padding=1)
        return torch.autograd.grad(y, (x, w, b), g) if backward else y

    def peer():
        y = F.conv2d(x, w, b, 1, 1, 1, 32)
        return torch.autograd.grad(y, (x, w, b), g) if backward else y

    def check():
        a, e = ours(), peer()
        a, e = (a, e) if backward else ((a,), (e,))
        return all(_rel(o, r) < 1e-4 for o, r in zip(a, e))
    return dict(gpuops=ours, peer=peer, check=check, cudnn_benchmark=True,
                peer_name=f"F.conv2d {'forward + backward' if backward else 'forward'}, inputs requiring grad")


for _k in (3, 7):
    for _dtype in ("float32", "bfloat16", "float16"):
        for _bwd in (False, True):
            workload("conv2d_depthwise", f"{_k}x{_k} B{B} C{C} {H}x{W} {'bwd' if _bwd else 'fwd'}", _dtype)(
                lambda k=_k, dtype=_dtype, bwd=_bwd: _depthwise_case(B, C, H, W, k, 1, dtype, bwd))

# MobileNetV2-like depthwise layers (3x3, batch 32): (H, C, stride)
MOBILENET = [(112, 32, 1), (56, 144, 2), (28, 192, 1), (14, 576, 1), (7, 960, 1)]
for _h, _c, _s in MOBILENET:
    for _bwd in (False, True):
        workload("conv2d_depthwise", f"MobileNetV2 3x3 s{_s} B32 C{_c} {_h}x{_h} {'bwd' if _bwd else 'fwd'}",
                 "float32")(lambda h=_h, c=_c, s=_s, bwd=_bwd: _depthwise_case(32, c, h, h, 3, s, "float32", bwd))

# the depthwise layers of real models (issue #17's targets: each against cuDNN's faster layout, float32 and
# bfloat16, forward and backward): (model, k, batch, C, H, stride)
MODEL_LAYERS = [("MobileNetV2", 3, 64, 144, 56, 1), ("MobileNetV2", 3, 64, 144, 56, 2),
                ("MobileNetV2", 3, 64, 192, 28, 1), ("MobileNetV2", 3, 64, 384, 14, 1),
                ("MobileNetV2", 3, 64, 576, 14, 2), ("MobileNetV2", 3, 64, 960, 7, 1),
                ("EfficientNet-B0", 5, 64, 240, 28, 1), ("EfficientNet-B0", 5, 64, 672, 14, 1),
                ("EfficientNet-B0", 5, 64, 672, 14, 2),
                ("ConvNeXt-T", 7, 32, 96, 56, 1), ("ConvNeXt-T", 7, 32, 192, 28, 1), ("ConvNeXt-T", 7, 32, 384, 14, 1),
                ("ConvNeXt-T", 7, 32, 768, 7, 1)]
for _m, _k, _b, _c, _h, _s in MODEL_LAYERS:
    for _dtype in ("float32", "bfloat16"):
        for _bwd in (False, True):
            workload("conv2d_depthwise", f"{_m} {_k}x{_k} s{_s} B{_b} C{_c} {_h}x{_h} {'bwd' if _bwd else 'fwd'}",
                     _dtype)(lambda k=_k, n=_b, c=_c, h=_h, s=_s, dtype=_dtype, bwd=_bwd:
                             _depthwise_case(n, c, h, h, k, s, dtype, bwd))
        workload("conv2d_depthwise", f"{_m} {_k}x{_k} s{_s} B{_b} C{_c} {_h}x{_h} train fwd+bwd", _dtype)(
            lambda k=_k, n=_b, c=_c, h=_h, s=_s, dtype=_dtype: _depthwise_train_case(n, c, h, h, k, s, dtype))

for _k in (3, 7):
    for _dtype in ("float32", "bfloat16"):
        workload("conv2d_depthwise", f"{_k}x{_k} B{B} C{C} {H}x{W} train fwd+bwd", _dtype)(
            lambda k=_k, dtype=_dtype: _depthwise_train_case(B, C, H, W, k, 1, dtype))

for _bwd in (False, True):
    workload("conv2d_depthwise", f"host per call, inputs requiring grad, B1 C32 16x16 {'fwd+bwd' if _bwd else 'fwd'}",
             "float32", kind="host")(lambda bwd=_bwd: _depthwise_host_case(bwd))


@workload("im2col", "B8 C64 56x56 k3 p1", "float32")
def _im2col():
    import torch
    import torch.nn.functional as F

    import gpuops
    x = torch.randn(8, 64, 56, 56, device="cuda")

    def ours():
        return gpuops.im2col(x, 3, padding=1)

    def peer():
        return F.unfold(x, 3, 1, 1, 1)
    return dict(gpuops=ours, peer=peer, peer_name="F.unfold",
                check=lambda: torch.equal(ours().reshape(8, 64 * 9, -1), peer()),
                bytes=(x.numel() + 9 * x.numel()) * 4)


@workload("col2im", "B8 C64 56x56 k3 p1", "float32")
def _col2im():
    import torch
    import torch.nn.functional as F

    import gpuops
    cols = torch.randn(8, 64, 3, 3, 56, 56, device="cuda")

    def ours():
        return gpuops.col2im(cols, 3, padding=1, input_size=(56, 56))

    def peer():
        return F.fold(cols.view(8, 64 * 9, 56 * 56), (56, 56), 3, 1, 1, 1)
    return dict(gpuops=ours, peer=peer, peer_name="F.fold",
                check=lambda: torch.allclose(ours(), peer(), rtol=1e-5, atol=1e-5),
                bytes=(cols.numel() + cols.numel() // 9) * 4)


DGMM_SIZE = 16384        # 2^28 elements: the size spec/performance.md sets the bandwidth target at


def _dgmm_case(side, dtype, backward, complex_=False):
    import torch

    import gpuops
    dt = _torch_dtype(dtype)
    M = K = DGMM_SIZE
    if complex_:
        a = torch.randn(M, K // 2, dtype=torch.complex64, device="cuda")
        x = torch.randn(K // 2 if side == "right" else M, dtype=torch.complex64, device="cuda")
    else:
        a = torch.randn(M, K, device="cuda", dtype=dt)
        x = torch.randn(K if side == "right" else M, device="cuda", dtype=dt)
    op, op_backward = (gpuops.cdgmm, gpuops.cdgmm_backward) if complex_ else (gpuops.dgmm, gpuops.dgmm_backward)

    def expr(a, x):
        return a * x[None, :] if side == "right" else x[:, None] * a
    nbytes = a.numel() * a.element_size()
    if not backward:
        def check():
            if not complex_:        # one rounding of the same product
                return torch.equal(op(a, x, side=side), expr(a, x))
            ref = expr(a.to(torch.complex128), x.to(torch.complex128))
            return _rel(torch.view_as_real(op(a, x, side=side)), torch.view_as_real(ref)) < _TOL[dtype]
        return dict(gpuops=lambda: op(a, x, side=side), peer=lambda: expr(a, x), peer_name="torch a * x",
                    check=check, bytes=2 * nbytes)
    g = torch.randn_like(a)
    aq, xq = a.detach().requires_grad_(), x.detach().requires_grad_()
    out = expr(aq, xq)

    def check():
        wide = torch.complex128 if complex_ else torch.float64
        ad, xd = (t.detach().to(wide).requires_grad_() for t in (a, x))
        refs = torch.autograd.grad(expr(ad, xd), (ad, xd), g.to(wide))
        real = (lambda t: torch.view_as_real(t)) if complex_ else (lambda t: t)
        return all(_rel(real(o), real(r)) < _TOL[dtype] for o, r in zip(op_backward(g, a, x, side=side), refs))
    # read grad_out and a, write grad_a (grad_x is negligible)
    return dict(gpuops=lambda: op_backward(g, a, x, side=side),
                peer=lambda: torch.autograd.grad(out, (aq, xq), g, retain_graph=True),
                peer_name="torch autograd of a * x", check=check, bytes=3 * nbytes)


for _side in ("right", "left"):
    for _dtype in ("float32", "bfloat16", "float16"):
        for _bwd in (False, True):
            workload("dgmm", f"{DGMM_SIZE}x{DGMM_SIZE} {_side} {'bwd' if _bwd else 'fwd'}", _dtype)(
                lambda side=_side, dtype=_dtype, bwd=_bwd: _dgmm_case(side, dtype, bwd))
    for _bwd in (False, True):
        workload("cdgmm", f"{DGMM_SIZE}x{DGMM_SIZE // 2} complex64 {_side} {'bwd' if _bwd else 'fwd'}", "float32")(
            lambda side=_side, bwd=_bwd: _dgmm_case(side, "float32", bwd, complex_=True))
