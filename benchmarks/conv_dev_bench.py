"""Developer check + timing of the depthwise kernels against F.conv2d(groups=C) (NCHW and channels_last).

Run on a GPU machine from the repo root:  PYTHONPATH=$PWD python benchmarks/conv_dev_bench.py [--variants]
Correctness first (float64 references, poisoned outputs), then CUDA-event timing: warm-up, 30 calls
queued back to back, median (each call includes the host path: checks, allocation, launches).
"""
import statistics
import sys

import torch
import torch.nn.functional as F

import gpuops.conv as cv
from gpuops import _core


def timeit(fn, reps=30, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for a, b in ev:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in ev)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


def check(N, C, m, H, W, k, s, p, d, with_bias, dtype):
    dev = "cuda"
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(N, C, H, W, device=dev, dtype=dtype)
    w = torch.randn(C * m, 1, kh, kw, device=dev, dtype=dtype)
    b = torch.randn(C * m, device=dev, dtype=dtype) if with_bias else None
    ref = F.conv2d(x.double(), w.double(), None if b is None else b.double(), s, p, d, C)
    out = torch.full(ref.shape, float("nan"), device=dev, dtype=dtype)
    y = cv.conv2d_depthwise(x, w, b, stride=s, padding=p, dilation=d, out=out)
    g = torch.randn(ref.shape, device=dev, dtype=dtype)
    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    br = None if b is None else b.double().requires_grad_()
    F.conv2d(xr, wr, br, s, p, d, C).backward(g.double())
    got = cv.conv2d_depthwise_backward(g, x, w, b, stride=s, padding=p, dilation=d)
    errs = [rel(y, ref), rel(got[0], xr.grad), rel(got[1], wr.grad)] + ([rel(got[2], br.grad)] if b is not None else [])
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    ok = all(e < tol for e in errs) and not torch.isnan(y).any().item()
    return ok, errs


CHECKS = [
    # N, C, m, H, W, k, stride, padding, dilation, bias
    (4, 16, 1, 56, 56, 3, 1, 1, 1, True), (4, 16, 1, 56, 56, 7, 1, 3, 1, True),
    (4, 16, 1, 56, 56, 5, 1, 2, 1, False), (3, 8, 1, 17, 23, 3, 2, 1, 1, True),
    (3, 8, 1, 17, 23, 5, 2, 2, 1, True), (3, 8, 1, 17, 23, 7, 2, 3, 1, False),
    (2, 6, 2, 19, 13, 3, 1, 1, 1, True), (2, 6, 3, 19, 13, 3, 2, 0, 1, True),
    (2, 8, 1, 7, 7, 3, 1, 1, 1, True), (2, 8, 1, 9, 70, 7, 1, 0, 1, True),
    (2, 8, 1, 15, 15, 3, 1, 1, 2, True), (2, 8, 1, 15, 15, (3, 5), 1, (1, 2), 1, True),
    (2, 8, 1, 300, 200, 3, 1, 1, 1, False), (33, 3, 1, 5, 5, 3, 1, 2, 1, True),
]


def depthwise_times(k, dtype, stride=1, N=32, C=256, H=56, W=56, cudnn=True):
    dev = "cuda"
    p = k // 2
    x = torch.randn(N, C, H, W, device=dev, dtype=dtype)
    w = torch.randn(C, 1, k, k, device=dev, dtype=dtype)
    b = torch.randn(C, device=dev, dtype=dtype)
    y = cv.conv2d_depthwise(x, w, b, stride=stride, padding=p)
    g = torch.randn_like(y)
    r = dict(fwd=timeit(lambda: cv.conv2d_depthwise(x, w, b, stride=stride, padding=p)),
             bwd=timeit(lambda: cv.conv2d_depthwise_backward(g, x, w, b, stride=stride, padding=p)))
    if stride == 1:
        ga, gx, wa = _core.wrap("g", g), _core.wrap("x", x), _core.wrap("w", w)
        gxo = _core.empty(gx, x.shape)
        r["gx"] = timeit(lambda: cv._correlate_fast((k, 1), ga, wa, None, gxo, n_src_ch=C, n_dst_ch=C, div=1,
                                                    Hs=H, Ws=W, Hd=H, Wd=W, offy=p - k + 1, offx=p - k + 1,
                                                    flip=1, stream=None))
    if cudnn:
        xq, wq, bq = (t.detach().requires_grad_() for t in (x, w, b))
        out = F.conv2d(xq, wq, bq, stride, p, 1, C)
        r["cudnn_fwd"] = timeit(lambda: F.conv2d(x, w, b, stride, p, 1, C))
        r["cudnn_bwd"] = timeit(lambda: torch.autograd.grad(out, (xq, wq, bq), g, retain_graph=True))
        xcl = x.contiguous(memory_format=torch.channels_last).detach().requires_grad_()
        out_cl = F.conv2d(xcl, wq, bq, stride, p, 1, C)
        gcl = g.contiguous(memory_format=torch.channels_last)
        r["cl_fwd"] = timeit(lambda: F.conv2d(xcl, w, b, stride, p, 1, C))
        r["cl_bwd"] = timeit(lambda: torch.autograd.grad(out_cl, (xcl, wq, bq), gcl, retain_graph=True))
    return r


def fmt(r):
    return " ".join(f"{k} {v:.4f}" for k, v in r.items())


def main():
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    bad = 0
    for case in CHECKS:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            if dtype != torch.float32 and (case[5] not in (3, 7) or case[6] != 1 or case[8] != 1):
                continue
            ok, errs = check(*case, dtype)
            bad += not ok
            if not ok or dtype == torch.float32:
                print("check", case, str(dtype)[6:], "ok" if ok else "FAIL", ["%.1e" % e for e in errs], flush=True)
    print("checks failed:", bad, flush=True)
    a = torch.empty(1 << 28, device="cuda")
    bb = torch.empty_like(a)
    t = timeit(lambda: bb.copy_(a))
    print(f"copy bandwidth {2 * a.numel() * 4 / t / 1e6:.0f} GB/s", flush=True)
    del a, bb
    for k in (3, 7):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            print(f"k={k} {str(dtype)[6:]}:", fmt(depthwise_times(k, dtype)), flush=True)
    for h, c, s in [(112, 32, 1), (56, 144, 2), (28, 192, 1), (14, 576, 1), (7, 960, 1)]:
        print(f"mobilenet {h}x{h} C{c} s{s}:", fmt(depthwise_times(3, torch.float32, s, C=c, H=h, W=h)), flush=True)
    if "--tile-threads" in sys.argv:
        # block size of the stride-1 tile kernels (56x56 planes: 224 threads = 2 tiles of 32 rows per
        # plane, 448 = 1 tile of 56 rows); each variant is checked before it is timed
        for threads in (256, 448, 512, 128):
            cv._TILE_THREADS = threads
            fails = sum(not check(*case, torch.float32)[0] for case in CHECKS if case[6] == 1)
            for k in (3, 7):
                print(f"tile threads {threads} (fails {fails}) k={k} float32:",
                      fmt(depthwise_times(k, torch.float32, cudnn=False)), flush=True)
        cv._TILE_THREADS = 256
    if "--variants" in sys.argv:
        import gpuops.cuda.conv as cc
        for ny in (4, 16):
            cc._build_fast(ny, sizes=(3, 7), strides=(1,))
            cv._NY = ny
            _core._CUDA_KERNELS.clear()
            for k in (3, 7):
                print(f"NY={ny} k={k} float32:", fmt(depthwise_times(k, torch.float32, cudnn=False)), flush=True)


if __name__ == "__main__":
    main()
