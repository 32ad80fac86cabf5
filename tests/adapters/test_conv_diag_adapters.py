"""Tier 4: torch and JAX adapters of conv2d_depthwise, im2col, col2im, dgmm, cdgmm on CPU beyond the contract
battery (test_op_battery.py runs each op's own example): other strides, dilations, multipliers, sides and
layouts, complex dtypes, the module, channels_last, the pyinn drop-in; values against torch's own operators
(F.conv2d(groups=C), F.unfold, F.fold), jax.lax.conv_general_dilated and gpuops.reference."""
import numpy as np
import pytest

from gpuops import reference as R

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import gpuops.torch as gt  # noqa: E402
from gpuops.compat import pyinn  # noqa: E402


def _t(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).requires_grad_()


@pytest.mark.parametrize("stride,padding,dilation,mult,bias", [(1, 1, 1, 1, True), (2, (1, 0), (1, 2), 2, False),
                                                               ((1, 2), 2, 1, 3, True)])
def test_conv2d_depthwise_values_gradcheck(stride, padding, dilation, mult, bias):
    x, w = _t(2, 3, 9, 8), _t(3 * mult, 1, 3, 2, seed=1)
    b = _t(3 * mult, seed=2) if bias else None
    y = gt.conv2d_depthwise(x, w, b, stride=stride, padding=padding, dilation=dilation)
    ref = F.conv2d(x, w, b, stride, padding, dilation, groups=3)
    torch.testing.assert_close(y, ref)
    inputs = (x, w) + ((b,) if bias else ())
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, inputs, g), torch.autograd.grad(ref, inputs, g))
    assert torch.autograd.gradcheck(
        lambda *t: gt.conv2d_depthwise(t[0], t[1], t[2] if bias else None, stride=stride, padding=padding,
                                       dilation=dilation), inputs)


def test_conv_opcheck_compile_module_channels_last():
    x, w, b = _t(2, 3, 6, 5, dtype=torch.float32), _t(3, 1, 3, 3, seed=1, dtype=torch.float32), _t(3, seed=2,
                                                                                                  dtype=torch.float32)
    torch.library.opcheck(torch.ops.gpuops.conv2d_depthwise.default, (x, w, None, [2, 2], [0, 0], [1, 1]))
    m = gt.Conv2dDepthwise(3, 3, padding=1, depth_multiplier=2)
    ref = torch.nn.Conv2d(3, 6, 3, padding=1, groups=3)
    assert m.weight.shape == ref.weight.shape and m.bias.shape == ref.bias.shape
    # nn.Conv2d's init for fan_in 9: kaiming_uniform(a=√5) and the bias both give U(±1/3)
    assert m.bias.abs().max() <= 1 / 3 and m.weight.abs().max() <= 1 / 3 and m.weight.std() > 0.1
    torch._dynamo.reset()
    f = torch.compile(lambda t: m(t).square().sum(), fullgraph=True)
    xc = x.detach().to(memory_format=torch.channels_last)
    torch.testing.assert_close(f(xc), F.conv2d(xc, m.weight, m.bias, 1, 1, 1, 3).square().sum(), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_conv_16bit(dtype):
    x, w = torch.randn(2, 4, 8, 8, dtype=dtype), torch.randn(4, 1, 3, 3, dtype=dtype)
    y = gt.conv2d_depthwise(x, w, padding=1)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), F.conv2d(x.double(), w.double(), padding=1, groups=4), rtol=3e-2, atol=6e-2)


def test_im2col_col2im():
    x = _t(2, 3, 7, 6)
    y = gt.im2col(x, 3, stride=2, padding=1, dilation=1)
    torch.testing.assert_close(y, F.unfold(x, 3, padding=1, stride=2).view(2, 3, 3, 3, 4, 3))
    assert torch.autograd.gradcheck(lambda t: gt.im2col(t, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2)), (x,))
    c = _t(2, 3, 2, 2, 3, 3, seed=3)
    z = gt.col2im(c, 2, stride=2, input_size=(7, 6))
    torch.testing.assert_close(z, F.fold(c.reshape(2, 12, 9), (7, 6), 2, stride=2))
    torch.library.opcheck(torch.ops.gpuops.col2im.default, (c.detach().float().requires_grad_(), [2, 2], [2, 2],
                                                            [0, 0], [1, 1], None))


def test_dgmm_cdgmm():
    a, x = _t(4, 5), _t(5, seed=1)
    np.testing.assert_allclose(gt.dgmm(a, x).detach(), R.dgmm(a.detach(), x.detach()))      # side "auto"
    xl = _t(4, seed=2)
    np.testing.assert_allclose(gt.dgmm(a, xl).detach(), R.dgmm(a.detach(), xl.detach()))
    assert torch.autograd.gradcheck(lambda a, x: gt.dgmm(a, x, side="left"), (a, xl))
    az, xz = _t(4, 5, dtype=torch.complex128), _t(4, seed=3, dtype=torch.complex128)
    np.testing.assert_allclose(gt.cdgmm(az, xz).detach(), R.cdgmm(az.detach(), xz.detach()))
    assert torch.autograd.gradcheck(gt.cdgmm, (az, xz))
    ap, xp = _t(4, 5, 2), _t(5, 2, seed=4)
    np.testing.assert_allclose(gt.cdgmm(ap, xp).detach(), R.cdgmm(ap.detach(), xp.detach()))
    assert torch.autograd.gradcheck(gt.cdgmm, (ap, xp))
    torch.library.opcheck(torch.ops.gpuops.dgmm.default, (a.detach().float().requires_grad_(),
                                                          x.detach().float().requires_grad_(), "auto"))


def test_pyinn_dropin():
    x, w, b = _t(2, 3, 6, 6), _t(3, 1, 3, 3, seed=1), _t(3, seed=2)
    torch.testing.assert_close(pyinn.conv2d_depthwise(x, w, b, 1, 1), F.conv2d(x, w, b, 1, 1, groups=3))
    m = pyinn.Conv2dDepthwise(3, 3, padding=1).double()
    assert isinstance(m, torch.nn.Conv2d) and m.groups == 3
    torch.testing.assert_close(m(x), F.conv2d(x, m.weight, m.bias, 1, 1, groups=3))
    cols = pyinn.im2col(x, 3, 1, 1)
    torch.testing.assert_close(cols, F.unfold(x, 3, padding=1).view(2, 3, 3, 3, 6, 6))
    torch.testing.assert_close(pyinn.col2im(cols, 3, 1, 1), F.fold(cols.reshape(2, 27, 36), (6, 6), 3, padding=1))
    sq = _t(3, 3)
    np.testing.assert_allclose(pyinn.dgmm(sq, x[0, 0, 0, :3]).detach(),                          # square: columns
                               R.dgmm(sq.detach(), x[0, 0, 0, :3].detach(), side="right"))
    ap, xp = _t(3, 4, 2), _t(3, 2, seed=5)
    (pyinn.cdgmm(ap, xp) ** 2).sum().backward()
    assert xp.grad is not None and torch.isfinite(xp.grad).all()


def test_jax_cdgmm_complex():
    """Complex arrays (the battery's cdgmm example is real pairs): values, and the gradient against JAX's own
    autodiff of the product."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import gpuops.jax as gj
    a = np.random.default_rng(1).standard_normal((4, 5))
    az = jnp.asarray(a + 1j * a[::-1])
    dz = jnp.asarray(a[:, 0] - 2j)
    np.testing.assert_allclose(gj.cdgmm(az, dz), R.cdgmm(az, dz))
    np.testing.assert_allclose(jax.grad(lambda t: jnp.abs(gj.cdgmm(t, dz)).sum())(az),
                               jax.grad(lambda t: jnp.abs(t * dz[:, None]).sum())(az))


def test_jax_conv2d_depthwise_jit_grad_vmap():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import gpuops.jax as gj
    rng = np.random.default_rng(0)
    x, w, b = (jnp.asarray(rng.standard_normal(s)) for s in ((2, 3, 9, 8), (6, 1, 3, 2), (6,)))

    def ref(x, w, b=None):
        y = jax.lax.conv_general_dilated(x, w, (2, 1), ((1, 1), (2, 2)), rhs_dilation=(1, 2), feature_group_count=3)
        return y if b is None else y + b[None, :, None, None]

    p = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    np.testing.assert_allclose(jax.jit(lambda *a: gj.conv2d_depthwise(*a, **p))(x, w, b), ref(x, w, b), rtol=1e-12,
                               atol=1e-12)
    grads = jax.grad(lambda *a: (gj.conv2d_depthwise(*a, **p) ** 2).sum(), argnums=(0, 1, 2))(x, w, b)
    for got, want in zip(grads, jax.grad(lambda *a: (ref(*a) ** 2).sum(), argnums=(0, 1, 2))(x, w, b)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    batched = jax.vmap(lambda x, w: gj.conv2d_depthwise(x, w, **p))(jnp.stack([x, 2 * x]), jnp.stack([w, -w]))
    np.testing.assert_allclose(batched[1], ref(2 * x, -w), rtol=1e-12, atol=1e-12)
