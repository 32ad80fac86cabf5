"""Per-kernel GPU time of one gpuops call (torch.profiler's CUPTI trace sees numba's launches too):

    python3 -m benchmarks.kernel_times corr_lookup_fwd corr_lookup_bwd ...

Each case builds the inputs of the matching benchmark row, warms up, then profiles 5 calls and prints the
kernels by total time (the first ``ROWS`` of them, an environment variable, 15 by default).  A first look at
where a call's time goes before reaching for Nsight Compute.  The ``<model>_<stock|gpuops>_<nchw|nhwc>_<fp32|bf16>``
cases are one training step of `benchmarks.models`.
"""
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile

import gpuops


def _raft(backward, N=1, H=55, W=128):
    from benchmarks.raft import LEVELS, RADIUS, _inputs
    f1, f2, c = _inputs(N, 256, H, W, "float32")
    if not backward:
        return lambda: gpuops.corr_lookup(f1, f2, c, radius=RADIUS, num_levels=LEVELS)
    g = torch.randn(N, LEVELS * (2 * RADIUS + 1) ** 2, H, W, device="cuda")
    return lambda: gpuops.corr_lookup_backward(g, f1, f2, c, radius=RADIUS, num_levels=LEVELS)


def _pyramid_training(iterations=12):
    """gpuops.torch.CorrBlock built once, looked up ``iterations`` times, backward through all of it."""
    import gpuops.torch as gt
    from benchmarks.raft import _inputs
    f1, f2, c = _inputs(1, 256, 55, 128, "float32")
    f1, f2 = f1.requires_grad_(), f2.requires_grad_()

    def step():
        block = gt.CorrBlock(f1, f2)
        total = sum(block(c + i).sum() for i in range(iterations))
        total.backward()
    return step


def _model_step(name, swapped, channels_last, bf16):
    """One training step (forward under bf16 autocast when asked, cross-entropy, backward, SGD) of a model of
    `benchmarks.models`, stock or with gpuops's depthwise swapped in."""
    from benchmarks.models import _layout, _step_fn, build
    stock, swap, batch, size, _ = build(name, "cuda")
    model, x = _layout(swap if swapped else stock, torch.randn(batch, 3, size, size, device="cuda"), channels_last)
    return _step_fn(model, x, torch.randint(0, 1000, (batch,), device="cuda"), bf16)


CASES = {
    "pyramid_training": _pyramid_training,
    "corr_lookup_fwd": lambda: _raft(False),
    "corr_lookup_bwd": lambda: _raft(True),
    "corr_lookup_fwd_1080p": lambda: _raft(False, 1, 135, 240),
    "corr_lookup_bwd_1080p": lambda: _raft(True, 1, 135, 240),
}
for _model in ("convnext_tiny", "mobilenet_v2"):
    for _swapped in (False, True):
        for _cl in (False, True):
            for _bf16 in (False, True):
                CASES[f"{_model}_{'gpuops' if _swapped else 'stock'}_{'nhwc' if _cl else 'nchw'}_"
                      f"{'bf16' if _bf16 else 'fp32'}"] = (
                    lambda m=_model, s=_swapped, c=_cl, b=_bf16: _model_step(m, s, c, b))


def profiled(fn, calls=5, warmup=3):
    """The torch.profiler (CUDA activity) of ``calls`` calls of ``fn`` after ``warmup`` unprofiled ones."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return prof


def main(names):
    for name in names:
        prof = profiled(CASES[name]())
        print(f"== {name} (5 calls)")
        rows = int(os.environ.get("ROWS", 15))
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60))


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
