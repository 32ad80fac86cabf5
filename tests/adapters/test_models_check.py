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


def test_every_layout_is_checked_from_the_same_weights(monkeypatch):
    """The timed SGD steps of one layout must not leave the models apart for the next layout's check."""
    from benchmarks import models
    seen = []
    real = models.compare

    def spy(stock, swapped, x):
        seen.append([{n: p.detach().clone() for n, p in m.named_parameters()} for m in (stock, swapped)])
        return real(stock, swapped, x)
    monkeypatch.setattr(models, "compare", spy)
    rows = models.run_model("tiny", "cpu", steps=2, rounds=1, warmup=1, dtypes=("float32",))
    assert [r["layout"] for r in rows] == ["NCHW", "channels_last"] and all(r["check"] for r in rows)
    first = seen[0][0]
    for stock, swapped in seen:
        for name, p in first.items():
            torch.testing.assert_close(stock[name], p, rtol=0, atol=0)
            torch.testing.assert_close(swapped[name], p, rtol=0, atol=0)
