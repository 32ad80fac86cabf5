"""CPU mirrors against the pure-PyTorch CPU expression of the same op (spec/performance.md: the
mirrors should beat it on a 2-core machine).  `python -m benchmarks.cpu_mirrors` — no GPU needed.
Each row checks values first, then reports the median of 7 timed calls after a warm-up."""
import statistics
import time

import torch
import torch.nn.functional as F

import gpuops
from benchmarks.correlation import torch_sample
from benchmarks.elementwise import torch_gsmelu, torch_ncrelu


def _median_ms(fn, repeats=7):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def workloads():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1 << 22, generator=g)
    img, w = torch.randn(8, 64, 56, 56, generator=g), torch.randn(64, 1, 3, 3, generator=g)
    f1, f2 = torch.randn(2, 64, 48, 64, generator=g), torch.randn(2, 64, 48, 64, generator=g)
    sampler = dict(kernel_size=1, patch_size=5, padding=0, dilation_patch=2)
    return [
        ("gsmelu 2^22", lambda: gpuops.gsmelu(x), lambda: torch_gsmelu(x)),
        ("ncrelu 8×64×56²", lambda: gpuops.ncrelu(img), lambda: torch_ncrelu(img)),
        ("conv2d_depthwise 3×3 8×64×56²", lambda: gpuops.conv2d_depthwise(img, w, padding=1),
         lambda: F.conv2d(img, w, padding=1, groups=64)),
        ("im2col 3×3 8×64×56²", lambda: gpuops.im2col(img, 3, padding=1),
         lambda: F.unfold(img, 3, padding=1).view(8, 64, 3, 3, 56, 56)),
        ("spatial_correlation_sample p5 dp2 2×64×48×64", lambda: gpuops.spatial_correlation_sample(f1, f2, **sampler),
         lambda: torch_sample(f1, f2, **sampler)),
    ]


def main():
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| op | gpuops CPU ms | torch CPU ms | speed-up |\n|---|---|---|---|")
    for name, ours, peer in workloads():
        torch.testing.assert_close(ours(), peer(), rtol=1e-4, atol=1e-4)
        a, b = _median_ms(ours), _median_ms(peer)
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
