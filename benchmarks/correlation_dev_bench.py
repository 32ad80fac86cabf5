"""Development timing of the correlation family on a GPU, with the peer side by side.

    PYTHONPATH=$PWD:/tmp/peer python3 benchmarks/correlation_dev_bench.py

CUDA events, warm-up, median of 30 (gpuops, sampler) / 5 (pure torch).  Correctness first: relative
max error against a float64 pure-torch reference (forward; autograd gradients).
"""
import time

import numpy as np
import torch

import gpuops.correlations as gc
from benchmarks.correlation import torch_sample

try:
    from spatial_correlation_sampler import spatial_correlation_sample as sampler
except ImportError:
    sampler = None

print(torch.cuda.get_device_name(), torch.__version__, "sampler:", sampler is not None, flush=True)


def ev_time(fn, reps=30, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(True), torch.cuda.Event(True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    return float(np.median(ts))


def rel(x, y):
    return (x.double() - y.double()).abs().max().item() / y.double().abs().max().item()


rows = []
for name, shape, k, p, pad, dp in [("FlowNetC", (4, 256, 48, 64), 1, 21, 0, 2), ("k3-p9", (16, 64, 64, 64), 3, 9, 1, 1)]:
    for dtype in [torch.float32, torch.float16, torch.bfloat16]:
        torch.manual_seed(0)
        a = torch.randn(shape, device="cuda", dtype=dtype)
        b = torch.randn(shape, device="cuda", dtype=dtype)
        kw = dict(kernel_size=k, patch_size=p, padding=pad, dilation_patch=dp)
        t0 = time.time()
        out = gc.spatial_correlation_sample(a, b, **kw)
        torch.cuda.synchronize()
        first = time.time() - t0
        g = torch.randn_like(out)
        ga, gb = gc.spatial_correlation_sample_backward(g, a, b, **kw)
        torch.cuda.synchronize()
        a64, b64 = a.double().requires_grad_(), b.double().requires_grad_()
        r = torch_sample(a64, b64, k, p, pad, dp)
        ea, eb = torch.autograd.grad(r, (a64, b64), g.double())
        errs = (rel(out, r), rel(ga, ea), rel(gb, eb))
        tf = ev_time(lambda: gc.spatial_correlation_sample(a, b, **kw))
        tb = ev_time(lambda: gc.spatial_correlation_sample_backward(g, a, b, **kw))
        row = dict(name=name, dtype=str(dtype)[6:], fwd=tf, bwd=tb, errs=errs, first=first)
        if sampler is not None:
            so = sampler(a, b, **kw)
            row["sampler_err"] = rel(so.view(out.shape), r)
            ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
            po = sampler(ar, br, **kw)
            row["s_fwd"] = ev_time(lambda: sampler(a, b, **kw))
            row["s_bwd"] = ev_time(lambda: torch.autograd.grad(po, (ar, br), g, retain_graph=True), reps=20)
        if dtype == torch.float32:
            ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
            to = torch_sample(ar, br, k, p, pad, dp)
            row["t_fwd"] = ev_time(lambda: torch_sample(a, b, k, p, pad, dp), reps=5, warm=1)
            row["t_bwd"] = ev_time(lambda: torch.autograd.grad(to, (ar, br), g, retain_graph=True), reps=5, warm=1)
        rows.append(row)
        print(row, flush=True)
a = torch.randn(4, 256, 48, 64, device="cuda")
b = torch.randn_like(a)
kw = dict(pad_size=20, kernel_size=1, max_displacement=20, stride1=1, stride2=2)
o = gc.correlation(a, b, **kw)
g = torch.randn_like(o)
print(f"correlation FlowNetC fp32: fwd {ev_time(lambda: gc.correlation(a, b, **kw)):.3f} ms "
      f"bwd {ev_time(lambda: gc.correlation_backward(g, a, b, **kw)):.3f} ms")
print("\n| workload | dtype | gpuops fwd | gpuops bwd | sampler fwd | sampler bwd | torch fwd | torch bwd "
      "| rel err fwd / g1 / g2 |\n|---|---|---|---|---|---|---|---|---|")
f = lambda row, k: f"{row[k]:.3f}" if k in row else "–"  # noqa: E731
for row in rows:
    print(f"| {row['name']} | {row['dtype']} | {row['fwd']:.3f} | {row['bwd']:.3f} | {f(row, 's_fwd')} | "
          f"{f(row, 's_bwd')} | {f(row, 't_fwd')} | {f(row, 't_bwd')} | "
          + " / ".join(f"{e:.1e}" for e in row["errs"]) + " |")
