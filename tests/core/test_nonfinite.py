"""Tier 1: NaN and ±Inf in the data (docs/ops.md, "Non-finite values"), for every op in gpuops.__all__ on
the CPU path (numpy float64 and float32, tiny shapes).

One value (NaN, +Inf or −Inf) is put at a known position of one input, and every output element is
checked against what IEEE arithmetic gives:

* an output whose formula uses the value is non-finite exactly as IEEE says: NaN for NaN; for ±Inf the
  sign of its coefficient, NaN where a coefficient is 0 (Inf·0 inside the window) or where +Inf and −Inf
  terms meet.  Elementwise ops and the ops without products by padding (dgmm, cdgmm, im2col, col2im)
  take the float64 reference of gpuops.reference evaluated on the same inputs as the answer.  For the
  windowed sums the reference multiplies by its zero padding (NaN·0 = NaN where gpuops drops the
  term), so it is used instead to count, per output, the terms holding the value and the sign of their
  coefficients;
* every other output equals the result without the value, bit for bit.  The depthwise ops may instead
  give NaN in an output plane where the value meets the zero padding (documented as either).

The RAFT lookups (patch_correlate, corr_lookup, corr_pyramid_lookup) take the reference's answer for their
features (its bilinear corners outside the map are zeros, not products) and, for a non-finite coordinate,
the answer docs/ops.md §9 specifies: the query samples zeros (``far_coordinate``).  Ops with a sequence
argument (a pyramid, corr_pyramid_backward's per-level gradients) run through `FLAT` with one array per
element, and return their results flat.
"""
import math

import numpy as np
import pytest

import gpuops
from gpuops import reference

#: counts of terms are multiples of positive constants of order 1/(k²·C); float residues are far smaller
_TOL = 1e-9
_DTYPE_TOL = {"float64": 1e-12, "float32": 2e-6}


def _parts(result):
    return result if isinstance(result, tuple) else (result,)


# ---------------------------------------------------------------------------------------------
# expected outputs


def by_reference(ref):
    """The reference's own IEEE arithmetic is the answer: nothing is multiplied by padding."""
    def expect(arrays, k, pos, value, params):
        injected = [a.copy() for a in arrays]
        injected[k][pos] = value
        with np.errstate(all="ignore"):
            want, clean = _parts(ref(*injected, **params)), _parts(ref(*arrays, **params))
        return [(w, w != c, None) for w, c in zip(want, clean)]
    return expect


def by_term_signs(ref, padding_may_give_nan=False):
    """For sums of products of two entries (times positive constants; a bias term has no second
    factor): which terms of each output hold ``arrays[k][pos]`` and the signs of their coefficients.

    The coefficient of the value in a term is one entry of another input, so evaluating the reference
    with arrays[k] one-hot at pos and the other inputs replaced by an indicator (entry > 0, < 0, == 0)
    counts those terms; zero padding contributes no term.  With every other input 0, only terms without
    a second factor remain (``alone``, always positive here)."""
    def expect(arrays, k, pos, value, params):
        onehot = np.zeros_like(arrays[k])
        onehot[pos] = 1.0

        def coefficient(others):
            args = [None if a is None else others(a).astype(np.float64) for a in arrays]
            args[k] = onehot
            hit = _parts(ref(*args, **params))
            args[k] = np.zeros_like(onehot)
            return [None if h is None else h - m for h, m in zip(hit, _parts(ref(*args, **params)))]

        alone = coefficient(np.zeros_like)
        signs = [coefficient(lambda a, f=f: f(a, 0)) for f in (np.greater, np.less, np.equal)]
        out = []
        for al, positive, negative, zero in zip(alone, *signs):
            if al is None:
                out.append((None, None, None))
                continue
            positive, negative, zero = positive - al > _TOL, negative - al > _TOL, zero - al > _TOL
            positive |= al > _TOL
            used = positive | negative | zero
            if math.isnan(value):
                want = np.full(used.shape, np.nan)
            else:
                sign = math.copysign(1.0, value)
                want = np.where(zero | positive & negative, np.nan, np.where(positive, sign, -sign) * np.inf)
            out.append((want, used, _planes(used) if padding_may_give_nan else None))
        return out
    return expect


#: a finite coordinate outside any image (below gpuops' 2**40 limit, so the reference treats it as a query)
_FAR = 1e9


def far_coordinate(ref):
    """RAFT lookups (docs/ops.md §9, "Non-finite coordinates sample zeros"): NaN or ±Inf in x or y makes
    all samples of that query 0 — dot output 0, L1 output mean_c |base_c|, coordinate gradient 0 (both
    components), no gradient to the sampled map.  That is what the reference gives when the coordinate
    is instead a finite one far outside the image (every corner is zero padding), so the answer is the
    reference there, finite everywhere, whichever non-finite value is injected."""
    def expect(arrays, k, pos, value, params):
        moved = [a.copy() for a in arrays]
        moved[k][pos] = _FAR
        want, clean = _parts(ref(*moved, **params)), _parts(ref(*arrays, **params))
        return [(w, w != c, None) for w, c in zip(want, clean)]
    return expect


def _planes(mask):
    """Every (n, c) plane (the first two axes) that holds a True entry."""
    if mask.ndim < 3:
        return mask
    hit = mask.reshape(mask.shape[:2] + (-1,)).any(-1)
    return np.broadcast_to(hit.reshape(hit.shape + (1,) * (mask.ndim - 2)), mask.shape)


# ---------------------------------------------------------------------------------------------
# complex pairs for cdgmm's reference: a view, no arithmetic (re + 1j·im would turn im = ±Inf into a
# NaN real part)


def _complex(pairs):
    return np.ascontiguousarray(pairs).view(np.complex128)[..., 0]


def _pairs(z):
    return np.ascontiguousarray(z).view(np.float64).reshape(z.shape + (2,))


def _cdgmm_ref(a, x, **params):
    return _pairs(reference.cdgmm(_complex(a), _complex(x), **params))


def _cdgmm_backward_ref(g, a, x, **params):
    return tuple(_pairs(z) for z in reference.cdgmm_backward(_complex(g), _complex(a), _complex(x), **params))


# ---------------------------------------------------------------------------------------------
# the table: (op, its inputs' names and shapes, parameters, expected outputs)

_CONV1 = dict(stride=1, padding=1, dilation=1)          # the CPU path for stride 1 multiplies by padding
_CONV2 = dict(stride=2, padding=(1, 2), dilation=(1, 2))
_SAMPLER = dict(kernel_size=3, patch_size=(3, 5), stride=1, padding=1, dilation=1, dilation_patch=(1, 2))
_CORRELATION = dict(pad_size=2, kernel_size=3, max_displacement=2, stride1=1, stride2=2)
_WINDOW = dict(kernel_size=3, stride=2, padding=1, dilation=1)
_INVOLUTION = dict(stride=(2, 1), padding=1, dilation=(1, 2))     # x (1, 4, 5, 6), kernel 3×2 → (3, 6)
_PATCH = dict(radius=1)
_LOOKUP = dict(radius=1, num_levels=2)


def _row(op, arrays, params, expect, label=""):
    return pytest.param(op, arrays, params, expect, id=op + label)


def _flat_results(result):
    return tuple(a for part in _parts(result) for a in (part if isinstance(part, tuple) else (part,)))


def _pyramid_backward(fn):
    return lambda g0, g1, fmap1, fmap2, **p: _flat_results(fn((g0, g1), fmap1, fmap2, **p))


def _lookup(fn):
    return lambda level0, level1, coords, **p: _flat_results(fn((level0, level1), coords, **p))


def _lookup_backward(fn):
    return lambda grad_out, level0, level1, coords, **p: _flat_results(fn(grad_out, (level0, level1), coords, **p))


#: ops with a sequence argument, called with its elements as separate arrays (results flattened)
FLAT = {"corr_pyramid_backward": _pyramid_backward(gpuops.corr_pyramid_backward),
        "corr_pyramid_lookup": _lookup(gpuops.corr_pyramid_lookup),
        "corr_pyramid_lookup_backward": _lookup_backward(gpuops.corr_pyramid_lookup_backward)}
_PYRAMID_BACKWARD_REF = _pyramid_backward(reference.corr_pyramid_backward)
_PYRAMID_LOOKUP_REF = _lookup(reference.corr_pyramid_lookup)
_PYRAMID_LOOKUP_BACKWARD_REF = _lookup_backward(reference.corr_pyramid_lookup_backward)
_LEVELS = dict(level0=(1, 4, 5, 4, 5), level1=(1, 4, 5, 2, 2))


ROWS = [
    _row("gsmelu", dict(x=(2, 3, 4)), {}, by_reference(reference.gsmelu)),
    _row("gsmelu", dict(x=(2, 3, 4)), dict(neg_slope=0.0), by_reference(reference.gsmelu), "-neg_slope0"),
    _row("gsmelu_backward", dict(grad_out=(2, 3, 4), x=(2, 3, 4)), {}, by_reference(reference.gsmelu_backward)),
    _row("ncrelu", dict(x=(2, 3, 4)), {}, by_reference(reference.ncrelu)),
    _row("ncrelu_backward", dict(grad_out=(2, 6, 4), x=(2, 3, 4)), {}, by_reference(reference.ncrelu_backward)),
    _row("dgmm", dict(a=(3, 4), x=(4,)), {}, by_reference(reference.dgmm), "-right"),
    _row("dgmm", dict(a=(3, 4), x=(3,)), {}, by_reference(reference.dgmm), "-left"),
    _row("dgmm_backward", dict(grad_out=(3, 4), a=(3, 4), x=(4,)), {}, by_reference(reference.dgmm_backward),
         "-right"),
    _row("dgmm_backward", dict(grad_out=(3, 4), a=(3, 4), x=(3,)), {}, by_reference(reference.dgmm_backward),
         "-left"),
    _row("cdgmm", dict(a=(3, 4, 2), x=(4, 2)), {}, by_reference(_cdgmm_ref), "-right"),
    _row("cdgmm", dict(a=(3, 4, 2), x=(3, 2)), {}, by_reference(_cdgmm_ref), "-left"),
    _row("cdgmm_backward", dict(grad_out=(3, 4, 2), a=(3, 4, 2), x=(4, 2)), {}, by_reference(_cdgmm_backward_ref),
         "-right"),
    _row("cdgmm_backward", dict(grad_out=(3, 4, 2), a=(3, 4, 2), x=(3, 2)), {}, by_reference(_cdgmm_backward_ref),
         "-left"),
    _row("conv2d_depthwise", dict(x=(2, 2, 4, 5), weight=(4, 1, 3, 3), bias=(4,)), _CONV1,
         by_term_signs(reference.conv2d_depthwise, padding_may_give_nan=True), "-stride1"),
    _row("conv2d_depthwise", dict(x=(1, 2, 5, 7), weight=(2, 1, 3, 3), bias=(2,)), _CONV2,
         by_term_signs(reference.conv2d_depthwise, padding_may_give_nan=True), "-stride2"),
    _row("conv2d_depthwise_backward", dict(grad_out=(2, 4, 4, 5), x=(2, 2, 4, 5), weight=(4, 1, 3, 3), bias=(4,)),
         _CONV1, by_term_signs(reference.conv2d_depthwise_backward, padding_may_give_nan=True), "-stride1"),
    _row("conv2d_depthwise_backward", dict(grad_out=(1, 2, 3, 4), x=(1, 2, 5, 7), weight=(2, 1, 3, 3), bias=(2,)),
         _CONV2, by_term_signs(reference.conv2d_depthwise_backward, padding_may_give_nan=True), "-stride2"),
    _row("im2col", dict(x=(2, 2, 4, 5)), _WINDOW, by_reference(reference.im2col)),
    _row("im2col_backward", dict(grad_out=(2, 2, 3, 3, 2, 3)), dict(_WINDOW, input_size=(4, 5)),
         by_reference(lambda g, input_size, kernel_size, **p: reference.col2im(g, kernel_size, input_size=input_size,
                                                                                **p))),
    _row("col2im", dict(cols=(2, 2, 3, 3, 2, 3)), dict(_WINDOW, input_size=(4, 5)), by_reference(reference.col2im)),
    _row("col2im_backward", dict(grad_out=(2, 2, 3, 5)), _WINDOW, by_reference(reference.im2col)),
    _row("spatial_correlation_sample", dict(input1=(1, 2, 4, 5), input2=(1, 2, 4, 5)), _SAMPLER,
         by_term_signs(reference.spatial_correlation_sample)),
    _row("spatial_correlation_sample_backward",
         dict(grad_out=(1, 3, 5, 4, 5), input1=(1, 2, 4, 5), input2=(1, 2, 4, 5)), _SAMPLER,
         by_term_signs(reference.spatial_correlation_sample_backward)),
    _row("correlation", dict(input1=(1, 2, 5, 6), input2=(1, 2, 5, 6)), _CORRELATION,
         by_term_signs(reference.correlation)),
    _row("correlation_backward", dict(grad_out=(1, 9, 3, 4), input1=(1, 2, 5, 6), input2=(1, 2, 5, 6)),
         _CORRELATION, by_term_signs(reference.correlation_backward)),
    # per-pixel kernels: sums of products, padding dropped on the CPU (the reference's padding counts no term)
    _row("involution", dict(x=(2, 2, 4, 5), weight=(2, 1, 3, 3, 4, 5)), dict(padding=1),
         by_term_signs(reference.involution), "-stride1"),
    _row("involution", dict(x=(1, 4, 5, 6), weight=(1, 2, 3, 2, 3, 6)), _INVOLUTION,
         by_term_signs(reference.involution), "-stride2"),
    _row("involution_backward", dict(grad_out=(2, 2, 4, 5), x=(2, 2, 4, 5), weight=(2, 1, 3, 3, 4, 5)),
         dict(padding=1), by_term_signs(reference.involution_backward), "-stride1"),
    _row("involution_backward", dict(grad_out=(1, 4, 3, 6), x=(1, 4, 5, 6), weight=(1, 2, 3, 2, 3, 6)),
         _INVOLUTION, by_term_signs(reference.involution_backward), "-stride2"),
    _row("weighted_filter", dict(x=(1, 2, 4, 5), weight=(1, 9, 4, 5), bias=(2,)), dict(splat=False),
         by_term_signs(reference.weighted_filter), "-gather"),
    _row("weighted_filter", dict(x=(1, 2, 4, 5), weight=(1, 9, 4, 5), bias=(2,)), dict(splat=True),
         by_term_signs(reference.weighted_filter), "-splat"),
    _row("weighted_filter_backward", dict(grad_out=(1, 2, 4, 5), x=(1, 2, 4, 5), weight=(1, 9, 4, 5), bias=(2,)),
         dict(splat=False), by_term_signs(reference.weighted_filter_backward), "-gather"),
    _row("weighted_filter_backward", dict(grad_out=(1, 2, 4, 5), x=(1, 2, 4, 5), weight=(1, 9, 4, 5), bias=(2,)),
         dict(splat=True), by_term_signs(reference.weighted_filter_backward), "-splat"),
    # RAFT lookups: the features by the reference's IEEE arithmetic (bilinear corners outside the map are 0
    # there as in gpuops, inside corners of weight 0 are terms: Inf·0 = NaN), the coordinates by
    # far_coordinate.  Coordinates come from _inputs: in [-1.5, 1.5], one exact 0 (an integer position), so
    # windows reach both across the top-left border and into the middle of the map.
    _row("patch_correlate", dict(base=(1, 2, 3, 3), input=(1, 2, 4, 5), coords=(1, 3, 3, 2)), _PATCH,
         dict(base=by_reference(reference.patch_correlate), input=by_reference(reference.patch_correlate),
              coords=far_coordinate(reference.patch_correlate)), "-dot"),
    _row("patch_correlate", dict(base=(1, 2, 3, 3), input=(1, 2, 4, 5), coords=(1, 3, 3, 2)), dict(_PATCH, l1=True),
         dict(base=by_reference(reference.patch_correlate), input=by_reference(reference.patch_correlate),
              coords=far_coordinate(reference.patch_correlate)), "-l1"),
    _row("patch_correlate_backward",
         dict(grad_out=(1, 9, 3, 3), base=(1, 2, 3, 3), input=(1, 2, 4, 5), coords=(1, 3, 3, 2)), _PATCH,
         dict(grad_out=by_reference(reference.patch_correlate_backward),
              base=by_reference(reference.patch_correlate_backward),
              input=by_reference(reference.patch_correlate_backward),
              coords=far_coordinate(reference.patch_correlate_backward)), "-dot"),
    _row("patch_correlate_backward",
         dict(grad_out=(1, 9, 3, 3), base=(1, 2, 3, 3), input=(1, 2, 4, 5), coords=(1, 3, 3, 2)),
         dict(_PATCH, l1=True),
         dict(grad_out=by_reference(reference.patch_correlate_backward),
              base=by_reference(reference.patch_correlate_backward),
              input=by_reference(reference.patch_correlate_backward),
              coords=far_coordinate(reference.patch_correlate_backward)), "-l1"),
    _row("corr_lookup", dict(fmap1=(1, 2, 4, 5), fmap2=(1, 2, 4, 5), coords=(1, 2, 4, 5)), _LOOKUP,
         dict(fmap1=by_reference(reference.corr_lookup), fmap2=by_reference(reference.corr_lookup),
              coords=far_coordinate(reference.corr_lookup))),
    _row("corr_lookup_backward",
         dict(grad_out=(1, 18, 4, 5), fmap1=(1, 2, 4, 5), fmap2=(1, 2, 4, 5), coords=(1, 2, 4, 5)), _LOOKUP,
         dict(grad_out=by_reference(reference.corr_lookup_backward),
              fmap1=by_reference(reference.corr_lookup_backward),
              fmap2=by_reference(reference.corr_lookup_backward),
              coords=far_coordinate(reference.corr_lookup_backward))),
    # the pyramid: a GEMM and poolings (sums of products: IEEE through BLAS as through the reference's einsum),
    # and its lookup (the features by the reference, the coordinates by far_coordinate, as corr_lookup)
    _row("corr_pyramid", dict(fmap1=(1, 2, 4, 5), fmap2=(1, 2, 4, 5)), dict(num_levels=2),
         by_reference(reference.corr_pyramid)),
    _row("corr_pyramid_backward", dict(grad0=(1, 4, 5, 4, 5), grad1=(1, 4, 5, 2, 2), fmap1=(1, 2, 4, 5),
                                       fmap2=(1, 2, 4, 5)), dict(num_levels=2), by_reference(_PYRAMID_BACKWARD_REF)),
    _row("corr_pyramid_lookup", dict(_LEVELS, coords=(1, 2, 4, 5)), _PATCH,
         dict(level0=by_reference(_PYRAMID_LOOKUP_REF), level1=by_reference(_PYRAMID_LOOKUP_REF),
              coords=far_coordinate(_PYRAMID_LOOKUP_REF))),
    _row("corr_pyramid_lookup_backward", dict(grad_out=(1, 18, 4, 5), **_LEVELS, coords=(1, 2, 4, 5)), _PATCH,
         dict(grad_out=by_reference(_PYRAMID_LOOKUP_BACKWARD_REF), level0=by_reference(_PYRAMID_LOOKUP_BACKWARD_REF),
              level1=by_reference(_PYRAMID_LOOKUP_BACKWARD_REF), coords=far_coordinate(_PYRAMID_LOOKUP_BACKWARD_REF))),
]

#: (row, input) -> why gpuops gets it wrong today; strict, so a fix turns the case into a failure to remove here
#: (dgmm_backward's grad_x started its sums from x[i]·0, NaN for a non-finite x: fixed with typed zeros)
KNOWN_BUGS: dict = {}

CASES = [pytest.param(*row.values, name, id=f"{row.id}-{name}",
                      marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[row.id, name])]
                      if (row.id, name) in KNOWN_BUGS else [])
         for row in ROWS for name in row.values[1]]


def test_table_covers_every_op():
    assert {row.values[0] for row in ROWS} == set(gpuops.__all__)


def _inputs(shapes, seed=0):
    """Entries of both signs, away from 0, and one exact 0 per input: Inf·0 then happens inside sums."""
    rng = np.random.default_rng(seed)
    arrays = []
    for shape in shapes.values():
        a = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
        a.flat[min(1, a.size - 1)] = 0.0
        arrays.append(a)
    return arrays


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("where", ["first", "middle"])
@pytest.mark.parametrize("op, shapes, params, expect, injected", CASES)
def test_nonfinite_value(op, shapes, params, expect, injected, where, value, dtype):
    arrays = _inputs(shapes)
    k = list(shapes).index(injected)
    size = arrays[k].size
    pos = np.unravel_index(0 if where == "first" else size // 2, arrays[k].shape)
    arrays = [a.astype(dtype).astype(np.float64) for a in arrays]       # the references see what gpuops sees

    fn = FLAT.get(op) or getattr(gpuops, op)
    clean = _parts(fn(*[a.astype(dtype) for a in arrays], **params))
    dirty = [a.astype(dtype) for a in arrays]
    dirty[k][pos] = value
    with np.errstate(all="ignore"):
        got = _parts(fn(*dirty, **params))

    if isinstance(expect, dict):        # one expectation per input
        expect = expect[injected]
    for i, ((want, used, may_nan), g, c) in enumerate(zip(expect(arrays, k, pos, value, params), got, clean)):
        if want is None:
            assert g is None
            continue
        assert g.dtype == np.dtype(dtype) and g.shape == want.shape
        g, c = g.astype(np.float64), c.astype(np.float64)
        nan_ok = np.zeros(want.shape, bool) if may_nan is None else may_nan & np.isnan(g)
        where_msg = f"output {i} of {op}, {injected}[{tuple(map(int, pos))}] = {value}"
        # outputs that do not use the value: the result without it, bit for bit
        same = (g == c) | nan_ok
        assert same[~used].all(), f"{where_msg}: changed at {np.argwhere(~used & ~same)[:5].tolist()}"
        # outputs that use it: the IEEE class of a non-finite answer, or close to a finite one
        nonfinite = used & ~np.isfinite(want)
        same_class = (np.isnan(g) & np.isnan(want)) | (g == want) | nan_ok
        assert same_class[nonfinite].all(), (
            f"{where_msg}: expected {want[nonfinite & ~same_class][:5]}, got {g[nonfinite & ~same_class][:5]}")
        finite = used & np.isfinite(want)
        np.testing.assert_allclose(g[finite], want[finite], rtol=_DTYPE_TOL[dtype], atol=_DTYPE_TOL[dtype],
                                   err_msg=where_msg)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "+inf", "-inf"])
def test_l1_gradient_where_base_equals_the_sample(value, dtype):
    """patch_correlate_backward, l1=True: a non-finite grad_out at a query whose base equals its sample
    (here both 0: the sample reads a zero patch inside the map).  Ambiguous in docs/ops.md: §9 says
    `sign(0) = 0` in L1 mode, and "Non-finite values" says a term holding the value whose coefficient is
    0 is NaN; the term is G·sign(base − s)/C, so this takes the latter (the reference's arithmetic).
    The table above does not meet the case: its inputs' one exact 0 never lines up with a zero sample at
    an injected position.  Outputs: grad_base and grad_coords NaN, grad_input NaN at the 4 corners."""
    base = np.zeros((1, 1, 1, 1))
    inp = np.ones((1, 1, 3, 3))
    inp[..., :2, :2] = 0.0
    coords = np.array([0.25, 0.5]).reshape(1, 1, 1, 2)
    grad = np.full((1, 1, 1, 1), value)
    params = dict(radius=0, l1=True)
    with np.errstate(all="ignore"):
        want = reference.patch_correlate_backward(grad, base, inp, coords, **params)
        got = gpuops.patch_correlate_backward(*(a.astype(dtype) for a in (grad, base, inp, coords)), **params)
    for name, w, g in zip(("grad_base", "grad_input", "grad_coords"), want, got):
        assert g.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(g.astype(np.float64), w, err_msg=name)
