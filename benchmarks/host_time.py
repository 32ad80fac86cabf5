"""Host time of small calls on a GPU machine, each side against its framework's own op:
``python -m benchmarks.host_time [torch|jax]`` (both by default, each in its own process).

Rows: 1024-element gsmelu through ``gpuops.torch`` against ``torch.mul``, forward + backward against
the torch expression, and ``gpuops.jax`` under jit against the jnp expression under jit.  Each pair is
timed with interleaved rounds (`benchmarks.runner.host_times_us`), with the garbage collector off
(timeit's convention) and on.  The torch process is pinned to one CPU core so that the scheduler does
not move it mid-round; the JAX one is not (XLA's runtime threads take part in every call: pinned to one
core with them, a call measured 67-70 µs against 61 µs unpinned, on the same H200 host).
"""
import os
import subprocess
import sys

import numpy as np

from benchmarks.runner import host_times_us

N = 1024


def _pin():
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[len(cores) // 2]})


def _report(name, fns, sync, peer):
    for gc_off in (True, False):
        ours, theirs = host_times_us(fns, sync, gc_off=gc_off)
        print(f"| {name} | {'off' if gc_off else 'on'} | {ours:.1f} | {theirs:.1f} ({peer}) | {ours / theirs:.2f} |",
              flush=True)


def _torch_rows():
    import torch

    import gpuops.torch as gt
    x = torch.randn(N, device="cuda")
    xg = x.clone().requires_grad_()

    def expr(t, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1):
        h = torch.where(t <= -alpha, torch.zeros_like(t),
                        torch.where(t <= beta, (t + alpha) ** 2 / (2 * (alpha + beta)), t + (alpha - beta) / 2))
        return neg_slope * t + (slope - neg_slope) * h
    assert torch.allclose(gt.gsmelu(x), expr(x), atol=1e-6)
    sync = torch.cuda.synchronize
    _report("gpuops.torch.gsmelu vs torch.mul", [lambda: gt.gsmelu(x), lambda: torch.mul(x, 2.0)], sync, "torch.mul")
    _report("gpuops.torch.gsmelu fwd+bwd vs torch expr",
            [lambda: gt.gsmelu(xg).sum().backward(), lambda: expr(xg).sum().backward()], sync, "torch expr")


def _jax_rows():
    import jax
    import jax.numpy as jnp

    import gpuops.jax as gj
    x = jax.device_put(np.random.default_rng(0).standard_normal(N, dtype=np.float32), jax.devices()[0])
    ours = jax.jit(gj.gsmelu)

    def expr(t, slope=1.0, neg_slope=0.01, alpha=0.1, beta=0.1):
        h = jnp.where(t <= -alpha, 0.0, jnp.where(t <= beta, (t + alpha) ** 2 / (2 * (alpha + beta)),
                                                  t + (alpha - beta) / 2))
        return neg_slope * t + (slope - neg_slope) * h
    peer = jax.jit(expr)
    assert bool(jnp.allclose(ours(x), peer(x), rtol=1e-5, atol=1e-6))
    state = {}

    def run_ours():
        state["y"] = ours(x)

    def run_peer():
        state["y"] = peer(x)
    _report(f"gpuops.jax.gsmelu under jit vs jnp ({jax.devices()[0].platform})", [run_ours, run_peer],
            lambda: state["y"].block_until_ready() if "y" in state else None, "jnp expr under jit")


def main(which):
    if not which:
        print("| call (1024 float32) | GC during rounds | gpuops µs | peer µs | ratio |\n|---|---|---|---|---|",
              flush=True)
        for side in ("torch", "jax"):
            subprocess.run([sys.executable, "-m", "benchmarks.host_time", side], check=True)
        return
    if which[0] == "torch":
        _pin()
        _torch_rows()
    else:
        _jax_rows()


if __name__ == "__main__":
    main(sys.argv[1:])
