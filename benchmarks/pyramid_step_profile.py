"""Where a RAFT pyramid training step spends its time: wall time against the GPU kernels' time (torch profiler),
gpuops.torch.CorrBlock against RAFT's CorrBlock, on the runner's workload (B1 C256 55×128, 4 levels, radius 4,
pyramid + 12 lookups + backward to the feature maps).

    python -m benchmarks.pyramid_step_profile
"""
import time

import torch

from benchmarks.raft import _pyramid_case


def main(steps=20, profiled=5):
    case = _pyramid_case(1, 256, 55, 128, "float32", "fwd+bwd")
    for side in ("gpuops", "peer"):
        fn = case[side]
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
        wall = (time.perf_counter() - start) / steps * 1e3
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(profiled):
                fn()
            torch.cuda.synchronize()
        gpu = sum(e.device_time_total for e in prof.key_averages()) / profiled / 1e3
        print(f"{side}: wall {wall:.2f} ms per step, GPU kernels {gpu:.2f} ms per step")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8, max_name_column_width=60))


if __name__ == "__main__":
    main()
