"""The diag family: dgmm and cdgmm, multiplication by a diagonal matrix (the PyINN ops).

Contract: docs/ops.md (dgmm, cdgmm).  Kernels: gpuops/cuda/diag.py; CPU mirrors: gpuops/cpu/diag.py.

Complex data: cdgmm takes real pairs, a (M, K, 2) and x (K, 2)/(M, 2) with (re, im) last, or
complex64/complex128 arrays, a (M, K) and x (K,)/(M,) — an explicit exception to the "real floats
only" rule.  Complex arrays are viewed as real pairs here (zero-copy) and share the pair kernels;
results keep the caller's layout and dtype.  16-bit real pairs compute in float32.
"""
from gpuops import _constants as K
from gpuops import _core, _ops, _variants, reference
from gpuops._core import In, Out
from gpuops._ops import OpSpec, Param
from gpuops._variants import Variant
from gpuops._dtypes import STORAGE

_THREADS = K.DIAG_THREADS
_UNROLL = K.DIAG_UNROLL
_SUM_COLUMNS = K.DIAG_SUM_COLUMNS
_TARGET_BLOCKS = 4096    # with sums: ~8 waves of 4 blocks per SM on a 132-SM H100/H200
_SUM_TC = 32             # columns per block with sums, side right
_SUM_TC_LEFT = 128       # columns per block with sums, side left
# loop steps per thread of the forward, side left (0) and right (1).  H200, 8192² (benchmarks/dgmm_dev_bench.py):
# right is best with 1 everywhere; left with 4 for float16 (87 vs 81 % of copy) and complex64 (93 vs 86 %),
# float32 93 vs 96 %
_FORWARD_STEPS = (4, 1)
_CPU_SEGMENTS = 16       # row segments of the CPU mirror (side right), fixed so sums do not depend on cores
_COMPLEX = {"complex64": "float32", "complex128": "float64"}


def _side(side, M, K, L):
    """1 for side right (scale columns, len(x) == K), 0 for left (scale rows, len(x) == M)."""
    if side == "right":
        if L != K:
            raise ValueError(f"x must have length {K} (a.shape[1]) for side='right', got {L}")
        return 1
    if side == "left":
        if L != M:
            raise ValueError(f"x must have length {M} (a.shape[0]) for side='left', got {L}")
        return 0
    if side == "auto":
        if L == K:
            return 1
        if L == M:
            return 0
        raise ValueError(f"x must have length {K} (a.shape[1], side right) or {M} (a.shape[0], side left), "
                         f"got {L}")
    raise ValueError(f"side must be 'auto', 'left' or 'right', got {side!r}")


def _layout(M, K, right, on_gpu, want_sum, unroll=_UNROLL, steps=1):
    """(tc, tiles, segments, seg_len) of the scale kernels: tc threads along the columns (a power of
    two), tiles blocks across the kept axis, the reduced axis cut into segments of seg_len.

    ``unroll``: elements (words) per thread and loop step.  The forward cuts segments of ``steps`` loop
    steps per thread (where the grid allows): many short blocks leave no partly filled last wave.  With
    sums the GPU aims at about _TARGET_BLOCKS blocks whatever its size, so results are the same on every
    GPU, and tiles narrow to _SUM_TC (right) / _SUM_TC_LEFT columns: more tiles, fewer segments to add up
    (right) and more work per block (left).  The values come from benchmarks/dgmm_dev_bench.py."""
    tc = 1
    while tc < min(K, _THREADS):
        tc *= 2
    if on_gpu and want_sum:
        tc = min(tc, _SUM_TC if right else _SUM_TC_LEFT)
    rows = _THREADS // tc
    if right:
        tiles, reduced, per_step = -(-K // tc), M, rows
    else:
        tiles, reduced, per_step = -(-M // rows), K, tc
    most = -(-reduced // (per_step * unroll))
    if not on_gpu:
        target = _CPU_SEGMENTS
    elif want_sum:
        target = -(-_TARGET_BLOCKS // tiles)
    else:
        target = -(-most // steps)
    segments = max(1, min(target, most, 65535))
    seg_len = max(1, -(-reduced // segments))
    return tc, tiles, max(1, -(-reduced // seg_len)), seg_len


class _Scale:
    """One scale call (see `_scale`), as the variants see it."""

    __slots__ = ("a", "x", "out", "M", "K", "P", "right", "conj", "stream", "b", "gx")

    def __init__(self, a, x, out, M, K, P, right, conj, stream, b, gx):
        self.a, self.x, self.out, self.M, self.K, self.P = a, x, out, M, K, P
        self.right, self.conj, self.stream, self.b, self.gx = right, conj, stream, b, gx


def _words_can_run(c):
    """64-bit word loads need a word to hold whole elements of one row (and more than one scalar), and
    every pointer aligned."""
    itemsize = STORAGE[c.a.dtype][1]
    if not c.a.is_cuda:
        return "needs CUDA arrays"
    if itemsize == 8 or c.P * itemsize > 8:
        return "needs 16/32-bit scalars, whole elements per 64-bit word"
    if c.K * c.P * itemsize % 8:
        return "needs rows of whole 64-bit words"
    return None if _core.word_aligned(c.a, c.out, c.b) else "needs 8-byte aligned arrays"


#: the scale kernels: 64-bit word loads of packed values, or one element at a time (also the CPU mirror)
SCALE_VARIANTS = (Variant("words", _words_can_run, lambda c: _scale_launch(c, True)),
                  Variant("elements", lambda c: None, lambda c: _scale_launch(c, False)))


def _scale(a, x, out, M, K, P, right, conj, stream, b=None, gx=None, variant=None):
    """out = a · x̃ (conj: x̃ conjugated); with ``b`` and ``gx`` also gx = Σ a · conj(b) over the rows
    (right) or along each row (left), in one pass over a and b; deterministic."""
    if not out.size and not (gx is not None and gx.size > 0):
        return
    _variants.choose("dgmm" if P == 1 else "cdgmm", SCALE_VARIANTS,
                     _Scale(a, x, out, M, K, P, right, conj, stream, a if b is None else b, gx), variant)


def _scale_launch(c, words):
    a, x, out, M, K, P, right, conj, stream, b, gx = (c.a, c.x, c.out, c.M, c.K, c.P, c.right, c.conj, c.stream,
                                                      c.b, c.gx)
    want_sum = int(gx is not None and gx.size > 0)
    row_bytes = K * P * STORAGE[a.dtype][1]
    columns = row_bytes // 8 if words else K
    # the word forward walks down the rows on both sides (it reduces nothing)
    walk_right = right or (words and not want_sum)
    unroll = 2 * _UNROLL if words and not want_sum else _UNROLL                # the word forward: two halves
    steps = _FORWARD_STEPS[right]
    tc, tiles, segments, seg_len = _layout(M, columns, walk_right, a.is_cuda, want_sum, unroll, steps)
    count = K if right else M
    kernel = "scale_words" if words else "scale"
    if want_sum:
        kernel += "_sum"
    if not want_sum:
        partial = _core.scratch(a, (1,), STORAGE[a.dtype][2], stream)   # typed placeholder, never touched
    elif segments == 1 and STORAGE[gx.dtype][2] == STORAGE[gx.dtype][0]:
        partial = gx                                                  # one segment already is the sum
    elif segments == 1 and a.is_cuda:
        partial, kernel = gx, kernel + "_to_gx"                       # the same, stored as 16-bit
    else:
        partial = _core.scratch(a, (segments * count * P,), STORAGE[a.dtype][2], stream)
    _core.run("diag", kernel,
              (In(a, (a.size,)), In(x, (x.size,)), Out(out, (out.size,)), In(b, (b.size,)),
               Out(partial, (partial.size,)), M, columns, P, right, conj, tc, seg_len),
              like=a, grid=(tiles, segments), block=(_THREADS,), stream=stream)
    if want_sum and partial is not gx:
        _core.run("diag", "sum_segments", (In(partial), Out(gx, (gx.size,)), segments),
                  like=a, grid=lambda: (_core.blocks_for(gx.size, _SUM_COLUMNS),), block=(_THREADS,), stream=stream)


# ---------------------------------------------------------------------------------------------
# dgmm


def _check_dgmm(a, x, side):
    a = _core.contiguous(_core.floating("a", a, ndim=2))
    x = _core.contiguous(_core.floating("x", x, ndim=1))
    _core.same_dtype_and_device(a, x)
    M, K = a.shape
    return a, x, M, K, _side(side, M, K, x.shape[0])


@_ops.guards_out
def dgmm(a, x, *, side="auto", out=None, stream=None, variant=None):
    """Multiply by a diagonal matrix: ``a @ diag(x)`` (side "right", len(x) == K) or ``diag(x) @ a``
    (side "left", len(x) == M).  "auto": right if len(x) == K, else left if len(x) == M (a square
    ``a`` scales columns, as PyINN did).  a: (M, K); x: 1-D; returns (M, K).  ``variant`` forces one of
    `SCALE_VARIANTS` (the backwards and cdgmm take it too).

    >>> import numpy as np, gpuops
    >>> gpuops.dgmm(np.ones((2, 3)), np.array([1.0, 2.0, 3.0]))
    array([[1., 2., 3.],
           [1., 2., 3.]])
    """
    a, x, M, K, right = _check_dgmm(a, x, side)
    out = _core.output(out, a, a.shape)
    _scale(a, x, out, M, K, 1, right, 0, stream, variant=variant)
    return out.obj


@_ops.guards_out
def dgmm_backward(grad_out, a, x, *, side="auto", out=None, stream=None, variant=None):
    """Gradients of `dgmm`: ``(grad_a, grad_x)``; grad_a = dgmm(grad_out, x), grad_x = Σ grad_out · a over
    the rows (side right) or along each row (side left).  Deterministic."""
    a, x, M, K, right = _check_dgmm(a, x, side)
    grad_out = _core.contiguous(_core.floating("grad_out", grad_out, ndim=2))
    _core.same_dtype_and_device(a, grad_out)
    _core.same_shape(a, grad_out)
    out_a, out_x = _core.out_tuple(out, ("grad_a", "grad_x"))
    grad_a = _core.output(out_a, a, a.shape)
    grad_x = _core.output(out_x, a, x.shape)
    _scale(grad_out, x, grad_a, M, K, 1, right, 0, stream, b=a, gx=grad_x, variant=variant)
    return grad_a.obj, grad_x.obj


# ---------------------------------------------------------------------------------------------
# cdgmm


def _pairs(arr):
    """A complex64/complex128 array viewed as real (re, im) pairs (zero-copy), as an `Arr`."""
    real = _COMPLEX[arr.dtype]
    shape = tuple(arr.shape) + (2,)
    if arr.kind is _core.NUMPY:
        return _core.NUMPY.wrap(arr.obj.view(real).reshape(shape), arr.name)
    if arr.kind is _core.TORCH:
        import torch
        return _core.TORCH.wrap(torch.view_as_real(arr.obj.detach()), arr.name)
    # GPU kinds (and simulated arrays): kernels only need the pointer and the new shape
    return _core.Arr(arr.obj, arr.kind, shape, real, arr.device, arr.name)


def _complex_arr(name, obj, ndim):
    arr = obj if isinstance(obj, _core.Arr) else _core.wrap(name, obj)
    if arr.dtype in _COMPLEX:
        if arr.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D (complex layout), got shape {list(arr.shape)}")
        return arr
    if arr.dtype.startswith("complex"):
        raise TypeError(f"{name} must be real (re, im) pairs of a floating dtype or complex64/complex128, "
                        f"got {arr.dtype}")
    return _core.floating(name, arr, ndim=ndim + 1)


def _check_cdgmm(a, x, side):
    a = _core.wrap("a", a)
    is_complex = a.dtype in _COMPLEX
    a = _complex_arr("a", a, 2)
    x = _complex_arr("x", x, 1)
    _core.same_dtype_and_device(a, x)
    if not is_complex:
        if a.shape[2] != 2:
            raise ValueError(f"a must have shape (M, K, 2) (real, imaginary last), got {list(a.shape)}")
        if x.shape[1] != 2:
            raise ValueError(f"x must have shape (K, 2) or (M, 2) (real, imaginary last), got {list(x.shape)}")
    a, x = _core.contiguous(a), _core.contiguous(x)
    M, K = a.shape[:2]
    right = _side(side, M, K, x.shape[0])
    return a, x, M, K, right, is_complex


def _alloc(like, shape, out, is_complex):
    """(array returned to the caller, its pair view for the kernels)."""
    arr = _core.output(out, like, shape)
    return arr, (_pairs(arr) if is_complex else arr)


@_ops.guards_out
def cdgmm(a, x, *, side="auto", out=None, stream=None, variant=None):
    """Complex diagonal multiply, plain complex product (no conjugation): ``out[i, j] = a[i, j]·x[j]``
    (side right) or ``a[i, j]·x[i]`` (side left), side chosen as in `dgmm`.

    a (M, K, 2) with x (K, 2)/(M, 2), (re, im) last; or complex64/complex128 a (M, K) with x (K,)/(M,).
    Returns a's layout, dtype and kind.
    """
    a, x, M, K, right, is_complex = _check_cdgmm(a, x, side)
    out, out_p = _alloc(a, a.shape, out, is_complex)
    if is_complex:
        a, x = _pairs(a), _pairs(x)
    _scale(a, x, out_p, M, K, 2, right, 0, stream, variant=variant)
    return out.obj


@_ops.guards_out
def cdgmm_backward(grad_out, a, x, *, side="auto", out=None, stream=None, variant=None):
    """Gradients of `cdgmm`: ``(grad_a, grad_x)`` with ``grad_a = grad_out · conj(x)`` and
    ``grad_x = Σ grad_out · conj(a)`` over the other axis (PyTorch's convention for complex
    gradients).  Deterministic; grad_out in a's layout and dtype."""
    a, x, M, K, right, is_complex = _check_cdgmm(a, x, side)
    g = _complex_arr("grad_out", grad_out, 2)
    _core.same_dtype_and_device(a, g)
    _core.same_shape(a, g)
    g = _core.contiguous(g)
    out_a, out_x = _core.out_tuple(out, ("grad_a", "grad_x"))
    grad_a, grad_a_p = _alloc(a, a.shape, out_a, is_complex)
    grad_x, grad_x_p = _alloc(a, x.shape, out_x, is_complex)
    if is_complex:
        a, x, g = _pairs(a), _pairs(x), _pairs(g)
    _scale(g, x, grad_a_p, M, K, 2, right, 1, stream, b=a, gx=grad_x_p, variant=variant)
    return grad_a.obj, grad_x.obj


# ---------------------------------------------------------------------------------------------
# declarations


def _dgmm_shapes(a, x, *, side):
    return _check_dgmm(a, x, side)[0].shape


def _cdgmm_shapes(a, x, *, side):
    return _check_cdgmm(a, x, side)[0].shape


DGMM = _ops.declare(OpSpec(
    name="dgmm", forward=dgmm, backward=dgmm_backward, arrays=("a", "x"), params=(Param("side", "str", "auto"),),
    shapes=_dgmm_shapes,
    example=lambda rng, batch: ((rng.uniform(-1, 1, (batch, 5)), rng.uniform(-1, 1, (5,))), dict(side="right")),
    reference=reference.dgmm, reference_backward=reference.dgmm_backward))

# real (re, im) pairs; complex arrays take the pair kernels through the same op (see the module docstring)
CDGMM = _ops.declare(OpSpec(
    name="cdgmm", forward=cdgmm, backward=cdgmm_backward, arrays=("a", "x"), params=(Param("side", "str", "auto"),),
    shapes=_cdgmm_shapes,
    example=lambda rng, batch: ((rng.uniform(-1, 1, (4, batch, 2)), rng.uniform(-1, 1, (4, 2))), dict(side="left")),
    reference=reference.cdgmm, reference_backward=reference.cdgmm_backward))
