"""Developer timing of the depthwise kernels against F.conv2d(groups=C) (NCHW and channels_last).

Run on a GPU machine from the repo root:  PYTHONPATH=$PWD python benchmarks/conv_dev_bench.py
CUDA events, warm-up, median of 30 runs; correctness checked first.
"""
import statistics
import sys

import torch
import torch.nn.functional as F

import gpuops.conv as cv


def timeit(fn, reps=30):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def main():
    dev = torch.device("cuda")
    print(torch.cuda.get_device_name(), torch.__version__)
    for k, dtype in [(3, torch.float32), (7, torch.float32), (3, torch.bfloat16), (3, torch.float16)]:
        N, C, H, W = 32, 256, 56, 56
        p = k // 2
        x = torch.randn(N, C, H, W, device=dev, dtype=dtype)
        w = torch.randn(C, 1, k, k, device=dev, dtype=dtype)
        b = torch.randn(C, device=dev, dtype=dtype)
        y = cv.conv2d_depthwise(x, w, b, padding=p)
        ref = F.conv2d(x.float(), w.float(), b.float(), 1, p, 1, C)
        err = (y.float() - ref).abs().max().item()
        g = torch.randn_like(y)
        gx, gw, gb = cv.conv2d_depthwise_backward(g, x, w, b, padding=p)
        xr, wr, br = x.float().requires_grad_(), w.float().requires_grad_(), b.float().requires_grad_()
        F.conv2d(xr, wr, br, 1, p, 1, C).backward(g.float())
        errs = [(gx.float() - xr.grad).abs().max().item(), ((gw.float() - wr.grad).abs().max() / wr.grad.abs().max()).item(),
                ((gb.float() - br.grad).abs().max() / br.grad.abs().max()).item()]
        t_f = timeit(lambda: cv.conv2d_depthwise(x, w, b, padding=p))
        t_b = timeit(lambda: cv.conv2d_depthwise_backward(g, x, w, b, padding=p))
        xq = x.detach().requires_grad_()
        wq = w.detach().requires_grad_()
        bq = b.detach().requires_grad_()
        t_cf = timeit(lambda: F.conv2d(x, w, b, 1, p, 1, C))
        out = F.conv2d(xq, wq, bq, 1, p, 1, C)
        t_cb = timeit(lambda: torch.autograd.grad(out, (xq, wq, bq), g, retain_graph=True))
        xcl = x.contiguous(memory_format=torch.channels_last).detach().requires_grad_()
        t_clf = timeit(lambda: F.conv2d(xcl, w, b, 1, p, 1, C))
        out_cl = F.conv2d(xcl, wq, bq, 1, p, 1, C)
        gcl = g.contiguous(memory_format=torch.channels_last)
        t_clb = timeit(lambda: torch.autograd.grad(out_cl, (xcl, wq, bq), gcl, retain_graph=True))
        # components
        ga, gk = _gx_args(g, x, w, p)
        t_gx = timeit(lambda: cv._correlate(*ga, **gk))
        print(f"k={k} {str(dtype)[6:]}: fwd err {err:.2e}, bwd errs {['%.1e' % e for e in errs]} | gpuops fwd {t_f:.4f} ms "
              f"bwd {t_b:.4f} ms (grad_x alone {t_gx:.4f}) | cuDNN NCHW fwd {t_cf:.4f} bwd {t_cb:.4f} | "
              f"channels_last fwd {t_clf:.4f} bwd {t_clb:.4f}", flush=True)


def _gx_args(g, x, w, p):
    from gpuops import _core
    N, C, H, W = x.shape
    k = w.shape[-1]
    ga, wa = _core.wrap("g", g), _core.wrap("w", w)
    gx = _core.empty(_core.wrap("x", x), x.shape)
    return (ga, wa, None, gx), dict(n_src_ch=C, n_dst_ch=C, terms=1, div=1, Hs=H, Ws=W, Hd=H, Wd=W, kh=k, kw=k,
                                    sh=1, sw=1, offy=p - (k - 1), offx=p - (k - 1), dh=1, dw=1, flip=1, stream=None)


def check_others():
    """im2col/col2im and dgmm/cdgmm on the GPU against torch (correctness only) + a dgmm timing."""
    import gpuops.diag as dg
    dev = torch.device("cuda")
    x = torch.randn(4, 8, 17, 19, device=dev)
    c = cv.im2col(x, (3, 2), stride=2, padding=1, dilation=(1, 2))
    ref = F.unfold(x, (3, 2), (1, 2), 1, 2).view(c.shape)
    back = cv.col2im(c, (3, 2), stride=2, padding=1, dilation=(1, 2), input_size=(17, 19))
    refb = F.fold(ref.reshape(4, 8 * 6, -1), (17, 19), (3, 2), (1, 2), 1, 2)
    print("im2col err", (c - ref).abs().max().item(), "col2im err", (back - refb).abs().max().item())
    for M, K in [(4096, 4096), (3, 100000), (100000, 3)]:
        a = torch.randn(M, K, device=dev)
        for L in (K, M):
            v = torch.randn(L, device=dev)
            side = "right" if L == K else "left"
            y = dg.dgmm(a, v, side=side)
            r = a * v[None] if side == "right" else v[:, None] * a
            g = torch.randn_like(a)
            ga, gv = dg.dgmm_backward(g, a, v, side=side)
            rv = (g * a).sum(0 if side == "right" else 1)
            ac, vc, gc = torch.randn(M, K, dtype=torch.complex64, device=dev), torch.randn(L, dtype=torch.complex64, device=dev), torch.randn(M, K, dtype=torch.complex64, device=dev)
            yc = dg.cdgmm(ac, vc, side=side)
            rc = ac * vc[None] if side == "right" else vc[:, None] * ac
            gac, gvc = dg.cdgmm_backward(gc, ac, vc, side=side)
            rvc = (gc * ac.conj()).sum(0 if side == "right" else 1)
            print(f"dgmm {M}x{K} {side}: err {(y - r).abs().max().item():.1e} {(gv - rv).abs().max().item() / rv.abs().max().item():.1e}"
                  f" cdgmm {(yc - rc).abs().max().item():.1e} {(gvc - rvc).abs().max().item() / rvc.abs().max().item():.1e}"
                  f" | fwd {timeit(lambda: dg.dgmm(a, v, side=side)):.4f} ms (torch {timeit(lambda: a * v[None] if side == 'right' else v[:, None] * a):.4f})"
                  f" bwd {timeit(lambda: dg.dgmm_backward(g, a, v, side=side)):.4f} ms", flush=True)


if __name__ == "__main__":
    main()
    check_others()
