"""The RAFT pyramid family: corr_pyramid (RAFT's all-pairs correlation volume and its pooled levels, built
once per frame pair) and corr_pyramid_lookup (the windows around each query's flow target, looked up
every refinement iteration).  RAFT's fast path; `gpuops.corr_lookup` is its memory-light path.

Contract: docs/ops.md §10.  Kernels: gpuops/cuda/pyramid.py; CPU mirrors: gpuops/cpu/pyramid.py.

``corr_pyramid(fmap1, fmap2, *, num_levels=4)`` -> tuple of ``num_levels`` arrays, level i of shape
(N, H, W, H >> i, W >> i), the features' dtype::

    level0[n, h, w, y, x] = 1/√C · Σ_c fmap1[n, c, h, w] · fmap2[n, c, y, x]
    level(i+1)[n, h, w, y, x] = mean of level i[n, h, w, 2y:2y+2, 2x:2x+2]      (2×2, stride 2, floor)

``corr_pyramid_lookup(pyramid, coords, *, radius=4)`` -> (N, levels·L², H, W), L = 2·radius + 1, the
pyramid's dtype; coords (N, 2, H, W) in RAFT's layout (channel 0 = x) in pixels of level 0::

    out[n, i·L² + (dx+r)·L + (dy+r), h, w] = bilinear sample of level i[n, h, w] at
                                             (x/2**i + dx, y/2**i + dy), each corner 0 outside

which is `gpuops.corr_lookup(fmap1, fmap2, coords, radius=r, num_levels=levels)` on the pyramid of
fmap1 and fmap2 (pooling commutes with the correlation), up to rounding.

Level 0 is a batched GEMM, (N, H·W, C) @ (N, C, H·W) (`_gemm`, the one place that picks one): numpy's
matmul (BLAS) on the host; on a GPU torch's matmul for torch tensors, CuPy's for other CUDA arrays when
CuPy is installed (not bfloat16, which CuPy lacks), else a numba tiled GEMM (`GEMM_VARIANTS`,
``variant=`` forces one, ``GPUOPS_LOG=1`` prints the choice).  Pooling and the lookups are numba kernels.

Decisions where the spec is silent:

* fmap1 and fmap2 must have one shape (as RAFT's code, and `corr_lookup`), at least one channel; an
  empty batch or grid gives empty levels.  ``num_levels`` that would pool the map to an empty level
  raises `ValueError` (as `corr_lookup` and RAFT's avg_pool2d); a 1×1 level is fine.
* 16-bit data: the GEMM and the pooling accumulate in float32; each level is stored in the features'
  dtype and the next level pools the stored one (as RAFT's avg_pool2d of a half volume).  The torch GEMM
  follows torch's matmul settings: TF32 for float32 is off by default, but cuBLAS may reduce split-K
  partial sums in 16 bits unless ``torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction``
  (and its bf16 twin) are False (torch's defaults allow it; pass ``variant="numba"`` for float32 sums).
* The lookup takes any sequence of levels with the relations corr_pyramid gives them: level i of
  shape (N, H, W, H0 >> i, W0 >> i) for level 0's (N, H, W, H0, W0) (an empty level is allowed: its
  samples are 0); coords (N, 2, H, W) in the pyramid's dtype.  Coordinates are scaled by exact halvings;
  a coordinate that is NaN, ±Inf or beyond ±2**40 on a level makes its query sample zeros there and
  get no gradient (as `corr_lookup`).  radius 0 gives one channel per level.
* Gradients.  corr_pyramid_backward takes one gradient per level (a tuple, any strides): they are summed
  into level 0 through the pooling adjoints, coarsest level first (compute-dtype scratch for the coarser
  levels; level 0's sum is rounded once to the storage dtype for the GEMMs), then
  grad_fmap1[n] = 1/√C · fmap2[n] @ G0[n]ᵀ and grad_fmap2[n] = 1/√C · fmap1[n] @ G0[n], two GEMMs.
  corr_pyramid_lookup_backward returns (tuple of level gradients, grad_coords).  The level gradient is a
  scatter of each sample onto its 4 corners, computed as a gather: plane (n, h, w) of a level is read by
  query (n, h, w) only, so every volume element sums the ≤ 4 terms of its own query's offsets in a fixed
  order; grad_coords sums per-output partials over the channels in order.  No float atomics anywhere:
  repeats are bit-identical (the torch/CuPy GEMMs are deterministic for fixed shapes on one GPU).
* Working memory: the backward of corr_pyramid keeps a level-0-sized buffer (storage dtype) and a
  compute-dtype buffer for the coarser levels (a third of it) as per-stream scratch (`_core.scratch`);
  the lookup's backward 2·(its output size) compute-dtype values.
"""
import importlib.util
import math

from gpuops import _constants as K
from gpuops import _core, _ops, _variants, reference
from gpuops._core import In, Out
from gpuops._dtypes import CPU_COMPUTE, STORAGE
from gpuops._ops import OpSpec, Param
from gpuops._variants import Variant

_THREADS = K.PYRAMID_THREADS
_TILE = K.PYRAMID_GEMM_TILE


class _Pyramid:
    """Validated sizes of corr_pyramid: fmap (N, C, H, W), ``levels`` levels."""

    __slots__ = ("N", "C", "H", "W", "levels")

    def __init__(self, N, C, H, W, levels):
        self.N, self.C, self.H, self.W, self.levels = N, C, H, W, levels

    @property
    def shapes(self):
        return [(self.N, self.H, self.W, self.H >> i, self.W >> i) for i in range(self.levels)]

    @property
    def scale(self):
        return 1.0 / math.sqrt(self.C)


class _Lookup:
    """Validated sizes of corr_pyramid_lookup: queries (N, H, W), level maps (Hl, Wl), radius."""

    __slots__ = ("N", "H", "W", "maps", "radius")

    def __init__(self, N, H, W, maps, radius):
        self.N, self.H, self.W, self.maps, self.radius = N, H, W, maps, radius

    @property
    def levels(self):
        return len(self.maps)

    @property
    def LL(self):
        return (2 * self.radius + 1) ** 2

    @property
    def out_shape(self):
        return (self.N, self.levels * self.LL, self.H, self.W)

    def level_ints(self, level):
        """The lookup kernels' integer arguments for ``level``."""
        return (self.N, self.H, self.W) + self.maps[level] + (self.levels, level, self.radius)


def _flat(arr):
    return (arr.size,)


def _compute(arr):
    return STORAGE[arr.dtype][2]


def _run(kernel, args, n, like, stream):
    """Launch ``kernel`` over ``n`` items, grid-stride (nothing to do for none)."""
    if n:
        block = min(_THREADS, -(-n // 32) * 32)
        _core.run("pyramid", kernel, args, like=like, grid=lambda: (_core.blocks_for(n, block),), block=(block,),
                  stream=stream)


def _plane_run(kernel, args, planes, n, like, stream):
    """Launch ``kernel`` with a block per plane (grid-stride over ``planes`` planes of ``n`` items in all)."""
    if n:
        block = min(_THREADS, -(-(n // planes) // 32) * 32)
        _core.run("pyramid", kernel, args, like=like, grid=(min(planes, K.MAX_GRID_X),), block=(block,),
                  stream=stream)


# ---------------------------------------------------------------------------------------------
# argument checks (shared with the declarations' shape functions)


def _pyramid_inputs(fmap1, fmap2, num_levels):
    f1 = _core.floating("fmap1", fmap1, ndim=4)
    f2 = _core.floating("fmap2", fmap2, ndim=4)
    _core.same_dtype_and_device(f1, f2)
    _core.same_shape(f1, f2)
    N, C, H, W = f1.shape
    if C < 1:
        raise ValueError(f"fmap1 must have at least one channel, got shape {list(f1.shape)}")
    levels = _core.integer("num_levels", num_levels, minimum=1)
    last = levels - 1
    if levels > 31 or H and W and ((H >> last) < 1 or (W >> last) < 1):
        raise ValueError(f"num_levels={levels} would pool the {H}x{W} feature maps to an empty level {last} "
                         f"({H >> min(last, 62)}x{W >> min(last, 62)}); both sides must be >= 2**(num_levels-1) "
                         f"= {2 ** last}")
    return _core.contiguous(f1), _core.contiguous(f2), _Pyramid(N, C, H, W, levels)


def _lookup_inputs(pyramid, coords, radius):
    if not isinstance(pyramid, (tuple, list)):
        raise TypeError(f"pyramid must be a sequence of arrays (corr_pyramid's levels), got {type(pyramid).__name__}")
    if not pyramid:
        raise ValueError("pyramid must hold at least one level, got an empty sequence")
    levels = [_core.floating(f"pyramid[{i}]", lvl, ndim=5) for i, lvl in enumerate(pyramid)]
    c = _core.floating("coords", coords, ndim=4)
    _core.same_dtype_and_device(*levels, c)
    N, H, W, H0, W0 = levels[0].shape
    for i, lvl in enumerate(levels[1:], 1):
        want = (N, H, W, H0 >> i, W0 >> i)
        if tuple(lvl.shape) != want:
            raise ValueError(f"pyramid[{i}] must have shape {list(want)} (pyramid[0]'s queries, its map pooled 2x2 "
                             f"{i} times, floor), got {list(lvl.shape)}")
    if tuple(c.shape) != (N, 2, H, W):
        raise ValueError(f"coords must have shape [N, 2, H, W] = {[N, 2, H, W]} (the pyramid's queries; RAFT's "
                         f"layout, channel 0 = x), got {list(c.shape)}")
    radius = _core.integer("radius", radius, minimum=0)
    geo = _Lookup(N, H, W, tuple(tuple(lvl.shape[3:]) for lvl in levels), radius)
    return [_core.contiguous(lvl) for lvl in levels], _core.contiguous(c), geo


def _grad_levels(grad_out, like, geo):
    """grad_out of corr_pyramid_backward: one array per level, each of that level's shape (any strides)."""
    if not isinstance(grad_out, (tuple, list)):
        raise TypeError(f"grad_out must be a sequence of {geo.levels} arrays (one per level), "
                        f"got {type(grad_out).__name__}")
    if len(grad_out) != geo.levels:
        raise ValueError(f"grad_out must hold one array per level ({geo.levels}), got {len(grad_out)}")
    grads = []
    for i, (g, shape) in enumerate(zip(grad_out, geo.shapes)):
        a = _core.floating(f"grad_out[{i}]", g)
        _core.same_dtype_and_device(like, a)
        if tuple(a.shape) != shape:
            raise ValueError(f"grad_out[{i}] must have shape {list(shape)} (level {i}'s), got {list(a.shape)}")
        grads.append(_core.contiguous(a))
    return grads


def _grad_lookup(grad_out, like, geo):
    g = _core.floating("grad_out", grad_out)
    _core.same_dtype_and_device(like, g)
    if tuple(g.shape) != geo.out_shape:
        raise ValueError(f"grad_out must have shape {list(geo.out_shape)} (the forward output's), got {list(g.shape)}")
    return _core.contiguous(g)


# ---------------------------------------------------------------------------------------------
# the GEMM: one helper, one choice


class _Gemm:
    """``out[n] = scale · op(a[n]) @ op(b[n])``: ``a``, ``b``, ``out`` C-contiguous `Arr` viewed with the 3-D
    shapes ``a_shape`` (batch, rows, cols), ``b_shape``, ``out_shape``; op transposes where ``ta``/``tb``."""

    __slots__ = ("a", "a_shape", "ta", "b", "b_shape", "tb", "out", "out_shape", "scale", "stream")

    def __init__(self, a, a_shape, ta, b, b_shape, tb, out, scale, stream):
        self.a, self.a_shape, self.ta, self.b, self.b_shape, self.tb = a, a_shape, ta, b, b_shape, tb
        batch, ra, ca = a_shape
        self.out_shape = (batch, ca if ta else ra, b_shape[1] if tb else b_shape[2])
        self.out, self.scale, self.stream = out, scale, stream

    def numba_args(self):
        """(batch, M, Nn, K) and the element strides (n, i, k) of op(a), (n, k, j) of op(b)."""
        batch, M, Nn = self.out_shape
        _, ra, ca = self.a_shape
        _, rb, cb = self.b_shape
        a_strides = (ra * ca,) + ((1, ca) if self.ta else (ca, 1))
        b_strides = (rb * cb,) + ((1, cb) if self.tb else (cb, 1))
        return (batch, M, Nn, ra if self.ta else ca) + a_strides + b_strides


def _ops_views(c, a, b, o, transpose):
    """op(a), op(b) and out of one framework's arrays (``transpose(x)`` swaps the last two axes)."""
    a, b = a.reshape(c.a_shape), b.reshape(c.b_shape)
    return transpose(a) if c.ta else a, transpose(b) if c.tb else b, o.reshape(c.out_shape)


def _gemm_numpy(c):
    import numpy as np
    with _core.cpu_views([c.a, c.b], [c.out]) as ((a, b), (o,)):
        a, b, o = _ops_views(c, a, b, o, lambda x: x.transpose(0, 2, 1))
        np.matmul(a, b, out=o)
        o *= o.dtype.type(c.scale)


def _gemm_torch(c):
    import torch
    _core._not_replayable()             # not a recorded launch: a JAX replay must run the core again
    a, b, o = _ops_views(c, c.a.obj.detach(), c.b.obj.detach(), c.out.obj.detach(), lambda x: x.transpose(1, 2))
    if c.stream is None:                # torch's current stream, the one the numba kernels launch on too
        o.baddbmm_(a, b, beta=0.0, alpha=c.scale)      # beta 0: the uninitialised output is not read
        return
    external = torch.cuda.ExternalStream(_core.stream_for(c.out, c.stream), device=o.device)
    with torch.cuda.stream(external):
        o.baddbmm_(a, b, beta=0.0, alpha=c.scale)


def _cupy_array(arr):
    import cupy
    return cupy.asarray(arr.obj.detach() if arr.kind is _core.TORCH else arr.obj)


def _gemm_cupy(c):
    import cupy
    _core._not_replayable()
    with cupy.cuda.Device(c.out.device), cupy.cuda.ExternalStream(_core.stream_for(c.out, c.stream)):
        a, b, o = _ops_views(c, _cupy_array(c.a), _cupy_array(c.b), _cupy_array(c.out),
                             lambda x: x.transpose(0, 2, 1))
        cupy.matmul(a, b, out=o)
        o *= c.scale


def _gemm_numba(c):
    ints = c.numba_args()
    batch, M, Nn = ints[:3]
    tiles = (min(-(-Nn // _TILE), K.MAX_GRID_X), min(-(-M // _TILE), K.MAX_GRID_YZ), min(batch, K.MAX_GRID_YZ))
    _core.run("pyramid", "gemm", (In(c.a, _flat(c.a)), In(c.b, _flat(c.b)), Out(c.out, _flat(c.out))) + ints
              + (float(c.scale),), like=c.out, grid=tiles, block=(_TILE, K.PYRAMID_GEMM_ROWS), stream=c.stream)


_CUPY = []


def _cupy_usable():
    if not _CUPY:
        _CUPY.append(importlib.util.find_spec("cupy") is not None)
    return _CUPY[0]


def _on_gpu(c):
    return c.out.device >= 0


GEMM_VARIANTS = (
    Variant("numpy", lambda c: None if not _on_gpu(c) else "the arrays are on a GPU", _gemm_numpy),
    Variant("torch", lambda c: None if _on_gpu(c) and c.out.kind is _core.TORCH
            else "not torch CUDA tensors", _gemm_torch),
    Variant("cupy", lambda c: "the arrays are on the host" if not _on_gpu(c)
            else "simulated device arrays" if c.out.kind is _core.SIMULATED
            else "CuPy has no bfloat16" if c.out.dtype == "bfloat16"
            else None if _cupy_usable() else "CuPy is not installed", _gemm_cupy),
    Variant("numba", lambda c: None if _on_gpu(c) else "the arrays are on the host (numpy's BLAS)", _gemm_numba),
)


def _gemm(call, variant=None):
    """Run one batched GEMM (`_Gemm`) with the first of `GEMM_VARIANTS` that can, or the forced one."""
    if call.out.size:
        _variants.choose("corr_pyramid GEMM", GEMM_VARIANTS, call, variant)


# ---------------------------------------------------------------------------------------------
# corr_pyramid


@_ops.guards_out
def corr_pyramid(fmap1, fmap2, *, num_levels=4, out=None, stream=None, variant=None):
    """RAFT's all-pairs correlation pyramid (docs/ops.md §10): -> tuple of ``num_levels`` arrays.

    fmap1, fmap2: (N, C, H, W), one shape and dtype (float16/bfloat16/float32/float64), C >= 1.  Level i
    has shape (N, H, W, H >> i, W >> i) and the features' dtype::

        level0[n, h, w, y, x] = 1/√C · Σ_c fmap1[n, c, h, w] · fmap2[n, c, y, x]       (a batched GEMM)
        level(i+1) = 2×2 average pool (stride 2, floor) of level i over its last two axes

    Both sides of the maps must be >= 2**(num_levels − 1).  ``out``: a tuple of ``num_levels`` arrays (or
    Nones).  ``variant`` forces the level-0 GEMM (`GEMM_VARIANTS`: "numpy", "torch", "cupy", "numba").
    """
    f1, f2, geo = _pyramid_inputs(fmap1, fmap2, num_levels)
    outs = _core.out_tuple(out, tuple(f"level {i}" for i in range(geo.levels)))
    levels = [_core.output(o, f1, shape) for o, shape in zip(outs, geo.shapes)]
    HW = geo.H * geo.W
    _gemm(_Gemm(f1, (geo.N, geo.C, HW), True, f2, (geo.N, geo.C, HW), False, levels[0], geo.scale, stream), variant)
    planes = geo.N * HW
    for i in range(1, geo.levels):
        src, dst = levels[i - 1], levels[i]
        _run("pool", (In(src, _flat(src)), Out(dst, _flat(dst)), planes, geo.H >> (i - 1), geo.W >> (i - 1), 0.5),
             dst.size, f1, stream)
    return tuple(level.obj for level in levels)


@_ops.guards_out
def corr_pyramid_backward(grad_out, fmap1, fmap2, *, num_levels=4, out=None, stream=None, variant=None):
    """Gradients of `corr_pyramid`: ``(grad_fmap1, grad_fmap2)``.

    grad_out: a sequence of ``num_levels`` arrays, level i's shape (any strides).  With G0 = Σ_i of each
    level's gradient carried down to level 0 by the pooling adjoints (each value / 4 onto its 2×2
    sources; rows and columns the pooling cropped get none), coarsest level first::

        grad_fmap1[n] = 1/√C · fmap2[n] @ G0[n]ᵀ       (C, H·W) @ (H·W, H·W), maps and G0 flattened
        grad_fmap2[n] = 1/√C · fmap1[n] @ G0[n]

    G0 is stored in the features' dtype (the 16-bit sums in float32, rounded once).  Deterministic.
    ``out`` may be a tuple of two arrays (or Nones).
    """
    f1, f2, geo = _pyramid_inputs(fmap1, fmap2, num_levels)
    grads = _grad_levels(grad_out, f1, geo)
    g1, g2 = _outputs(out, ("grad_fmap1", "grad_fmap2"), f1, (f1.shape, f2.shape))
    if g1.size == 0:                # no queries, no map: nothing to sum (C >= 1, so g2 is empty too)
        return g1.obj, g2.obj
    total = grads[0] if geo.levels == 1 else _level0_gradient(grads, f1, geo, stream)
    HW = geo.H * geo.W
    shape_f, shape_g = (geo.N, geo.C, HW), (geo.N, HW, HW)
    _gemm(_Gemm(f2, shape_f, False, total, shape_g, True, g1, geo.scale, stream), variant)
    _gemm(_Gemm(f1, shape_f, False, total, shape_g, False, g2, geo.scale, stream), variant)
    return g1.obj, g2.obj


def _level0_gradient(grads, like, geo, stream):
    """Σ_i of the level gradients carried to level 0 (coarsest first): the coarser levels' sums in a
    compute-dtype scratch, level 0's in a storage-dtype one (what the GEMMs read)."""
    planes = geo.N * geo.H * geo.W
    sizes = [planes * (geo.H >> i) * (geo.W >> i) for i in range(geo.levels)]
    offsets = [sum(sizes[1:i]) for i in range(geo.levels)]          # level i >= 1 at offsets[i] in work
    work = _core.scratch(like, (max(1, sum(sizes[1:])),), _compute(like), stream)
    for i in reversed(range(1, geo.levels)):
        has_prev = int(i < geo.levels - 1)
        prev_off = offsets[i + 1] if has_prev else 0
        _run("unpool", (In(grads[i], _flat(grads[i])), Out(work), prev_off, has_prev, offsets[i], planes,
                        geo.H >> i, geo.W >> i, 0.5), sizes[i], like, stream)
    total = _core.scratch(like, geo.shapes[0], like.dtype, stream)
    _run("unpool_final", (In(grads[0], _flat(grads[0])), In(work), offsets[1],
                          Out(total, _flat(total)), planes, geo.H, geo.W, 0.5), sizes[0], like, stream)
    return total


def _outputs(out, names, like, shapes):
    outs = _core.out_tuple(out, names)
    return tuple(_core.output(o, like, s) for o, s in zip(outs, shapes))


# ---------------------------------------------------------------------------------------------
# corr_pyramid_lookup


@_ops.guards_out
def corr_pyramid_lookup(pyramid, coords, *, radius=4, out=None, stream=None):
    """RAFT's ``CorrBlock.__call__``: windows of a `corr_pyramid` (docs/ops.md §10) -> (N, levels·L², H, W).

    pyramid: a sequence of levels, level i (N, H, W, H0 >> i, W0 >> i); coords: (N, 2, H, W), RAFT's
    layout (channel 0 = x), in pixels of level 0, the pyramid's dtype.  L = 2·radius + 1, radius >= 0::

        out[n, i·L² + (dx+r)·L + (dy+r), h, w] = bilinear sample of pyramid[i][n, h, w] at
                                                 (x/2**i + dx, y/2**i + dy), each corner 0 outside

    Level-major, x-offset-major channels (RAFT's order): the values of `corr_lookup` on the maps the
    pyramid was built from.  NaN, ±Inf (or beyond ±2**40) coordinates sample zeros.  16-bit data are
    interpolated in float32.
    """
    levels, c, geo = _lookup_inputs(pyramid, coords, radius)
    res = _core.output(out, c, geo.out_shape)
    if res.size == 0:
        return res.obj
    # on the host, a 16-bit output would be a temporary per launch (`_core.cpu_views`) while each level's
    # launch writes only its channels: the levels go to a compute-dtype buffer, cast once at the end
    direct = res.is_cuda or res.dtype == CPU_COMPUTE[res.dtype]
    dest = res if direct else _core.scratch(res, res.shape, CPU_COMPUTE[res.dtype])
    count = geo.N * geo.H * geo.W * geo.LL
    for i, vol in enumerate(levels):
        _run("lookup_level", (In(vol, _flat(vol)), In(c, _flat(c)), Out(dest, _flat(dest))) + geo.level_ints(i)
             + (0.5,), count, c, stream)
    if dest is not res:
        with _core.cpu_views([dest], [res]) as ((values,), (o,)):
            o[...] = values
    return res.obj


@_ops.guards_out
def corr_pyramid_lookup_backward(grad_out, pyramid, coords, *, radius=4, out=None, stream=None):
    """Gradients of `corr_pyramid_lookup`: ``(tuple of one gradient per level, grad_coords)``.

    grad_out: (N, levels·L², H, W), any strides.  Level i's gradient is each sample's grad · corner
    weight on its in-bounds corners (a gather per volume element over its own query's offsets);
    grad_coords = Σ_levels Σ_offsets grad · (∂s/∂x, ∂s/∂y) · 2**-i, the right-hand derivative at integer
    coordinates, 0 for invalid queries.  Deterministic (no float atomics).  ``out`` may be
    ``(tuple of level arrays or None, grad_coords or None)``.
    """
    levels, c, geo = _lookup_inputs(pyramid, coords, radius)
    g = _grad_lookup(grad_out, c, geo)
    out_levels, out_coords = _core.out_tuple(out, ("grad_pyramid", "grad_coords"))
    out_levels = _core.out_tuple(out_levels, tuple(f"level {i}" for i in range(geo.levels)))
    grads = [_core.output(o, c, lvl.shape) for o, lvl in zip(out_levels, levels)]
    gc = _core.output(out_coords, c, c.shape)
    if g.size == 0:                 # no queries: every output is empty (the levels have the query axes)
        return tuple(a.obj for a in grads), gc.obj
    for i, grad in enumerate(grads):
        _plane_run("lookup_grad_level", (In(g, _flat(g)), In(c, _flat(c)), Out(grad, _flat(grad)))
                   + geo.level_ints(i) + (0.5,), geo.N * geo.H * geo.W, grad.size, c, stream)
    _coords_gradient(g, levels, c, geo, gc, stream)
    return tuple(a.obj for a in grads), gc.obj


#: array kinds an accumulating backward can write in place
_WRITABLE_KINDS = ("numpy", "torch", "cuda_array_interface", "cupy", "simulated_cuda")


@_ops.guards_out
def corr_pyramid_lookup_backward_add(grad_out, pyramid, coords, *, radius=4, out, coords_grad=True, stream=None):
    """`corr_pyramid_lookup_backward` for a pyramid looked up many times (RAFT's training step, as
    `gpuops.torch.CorrBlock` runs it): ``out = (grad_pyramid, grad_coords or None)``, and each level's
    gradient of this lookup is *added* to ``grad_pyramid[i]`` in place (grad_pyramid None: grad_coords alone).
    Returns ``(grad_pyramid, grad_coords)``; grad_coords is None when ``coords_grad`` is False (RAFT detaches
    its coordinates).  The output arrays must not share memory with the inputs or with each other.

    grad_pyramid: one array per level, C-contiguous, of the level's shape, the pyramid's dtype (float32 or
    float64: the sums stay in the compute type) and device; a numpy, torch or CUDA array (JAX arrays are
    immutable).  Only the (2r+2)² footprint of each query's window is read and written (the elements a
    lookup can make nonzero), where the plain backward writes every level whole per lookup and the caller
    then sums those dense gradients.  The values are the plain backward's, summed in call order (the first
    call on zeros gives them bit for bit); deterministic.
    """
    levels, c, geo = _lookup_inputs(pyramid, coords, radius)
    g = _grad_lookup(grad_out, c, geo)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError("out must be (grad_pyramid, grad_coords or None): the level gradients to add to")
    out_levels, out_coords = out
    if out_levels is not None and (not isinstance(out_levels, (tuple, list)) or len(out_levels) != geo.levels):
        raise ValueError(f"out[0] (grad_pyramid) must be a sequence of {geo.levels} arrays, one per level, or None")
    if out_coords is not None and not coords_grad:
        raise ValueError("out[1] (grad_coords) was given with coords_grad=False")
    for i, o in enumerate(out_levels or ()):       # the buffers are written too: none may share memory
        _core.refuse_overlap(o, [(f"grad_pyramid[{j}]", out_levels[j]) for j in range(i)])
    if out_coords is not None and out_levels is not None:
        _core.refuse_overlap(out_coords, [("grad_pyramid", list(out_levels))])
    grads = []
    for i, (o, lvl) in enumerate(zip(out_levels or (), levels)):
        a = _core.floating(f"grad_pyramid[{i}]", o)
        _core.same_dtype_and_device(c, a)
        if tuple(a.shape) != tuple(lvl.shape):
            raise ValueError(f"grad_pyramid[{i}] must have shape {list(lvl.shape)} (level {i}'s), got "
                             f"{list(a.shape)}")
        if a.dtype not in ("float32", "float64"):
            raise TypeError(f"grad_pyramid[{i}] must be float32 or float64 (the sums stay in the compute type), "
                            f"got {a.dtype}: use corr_pyramid_lookup_backward for 16-bit pyramids")
        if a.kind.name not in _WRITABLE_KINDS or not a.kind.is_contiguous(a) or (
                a.kind.name == "numpy" and not a.obj.flags.writeable):
            raise ValueError(f"grad_pyramid[{i}] must be a writable C-contiguous numpy, torch or CUDA array (it "
                             f"is added to in place), got a {a.kind.name} array")
        grads.append(a)
    gc = None
    if coords_grad:
        gc = _core.output(out_coords, c, c.shape)
    if g.size:
        F = 2 * geo.radius + 2
        for i, grad in enumerate(grads):
            _run("lookup_grad_level_add", (In(g, _flat(g)), In(c, _flat(c)), Out(grad, _flat(grad)))
                 + geo.level_ints(i) + (0.5,), geo.N * geo.H * geo.W * F * F, c, stream)
        if gc is not None:
            _coords_gradient(g, levels, c, geo, gc, stream)
    return None if out_levels is None else tuple(a.obj for a in grads), None if gc is None else gc.obj


def _coords_gradient(g, levels, c, geo, gc, stream):
    """grad_coords of a lookup: per-output partials level by level, then one sum per query in order."""
    count = geo.N * geo.H * geo.W * geo.LL
    part = _core.scratch(c, (2 * g.size,), _compute(c), stream)
    for i, vol in enumerate(levels):
        _run("lookup_grad_coords_partial", (In(vol, _flat(vol)), In(c, _flat(c)), In(g, _flat(g)), Out(part))
             + geo.level_ints(i) + (0.5,), count, c, stream)
    _run("lookup_grad_coords_sum", (In(part), Out(gc, _flat(gc)), geo.N, geo.H * geo.W, geo.levels * geo.LL, 0.5),
         geo.N * geo.H * geo.W, c, stream)


# ---------------------------------------------------------------------------------------------
# declarations


def _pyramid_shapes(fmap1, fmap2, *, num_levels):
    return _pyramid_inputs(fmap1, fmap2, num_levels)[2].shapes


def _lookup_shapes(pyramid, coords, *, radius):
    return _lookup_inputs(pyramid, coords, radius)[2].out_shape


def _pyramid_example(rng, batch):
    # 6x5 -> 3x2 -> 1x1: an odd side the pooling crops, and a level of one pixel
    f1 = rng.uniform(-1, 1, (batch, 3, 6, 5))
    f2 = rng.uniform(-1, 1, (batch, 3, 6, 5))
    return (f1, f2), dict(num_levels=3)


def _lookup_example(rng, batch):
    pyramid = tuple(rng.uniform(-1, 1, (batch, 4, 5, 6 >> i, 5 >> i)) for i in range(3))
    # fractional parts in [0.2, 0.8] at level 0 keep gradcheck's steps off the bilinear kinks at integers
    coords = rng.integers(-2, 7, (batch, 2, 4, 5)) + rng.uniform(0.2, 0.8, (batch, 2, 4, 5))
    return (pyramid, coords), dict(radius=1)


CORR_PYRAMID = _ops.declare(OpSpec(
    name="corr_pyramid", forward=corr_pyramid, backward=corr_pyramid_backward, arrays=("fmap1", "fmap2"),
    params=(Param("num_levels", "int", 4, minimum=1),), multi_output=True, shapes=_pyramid_shapes,
    vmap="sequential", batch=(True, True), example=_pyramid_example,
    reference=reference.corr_pyramid, reference_backward=reference.corr_pyramid_backward))

CORR_PYRAMID_LOOKUP = _ops.declare(OpSpec(
    name="corr_pyramid_lookup", forward=corr_pyramid_lookup, backward=corr_pyramid_lookup_backward,
    arrays=("pyramid*", "coords"), params=(Param("radius", "int", 4),), shapes=_lookup_shapes,
    vmap="sequential", batch=(True, True), example=_lookup_example,
    reference=reference.corr_pyramid_lookup, reference_backward=reference.corr_pyramid_lookup_backward))


__all__ = ["corr_pyramid", "corr_pyramid_backward", "corr_pyramid_lookup", "corr_pyramid_lookup_backward"]
