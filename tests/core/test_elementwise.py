"""Tier 1: gsmelu / ncrelu through the framework-agnostic API on the CPU path, against gpuops.reference
(spec/ops.md §1-§2), backwards against the forward's derivative, plus every bad-input rule."""
import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpuops
import gpuops.elementwise
from gpuops import reference as R
from helpers import assert_close, cpu_matrix, rounded, to_f64, to_kind

torch = pytest.importorskip("torch")

PARAMS = [dict(), dict(slope=1.5, neg_slope=-0.2, alpha=0.3, beta=0.05, delta_t=0.7),
          dict(slope=0.0, neg_slope=1.0, alpha=0.0, beta=2.0, delta_t=-1.0)]


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 0.5, shape)
    return x


@cpu_matrix()
@pytest.mark.parametrize("params", PARAMS)
def test_gsmelu_forward_backward(kind, dtype, params):
    x = _inputs((3, 37))
    g = _inputs((3, 37), seed=1)
    xr, gr = rounded(x, dtype), rounded(g, dtype)
    y = gpuops.gsmelu(to_kind(x, kind, dtype), **params)
    assert type(y).__module__.split(".")[0] == kind.split("_")[0]
    assert str(y.dtype).endswith(dtype) or dtype == "bfloat16" and "bfloat16" in str(y.dtype)
    assert_close(y, R.gsmelu(xr, **params), dtype)
    gx = gpuops.gsmelu_backward(to_kind(g, kind, dtype), to_kind(x, kind, dtype), **params)
    assert_close(gx, R.gsmelu_backward(gr, xr, **params), dtype)


@pytest.mark.parametrize("params", PARAMS)
def test_gsmelu_backward_is_the_derivative(params):
    """Central differences of the forward (float64; gsmelu is C¹, so they hold across the knots too)."""
    x, g, eps = _inputs((64,), seed=3), _inputs((64,), seed=4), 1e-6
    numeric = (gpuops.gsmelu(x + eps, **params) - gpuops.gsmelu(x - eps, **params)) / (2 * eps)
    np.testing.assert_allclose(gpuops.gsmelu_backward(g, x, **params), g * numeric, rtol=1e-6, atol=1e-7)


def test_gsmelu_is_c1_at_the_knots():
    a, b = 0.3, 0.2
    eps = 1e-7
    for knot in (-a, b):
        x = np.array([knot - eps, knot, knot + eps])
        y = gpuops.gsmelu(x, alpha=a, beta=b, neg_slope=0.1)
        d = gpuops.gsmelu_backward(np.ones(3), x, alpha=a, beta=b, neg_slope=0.1)
        assert abs(y[2] - y[0]) < 1e-6 and abs(d[2] - d[0]) < 1e-5


def test_gsmelu_nan_and_inf():
    x = np.array([np.nan, np.inf, -np.inf, 0.0])
    y = gpuops.gsmelu(x, neg_slope=0.5)
    assert np.isnan(y[0]) and y[1] == np.inf and y[2] == -np.inf
    d = gpuops.gsmelu_backward(np.ones(4), x, slope=2.0, neg_slope=0.5)
    assert d[0] == 2.0 and d[1] == 2.0 and d[2] == 0.5       # NaN takes the g₊ branch


@cpu_matrix()
def test_ncrelu_forward_backward(kind, dtype):
    x = _inputs((2, 3, 4, 5))
    x[0, 0, 0, :2] = 0.0
    g = _inputs((2, 6, 4, 5), seed=2)
    xr = rounded(x, dtype)
    y = gpuops.ncrelu(to_kind(x, kind, dtype))
    assert tuple(y.shape) == (2, 6, 4, 5)
    assert_close(y, R.ncrelu(xr), dtype)
    gx = gpuops.ncrelu_backward(to_kind(g, kind, dtype), to_kind(x, kind, dtype))
    assert_close(gx, R.ncrelu_backward(rounded(g, dtype), xr), dtype)


def test_ncrelu_nan_goes_to_second_half_and_zero_gradient_to_first():
    x = np.array([[np.nan, 0.0, -0.0, 2.0]])[:, :, None]
    y = gpuops.ncrelu(x)
    assert y[0, 0, 0] == 0 and np.isnan(y[0, 4, 0])
    g = np.arange(8.0).reshape(1, 8, 1)
    np.testing.assert_array_equal(gpuops.ncrelu_backward(g, x)[0, :, 0], [4.0, 1.0, 2.0, 3.0])


def test_ncrelu_backward_is_the_derivative():
    """ncrelu is positively homogeneous: <g, ncrelu(x)> = <ncrelu_backward(g, x), x> (Euler)."""
    x, g = _inputs((2, 3, 7), seed=5), _inputs((2, 6, 7), seed=6)
    np.testing.assert_allclose((gpuops.ncrelu_backward(g, x) * x).sum(), (g * gpuops.ncrelu(x)).sum(), rtol=1e-14)


def test_noncontiguous_and_expanded_inputs():
    x = _inputs((6, 8)).T                                    # transposed view
    np.testing.assert_allclose(gpuops.gsmelu(x), R.gsmelu(x))
    xt = torch.from_numpy(_inputs((4, 5)))
    g = torch.ones(1, 1, dtype=torch.float64).expand(4, 5)   # stride-0 gradient
    np.testing.assert_allclose(gpuops.gsmelu_backward(g, xt).numpy(), R.gsmelu_backward(g, xt))
    xn = torch.from_numpy(_inputs((2, 5, 3))).permute(0, 2, 1)
    np.testing.assert_allclose(gpuops.ncrelu(xn).numpy(), R.ncrelu(xn))
    gn = torch.ones(1, 1, 1, dtype=torch.float64).expand(2, 6, 5)
    np.testing.assert_allclose(gpuops.ncrelu_backward(gn, xn).numpy(), np.ones((2, 3, 5)))


def test_empty_and_out_argument():
    assert gpuops.gsmelu(np.zeros((0, 3))).shape == (0, 3)
    assert gpuops.ncrelu(np.zeros((0, 3))).shape == (0, 6)
    out = np.empty(5)
    x = _inputs((5,))
    assert gpuops.gsmelu(x, out=out) is out
    np.testing.assert_allclose(out, R.gsmelu(x))


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=4),
       alpha=st.floats(0.0, 2.0), beta=st.floats(0.01, 2.0), slope=st.floats(-2, 2), neg=st.floats(-2, 2))
def test_property_random_shapes_and_params(shape, alpha, beta, slope, neg):
    x = np.random.default_rng(len(shape)).normal(size=shape)
    p = dict(alpha=alpha, beta=beta, slope=slope, neg_slope=neg)
    np.testing.assert_allclose(gpuops.gsmelu(x, **p), R.gsmelu(x, **p), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gpuops.ncrelu(x), R.ncrelu(x))


# --- bad input: every rule raises a clear error naming the argument --------------------------------

BAD = [
    (lambda: gpuops.gsmelu(np.arange(4)), TypeError, "x must have a floating dtype"),
    (lambda: gpuops.gsmelu(np.zeros(3, np.complex64)), TypeError, "x must have a floating dtype"),
    (lambda: gpuops.gsmelu([1.0, 2.0]), TypeError, "x must be an array"),
    (lambda: gpuops.gsmelu(np.zeros(3), alpha=0.0, beta=0.0), ValueError, "alpha + beta must be > 0"),
    (lambda: gpuops.gsmelu(np.zeros(3), alpha=-1.0, beta=0.5), ValueError, "alpha + beta must be > 0"),
    (lambda: gpuops.gsmelu(np.zeros(3), slope="1"), TypeError, "slope must be a real number"),
    (lambda: gpuops.gsmelu(np.zeros(3), beta=True), TypeError, "beta must be a real number"),
    (lambda: gpuops.gsmelu_backward(np.zeros(3, np.float32), np.zeros(3)), TypeError, "must have the dtype"),
    (lambda: gpuops.gsmelu_backward(np.zeros(4), np.zeros(3)), ValueError, "grad_out must have the shape"),
    (lambda: gpuops.gsmelu_backward(torch.zeros(3, dtype=torch.float64), np.zeros(3)), TypeError,
     "must be a numpy array"),
    (lambda: gpuops.gsmelu(np.zeros(3), out=np.zeros(4)), ValueError, "out must be"),
    (lambda: gpuops.ncrelu(np.zeros(3)), ValueError, "x must have at least 2 dimensions"),
    (lambda: gpuops.ncrelu(torch.zeros(2, 3, dtype=torch.int32)), TypeError, "x must have a floating dtype"),
    (lambda: gpuops.ncrelu_backward(np.zeros((2, 3)), np.zeros((2, 3))), ValueError,
     "grad_out must have shape"),
    (lambda: gpuops.gsmelu(torch.zeros(2, device="meta")), ValueError, "x must be on a CPU or CUDA device"),
]


@pytest.mark.parametrize("call,error,message", BAD, ids=[b[2] for b in BAD])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message.replace("+", r"\+")):
        call()


def test_docstring_examples():
    failures, tried = doctest.testmod(gpuops.elementwise, verbose=False)
    assert tried >= 2 and failures == 0


def test_import_is_cheap():
    import subprocess
    import sys
    code = "import sys, gpuops; print('numba' in sys.modules, 'torch' in sys.modules, 'jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


def test_cpu_returns_fresh_contiguous_output():
    x = _inputs((4, 3))
    y = gpuops.gsmelu(x)
    assert y.flags.c_contiguous and not np.shares_memory(x, y)
    assert to_f64(y).shape == (4, 3)
