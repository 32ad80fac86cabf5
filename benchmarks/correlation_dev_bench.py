import sys, time, torch, numpy as np
import gpuops.correlations as gc
import torch.nn.functional as F
dev = "cuda"
print(torch.cuda.get_device_name(), torch.__version__)

def ev_time(fn, reps=20, warm=3):
    for _ in range(warm): fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(True), torch.cuda.Event(True)
        s.record(); fn(); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    return float(np.median(ts))

def shift(t, sy, sx):
    m = max(abs(sy), abs(sx)); H, W = t.shape[-2:]
    tp = F.pad(t, (m, m, m, m)); return tp[..., m+sy:m+sy+H, m+sx:m+sx+W]

def ref(a, b, k, p, s, pad, dil, dp):
    ones = torch.ones(1, 1, k, k, dtype=a.dtype, device=a.device)
    outs = []
    for ph in range(p):
        for pw in range(p):
            sy, sx = (ph - (p-1)//2)*dp, (pw - (p-1)//2)*dp
            prod = (a * shift(b, sy, sx)).sum(1, keepdim=True)
            outs.append(F.conv2d(prod, ones, stride=s, padding=pad, dilation=dil)[:, 0])
    o = torch.stack(outs, 1)
    return o.view(a.shape[0], p, p, *o.shape[-2:])

for name, shape, k, p, pad, dp in [("FlowNetC", (4,256,48,64), 1, 21, 0, 2), ("k3-p9", (16,64,64,64), 3, 9, 1, 1)]:
    for dtype in [torch.float32, torch.float16, torch.bfloat16]:
        torch.manual_seed(0)
        a = torch.randn(shape, device=dev, dtype=dtype); b = torch.randn(shape, device=dev, dtype=dtype)
        kw = dict(kernel_size=k, patch_size=p, stride=1, padding=pad, dilation=1, dilation_patch=dp)
        t0 = time.time(); out = gc.spatial_correlation_sample(a, b, **kw); torch.cuda.synchronize(); first = time.time()-t0
        g = torch.randn_like(out)
        t0 = time.time(); ga, gb = gc.spatial_correlation_sample_backward(g, a, b, **kw); torch.cuda.synchronize(); firstb = time.time()-t0
        # correctness vs torch reference in float64
        a64, b64 = a.double().requires_grad_(), b.double().requires_grad_()
        r = ref(a64, b64, k, p, 1, pad, 1, dp)
        ea, eb = torch.autograd.grad(r, (a64, b64), g.double())
        scale = r.abs().max().item()
        errf = (out.double() - r).abs().max().item() / scale
        erra = (ga.double() - ea).abs().max().item() / ea.abs().max().item()
        errb = (gb.double() - eb).abs().max().item() / eb.abs().max().item()
        tf = ev_time(lambda: gc.spatial_correlation_sample(a, b, **kw))
        tb = ev_time(lambda: gc.spatial_correlation_sample_backward(g, a, b, **kw))
        line = f"{name} {str(dtype)[6:]}: gpuops fwd {tf:.3f} ms bwd {tb:.3f} ms | rel err fwd {errf:.1e} g1 {erra:.1e} g2 {errb:.1e} | first call fwd {first:.2f}s bwd {firstb:.2f}s"
        if dtype == torch.float32:
            ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
            trf = ev_time(lambda: ref(a, b, k, p, 1, pad, 1, dp), reps=5, warm=1)
            def tbw():
                o = ref(ar, br, k, p, 1, pad, 1, dp); torch.autograd.grad(o, (ar, br), g)
            trb = ev_time(tbw, reps=5, warm=1)
            line += f" | torch ref fwd {trf:.3f} ms fwd+bwd {trb:.3f} ms"
        print(line, flush=True)
# correlation FlowNetC layer
a = torch.randn(4,256,48,64, device=dev); b = torch.randn_like(a)
kw = dict(pad_size=20, kernel_size=1, max_displacement=20, stride1=1, stride2=2)
o = gc.correlation(a, b, **kw); g = torch.randn_like(o)
print(f"correlation FlowNetC fp32: fwd {ev_time(lambda: gc.correlation(a, b, **kw)):.3f} ms bwd {ev_time(lambda: gc.correlation_backward(g, a, b, **kw)):.3f} ms")
