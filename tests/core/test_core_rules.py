"""Rules every op shares (gpuops/_core.py): outputs given by the caller, empty spatial axes, and
parameter ranges — one table, every op family."""
import numpy as np
import pytest

import gpuops

torch = pytest.importorskip("torch")

IMG = np.zeros((1, 2, 4, 4))
EMPTY_H = np.zeros((1, 2, 0, 4))

BAD = [
    ("transposed numpy out", lambda: gpuops.gsmelu(np.zeros((4, 4)), out=np.zeros((4, 4)).T), ValueError,
     "out must be C-contiguous"),
    ("expanded torch out", lambda: gpuops.gsmelu(torch.zeros(16), out=torch.zeros(1).expand(16)), ValueError,
     "out must be C-contiguous"),
    ("out of another kind", lambda: gpuops.gsmelu(np.zeros(3), out=torch.zeros(3, dtype=torch.float64)), TypeError,
     "out must be a numpy array"),
    ("strided out of ncrelu", lambda: gpuops.ncrelu(np.zeros((2, 2)), out=np.zeros((2, 8))[:, ::2]), ValueError,
     "out must be C-contiguous"),
    ("empty H with padding: depthwise", lambda: gpuops.conv2d_depthwise(EMPTY_H, np.ones((2, 1, 1, 1)), padding=1),
     ValueError, "non-empty"),
    ("empty H with padding: im2col", lambda: gpuops.im2col(np.zeros((1, 0, 4)), 1, padding=1), ValueError,
     "non-empty"),
    ("empty H with padding: sampler", lambda: gpuops.spatial_correlation_sample(EMPTY_H, EMPTY_H, padding=1),
     ValueError, "non-empty"),
    ("empty H with padding: correlation", lambda: gpuops.correlation(EMPTY_H, EMPTY_H, pad_size=2), ValueError,
     "non-empty"),
    ("huge padding", lambda: gpuops.im2col(IMG, 1, padding=2**62), ValueError, "padding must be below 2\\*\\*31"),
    ("huge stride", lambda: gpuops.conv2d_depthwise(IMG, np.ones((2, 1, 1, 1)), stride=2**40), ValueError,
     "stride must be below"),
    ("backward out tuple of the wrong length",
     lambda: gpuops.spatial_correlation_sample_backward(np.zeros((1, 1, 1, 4, 4)), IMG, IMG, out=(None,)),
     TypeError, "out must be None or a tuple"),
]


@pytest.mark.parametrize("call,error,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_rule(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_contiguous_out_is_written():
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    out = np.empty((3, 4))
    assert gpuops.gsmelu(x, out=out) is out
    np.testing.assert_allclose(out, gpuops.gsmelu(x))
    t_out = torch.empty(3, 4, dtype=torch.float64)
    assert gpuops.gsmelu(torch.from_numpy(x), out=t_out) is t_out
    np.testing.assert_allclose(t_out.numpy(), gpuops.gsmelu(x))


def test_arrays_on_different_devices_are_refused():
    # the rule every op's checks apply (gpuops._core.same_dtype_and_device); tests/gpu/test_gpu_multi_device.py
    # checks it through the ops on two GPUs
    from gpuops import _core
    x = _core.Arr(None, _core.TORCH, (2, 3), "float32", 0, "x")
    weight = _core.Arr(None, _core.TORCH, (2, 3), "float32", 1, "weight")
    with pytest.raises(ValueError, match=r"weight must be on the device of x \(cuda:0\), got cuda:1"):
        _core.same_dtype_and_device(x, weight)
    host = _core.Arr(None, _core.TORCH, (2, 3), "float32", -1, "weight")
    with pytest.raises(ValueError, match=r"weight must be on the device of x \(cuda:0\), got cpu"):
        _core.same_dtype_and_device(x, host)
