"""Host time of small calls on a GPU machine, each side against its framework's own op:
``python -m benchmarks.host_time [torch|jax]`` (both by default, each in its own process).

Rows: the ``kind="host"`` workloads of benchmarks/elementwise.py (1024-element gsmelu through
``gpuops.torch`` against ``torch.mul``, forward + backward against the torch expression, ``gpuops.jax``
under jit against the jnp expression under jit), each checked first.  Each pair is timed with
interleaved rounds (`benchmarks.runner.host_times_us`), with the garbage collector off (timeit's
convention) and on.  The torch process is pinned to one CPU core so that the scheduler does not move it
mid-round; the JAX one is not (XLA's runtime threads take part in every call: pinned to one core with
them, a call measured 67-70 µs against 61 µs unpinned, on the same H200 host).
"""
import importlib
import os
import subprocess
import sys

from benchmarks.runner import WORKLOADS, host_times_us


def _pin():
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[len(cores) // 2]})


def _rows(side):
    importlib.import_module("benchmarks.elementwise")
    for w in WORKLOADS:
        if w["kind"] != "host" or ("jax" in w["name"]) != (side == "jax"):
            continue
        case = w["setup"]()
        assert case["check"](), f"{w['name']}: gpuops disagrees with the reference"
        if "sync" in case:
            sync = case["sync"]
        else:
            import torch
            sync = torch.cuda.synchronize
        for gc_off in (True, False):
            ours, theirs = host_times_us([case["gpuops"], case["peer"]], sync, gc_off=gc_off)
            print(f"| {w['name']} | {'off' if gc_off else 'on'} | {ours:.1f} | {theirs:.1f} ({case['peer_name']}) "
                  f"| {ours / theirs:.2f} |", flush=True)


def main(which):
    if not which:
        print("| call (float32) | GC during rounds | gpuops µs | peer µs | ratio |\n|---|---|---|---|---|", flush=True)
        for side in ("torch", "jax"):
            subprocess.run([sys.executable, "-m", "benchmarks.host_time", side], check=True)
        return
    if which[0] == "torch":
        _pin()
    _rows(which[0])


if __name__ == "__main__":
    main(sys.argv[1:])
