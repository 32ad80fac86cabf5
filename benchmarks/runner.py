"""Side-by-side benchmarks of gpuops against the peer a user would otherwise run.

For each workload: build random inputs, run gpuops and the peer once and check they agree, then
time both with CUDA events (warm-up, median of 30 runs, best of `ROUNDS` interleaved rounds).
Prints and writes a markdown table (op, workload, dtype, pass, gpuops ms, peer ms, speed-up, % of
the floor -- a device copy of as many bytes -- and the peak memory each side allocates above its inputs),
a JSON file and, when matplotlib is present, a PNG chart.  Host-overhead workloads time the Python
call itself (µs per call, no synchronisation inside the loop).

Workloads register themselves with `workload`; each family adds its own module to `FAMILIES`.  A case may
also give ``extra``: more sides timed the same way, {label: callable} (labels starting with "gpuops" are
gpuops's, e.g. its channels-last layout, the others peers, e.g. cuDNN on channels_last tensors): they get a
column of their own and the "best / best" speed-up (gpuops's fastest side against the fastest peer side);
``cudnn_benchmark=True`` runs the workload with ``torch.backends.cudnn.benchmark`` on (training rows).

``--latency`` adds, for device rows, the latency of one call: a sync before each call, CUDA events around
it, median of 30 (what a caller that waits for each result sees: the host time of the call, launches
included, where the GPU waits for it).  Training-mode workloads (``train`` in their names) time forward +
backward through autograd with inputs requiring grad.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import json
import os
import platform
import statistics
import time

import numpy as np

# torch and JAX share the GPU in this process: XLA must not take 75 % of its memory up front
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

WORKLOADS = []
FAMILIES = ["benchmarks.elementwise", "benchmarks.conv", "benchmarks.correlation", "benchmarks.perpixel",
            "benchmarks.raft"]


def workload(op, name, dtype, kind="device"):
    """Register ``fn() -> dict(gpuops=callable, peer=callable, peer_name=str, check=callable, bytes=int)``."""
    def register(fn):
        WORKLOADS.append(dict(op=op, name=name, dtype=dtype, kind=kind, setup=fn))
        return fn
    return register


ROUNDS = 2        # device rows: rounds of `cuda_time_ms` per side, best median kept


def cuda_time_ms(fn, repeats=30, warmup=5):
    import torch
    for _ in range(warmup):
        fn()
    start = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    stop = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    for a, b in zip(start, stop):
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in zip(start, stop))


def latency_ms(fn, repeats=30, warmup=5):
    """Median ms of one call of ``fn`` from an idle GPU: synchronise, record an event, call, record an event,
    wait for it (the call's host time shows wherever the GPU waits for its launches)."""
    import torch
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def host_times_us(fns, sync, calls=3000, warmup=200, rounds=5, gc_off=True):
    """µs of host time per call of each of ``fns``: the best of ``rounds`` rounds of ``calls`` calls.
    The rounds of the callables are interleaved, so that a noisy stretch of the host (other processes,
    frequency changes) hits each alike, and the garbage collector is off during a round (as in
    `timeit`: a collection landing in one side's round says nothing about that side) unless
    ``gc_off`` is False."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync()
    best = [float("inf")] * len(fns)
    enabled = gc.isenabled() and gc_off
    try:
        for _ in range(rounds):
            for k, fn in enumerate(fns):
                if enabled:
                    gc.disable()
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                elapsed = time.perf_counter() - t0
                if enabled:
                    gc.enable()
                sync()
                best[k] = min(best[k], elapsed / calls * 1e6)
    finally:
        if enabled:
            gc.enable()
    return best


_COPY_BW = {}


def copy_bandwidth_gbs():
    """Measured device-to-device copy bandwidth (bytes read + written per second)."""
    if not _COPY_BW:
        import torch
        a = torch.empty(1 << 28, device="cuda")
        b = torch.empty_like(a)
        ms = min(cuda_time_ms(lambda: b.copy_(a)) for _ in range(ROUNDS))
        _COPY_BW["gbs"] = 2 * a.numel() * 4 / ms / 1e6
    return _COPY_BW["gbs"]


_COPY_MS = {}


def copy_ms(nbytes):
    """ms of a device-to-device copy that moves ``nbytes`` (half read, half written), timed like the
    workloads: the floor of an op that moves as many bytes.  Against the bandwidth of a 2 GiB copy alone,
    short ops would also pay, as a larger share of their time, the few µs between back-to-back launches
    that every timed call has."""
    ms = _COPY_MS.get(nbytes)
    if ms is None:
        import torch
        a = torch.empty(max(1, nbytes // 2), dtype=torch.uint8, device="cuda")
        b = torch.empty_like(a)
        ms = _COPY_MS[nbytes] = min(cuda_time_ms(lambda: b.copy_(a)) for _ in range(ROUNDS))
        del a, b
    return ms


def _selected(w, only, dtypes):
    if dtypes and w["dtype"] not in dtypes:
        return False
    return not only or any(o in w["op"] or o in w["name"] for o in only)


def _time_and_memory(fn):
    """(ms, MB): ``fn``'s time and the peak of the memory it allocates above what was allocated before it (the
    inputs and whatever the case holds for either side, such as a peer's saved graph, do not count)."""
    import torch
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    ms = cuda_time_ms(fn)
    return ms, (torch.cuda.max_memory_allocated() - before) / 2**20


def _device_times(case, row, latency):
    """Time the device sides of ``case`` into ``row``: gpuops and the peer (with peak memory), its ``extra``
    sides, interleaved rounds keeping each side's best median; with ``latency``, each side's latency too."""
    row["gpuops_ms"], row["gpuops_peak_mb"] = _time_and_memory(case["gpuops"])
    row["peer_ms"], row["peer_peak_mb"] = _time_and_memory(case["peer"])
    extra = case.get("extra", {})
    row["extra_ms"] = {label: cuda_time_ms(fn) for label, fn in extra.items()}
    # more rounds, interleaved; each side keeps its best median (a slow stretch of the GPU, seen here as a
    # 2x slower median for a whole workload, then hits either side alike)
    for _ in range(ROUNDS - 1):
        row["gpuops_ms"] = min(row["gpuops_ms"], cuda_time_ms(case["gpuops"]))
        row["peer_ms"] = min(row["peer_ms"], cuda_time_ms(case["peer"]))
        for label, fn in extra.items():
            row["extra_ms"][label] = min(row["extra_ms"][label], cuda_time_ms(fn))
    row["speedup"] = row["peer_ms"] / row["gpuops_ms"]
    if extra:
        ours = [row["gpuops_ms"]] + [t for label, t in row["extra_ms"].items() if label.startswith("gpuops")]
        peers = [row["peer_ms"]] + [t for label, t in row["extra_ms"].items() if not label.startswith("gpuops")]
        row["best_speedup"] = min(peers) / min(ours)
    if latency:
        row["gpuops_latency_ms"] = latency_ms(case["gpuops"])
        row["peer_latency_ms"] = latency_ms(case["peer"])
        row["extra_latency_ms"] = {label: latency_ms(fn) for label, fn in extra.items()}


def run(only=None, dtypes=None, latency=False):
    import torch
    rows = []
    for family in FAMILIES:
        try:
            importlib.import_module(family)
        except ModuleNotFoundError as err:
            print(f"skipping {family}: {err}")
    for w in WORKLOADS:
        if not _selected(w, only, dtypes):
            continue
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        saved_benchmark = torch.backends.cudnn.benchmark
        case = w["setup"]()
        torch.backends.cudnn.benchmark = bool(case.get("cudnn_benchmark", saved_benchmark))
        row = dict(op=w["op"], workload=w["name"], dtype=w["dtype"], kind=w["kind"], peer=case["peer_name"])
        try:
            row["pass"] = bool(case["check"]())
        except Exception as err:  # report, keep going
            row["pass"] = False
            row["error"] = f"{type(err).__name__}: {err}"[:200]
        if w["kind"] == "host":
            sync = case.get("sync", torch.cuda.synchronize)
            row["gpuops_us"], row["peer_us"] = host_times_us([case["gpuops"], case["peer"]], sync)
            row["speedup"] = row["peer_us"] / row["gpuops_us"]
        else:
            _device_times(case, row, latency)
            if case.get("bytes"):
                row["floor_ms"] = copy_ms(case["bytes"])
                row["pct_of_floor"] = 100 * row["floor_ms"] / row["gpuops_ms"]
                row["pct_of_bandwidth"] = 100 * case["bytes"] / copy_bandwidth_gbs() / 1e6 / row["gpuops_ms"]
        torch.backends.cudnn.benchmark = saved_benchmark
        rows.append(row)
        print(_line(row), flush=True)
        del case
    return rows


def _line(r):
    if r["kind"] == "host":
        return (f"| {r['op']} | {r['workload']} | {r['dtype']} | {'yes' if r['pass'] else 'NO'} | "
                f"{r['gpuops_us']:.1f} µs | {r['peer_us']:.1f} µs ({r['peer']}) | {r['speedup']:.2f}× | – | – | – | – "
                f"| – |")
    pct = (f"{r['pct_of_floor']:.0f} % ({r['pct_of_bandwidth']:.0f} %)" if "pct_of_bandwidth" in r
           else f"{r['pct_of_floor']:.0f} %" if "pct_of_floor" in r else "–")
    extra = "; ".join(f"{label} {ms:.3f}" for label, ms in r.get("extra_ms", {}).items()) or "–"
    best = f"{r['best_speedup']:.2f}×" if "best_speedup" in r else "–"
    if "gpuops_latency_ms" in r:
        latency = f"{r['gpuops_latency_ms']:.3f} / {r['peer_latency_ms']:.3f}" + "".join(
            f"; {label} {ms:.3f}" for label, ms in r["extra_latency_ms"].items())
    else:
        latency = "–"
    return (f"| {r['op']} | {r['workload']} | {r['dtype']} | {'yes' if r['pass'] else 'NO'} | "
            f"{r['gpuops_ms']:.3f} | {r['peer_ms']:.3f} ({r['peer']}) | {r['speedup']:.2f}× | {pct} | "
            f"{r['gpuops_peak_mb']:.0f} / {r['peer_peak_mb']:.0f} MB | {extra} | {best} | {latency} |")


HEADER = ("| op | workload | dtype | pass | gpuops ms | peer ms | speed-up | % of floor (of copy BW) "
          "| peak mem above inputs gpuops / peer | more sides ms | best / best | latency ms gpuops / peer; more sides |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def environment():
    import torch
    env = dict(date=datetime.date.today().isoformat(), gpu=torch.cuda.get_device_name(), torch=torch.__version__,
               python=platform.python_version(), copy_bandwidth_gbs=round(copy_bandwidth_gbs(), 1))
    for mod in ("numba", "numpy", "jax"):
        try:
            env[mod] = importlib.import_module(mod).__version__
        except ImportError:
            pass
    from importlib.metadata import version
    env["numba-cuda"] = version("numba-cuda")
    try:
        import pynvml  # noqa: F401
    except ImportError:
        pass
    env["driver"] = _driver()
    return env


def _driver():
    try:
        import subprocess
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def write(rows, env, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tag = env["gpu"].replace(" ", "_")
    md = [f"# gpuops benchmarks on {env['gpu']}", "",
          ", ".join(f"{k} {v}" for k, v in env.items()), "",
          f"Times are CUDA-event medians of 30 runs after warm-up, the best of {ROUNDS} interleaved rounds per side "
          "(host rows: µs of host time per call, best of 5 interleaved rounds). "
          "The floor is the time of a device copy moving as many bytes (each input read once, each output written "
          "once), timed the same way in the same run; in brackets, the same bytes over the bandwidth of a 2 GiB "
          "copy. More sides: the same timing of other layouts (gpuops channels_last, cuDNN channels_last); best / "
          "best: gpuops's fastest side against the fastest peer side. Latency (with --latency): median ms of one "
          "call between CUDA events with a sync before it.", "", HEADER]
    md += [_line(r) for r in rows]
    md_path = os.path.join(out_dir, f"{tag}.md")
    with open(md_path, "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(out_dir, f"{tag}.json"), "w") as f:
        json.dump(dict(env=env, rows=rows), f, indent=1)
    plot(rows, env, os.path.join(out_dir, f"{tag}.png"))
    return md_path


def plot(rows, env, path):
    """Bar chart of the speed-ups of the device rows (skipped when matplotlib is missing)."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    device_rows = [r for r in rows if r["kind"] == "device"]
    if not device_rows:
        return
    fig, ax = plt.subplots(figsize=(11, 0.35 * len(device_rows) + 1.6))
    labels = [f"{r['op']} {r['workload']} {r['dtype']}" for r in device_rows]
    ax.barh(labels, [r["speedup"] for r in device_rows],
            color=["tab:green" if r["speedup"] >= 1 else "tab:red" for r in device_rows])
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over the peer (×, log scale; red = slower than the peer)")
    ax.tick_params(axis="y", labelsize=8)
    fig.suptitle(f"gpuops vs peers on {env['gpu']}, {env['date']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated: run workloads whose op or name contains one of these")
    parser.add_argument("--dtype", help="comma-separated dtypes to run (default: all)")
    parser.add_argument("--replot", metavar="JSON", help="redraw the chart of a results JSON and exit")
    parser.add_argument("--latency", action="store_true",
                        help="also time each device side's latency (a sync per call, CUDA events)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    args = parser.parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            saved = json.load(f)
        plot(saved["rows"], saved["env"], args.replot[:-len(".json")] + ".png")
        return
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks need a CUDA GPU (python -m gpuops runs the CPU checks)")
    print(HEADER, flush=True)
    rows = run(args.only.split(",") if args.only else None, args.dtype.split(",") if args.dtype else None,
               latency=args.latency)
    env = environment()
    path = write(rows, env, args.out)
    print(f"\nwritten: {path}")
