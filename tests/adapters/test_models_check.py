"""The models benchmark's float32 check (benchmarks/models.py `compare`) on its small built-in model, on the CPU:
a faithful swap passes in both layouts, a swap whose depthwise weight was changed fails it."""
import pytest

torch = pytest.importorskip("torch")

from benchmarks.models import CHECK_RTOL, _layout, build, compare  # noqa: E402


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCHW", "channels_last"])
def test_a_faithful_swap_passes(channels_last):
    stock, swapped, batch, size, count = build("tiny", "cpu")
    assert count == 3
    stock, x = _layout(stock, torch.randn(batch, 3, size, size), channels_last)
    swapped, _ = _layout(swapped, x, channels_last)
    check = compare(stock, swapped, x)
    assert check["ok"], check
    assert check["output"] < 1e-5 and check["grads"] < 1e-4, check


def test_a_changed_depthwise_weight_fails():
    import gpuops.torch as gt
    stock, swapped, batch, size, _ = build("tiny", "cpu")
    layer = next(m for m in swapped.modules() if isinstance(m, gt.Conv2dDepthwise))
    with torch.no_grad():
        layer.weight[0, 0, 0, 0] += 0.05
    check = compare(stock, swapped, torch.randn(batch, 3, size, size))
    assert not check["ok"]
    assert check["grads"] > CHECK_RTOL
