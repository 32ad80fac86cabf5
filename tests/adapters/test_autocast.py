"""torch.autocast: the convolution-like ops follow PyTorch's convolution policy (inputs cast to the region's
autocast dtype, as F.conv2d), so a float32 weight meets a bfloat16 activation without an error; the
others run in their inputs' dtype."""
import pytest

from gpuops import _ops

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import gpuops.torch as gt  # noqa: E402

SPECS = list(_ops.ops().values())
AUTOCAST = [s for s in SPECS if s.autocast]


def test_the_convolution_like_ops_declare_the_policy():
    assert {s.name for s in AUTOCAST} == {"conv2d_depthwise", "spatial_correlation_sample", "correlation",
                                          "involution", "weighted_filter"}


@pytest.mark.parametrize("spec", AUTOCAST, ids=[s.name for s in AUTOCAST])
def test_inputs_take_the_autocast_dtype(spec):
    import numpy as np
    arrays, params = spec.example(np.random.default_rng(0), 2)
    tensors = [torch.from_numpy(a).float().requires_grad_() for a in arrays]
    fn = getattr(gt, spec.name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = fn(*tensors, **params)
        assert y.dtype == torch.bfloat16
        want = fn(*[t.detach().bfloat16() for t in tensors], **params)
    torch.testing.assert_close(y, want)
    y.float().square().sum().backward()                    # gradients flow back to the float32 leaves
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in tensors)


@pytest.mark.parametrize("spec", AUTOCAST, ids=[s.name for s in AUTOCAST])
def test_autocast_calls_keep_the_eager_autograd_path(spec):
    """Under autocast a call whose inputs require grad is recorded by the op's eager autograd Function (the
    casts done before it), not routed through the dispatcher's Autocast kernel: that route costs host time
    on every call of a training step."""
    import numpy as np
    arrays, params = spec.example(np.random.default_rng(0), 2)
    tensors = [torch.from_numpy(a).float().requires_grad_() for a in arrays]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = getattr(gt, spec.name)(*tensors, **params)
    assert type(y.grad_fn).__name__ == f"{spec.name}_eagerBackward"


def test_float64_inputs_are_left_alone_as_by_f_conv2d():
    """Autocast never casts float64 (PyTorch's policy): neither the eager path nor the registered op's
    Autocast kernel."""
    x, w = torch.randn(2, 4, 9, 9, dtype=torch.float64), torch.randn(4, 1, 3, 3, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.conv2d(x, w, padding=1, groups=4).dtype == torch.float64
        assert gt.conv2d_depthwise(x, w, padding=1).dtype == torch.float64
        assert torch.ops.gpuops.conv2d_depthwise(x, w, None, [1, 1], [1, 1], [1, 1]).dtype == torch.float64


def test_depthwise_under_autocast_matches_f_conv2d():
    """The failure users hit: a bf16 autocast training step with a float32 depthwise weight."""
    x, w = torch.randn(2, 4, 9, 9), torch.randn(4, 1, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gt.conv2d_depthwise(x, w, padding=1)
        ref = F.conv2d(x, w, padding=1, groups=4)
    assert y.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref.float(), rtol=2e-2, atol=5e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module = gt.Conv2dDepthwise(4, 3, padding=1)
        assert module(x).dtype == torch.bfloat16


def test_elementwise_ops_keep_their_input_dtype():
    x = torch.randn(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gt.gsmelu(x).dtype == torch.float32


def test_autocast_under_torch_compile():
    x, w = torch.randn(2, 4, 9, 9), torch.randn(4, 1, 3, 3)
    torch._dynamo.reset()

    @torch.compile(fullgraph=True, backend="aot_eager")
    def step(t, k):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return gt.conv2d_depthwise(t, k, padding=1)
    out = step(x, w)
    assert out.dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(out, gt.conv2d_depthwise(x, w, padding=1))
