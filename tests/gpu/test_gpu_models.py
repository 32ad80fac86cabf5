"""GPU tier: `gpuops.torch.swap_depthwise` on real models (torchvision MobileNetV2, timm ConvNeXt-T): the swapped
model's float32 outputs and parameter gradients are as close to a float64 copy of the stock model as the stock
model's float32 ones (within CHECK_RTOL or twice the stock error), in NCHW and channels_last, on a small batch
(benchmarks/models.py's check, which its timing runs also apply at full batch)."""
import pytest

torch = pytest.importorskip("torch")

from benchmarks.models import build, compare  # noqa: E402


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCHW", "channels_last"])
@pytest.mark.parametrize("name,package,depthwise", [("mobilenet_v2", "torchvision", 17), ("convnext_tiny", "timm", 18)])
def test_swapped_model_matches_the_stock_model(name, package, depthwise, channels_last):
    pytest.importorskip(package)
    import gpuops.torch as gt
    stock, swapped, _, size, count = build(name, "cuda")
    assert count == depthwise
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    stock, swapped = stock.to(memory_format=fmt), swapped.to(memory_format=fmt)
    x = torch.randn(2, 3, size, size, device="cuda").contiguous(memory_format=fmt)
    layouts = []
    hooks = [m.register_forward_hook(lambda m, i, o: layouts.append(
        (i[0].is_contiguous(memory_format=torch.channels_last) and not i[0].is_contiguous(),
         o.is_contiguous(memory_format=torch.channels_last) and not o.is_contiguous())))
        for m in swapped.modules() if isinstance(m, gt.Conv2dDepthwise)]
    try:
        check = compare(stock, swapped, x)
    finally:
        for h in hooks:
            h.remove()
    assert check["ok"], check
    # a channels-last input of a depthwise layer gives a channels-last output (cuDNN's layout), an NCHW one NCHW
    assert layouts and all(out == inp for inp, out in layouts), layouts
    if channels_last:
        assert any(inp for inp, _ in layouts)
