"""Run one gpuops call per named workload inside a CUDA profiler range, for Nsight Compute:

    ncu --clock-control none --profile-from-start off ... python -m benchmarks.profile_kernels dw3_fwd corr_bwd

Each workload builds random CUDA inputs, calls the op a few times (compile, warm up), then calls it once
between ``torch.cuda.profiler.start()`` and ``stop()``, so ``--profile-from-start off`` captures only that
call's kernels.  Shapes are those of benchmarks/conv.py and benchmarks/correlation.py.
"""
import sys

import torch

import gpuops
from benchmarks.kernel_times import _raft

DW = dict(shape=(32, 256, 56, 56))
FLOWNETC = dict(kernel_size=1, patch_size=21, padding=0, dilation_patch=2)


def _depthwise(k, backward, shape=DW["shape"], stride=1, dtype=torch.float32, channels_last=False):
    def setup():
        N, C, H, W = shape
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(N, C, H, W, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
        w = torch.randn(C, 1, k, k, device="cuda", dtype=dtype) / k
        b = torch.randn(C, device="cuda", dtype=dtype)
        y = gpuops.conv2d_depthwise(x, w, b, stride=stride, padding=k // 2)
        if not backward:
            return lambda: gpuops.conv2d_depthwise(x, w, b, stride=stride, padding=k // 2)
        g = torch.randn_like(y)
        return lambda: gpuops.conv2d_depthwise_backward(g, x, w, b, stride=stride, padding=k // 2)
    return setup


def _correlation(dtype, backward):
    def setup():
        a = torch.randn(4, 256, 48, 64, device="cuda", dtype=dtype)
        b = torch.randn_like(a)
        if not backward:
            return lambda: gpuops.spatial_correlation_sample(a, b, **FLOWNETC)
        g = torch.randn_like(gpuops.spatial_correlation_sample(a, b, **FLOWNETC))
        return lambda: gpuops.spatial_correlation_sample_backward(g, a, b, **FLOWNETC)
    return setup


def _dgmm(side="right", dtype=torch.float32, backward=False):
    def setup():
        a = torch.randn(8192, 8192, device="cuda", dtype=dtype)
        x = torch.randn(8192, device="cuda", dtype=dtype)
        if backward:
            g = torch.randn_like(a)
            return lambda: gpuops.dgmm_backward(g, a, x, side=side)
        return lambda: gpuops.dgmm(a, x, side=side)
    return setup


def _involution(backward, dtype=torch.float32):
    """The involution row of benchmarks/perpixel.py (B32 C256 56², K7, G16)."""
    from benchmarks.perpixel import B, C, G, H, K, W

    def setup():
        x = torch.randn(B, C, H, W, device="cuda", dtype=dtype)
        w = torch.randn(B, G, K, K, H, W, device="cuda", dtype=dtype)
        if not backward:
            return lambda: gpuops.involution(x, w, padding=K // 2)
        g = torch.randn_like(x)
        return lambda: gpuops.involution_backward(g, x, w, padding=K // 2)
    return setup


def _kpn(k, backward, dtype=torch.float32):
    """The KPN gather row of benchmarks/perpixel.py (1×3×1080×1920)."""
    from benchmarks.perpixel import KPN

    def setup():
        n, c, h, w = KPN
        x = torch.randn(n, c, h, w, device="cuda", dtype=dtype)
        weights = torch.randn(n, k * k, h, w, device="cuda", dtype=dtype)
        if not backward:
            return lambda: gpuops.weighted_filter(x, weights)
        g = torch.randn_like(x)
        return lambda: gpuops.weighted_filter_backward(g, x, weights)
    return setup


WORKLOADS = {
    "dw3_fwd": _depthwise(3, False),
    "dw3_bwd": _depthwise(3, True),
    "dw7_fwd": _depthwise(7, False),
    "dw7_bwd": _depthwise(7, True),
    # ConvNeXt-T's depthwise layers in bf16 channels-last (what a bf16-autocast training step runs)
    "dw7_cl_bf16_c96_fwd": _depthwise(7, False, (32, 96, 56, 56), dtype=torch.bfloat16, channels_last=True),
    "dw7_cl_bf16_c96_bwd": _depthwise(7, True, (32, 96, 56, 56), dtype=torch.bfloat16, channels_last=True),
    "dw7_cl_bf16_c384_fwd": _depthwise(7, False, (32, 384, 14, 14), dtype=torch.bfloat16, channels_last=True),
    "dw7_cl_bf16_c384_bwd": _depthwise(7, True, (32, 384, 14, 14), dtype=torch.bfloat16, channels_last=True),
    "dw3s2_fwd": _depthwise(3, False, (32, 144, 56, 56), 2),      # the MobileNetV2 stride-2 row
    "dw3s2_bwd": _depthwise(3, True, (32, 144, 56, 56), 2),
    "corr_fwd": _correlation(torch.float32, False),
    "corr_bwd": _correlation(torch.float32, True),
    "corr_fwd_bf16": _correlation(torch.bfloat16, False),
    "corr_bwd_bf16": _correlation(torch.bfloat16, True),
    "dgmm_fwd": _dgmm(),
    "dgmm_bwd": _dgmm(backward=True),
    "dgmm_left_fwd": _dgmm("left"),
    "dgmm_fwd_bf16": _dgmm(dtype=torch.bfloat16),
    "dgmm_bwd_bf16": _dgmm(dtype=torch.bfloat16, backward=True),
    "dgmm_left_fwd_bf16": _dgmm("left", dtype=torch.bfloat16),
    "dgmm_left_bwd_bf16": _dgmm("left", dtype=torch.bfloat16, backward=True),
    "lookup_fwd": lambda: _raft(False),
    "lookup_bwd": lambda: _raft(True),
    "involution_fwd": _involution(False),
    "involution_bwd": _involution(True),
    "kpn21_fwd": _kpn(21, False),
    "kpn21_bwd": _kpn(21, True),
    # the per-pixel backward rows that were slower in bfloat16 than in float32 (session 9)
    "involution_bwd_bf16": _involution(True, torch.bfloat16),
    "kpn5_bwd": _kpn(5, True),
    "kpn5_bwd_bf16": _kpn(5, True, torch.bfloat16),
}


def profile(name, warmup=3):
    fn = WORKLOADS[name]()
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    print(f"=== profile_kernels: {name} ===", flush=True)
    torch.cuda.profiler.start()
    fn()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


def main(names):
    unknown = [n for n in names if n not in WORKLOADS]
    if not names or unknown:
        sys.exit(f"usage: python -m benchmarks.profile_kernels NAME [NAME...]; unknown {unknown}; "
                 f"known: {' '.join(WORKLOADS)}")
    for name in names:
        profile(name)


if __name__ == "__main__":
    main(sys.argv[1:])
