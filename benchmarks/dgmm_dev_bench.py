"""Developer sweep of the dgmm/cdgmm launch layout on a GPU:  PYTHONPATH=$PWD python benchmarks/dgmm_dev_bench.py

Each setting overrides layout constants of gpuops.diag (_TARGET_BLOCKS, _SUM_TC, _SUM_TC_LEFT,
_FORWARD_STEPS); every dgmm workload of benchmarks/conv.py (DGMM_SIZE²) is checked against torch, then timed with
CUDA events, and printed as ms, % of the 2 GiB copy's bandwidth and % of a copy of as many bytes.
With ``--suite-harness`` each case is set up as the benchmark runner does it (the allocator's cache
emptied first) and only the defaults run: the runner and this sweep disagreed on the same code.
Arguments: indices into SETTINGS (default: all); ``--bwd`` (backward cases only); ``--max-registers N``
(recompile the backward word kernels under that register cap, uncached: run one cap per process).
"""
import sys

import torch

import gpuops.diag as dg
from benchmarks import conv
from benchmarks.runner import copy_bandwidth_gbs, copy_ms, cuda_time_ms

CASES = [(side, dtype, bwd, cplx) for side in ("left", "right") for bwd in (False, True)
         for dtype, cplx in (("float32", False), ("bfloat16", False), ("float16", False), ("float32", True))]
# the defaults first, then one change at a time
SETTINGS = [{}, {"_FORWARD_STEPS": (1, 1)}, {"_FORWARD_STEPS": (4, 4)}, {"_SUM_TC_LEFT": 256}, {"_TARGET_BLOCKS": 8192},
            {"_TARGET_BLOCKS": 2048}, {"_SUM_TC": 16}, {"_SUM_TC": 8, "_TARGET_BLOCKS": 1024},
            {"_SUM_TC": 4, "_TARGET_BLOCKS": 512}, {"_SUM_TC": 4, "_TARGET_BLOCKS": 1024}]


def main():
    gbs = copy_bandwidth_gbs()
    print(f"copy bandwidth {gbs:.1f} GB/s")
    defaults = {name: getattr(dg, name) for s in SETTINGS for name in s}
    harness = "--suite-harness" in sys.argv
    args = sys.argv[1:]
    cap = None
    if "--max-registers" in args:
        at = args.index("--max-registers")
        cap = int(args.pop(at + 1))
    chosen = [SETTINGS[int(i)] for i in args if i.isdigit()] or SETTINGS
    if cap is not None:
        import gpuops.cuda.diag as kernels
        for kernel in (kernels.SCALE_WORDS_SUM, kernels.SCALE_WORDS_SUM_TO_GX):
            kernel.jit_options.update(max_registers=cap, cache=False)
        print(f"backward word kernels capped at {cap} registers")
    for setting in SETTINGS[:1] if harness else chosen:
        for name, value in setting.items():
            setattr(dg, name, value)
        for side, dtype, bwd, cplx in CASES:
            if setting and bwd == ("_FORWARD_STEPS" in setting) or "--bwd" in sys.argv and not bwd:
                continue                                   # only the cases the setting changes
            if harness:
                torch.cuda.empty_cache()
            case = conv._dgmm_case(side, dtype, bwd, complex_=cplx)
            ok = case["check"]()
            ms = cuda_time_ms(case["gpuops"])
            floor = case["bytes"] / gbs / 1e6
            same_size = copy_ms(case["bytes"])
            name = f"{'cdgmm c64' if cplx else 'dgmm ' + dtype} {side} {'bwd' if bwd else 'fwd'}"
            print(f"{str(setting or 'defaults'):28s} | {name:24s} | {'ok' if ok else 'WRONG'} | {ms:.4f} ms | "
                  f"{100 * floor / ms:5.1f} % of copy BW | {100 * same_size / ms:5.1f} % of a same-size copy", flush=True)
        for name, value in defaults.items():
            setattr(dg, name, value)


if __name__ == "__main__":
    main()
