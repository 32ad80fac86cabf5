"""Rows compared between two trees in fresh processes, on a GPU: the small-plane depthwise calls (30–90 µs,
mostly host time, so a long-running benchmark process skews them) with cuDNN in the same process, and the
small-call host time of gpuops.torch and gpuops.jax.  Run it from each tree's root, alternating:

    for t in base . base .; do (cd $t && PYTHONPATH=$PWD python3 $OLDPWD/benchmarks/fresh_process_ab.py $t); done
"""
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import gpuops
import gpuops.torch as gt


def device_ms(f, reps=100, rounds=7):
    for _ in range(10):
        f()
    torch.cuda.synchronize()
    ts = []
    for _ in range(rounds):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(reps):
            f()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) / reps)
    return min(ts)


def host_us(f, reps=200, rounds=7, sync=None):
    for _ in range(20):
        f()
    torch.cuda.synchronize()
    best = 1e9
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        best = min(best, (time.perf_counter() - t) / reps * 1e6)
        torch.cuda.synchronize()
        if sync:
            sync()
    return best


out = []
for C, H, s in ((144, 56, 2), (192, 28, 1), (576, 14, 1), (960, 7, 1)):
    x = torch.randn(32, C, H, H, device="cuda")
    w = torch.randn(C, 1, 3, 3, device="cuda")
    b = torch.randn(C, device="cuda")
    g = torch.randn_like(F.conv2d(x, w, b, s, 1, 1, C))
    fwd = device_ms(lambda: gpuops.conv2d_depthwise(x, w, b, stride=s, padding=1))
    bwd = device_ms(lambda: gpuops.conv2d_depthwise_backward(g, x, w, b, stride=s, padding=1))
    peer = device_ms(lambda: F.conv2d(x, w, b, s, 1, 1, C))
    out.append(f"dw s{s} C{C} {H}x{H}: fwd {fwd:.4f} bwd {bwd:.4f} ms (cuDNN fwd {peer:.4f})")
x = torch.randn(1024, device="cuda")
xg = torch.randn(1024, device="cuda", requires_grad=True)
out.append(f"host us: gpuops.torch.gsmelu {host_us(lambda: gt.gsmelu(x)):.1f} (torch.mul "
           f"{host_us(lambda: torch.mul(x, 2.0)):.1f}); fwd+bwd {host_us(lambda: gt.gsmelu(xg).sum().backward(), 50):.1f}")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import gpuops.jax as gj  # noqa: E402
xj = jnp.asarray(np.random.default_rng(0).standard_normal(1024, dtype=np.float32))
ours = jax.jit(gj.gsmelu)
mul = jax.jit(lambda t: t * 2.0)
state = {}


def run():
    state["y"] = ours(xj)


out.append(f"host us: gpuops.jax.gsmelu under jit {host_us(run, sync=lambda: state['y'].block_until_ready()):.1f} "
           f"(jnp multiply under jit {host_us(lambda: state.update(y=mul(xj)), sync=lambda: state['y'].block_until_ready()):.1f})")
print("\n".join(f"{sys.argv[1]}: {line}" for line in out), flush=True)
