"""Correlation drop-ins reproduce the originals (spatial-correlation-sampler, NVIDIA flownet2's
correlation_package, limacv's CorrTorch), checked against independent float64 pure-torch references
written from the originals' semantics; their modules check parameters at construction and script."""
import warnings

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from helpers import torch_correlation  # noqa: E402
from gpuops.compat import correlation_torch, flownet2, spatial_correlation_sampler as scs  # noqa: E402


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _scs_ref(in1, in2, kernel_size=1, patch_size=1, stride=1, padding=0, dilation=1, dilation_patch=1):
    """originals.md §5 (CPU code): raw sums, shift (ph - (P-1)//2)*dp, zero padding of both inputs."""
    (kH, kW), (pH, pW), (sH, sW), (padH, padW), (dH, dW), (dpH, dpW) = map(
        _pair, (kernel_size, patch_size, stride, padding, dilation, dilation_patch))
    N, C, H, W = in1.shape
    oH = (H + 2 * padH - ((kH - 1) * dH + 1)) // sH + 1
    oW = (W + 2 * padW - ((kW - 1) * dW + 1)) // sW + 1
    M = 40
    a, b = F.pad(in1, (M,) * 4), F.pad(in2, (M,) * 4)
    out = in1.new_zeros(N, pH, pW, oH, oW)
    for ph in range(pH):
        for pw in range(pW):
            dy, dx = (ph - (pH - 1) // 2) * dpH, (pw - (pW - 1) // 2) * dpW
            acc = 0
            for i in range(kH):
                for j in range(kW):
                    y0, x0 = M - padH + i * dH, M - padW + j * dW
                    A = a[:, :, y0:y0 + (oH - 1) * sH + 1:sH, x0:x0 + (oW - 1) * sW + 1:sW]
                    B = b[:, :, y0 + dy:y0 + dy + (oH - 1) * sH + 1:sH, x0 + dx:x0 + dx + (oW - 1) * sW + 1:sW]
                    acc = acc + (A * B).sum(1)
            out[:, ph, pw] = acc
    return out


def _caffe_ref(in1, in2, pad_size, kernel_size, max_displacement, stride1, stride2):
    """originals.md §6: Caffe correlation, y-displacement-major channels, divided by k²·C."""
    return torch_correlation(in1, in2, pad_size, kernel_size, max_displacement, stride1, stride2)


def _corrtorch_ref(in1, in2, md):
    """originals.md §7 (the original's own expression)."""
    in2p = F.pad(in2, (md,) * 4)
    H, W = in1.shape[2:]
    D = 2 * md + 1
    return torch.cat([(in1 * in2p[:, :, dy:dy + H, dx:dx + W]).mean(1, keepdim=True)
                      for dy in range(D) for dx in range(D)], 1)


def _inputs(N=2, C=3, H=7, W=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(N, C, H, W, dtype=torch.float64, generator=g).requires_grad_()
    b = torch.randn(N, C, H, W, dtype=torch.float64, generator=g).requires_grad_()
    return a, b


def _check(fn, ref, a, b):
    out = fn(a, b)
    exp = ref(a, b)
    assert out.shape == exp.shape and out.dtype == torch.float64
    torch.testing.assert_close(out, exp, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(exp)
    ga, gb = torch.autograd.grad(out, (a, b), g)
    ea, eb = torch.autograd.grad(exp, (a, b), g)
    torch.testing.assert_close(ga, ea, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gb, eb, rtol=1e-12, atol=1e-12)
    return out


# ---------------------------------------------------------------- spatial_correlation_sampler (§5)

SCS_CASES = [
    dict(),
    dict(kernel_size=1, patch_size=5, stride=1, padding=0, dilation=1, dilation_patch=2),   # FlowNetC-like
    dict(kernel_size=3, patch_size=3, stride=2, padding=1, dilation=1, dilation_patch=1),
    dict(kernel_size=(3, 1), patch_size=(3, 5), stride=(1, 2), padding=(2, 0), dilation=(2, 1),
         dilation_patch=(1, 2)),
    dict(kernel_size=1, patch_size=4, dilation_patch=2),            # even patch + dilation_patch (CPU shift)
    dict(kernel_size=2, patch_size=(2, 4), stride=3, padding=2, dilation=2, dilation_patch=(3, 1)),
]


@pytest.mark.parametrize("kw", SCS_CASES)
def test_spatial_correlation_sample_positional(kw):
    a, b = _inputs()
    args = [kw.get(n, d) for n, d in (("kernel_size", 1), ("patch_size", 1), ("stride", 1), ("padding", 0),
                                      ("dilation", 1), ("dilation_patch", 1))]
    _check(lambda x, y: scs.spatial_correlation_sample(x, y, *args), lambda x, y: _scs_ref(x, y, **kw), a, b)


@pytest.mark.parametrize("kw", SCS_CASES)
def test_spatial_correlation_sampler_module(kw):
    a, b = _inputs(seed=1)
    m = scs.SpatialCorrelationSampler(**kw)
    _check(m, lambda x, y: _scs_ref(x, y, **kw), a, b)


def test_spatial_correlation_defaults_are_channel_dot_product():
    a, b = _inputs(seed=2)
    out = scs.SpatialCorrelationSampler()(a, b)
    assert out.shape == (2, 1, 1, 7, 7)
    torch.testing.assert_close(out[:, 0, 0], (a * b).sum(1))
    torch.testing.assert_close(scs.spatial_correlation_sample(a, b), out)


def test_spatial_correlation_even_patch_shift_is_cpu_definition():
    # P=4, dp=2: shifts {-2, 0, 2, 4} (CPU code), not the CUDA forward's {-3, -1, 1, 3}
    a = torch.zeros(1, 1, 1, 9, dtype=torch.float64)
    b = torch.zeros(1, 1, 1, 9, dtype=torch.float64)
    a[..., 4] = 1.0
    b[..., 4 + 4] = 3.0
    out = scs.spatial_correlation_sample(a, b, 1, (1, 4), 1, 0, 1, (1, 2))
    assert out[0, 0, :, 0, 4].tolist() == [0.0, 0.0, 0.0, 3.0]


# ---------------------------------------------------------------- flownet2 (§6)

FN_CASES = [
    (4, 1, 4, 1, 2),     # FlowNetC-like, small
    (2, 1, 2, 1, 1),
    (3, 3, 2, 2, 1),     # kernel_size > 1, stride1 > 1 (NVIDIA wrong here; Caffe semantics)
    (1, 3, 2, 1, 2),     # pad < max_displacement
    (5, 1, 3, 3, 3),
]


@pytest.mark.parametrize("p", FN_CASES)
def test_flownet_function_apply(p):
    a, b = _inputs(seed=3)
    _check(lambda x, y: flownet2.CorrelationFunction.apply(x, y, *p, 1), lambda x, y: _caffe_ref(x, y, *p), a, b)


@pytest.mark.parametrize("p", FN_CASES)
def test_flownet_module_and_old_style(p):
    a, b = _inputs(seed=4)
    m = flownet2.Correlation(*p, corr_multiply=5)          # corr_multiply is ignored
    out = _check(m, lambda x, y: _caffe_ref(x, y, *p), a, b)
    torch.testing.assert_close(flownet2.CorrelationFunction(*p)(a, b), out)


def test_flownet_equals_spatial_sampler_mapping():
    a, b = _inputs(seed=5)
    pad, k, md, s1, s2 = 4, 3, 2, 1, 2
    D = 2 * (md // s2) + 1
    out = flownet2.Correlation(pad, k, md, s1, s2)(a, b)
    raw = scs.spatial_correlation_sample(a, b, k, D, s1, pad - md, 1, s2)
    torch.testing.assert_close(out, raw.reshape(out.shape) / (k * k * a.shape[1]))


def test_flownet_defaults():
    with pytest.raises(ValueError, match="kernel_size must be >= 1, got 0"):   # NVIDIA divided by 0 (inf/NaN)
        flownet2.Correlation()
    m = flownet2.Correlation(kernel_size=1)
    assert (m.pad_size, m.kernel_size, m.max_displacement, m.stride1, m.stride2, m.corr_multiply) == (0, 1, 0, 1, 2, 1)
    # CorrelationFunction.apply defaults: pad 3, k 3, md 20, s1 1, s2 2 -> 441 channels
    a, b = _inputs(N=1, C=2, H=38, W=39, seed=6)
    out = flownet2.CorrelationFunction.apply(a, b)
    assert out.shape == (1, 441, 2, 3)
    torch.testing.assert_close(out, _caffe_ref(a, b, 3, 3, 20, 1, 2), rtol=1e-12, atol=1e-12)


def test_flownet_issue_194_window_centred():
    # all-ones 3x3, k=3, md=0: Caffe gives 1 (NVIDIA's shifted window gave 5/9)
    x = torch.ones(1, 1, 3, 3, dtype=torch.float64)
    out = flownet2.Correlation(0, 3, 0, 1, 1)(x, x)
    assert out.shape == (1, 1, 1, 1) and out.item() == pytest.approx(1.0)


# ---------------------------------------------------------------- correlation_torch (§7)

@pytest.mark.parametrize("md", [0, 1, 3])
def test_corrtorch_values_and_grads(md):
    a, b = _inputs(seed=7)
    m = correlation_torch.CorrTorch(md, 1, md, 1, 1)
    out = _check(m, lambda x, y: _corrtorch_ref(x, y, md), a, b)
    assert out.shape == (2, (2 * md + 1) ** 2, 7, 7)
    # identical to NVIDIA Correlation(md, 1, md, 1, 1)
    torch.testing.assert_close(out, flownet2.Correlation(md, 1, md, 1, 1)(a, b))


def test_corrtorch_defaults_and_asserts():
    m = correlation_torch.CorrTorch()
    assert m.max_hdisp == 4 and m.padlayer.padding == (4, 4, 4, 4)
    a, b = _inputs(N=2, C=3, H=9, W=10, seed=8)
    out = m(a, b)
    assert out.shape == (2, 81, 9, 10)
    torch.testing.assert_close(out, _corrtorch_ref(a, b, 4), rtol=1e-12, atol=1e-12)
    for bad in (dict(kernel_size=3), dict(pad_size=3), dict(stride1=2), dict(stride2=2)):
        with pytest.raises(AssertionError):
            correlation_torch.CorrTorch(**bad)
    correlation_torch.CorrTorch(corr_multiply=7)            # ignored, accepted


# ---------------------------------------------------------------- parameters checked at construction


def _raised(fn):
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    return type(info.value), str(info.value)


SCS_BAD = [dict(kernel_size=0), dict(patch_size=(3, 0)), dict(stride=0), dict(padding=-1), dict(dilation=(1, 0)),
           dict(dilation_patch=0), dict(kernel_size=1.5), dict(stride=(1, 2, 3)), dict(padding=True),
           dict(patch_size="3")]


@pytest.mark.parametrize("bad", SCS_BAD)
def test_spatial_correlation_sampler_checks_at_construction(bad):
    a, b = _inputs()
    assert _raised(lambda: scs.SpatialCorrelationSampler(**bad)) == _raised(
        lambda: scs.spatial_correlation_sample(a, b, **bad))


FN_BAD = [dict(kernel_size=0), dict(kernel_size=2), dict(kernel_size=-1), dict(pad_size=-1),
          dict(max_displacement=-2), dict(stride1=0), dict(stride2=0), dict(kernel_size=1.0), dict(stride1=True),
          dict(pad_size=(1, 1))]


@pytest.mark.parametrize("bad", FN_BAD)
def test_flownet_correlation_checks_at_construction(bad):
    a, b = _inputs()
    p = dict(dict(pad_size=2, kernel_size=1, max_displacement=2, stride1=1, stride2=1), **bad)
    assert _raised(lambda: flownet2.Correlation(**p)) == _raised(
        lambda: flownet2.CorrelationFunction.apply(a, b, *p.values()))


@pytest.mark.parametrize("md", [-1, 2.0])
def test_corrtorch_checks_at_construction(md):
    a, b = _inputs()
    assert _raised(lambda: correlation_torch.CorrTorch(md, 1, md)) == _raised(
        lambda: flownet2.CorrelationFunction.apply(a, b, md, 1, md, 1, 1))


def test_module_parameters_are_normalised():
    m = scs.SpatialCorrelationSampler(3, (1, 5), 2, 0, (1, 2), 2)
    assert (m.kernel_size, m.patch_size, m.stride, m.padding, m.dilation, m.dilation_patch) == (
        [3, 3], [1, 5], [2, 2], [0, 0], [1, 2], [2, 2])
    import numpy as np
    m = flownet2.Correlation(np.int64(4), 1, 4, 1, 2)
    assert type(m.pad_size) is int and m.pad_size == 4


# ---------------------------------------------------------------- torch.jit.script


def _script(obj):
    with warnings.catch_warnings():       # TorchScript is deprecated, but the originals' users script
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(obj)


def _check_scripted(module, *args):
    """The scripted module gives the eager module's values and gradients (CPU, float64)."""
    a, b = _inputs(seed=9)
    scripted = _script(module)
    out, exp = scripted(a, b, *args), module(a, b, *args)
    torch.testing.assert_close(out, exp, rtol=0, atol=0)
    g = torch.randn_like(exp)
    for got, want in zip(torch.autograd.grad(out, (a, b), g), torch.autograd.grad(exp, (a, b), g)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("kw", SCS_CASES)
def test_spatial_correlation_sampler_scripts(kw):
    _check_scripted(scs.SpatialCorrelationSampler(**kw))


def test_spatial_correlation_sample_function_scripts():
    class UsesFunction(torch.nn.Module):        # a user module calling the function with int-or-pair arguments
        def forward(self, input1, input2):
            return scs.spatial_correlation_sample(input1, input2, 3, (3, 5), 1, 1, (1, 2), 2)

    _check_scripted(UsesFunction())
    a, b = _inputs()
    torch.testing.assert_close(_script(scs.spatial_correlation_sample)(a, b, 1, 3),
                               scs.spatial_correlation_sample(a, b, 1, 3), rtol=0, atol=0)


@pytest.mark.parametrize("p", FN_CASES)
def test_flownet_correlation_scripts(p):
    _check_scripted(flownet2.Correlation(*p))


def test_corrtorch_scripts():
    _check_scripted(correlation_torch.CorrTorch(2, 1, 2, 1, 1))
