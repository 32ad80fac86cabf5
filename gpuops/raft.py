"""The RAFT family: patch_correlate (one level of RAFT's correlation lookup, computed on the fly) and
corr_lookup (RAFT's CorrBlock(fmap1, fmap2, num_levels, radius)(coords) without the all-pairs volume).

Contract: docs/ops.md §9, §10.  Kernels: gpuops/cuda/raft.py; CPU mirrors: gpuops/cpu/raft.py.

Both ops are one *lookup*: query features ``base`` (N, C, H1, W1), a sampled map (N, C, H2, W2) on
``levels`` levels (level i = the map average-pooled 2×2 i times, floor), coordinates per query in
either layout (read through element strides) and a scale.  patch_correlate is one level with
coordinates (N, H1, W1, 2); corr_lookup has fmap2 = the map, the coordinates (N, 2, H, W) and
``num_levels`` levels.  The pooled levels live in a compute-dtype scratch buffer (4/3·C·H·W/4 values
at most): the all-pairs volume is never built.

Decisions where the spec is silent:

* Coordinates have the features' dtype (the op declaration requires one dtype for all arrays), so
  16-bit coordinates carry 8 (bfloat16) or 11 (float16) significant bits: use float32 features for
  sub-pixel accuracy at large coordinates.  Levels use coords · 2**-i, exact in binary.
* A coordinate that is NaN, ±Inf or beyond ±2**40 makes its query sample zeros on every level (both
  x and y are dropped); such a query gets no coordinate gradient.
* radius 0 gives one channel per level (the sample itself).  The feature maps must have at least one
  channel; empty batches and empty grids give empty outputs.
* corr_lookup needs fmap1 and fmap2 of one shape (as RAFT), and refuses ``num_levels`` that would pool
  the maps to an empty level (RAFT's avg_pool2d raises there too).  A level of size 1 is fine here
  (RAFT's bilinear_sampler divides by W − 1 = 0 there; pixel units have no such problem).

Kernels (``variant=``: `FORWARD_VARIANTS`, `BACKWARD_VARIANTS`): on CUDA a dot lookup takes the *window*
kernels — per query, the (2r+2)² dot products of its base vector with the map pixels of its window, each
one coalesced pass of a warp over channels-last copies, then the (2r+1)² outputs as bilinear mixes of
those sums (4·(2r+1)² / (2r+2)² ≈ 3.2× fewer products at r = 4) — and the gradients in the same split.
L1 lookups, radii beyond `RAFT_WINDOW_MAX_RADIUS` and the CPU take the *direct* kernels (a thread per output
element).

Determinism: the gradient w.r.t. the sampled map is a scatter at data-dependent positions.  It is
computed as a gather: the queries are bucketed by cell (floor of their level coordinates) with integer
atomics, each cell's queries sorted by index, and every map element then sums, in a fixed order, the
terms of the queries in the (2r+2)² cells whose footprint can reach it (gpuops/cuda/raft.py).  No
float atomics anywhere: repeats are bit-identical.
"""
import math


from gpuops import _constants as K
from gpuops import _core, _ops, _variants, reference
from gpuops._core import In, Out
from gpuops._dtypes import STORAGE
from gpuops._ops import OpSpec, Param
from gpuops._variants import Variant

_THREADS = K.RAFT_THREADS
_SCAN_THREADS = K.RAFT_SCAN_THREADS


class _Lookup:
    """Validated sizes of one lookup and the coordinate layout (element strides)."""

    __slots__ = ("N", "C", "H1", "W1", "H2", "W2", "levels", "radius", "l1", "scale", "strides")

    def __init__(self, N, C, H1, W1, H2, W2, levels, radius, l1, scale, strides):
        self.N, self.C, self.H1, self.W1, self.H2, self.W2 = N, C, H1, W1, H2, W2
        self.levels, self.radius, self.l1, self.scale, self.strides = levels, radius, l1, scale, strides

    @property
    def L(self):
        return 2 * self.radius + 1

    @property
    def channels(self):
        return self.levels * self.L * self.L

    def level_size(self, level):
        return self.H2 >> level, self.W2 >> level

    def level_offset(self, level):
        """Start of pooled level ``level`` (>= 1) in the pyramid (gpuops.cuda.raft.level_offset)."""
        return sum(self.N * self.C * (self.H2 >> j) * (self.W2 >> j) for j in range(1, level))

    @property
    def pyramid_size(self):
        return self.level_offset(self.levels)

    def ints(self):
        """The kernels' common integer arguments, in order."""
        return (self.N, self.C, self.H1, self.W1, self.H2, self.W2, self.levels, self.radius) + self.strides \
            + (int(self.l1),)

    def scalars(self):
        return (float(self.scale), 0.5)


def _flat(arr):
    return (arr.size,)


def _compute(arr):
    return STORAGE[arr.dtype][2]


def _threads(n):
    """Threads per block: 256, or fewer whole warps for small launches."""
    return min(_THREADS, -(-n // 32) * 32)


def _run(kernel, args, n, like, stream, block=None, grid=None):
    """Launch ``kernel`` over ``n`` items (nothing to do for none)."""
    if n:
        block = block or _threads(n)
        grid = grid or (lambda: (_core.blocks_for(n, block),))
        _core.run("raft", kernel, args, like=like, grid=grid, block=(block,), stream=stream)


# ---------------------------------------------------------------------------------------------
# argument checks (shared with the declarations' shape functions)


def _patch_inputs(base, input, coords, radius, l1):
    b = _core.floating("base", base, ndim=4)
    i = _core.floating("input", input, ndim=4)
    c = _core.floating("coords", coords, ndim=4)
    _core.same_dtype_and_device(b, i, c)
    N, C, Hg, Wg = b.shape
    if tuple(i.shape[:2]) != (N, C):
        raise ValueError(f"input must have the batch size and channels of base ({N}, {C}), got shape {list(i.shape)}")
    if tuple(c.shape) != (N, Hg, Wg, 2):
        raise ValueError(f"coords must have shape [N, Hg, Wg, 2] = {[N, Hg, Wg, 2]} (base's batch and grid; "
                         f"[..., 0] = x, [..., 1] = y), got {list(c.shape)}")
    if C < 1:
        raise ValueError(f"base must have at least one channel, got shape {list(b.shape)}")
    radius = _core.integer("radius", radius, minimum=0)
    l1 = _core.flag("l1", l1)
    scale = 1.0 / C if l1 else 1.0 / math.sqrt(C)
    H2, W2 = i.shape[2:]
    geo = _Lookup(N, C, Hg, Wg, H2, W2, 1, radius, l1, scale, (Hg * Wg * 2, Wg * 2, 2, 1))
    return _core.contiguous(b), _core.contiguous(i), _core.contiguous(c), geo


def _lookup_inputs(fmap1, fmap2, coords, radius, num_levels):
    f1 = _core.floating("fmap1", fmap1, ndim=4)
    f2 = _core.floating("fmap2", fmap2, ndim=4)
    c = _core.floating("coords", coords, ndim=4)
    _core.same_dtype_and_device(f1, f2, c)
    _core.same_shape(f1, f2)
    N, C, H, W = f1.shape
    if tuple(c.shape) != (N, 2, H, W):
        raise ValueError(f"coords must have shape [N, 2, H, W] = {[N, 2, H, W]} (RAFT's layout, channel 0 = x), "
                         f"got {list(c.shape)}")
    if C < 1:
        raise ValueError(f"fmap1 must have at least one channel, got shape {list(f1.shape)}")
    radius = _core.integer("radius", radius, minimum=0)
    levels = _core.integer("num_levels", num_levels, minimum=1)
    last = levels - 1
    if H and W and ((H >> last) < 1 or (W >> last) < 1):
        raise ValueError(f"num_levels={levels} would pool the {H}x{W} feature maps to an empty level {last} "
                         f"({H >> last}x{W >> last}); both sides must be >= 2**(num_levels-1) = {2 ** last}")
    geo = _Lookup(N, C, H, W, H, W, levels, radius, False, 1.0 / math.sqrt(C), (2 * H * W, W, 1, H * W))
    return _core.contiguous(f1), _core.contiguous(f2), _core.contiguous(c), geo


def _grad_input(grad_out, like, geo):
    g = _core.floating("grad_out", grad_out)
    _core.same_dtype_and_device(like, g)
    expected = (geo.N, geo.channels, geo.H1, geo.W1)
    if tuple(g.shape) != expected:
        raise ValueError(f"grad_out must have shape {list(expected)} (the forward output's), got {list(g.shape)}")
    return _core.contiguous(g)


# ---------------------------------------------------------------------------------------------
# launches shared by both ops


def _build_pyramid(geo, fmap2, work, stream):
    """Pooled levels 1 .. levels−1 of fmap2 into ``work`` (from offset 0), each from the previous one."""
    NC = geo.N * geo.C
    for level in range(1, geo.levels):
        Hs, Ws = geo.level_size(level - 1)
        n = NC * (Hs >> 1) * (Ws >> 1)
        if level == 1:
            _run("pool_features", (In(fmap2, _flat(fmap2)), Out(work), NC, Hs, Ws, 0, 0.5), n, fmap2, stream)
        else:
            _run("pool_level", (Out(work), NC, Hs, Ws, geo.level_offset(level - 1), geo.level_offset(level), 0.5),
                 n, fmap2, stream)


class _Call:
    """One lookup call as the variants see it (``outs``: the forward output, or the three gradients)."""

    __slots__ = ("geo", "g", "base", "fmap2", "coords", "outs", "stream")

    def __init__(self, geo, g, base, fmap2, coords, outs, stream):
        self.geo, self.g, self.base, self.fmap2, self.coords = geo, g, base, fmap2, coords
        self.outs, self.stream = outs, stream


def _window_can_run(call):
    if call.base.device < 0:
        return "the CPU runs the direct mirrors"
    if call.geo.l1:
        return "L1 lookups have no window form (|base − s| is not linear in the samples)"
    if call.geo.radius > K.RAFT_WINDOW_MAX_RADIUS:
        return f"radius {call.geo.radius} > {K.RAFT_WINDOW_MAX_RADIUS} (the window sums' shared memory is sized for it)"
    return None


def _forward(geo, base, fmap2, coords, out, stream, variant=None):
    if out.size == 0:
        return
    _variants.choose("lookup", FORWARD_VARIANTS, _Call(geo, None, base, fmap2, coords, (out,), stream), variant)


def _backward(geo, g, base, fmap2, coords, grad_base, grad_map, grad_coords, stream, variant=None):
    if g.size == 0:
        for arr in (grad_base, grad_map, grad_coords):
            if arr.size:
                _zero(arr, stream)
        return
    _variants.choose("lookup_backward", BACKWARD_VARIANTS,
                     _Call(geo, g, base, fmap2, coords, (grad_base, grad_map, grad_coords), stream), variant)


# ---------------------------------------------------------------------------------------------
# the direct kernels: a thread per output element (every lookup, the only form of L1 and the CPU's)


def _direct_forward(call):
    geo, base, fmap2, coords, (out,), stream = call.geo, call.base, call.fmap2, call.coords, call.outs, call.stream
    work = _core.scratch(base, (max(1, geo.pyramid_size),), _compute(base), stream)
    _build_pyramid(geo, fmap2, work, stream)
    _run("lookup_forward", (In(base, _flat(base)), In(fmap2, _flat(fmap2)), In(work), In(coords, _flat(coords)),
                            Out(out, _flat(out))) + geo.ints() + geo.scalars(), out.size, base, stream)


def _direct_backward(call):
    """All three gradients.  Scratch: one compute-dtype buffer [pyramid | its gradient | coordinate
    partials] and the int32 bucket buffer (scratch buffers are per shape: each call takes one of each)."""
    geo, g, base, fmap2, coords, stream = call.geo, call.g, call.base, call.fmap2, call.coords, call.stream
    grad_base, grad_map, grad_coords = call.outs
    pyr = geo.pyramid_size
    part_off = 2 * pyr
    work = _core.scratch(base, (part_off + 2 * g.size,), _compute(base), stream)
    _build_pyramid(geo, fmap2, work, stream)
    common = geo.ints() + geo.scalars()
    arrays = (In(g, _flat(g)), In(base, _flat(base)), In(fmap2, _flat(fmap2)))
    _run("lookup_grad_base", arrays + (In(work), In(coords, _flat(coords)), Out(grad_base, _flat(grad_base)))
         + common, grad_base.size, base, stream)
    _run("lookup_grad_coords_partial", arrays + (In(work), In(coords, _flat(coords)), Out(work), part_off) + common,
         g.size, base, stream)
    _run("lookup_grad_coords_sum", (In(work), part_off, Out(grad_coords, _flat(grad_coords)), geo.N, geo.H1, geo.W1,
                                    geo.channels) + geo.strides + (0.5,), geo.N * geo.H1 * geo.W1, base, stream)
    if grad_map.size:
        _direct_map_gradient(geo, g, base, fmap2, coords, work, grad_map, stream)


def _buckets(geo, base, coords, stream):
    """The int32 bucket buffer and its (counts, starts, items) offsets, sized for level 0; the queries are
    placed (in any order) after the items (`_placed_offset`), then sorted into them."""
    N, r = geo.N, geo.radius
    ncell0 = (geo.H2 + 2 * r + 1) * (geo.W2 + 2 * r + 1)
    offsets = (0, N * ncell0, 2 * N * ncell0)
    size = _placed_offset(geo, offsets) + N * geo.H1 * geo.W1
    return _core.scratch(base, (1, size), "float32", stream), offsets


def _placed_offset(geo, offsets):
    """Where `bucket_place` puts the queries before `bucket_sort` orders them into the items: after the items."""
    return offsets[2] + geo.N * geo.H1 * geo.W1


def _bucket_level(geo, level, base, coords, ints, offsets, stream):
    """Bucket the queries by their cell on ``level``, each cell's queries sorted by index."""
    N, r, Q = geo.N, geo.radius, geo.H1 * geo.W1
    counts_off, starts_off, items_off = offsets
    flat_ints = (ints.size,)
    Hl, Wl = geo.level_size(level)
    CH, CW = Hl + 2 * r + 1, Wl + 2 * r + 1
    ncell = CH * CW
    where = (level, r, CH, CW, 0.5)
    _run("bucket_clear", (Out(ints, flat_ints), counts_off, N * ncell), N * ncell, base, stream)
    _run("bucket_count", (In(coords, _flat(coords)), Out(ints, flat_ints), counts_off, N, geo.H1, geo.W1)
         + geo.strides + where, N * Q, base, stream)
    _run("bucket_scan", (Out(ints, flat_ints), counts_off, starts_off, N, ncell), N, base, stream,
         block=min(_SCAN_THREADS, _threads(ncell)), grid=(min(N, 2**31 - 1),))
    placed_off = _placed_offset(geo, offsets)
    _run("bucket_place", (In(coords, _flat(coords)), Out(ints, flat_ints), counts_off, starts_off, placed_off, N,
                          geo.H1, geo.W1) + geo.strides + where, N * Q, base, stream)
    _run("bucket_sort", (Out(ints, flat_ints), counts_off, starts_off, placed_off, items_off, N, Q, ncell),
         32 * N * ncell, base, stream)         # a warp per cell


def _direct_map_gradient(geo, g, base, fmap2, coords, work, grad_map, stream):
    """The gradient w.r.t. the sampled map, coarsest level first (each level adds the pooling adjoint of
    the coarser one's), as bucketed deterministic gathers (gpuops/cuda/raft.py)."""
    N, r = geo.N, geo.radius
    ints, offsets = _buckets(geo, base, coords, stream)
    flat_ints = (ints.size,)
    gpyr = geo.pyramid_size                       # start of the pyramid's gradient in ``work``
    for level in reversed(range(geo.levels)):
        _bucket_level(geo, level, base, coords, ints, offsets, stream)
        Hl, Wl = geo.level_size(level)
        has_prev = int(level < geo.levels - 1)
        prev_off = gpyr + geo.level_offset(level + 1) if has_prev else 0
        sizes = (N, geo.C, geo.H1, geo.W1, Hl, Wl, geo.levels, level, r) + geo.strides + (int(geo.l1),) \
            + geo.scalars()
        n = N * geo.C * Hl * Wl
        head = (In(g, _flat(g)), In(base, _flat(base)), In(coords, _flat(coords)))
        if level == 0:
            _run("lookup_grad_map", head + (In(fmap2, _flat(fmap2)), In(work), prev_off, has_prev, In(ints, flat_ints))
                 + offsets + (Out(grad_map, _flat(grad_map)),) + sizes, n, base, stream)
        else:
            _run("lookup_grad_map_pooled", head + (Out(work), geo.level_offset(level), prev_off, has_prev,
                                                   In(ints, flat_ints)) + offsets
                 + (gpyr + geo.level_offset(level),) + sizes, n, base, stream)


# ---------------------------------------------------------------------------------------------
# the window kernels (dot lookups on CUDA): a warp per query or map pixel over channels-last copies


def _cl_offset(geo, level):
    """Start of level ``level`` in the channels-last pyramid (gpuops.cuda.raft.cl_level_offset)."""
    return sum(geo.N * geo.C * (geo.H2 >> j) * (geo.W2 >> j) for j in range(level))


def _map_splits(geo, level):
    """Cell ranges per pixel of the map gradient on ``level``: about K.RAFT_WINDOW_MAP_WARPS warps in all."""
    Hl, Wl = geo.level_size(level)
    return max(1, min((2 * geo.radius + 2) ** 2, K.RAFT_WINDOW_MAP_WARPS // max(1, geo.N * Hl * Wl)))


def _window_layout(geo):
    """Offsets in the compute-dtype work buffer: [channels-last pyramid | base | gD (n, level, window pixel,
    query) | level gradients | the map gradient's partial sums], and its size."""
    bt = _cl_offset(geo, geo.levels)
    gd = bt + geo.N * geo.H1 * geo.W1 * geo.C
    gcl = gd + geo.N * geo.H1 * geo.W1 * geo.levels * (2 * geo.radius + 2) ** 2
    part = gcl + _cl_offset(geo, geo.levels) - _cl_offset(geo, 1)
    parts = max(geo.N * geo.C * (geo.H2 >> i) * (geo.W2 >> i) * _map_splits(geo, i) for i in range(geo.levels))
    return bt, gd, gcl, part, part + parts


def _warp_run(kernel, args, items, like, stream):
    """A launch with a warp per item (K.RAFT_WINDOW_WARPS per block)."""
    _run(kernel, args, items * 32, like, stream, block=K.RAFT_WINDOW_WARPS * 32)


def _to_channels_last(src, work, offset, C, P, like, stream):
    """work[offset:] = src (N, C, P) as (N, P, C) in the compute dtype: a block per 32×32 tile."""
    tiles = src.size // (C * P) * -(-P // 32) * -(-C // 32) if src.size else 0
    block = K.RAFT_TRANSPOSE_THREADS
    _run("to_channels_last", (In(src, _flat(src)), Out(work), offset, C, P, 0.5), tiles * block, like, stream,
         block=block)


def _window_prepare(geo, base, fmap2, work, bt_off, stream):
    """Channels-last copies of fmap2 (level 0), its pooled levels and base into ``work``."""
    _to_channels_last(fmap2, work, 0, geo.C, geo.H2 * geo.W2, base, stream)
    _to_channels_last(base, work, bt_off, geo.C, geo.H1 * geo.W1, base, stream)
    for level in range(1, geo.levels):
        Hs, Ws = geo.level_size(level - 1)
        _run("pool_channels_last", (Out(work), geo.N, geo.C, Hs, Ws, _cl_offset(geo, level - 1),
                                    _cl_offset(geo, level), 0.5), geo.N * (Hs >> 1) * (Ws >> 1) * geo.C, base, stream)


def _window_sizes(geo):
    return (geo.N, geo.C, geo.H1, geo.W1, geo.H2, geo.W2, geo.levels, geo.radius) + geo.strides + geo.scalars()


def _window_forward(call):
    geo, base, coords, (out,), stream = call.geo, call.base, call.coords, call.outs, call.stream
    bt_off, gd_off = _window_layout(geo)[:2]
    work = _core.scratch(base, (gd_off,), _compute(base), stream)
    _window_prepare(geo, base, call.fmap2, work, bt_off, stream)
    _warp_run("window_forward", (In(work), bt_off, In(coords, _flat(coords)), Out(out, _flat(out)))
              + _window_sizes(geo), geo.N * geo.H1 * geo.W1, base, stream)


def _window_backward(call):
    """grad_coords per query (a warp), gD (a thread per value), grad_base per query (a warp), then the map's
    gradient per level, coarsest first: each pixel gathers from the bucketed queries whose window holds it,
    its cells cut into ranges (a warp each) for parallelism on the coarse levels, the partial sums then
    added in range order with the coarser level's pooling adjoint."""
    geo, g, base, coords, stream = call.geo, call.g, call.base, call.coords, call.stream
    grad_base, grad_map, grad_coords = call.outs
    bt_off, gd_off, gcl_off, part_off, size = _window_layout(geo)
    work = _core.scratch(base, (size,), _compute(base), stream)
    _window_prepare(geo, base, call.fmap2, work, bt_off, stream)
    queries = geo.N * geo.H1 * geo.W1
    _warp_run("window_grad_coords", (In(g, _flat(g)), In(work), bt_off, In(coords, _flat(coords)),
                                     Out(grad_coords, _flat(grad_coords))) + _window_sizes(geo), queries, base, stream)
    gd_size = queries * geo.levels * (2 * geo.radius + 2) ** 2
    _run("window_gd", (In(g, _flat(g)), Out(work), gd_off, In(coords, _flat(coords)), geo.N, geo.H1, geo.W1,
                       geo.levels, geo.radius) + geo.strides + geo.scalars(), gd_size, base, stream)
    _warp_run("window_grad_base", (In(work), gd_off, In(coords, _flat(coords)), Out(grad_base, _flat(grad_base)))
              + _window_sizes(geo)[:-2] + (0.5,), queries, base, stream)
    if not grad_map.size:
        return
    ints, offsets = _buckets(geo, base, coords, stream)
    flat_ints = (ints.size,)
    for level in reversed(range(geo.levels)):
        _bucket_level(geo, level, base, coords, ints, offsets, stream)
        Hl, Wl = geo.level_size(level)
        splits = _map_splits(geo, level)
        pixels = geo.N * Hl * Wl
        _warp_run("window_grad_map_partial", (Out(work), bt_off, gd_off, part_off, splits, In(ints, flat_ints))
                  + offsets + (geo.N, geo.C, geo.H1, geo.W1, Hl, Wl, geo.levels, level, geo.radius, 0.5),
                  pixels * splits, base, stream)
        has_prev = int(level < geo.levels - 1)
        prev = gcl_off + _cl_offset(geo, level + 1) - _cl_offset(geo, 1) if has_prev else 0
        tail = (geo.N, geo.C, Hl, Wl, 0.5)
        if level == 0:
            _run("window_grad_map", (In(work), part_off, splits, prev, has_prev, Out(grad_map, _flat(grad_map)))
                 + tail, pixels * geo.C, base, stream)
        else:
            _run("window_grad_map_pooled", (Out(work), part_off, splits, prev, has_prev,
                                            gcl_off + _cl_offset(geo, level) - _cl_offset(geo, 1)) + tail,
                 pixels * geo.C, base, stream)


FORWARD_VARIANTS = (Variant("window", _window_can_run, _window_forward), Variant("direct", lambda c: None, _direct_forward))
BACKWARD_VARIANTS = (Variant("window", _window_can_run, _window_backward),
                     Variant("direct", lambda c: None, _direct_backward))


def _zero(arr, stream):
    """Zero an output that nothing else writes (an empty batch or grid: sums over nothing)."""
    _run("zero_fill", (Out(arr, _flat(arr)), 0.5), arr.size, arr, stream)


def _outputs(out, names, like, shapes):
    outs = _core.out_tuple(out, names)
    return tuple(_core.output(o, like, s) for o, s in zip(outs, shapes))


# ---------------------------------------------------------------------------------------------
# patch_correlate


@_ops.guards_out
def patch_correlate(base, input, coords, *, radius=4, l1=False, out=None, stream=None, variant=None):
    """One level of RAFT's correlation lookup, on the fly (docs/ops.md §9): -> (N, L², Hg, Wg), L = 2r + 1.

    base: (N, C, Hg, Wg); input: (N, C, H2, W2); coords: (N, Hg, Wg, 2), [..., 0] = x (column),
    [..., 1] = y (row), in pixel units of ``input`` (integer = pixel centre), same dtype as the
    features (float16/bfloat16/float32/float64; one dtype for all three arrays).  With s_c(dx, dy) the
    bilinear sample of input[n, c] at (x + dx, y + dy), each of the 4 corners 0 outside
    (``grid_sample(padding_mode="zeros", align_corners=True)``)::

        out[n, (dx+r)·L + (dy+r), h, w] = 1/√C · Σ_c base[n,c,h,w] · s_c(dx, dy)       (l1=False)
                                        = 1/C  · Σ_c |base[n,c,h,w] − s_c(dx, dy)|      (l1=True)

    x-offset-major channels (RAFT's order).  radius >= 0 (0: one channel).  NaN, ±Inf (and beyond
    ±2**40) coordinates sample zeros.  16-bit data accumulate in float32.
    """
    b, i, c, geo = _patch_inputs(base, input, coords, radius, l1)
    res = _core.output(out, b, (geo.N, geo.channels, geo.H1, geo.W1))
    _forward(geo, b, i, c, res, stream, variant)
    return res.obj


@_ops.guards_out
def patch_correlate_backward(grad_out, base, input, coords, *, radius=4, l1=False, out=None, stream=None, variant=None):
    """Gradients of `patch_correlate`: ``(grad_base, grad_input, grad_coords)``.

    grad_out: (N, L², Hg, Wg), any strides.  With G = scale·grad_out[n, k, h, w] (scale 1/√C, or 1/C
    for l1) and ds_c = G·base_c (dot) or −G·sign(base_c − s_c) (l1, sign(0) = 0): grad_base =
    Σ_k G·s_c (dot) or Σ_k G·sign(base_c − s_c); grad_input gets ds_c·weight at each in-bounds corner;
    grad_coords = Σ_k Σ_c ds_c·(∂s_c/∂x, ∂s_c/∂y), the right-hand derivative at integer coordinates
    (floor picks the left corner), 0 for non-finite coordinates.  Deterministic (bucketed gathers, no
    float atomics).  ``out`` may be a tuple of three arrays (or Nones) to write into.
    """
    b, i, c, geo = _patch_inputs(base, input, coords, radius, l1)
    g = _grad_input(grad_out, b, geo)
    gb, gi, gc = _outputs(out, ("grad_base", "grad_input", "grad_coords"), b, (b.shape, i.shape, c.shape))
    _backward(geo, g, b, i, c, gb, gi, gc, stream, variant)
    return gb.obj, gi.obj, gc.obj


# ---------------------------------------------------------------------------------------------
# corr_lookup


@_ops.guards_out
def corr_lookup(fmap1, fmap2, coords, *, radius=4, num_levels=4, out=None, stream=None, variant=None):
    """RAFT's ``CorrBlock(fmap1, fmap2, num_levels, radius)(coords)`` without the all-pairs volume
    (docs/ops.md §10): -> (N, num_levels·L², H, W), L = 2·radius + 1, level-major.

    fmap1, fmap2: (N, C, H, W), one shape; coords: (N, 2, H, W), RAFT's layout (channel 0 = x), in
    pixels of fmap2, same dtype as the features.  Level i is
    ``patch_correlate(fmap1, avg_pool2x2^i(fmap2), coords.permute(0, 2, 3, 1) / 2**i, radius)``::

        out[n, i·L² + (dx+r)·L + (dy+r), h, w] = 1/√C · Σ_c fmap1[n,c,h,w] · s_c^i(x/2^i + dx, y/2^i + dy)

    with s^i the bilinear sample (zeros outside) of fmap2 average-pooled 2×2 (stride 2, floor) i times.
    Each side of the maps must be >= 2**(num_levels−1).  The output keeps the features' dtype (RAFT's
    CorrBlock casts to float32: `gpuops.torch.CorrBlock` does).
    """
    f1, f2, c, geo = _lookup_inputs(fmap1, fmap2, coords, radius, num_levels)
    res = _core.output(out, f1, (geo.N, geo.channels, geo.H1, geo.W1))
    _forward(geo, f1, f2, c, res, stream, variant)
    return res.obj


@_ops.guards_out
def corr_lookup_backward(grad_out, fmap1, fmap2, coords, *, radius=4, num_levels=4, out=None, stream=None, variant=None):
    """Gradients of `corr_lookup`: ``(grad_fmap1, grad_fmap2, grad_coords)``.

    grad_out: (N, num_levels·L², H, W), any strides.  The sum over levels of `patch_correlate_backward`'s
    gradients: grad_fmap2 through the adjoint of the pooling (each pooled value's gradient / 4 onto its
    2×2 sources), grad_coords with the 1/2**i of each level.  Deterministic (bucketed gathers, no float
    atomics).  ``out`` may be a tuple of three arrays (or Nones) to write into.
    """
    f1, f2, c, geo = _lookup_inputs(fmap1, fmap2, coords, radius, num_levels)
    g = _grad_input(grad_out, f1, geo)
    g1, g2, gc = _outputs(out, ("grad_fmap1", "grad_fmap2", "grad_coords"), f1, (f1.shape, f2.shape, c.shape))
    _backward(geo, g, f1, f2, c, g1, g2, gc, stream, variant)
    return g1.obj, g2.obj, gc.obj


# ---------------------------------------------------------------------------------------------
# declarations


def _patch_shapes(base, input, coords, *, radius, l1):
    geo = _patch_inputs(base, input, coords, radius, l1)[3]
    return (geo.N, geo.channels, geo.H1, geo.W1)


def _lookup_shapes(fmap1, fmap2, coords, *, radius, num_levels):
    geo = _lookup_inputs(fmap1, fmap2, coords, radius, num_levels)[3]
    return (geo.N, geo.channels, geo.H1, geo.W1)


def _off_integer(rng, low, high, shape):
    """Coordinates with fractional parts in [0.2, 0.8] (also after halving): gradcheck stays away from
    the kinks of bilinear sampling at integers."""
    return rng.integers(low, high, shape) + rng.uniform(0.2, 0.8, shape)


def _patch_example(rng, batch):
    base = rng.uniform(-1, 1, (batch, 3, 4, 5))
    inp = rng.uniform(-1, 1, (batch, 3, 5, 6))
    return (base, inp, _off_integer(rng, -2, 7, (batch, 4, 5, 2))), dict(radius=1, l1=False)


def _lookup_example(rng, batch):
    f1 = rng.uniform(-1, 1, (batch, 3, 6, 5))
    f2 = rng.uniform(-1, 1, (batch, 3, 6, 5))
    return (f1, f2, _off_integer(rng, -2, 7, (batch, 2, 6, 5))), dict(radius=1, num_levels=2)


PATCH_CORRELATE = _ops.declare(OpSpec(
    name="patch_correlate", forward=patch_correlate, backward=patch_correlate_backward,
    arrays=("base", "input", "coords"), params=(Param("radius", "int", 4), Param("l1", "bool", False)),
    shapes=_patch_shapes, vmap="fold", example=_patch_example,
    reference=reference.patch_correlate, reference_backward=reference.patch_correlate_backward))

CORR_LOOKUP = _ops.declare(OpSpec(
    name="corr_lookup", forward=corr_lookup, backward=corr_lookup_backward, arrays=("fmap1", "fmap2", "coords"),
    params=(Param("radius", "int", 4), Param("num_levels", "int", 4, minimum=1)),
    shapes=_lookup_shapes, vmap="fold", example=_lookup_example,
    reference=reference.corr_lookup, reference_backward=reference.corr_lookup_backward))


__all__ = ["patch_correlate", "patch_correlate_backward", "corr_lookup", "corr_lookup_backward"]
