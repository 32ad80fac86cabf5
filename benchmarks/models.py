"""End-to-end training steps of real models, the stock model against gpuops swapped in, in one run:

    python3 -m benchmarks.models --out DIR [--models mobilenet_v2,convnext_tiny] [--steps 30] [--rounds 3]

Models (each when its package imports): torchvision ``mobilenet_v2`` at B64 224² (17 depthwise 3×3 layers)
and timm ``convnext_tiny`` at B32 224² (18 depthwise 7×7 layers), random weights, inputs and labels, 1000
classes; ``tiny`` is a small built-in model with depthwise layers for trying the script anywhere
(``--device cpu``).  Each model's stock form and `gpuops.torch.swap_depthwise` of a deep copy (the same
weights) are run in NCHW and channels_last, in float32 and under ``torch.autocast(bfloat16)``.  A training
step is forward, cross-entropy, backward and an SGD step (momentum 0.9).  Steps are timed with CUDA events
around each step of a round of back-to-back steps (the steady state a training loop sees: host time shows
where the GPU waits for it), after warm-up steps (cuDNN autotuning with ``cudnn.benchmark=True``, gpuops's
first compiles); stock and swapped rounds alternate, and the median step of each side is reported.

Before timing, each layout's swapped model is checked in float32: the outputs and every parameter gradient
of one batch in eval mode (TF32 off, so both sides compute in float32) of the swapped and the stock model are
measured against a float64 copy of the stock model, as the relative error of each tensor (‖a − a64‖ /
‖a64‖); the swapped model's must be ≤ `CHECK_RTOL` or at most twice the stock model's (`compare`).  A failed
check is reported in the table and the JSON (the timing still runs).

Writes DIR/models_<gpu>.md (the markdown table, also printed) and DIR/models_<gpu>.json.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import time

#: largest relative error (‖a − b‖ / ‖b‖ per tensor) of the swapped model's float32 outputs and gradients
CHECK_RTOL = 1e-3

#: name -> (builder, batch, image size): the builders raise ImportError when their package is missing
MODELS = {}


def model(name, batch, size):
    def register(fn):
        MODELS[name] = (fn, batch, size)
        return fn
    return register


@model("mobilenet_v2", 64, 224)
def _mobilenet_v2():
    import torchvision
    return torchvision.models.mobilenet_v2(weights=None, num_classes=1000)


@model("convnext_tiny", 32, 224)
def _convnext_tiny():
    import timm
    return timm.create_model("convnext_tiny", pretrained=False, num_classes=1000)


@model("tiny", 4, 32)
def _tiny():
    """A small model with depthwise layers (3×3, 5×5 stride 2, 7×7, a multiplier) for runs without the model
    packages, or on the CPU."""
    from torch import nn
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 5, stride=2, padding=2, groups=16), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 7, padding=3, groups=32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 1000))


def build(name, device, seed=0):
    """(stock, swapped, batch, size, depthwise layers swapped): the stock model (train mode) and gpuops's
    swap of a deep copy (same weights), on ``device``.  ImportError when the model's package is missing."""
    import torch

    import gpuops.torch as gt
    builder, batch, size = MODELS[name]
    torch.manual_seed(seed)
    stock = builder().to(device)
    swapped = gt.swap_depthwise(copy.deepcopy(stock))
    count = sum(isinstance(m, gt.Conv2dDepthwise) for m in swapped.modules())
    return stock, swapped, batch, size, count


def _layout(module, x, channels_last):
    import torch
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return module.to(memory_format=fmt), x.contiguous(memory_format=fmt)


def _outputs_and_grads(m, x):
    """(output, {parameter name: gradient}) of one batch through ``m`` (a loss whose gradient reaches every
    output with a different weight)."""
    import torch
    m.zero_grad(set_to_none=True)
    y = m(x)
    (y * torch.linspace(-1, 1, y.shape[-1], device=y.device, dtype=y.dtype)).square().mean().backward()
    grads = {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}
    m.zero_grad(set_to_none=True)
    return y.detach(), grads


def compare(stock, swapped, x):
    """Float32 check of ``swapped`` against ``stock`` on the batch ``x`` (eval mode, TF32 off), both measured
    against a float64 copy of the stock model: the error of a tensor is rel = ‖a − a64‖ / ‖a64‖.  Returns
    ``{"output", "grads", "worst", "stock_output", "stock_grads", "ok"}``: the swapped model's output error and
    its worst parameter-gradient error (``worst`` names that parameter), the stock model's errors on the same
    tensors, and whether every tensor of the swapped model is within `CHECK_RTOL` or within twice the stock
    float32 model's own error on it (the reference says which side is off when float32 sums differ)."""
    import torch
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    modes = stock.training, swapped.training
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        reference = copy.deepcopy(stock).double()
        for m in (stock, swapped, reference):
            m.eval()
        y64, g64 = _outputs_and_grads(reference, x.double())
        (y32, g32), (ys, gs) = (_outputs_and_grads(m, x) for m in (stock, swapped))
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        stock.train(modes[0])
        swapped.train(modes[1])
    if set(gs) != set(g64):
        raise AssertionError(f"the models' parameters differ: {sorted(set(gs) ^ set(g64))}")

    def rel(a, b):
        return ((a.double() - b).norm() / b.norm().clamp_min(1e-300)).item()

    def within(ours, theirs):
        return ours <= max(CHECK_RTOL, 2 * theirs)
    errors = {n: (rel(gs[n], g64[n]), rel(g32[n], g64[n])) for n in g64}
    worst = max(errors, key=lambda n: errors[n][0])
    out, stock_out = rel(ys, y64), rel(y32, y64)
    return dict(output=out, grads=errors[worst][0], worst=worst, stock_output=stock_out,
                stock_grads=errors[worst][1],
                ok=within(out, stock_out) and all(within(*e) for e in errors.values()))


def _step_fn(m, x, target, bf16):
    """One training step of ``m``: forward (under bf16 autocast when asked), cross-entropy, backward, SGD."""
    import torch
    import torch.nn.functional as F
    opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
    device_type = x.device.type

    def step():
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            out = m(x)
        loss = F.cross_entropy(out.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _time_rounds(fns, steps, rounds, warmup, cuda):
    """Median ms per step of each of ``fns``: ``warmup`` steps each, then ``rounds`` alternating rounds of
    ``steps`` back-to-back steps, each step between CUDA events (wall clock on the CPU)."""
    import torch
    for fn in fns:
        for _ in range(warmup):
            fn()
    if cuda:
        torch.cuda.synchronize()
    times = [[] for _ in fns]
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            if cuda:
                events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                          for _ in range(steps)]
                for start, stop in events:
                    start.record()
                    fn()
                    stop.record()
                torch.cuda.synchronize()
                times[k] += [start.elapsed_time(stop) for start, stop in events]
            else:
                for _ in range(steps):
                    t0 = time.perf_counter()
                    fn()
                    times[k].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def run_model(name, device, steps, rounds, warmup, dtypes=("float32", "bfloat16")):
    """The rows of one model: per layout, the check and the step times of both sides per precision."""
    import torch
    stock, swapped, batch, size, count = build(name, device)
    gen = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    target = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    rows = []
    # each layout starts from the same weights: the timed SGD steps of one layout would otherwise leave the
    # two models apart (by their own float32 rounding) for the next layout's check
    initial = copy.deepcopy(stock.state_dict())
    for channels_last in (False, True):
        stock.load_state_dict(initial)
        swapped.load_state_dict(initial)
        stock, xs = _layout(stock, x, channels_last)
        swapped, _ = _layout(swapped, x, channels_last)
        row = dict(model=name, batch=batch, size=size, layout="channels_last" if channels_last else "NCHW",
                   swapped=count)
        try:
            check = compare(stock, swapped, xs)
            row.update(check_output=check["output"], check_grads=check["grads"], check_worst=check["worst"],
                       check_stock_output=check["stock_output"], check_stock_grads=check["stock_grads"],
                       check=check["ok"])
        except Exception as err:           # report, keep going
            row.update(check=False, error=f"{type(err).__name__}: {err}"[:300])
        for dtype in dtypes:
            bf16 = dtype == "bfloat16"
            try:
                fns = [_step_fn(stock, xs, target, bf16), _step_fn(swapped, xs, target, bf16)]
                row[f"{dtype}_stock_ms"], row[f"{dtype}_gpuops_ms"] = _time_rounds(
                    fns, steps, rounds, warmup, device.startswith("cuda"))
            except Exception as err:       # e.g. out of memory: report, keep going
                row[f"{dtype}_error"] = f"{type(err).__name__}: {err}"[:300]
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        rows.append(row)
        print(line(row), flush=True)
    return rows


HEADER = ("| model | layout | depthwise swapped "
          "| check (fp32 rel. err. to float64, gpuops (stock): output / worst grad) "
          "| float32 stock / gpuops ms | speed-up | bf16 autocast stock / gpuops ms | speed-up |\n"
          "|---|---|---|---|---|---|---|---|")


def _times(row, dtype):
    if f"{dtype}_error" in row:
        return "failed: " + row[f"{dtype}_error"].replace("|", "/"), "–"
    if f"{dtype}_stock_ms" not in row:
        return "–", "–"
    stock, ours = row[f"{dtype}_stock_ms"], row[f"{dtype}_gpuops_ms"]
    return f"{stock:.2f} / **{ours:.2f}**" if ours < stock else f"{stock:.2f} / {ours:.2f}", f"{stock / ours:.2f}×"


def line(row):
    if "error" in row:
        check = "error: " + row["error"].replace("|", "/")
    else:
        check = (f"{'yes' if row['check'] else 'NO'} ({row['check_output']:.1e} ({row['check_stock_output']:.1e}) / "
                 f"{row['check_grads']:.1e} ({row['check_stock_grads']:.1e}))")
    f32, f32_x = _times(row, "float32")
    bf16, bf16_x = _times(row, "bfloat16")
    return (f"| {row['model']} B{row['batch']} {row['size']}² | {row['layout']} | {row['swapped']} | {check} | "
            f"{f32} | {f32_x} | {bf16} | {bf16_x} |")


def table(rows):
    return "\n".join([HEADER] + [line(r) for r in rows])


def environment(device):
    import torch
    env = dict(date=datetime.date.today().isoformat(), device=device, torch=torch.__version__,
               python=platform.python_version(), cudnn_benchmark=torch.backends.cudnn.benchmark)
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
        env["cudnn"] = torch.backends.cudnn.version()
    else:
        env["gpu"] = "cpu"
    for mod in ("torchvision", "timm", "numba"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return env


def write(rows, env, out_dir, skipped=()):
    os.makedirs(out_dir, exist_ok=True)
    tag = "models_" + env["gpu"].replace(" ", "_")
    md = [f"# Training steps, stock against gpuops's depthwise swapped in, on {env['gpu']}", "",
          ", ".join(f"{k} {v}" for k, v in env.items()), "",
          "A step is forward + cross-entropy + backward + SGD (momentum 0.9), random weights and data; median ms "
          "per step between CUDA events over alternating rounds of back-to-back steps after warm-up, "
          "`cudnn.benchmark=True`. The check measures the float32 outputs and parameter gradients of both models "
          "against a float64 copy of the stock model (eval mode, TF32 off): every tensor of the swapped model must "
          f"be within {CHECK_RTOL:g} relative error or within twice the stock model's own error on it. "
          "Bold: gpuops faster.", "", table(rows)]
    md += [f"\nskipped: {name} ({why})" for name, why in skipped]
    path = os.path.join(out_dir, f"{tag}.md")
    with open(path, "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(out_dir, f"{tag}.json"), "w") as f:
        json.dump(dict(env=env, rows=rows, skipped=list(skipped)), f, indent=1)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.models", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,convnext_tiny",
                        help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=20, help="steps per round and side")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per side")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up steps per side and configuration")
    parser.add_argument("--dtype", default="float32,bfloat16", help="float32 and/or bfloat16 (autocast)")
    parser.add_argument("--out", default=os.environ.get("OUT") or "benchmarks/results")
    args = parser.parse_args(argv)
    import torch
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: pass --device cpu (with --models tiny) to try the script")
    torch.backends.cudnn.benchmark = True
    rows, skipped = [], []
    print(HEADER, flush=True)
    for name in args.models.split(","):
        try:
            rows += run_model(name, args.device, args.steps, args.rounds, args.warmup, tuple(args.dtype.split(",")))
        except ImportError as err:
            skipped.append((name, f"{type(err).__name__}: {err}"))
            print(f"skipping {name}: {err}", flush=True)
    path = write(rows, environment(args.device), args.out, skipped)
    print(f"\nwritten: {path}")
    return rows


if __name__ == "__main__":
    main()
