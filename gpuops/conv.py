"""The conv family: depthwise 2-D convolution, im2col and col2im (the PyINN ops).

Contract: docs/ops.md (conv2d_depthwise, im2col, col2im).  Kernels: gpuops/cuda/conv.py; CPU mirrors: gpuops/cpu/conv.py.

Decisions where the spec is silent:

* ``im2col_backward``'s ``input_size`` is ``(H, W)`` (an int means square), or the whole input
  shape (``x.shape``), whose leading entries must then match ``grad_out``.
* ``col2im`` checks that ``input_size`` (when given) is consistent: the windowed output size of
  ``(H, W)`` must be the columns' ``(Ho, Wo)``, else `ValueError` (otherwise it is not an adjoint).
* Empty batches/channels give empty outputs (no launch).
* Channels-last memory (``conv2d_depthwise`` and its backward).  A torch tensor ``x`` (CPU or CUDA) stored
  channels-last (``torch.channels_last``: C the contiguous axis, and not C-contiguous as well) is computed
  by channels-last kernels on its own memory (no transposing copy), and the output — and, in the
  backward, ``grad_x`` — is freshly allocated channels-last, as cuDNN returns it: "freshly allocated" holds,
  "C-contiguous" becomes "contiguous in the input's memory format".  ``grad_out`` of another layout is
  copied to channels-last first; grad_weight and grad_bias stay C-contiguous.  A given ``out`` (``grad_x``'s
  in the backward) that is not channels-last keeps the NCHW path (the input is then copied).  Every other
  input (numpy, CuPy, NCHW or any other strides) takes the NCHW path and gets a C-contiguous output, as
  before.  The rule is `channels_last_output`; the declaration hands it to the torch adapter, whose fakes
  (which torch.compile checks real outputs against) allocate the same layout.
* ``variant=`` / ``weight_variant=`` choose the layout too: the ``nhwc*`` variants compute channels-last
  (an NCHW input is converted, and the result is channels-last, for numpy, torch, CuPy and simulated arrays),
  the others NCHW (a channels-last input is copied to C-contiguous, the result C-contiguous); forcing one of
  each kind in one backward call is a `ValueError`.
"""
import functools

from gpuops import _constants as K
from gpuops import _core, _ops, _variants, reference
from gpuops._core import In, Out
from gpuops._ops import OpSpec, Param
from gpuops._variants import Variant
from gpuops._dtypes import STORAGE
from gpuops.cuda import _conv_source   # numba-free: the generated kernels' per-thread shapes

_THREADS = K.CONV_THREADS
_TW = K.CONV_TILE_W
_TH = K.CONV_TILE_H
_SHARED = K.SHARED_BYTES
_WGRAD_BLOCKS = 4096   # stage-1 blocks aimed at by the weight-gradient reduction


def _params(stride, padding, dilation):
    return (_core.pair("stride", stride, minimum=1), _core.pair("padding", padding, minimum=0),
            _core.pair("dilation", dilation, minimum=1))


def _compute_itemsize(dtype):
    return 8 if STORAGE[dtype][2] == "float64" else 4


def _grid(n_blocks):
    return lambda: (max(1, min(n_blocks, 2**31 - 1)),)


def _ceil(a, b):
    return -(-a // b)


# ---------------------------------------------------------------------------------------------
# conv2d_depthwise


def _check_depthwise(x, weight, bias, stride, padding, dilation):
    """(x, weight, bias, dims) checked; weight and bias C-contiguous, x as given (`_layout_of` picks its
    layout, then `_in_layout` makes it contiguous in it)."""
    x = _core.floating("x", x, ndim=4)
    weight = _core.contiguous(_core.floating("weight", weight, ndim=4))
    _core.same_dtype_and_device(x, weight)
    if bias is not None:
        bias = _core.contiguous(_core.floating("bias", bias, ndim=1))
        _core.same_dtype_and_device(x, bias)
    shapes = (x.shape, weight.shape, None if bias is None else bias.shape)
    if all(_plain_ints(v) for v in (stride, padding, dilation)):
        return x, weight, bias, _depthwise_geometry(*shapes, stride, padding, dilation)
    return x, weight, bias, _depthwise_geometry.__wrapped__(*shapes, stride, padding, dilation)


def _plain_ints(value):
    """An int or a tuple of ints (not bools, which hash like ints but are refused): safe as a memo key."""
    return type(value) is int or type(value) is tuple and all(type(v) is int for v in value)


@functools.lru_cache(maxsize=1024)
def _depthwise_geometry(x_shape, weight_shape, bias_shape, stride, padding, dilation):
    """(N, C, H, W, Cm, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw), or `ValueError`; memoised for plain-int
    parameters (a repeated small call spends its host time here otherwise)."""
    N, C, H, W = x_shape
    Cm, one, kh, kw = weight_shape
    if C < 1 or one != 1 or Cm < 1 or Cm % C or kh < 1 or kw < 1:
        raise ValueError(f"weight must have shape (C·m, 1, kh, kw) with C = x.shape[1] = {C}, m >= 1 and "
                         f"kh, kw >= 1, got {list(weight_shape)}")
    if bias_shape is not None and bias_shape != (Cm,):
        raise ValueError(f"bias must have shape [{Cm}] (weight.shape[0]), got {list(bias_shape)}")
    (sh, sw), (ph, pw), (dh, dw) = _params(stride, padding, dilation)
    Ho = _core.window_out_size("output height", H, kh, ph, dh, sh)
    Wo = _core.window_out_size("output width", W, kw, pw, dw, sw)
    return (N, C, H, W, Cm, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw)


_FAST_SIZES = K.CONV_FAST_SIZES
_FAST_STRIDES = K.CONV_FAST_STRIDES
_NY = K.CONV_NY
_FAST_THREADS = K.CONV_FAST_THREADS


def _fast_key(arr, kh, kw, sh, sw, dh, dw):
    """(K, stride) of the generated fast kernels when they apply, else None."""
    if (arr.is_cuda and arr.dtype != "float64" and kh == kw and kh in _FAST_SIZES and sh == sw
            and sh in _FAST_STRIDES and dh == 1 and dw == 1):
        return (kh, sh)
    return None


def _wgrad_ny(k):
    """gpuops.cuda.conv.wgrad_ny: rows per thread of the weight-gradient kernels."""
    return _NY


def _fast_threads(total):
    """Threads per block: 256, fewer (whole warps) for tiny launches."""
    return min(_FAST_THREADS, _ceil(total, 32) * 32)


def _fast_plan(like, key, src_size, w_size, bias_size, dst_size, total):
    """The launch of the generated flat kernel ``dw_fast_{K}_{stride}`` (`_core.launch`'s plan)."""
    threads = _fast_threads(total)
    return (f"dw_fast_{key[0]}_{key[1]}", ((src_size,), (w_size,), (bias_size,), (dst_size,)),
            (_ceil(total, threads),), (threads,))


_TILE_MIN_W = 16          # narrower planes keep the flat kernels (a tile would leave most lanes idle)
_TILE_MAX_W = 64          # widest tile (columns); wider planes are cut into equal tiles
_TILE_THREADS = K.CONV_FAST_THREADS   # most threads of a tile block (the weight gradient's scratch is sized for it)


def tile_shape(K, Hd, Wd):
    """(columns, strips of _NY rows) of the stride-1 tile kernel's blocks for a ``Hd × Wd`` output."""
    twc = Wd if Wd <= _TILE_MAX_W else _ceil(Wd, _ceil(Wd, _TILE_MAX_W))
    strips = _ceil(Hd, _NY)
    sb = min(strips, max(1, _TILE_THREADS // twc))
    sb = _ceil(strips, _ceil(strips, sb))          # balance the strips over the tiles down the plane
    return twc, sb


def _tile_smem(K, twc, sb):
    """Bytes of shared memory of gpuops.cuda.conv's tile kernels: taps (padded to 4) + input window."""
    return ((K * K + 3) // 4 * 4 + (sb * _NY + K - 1) * (twc + K - 1)) * 4


def _tile_plan(like, K, src_size, w_size, bias_size, dst_size, planes, tiles_y, tiles_x, twc, sb):
    """The launch of the shared-memory tile kernel ``dw_tile_{K}`` (`_core.launch`'s plan)."""
    return (f"dw_tile_{K}", ((src_size,), (w_size,), (bias_size,), (dst_size,)), (planes, tiles_y, tiles_x),
            (_ceil(twc * sb, 32) * 32,), _tile_smem(K, twc, sb))


class _Correlation:
    """One depthwise correlation: dst plane d = Σ_q taps[d·terms + q] ⋆ src plane (d·terms + q) // div
    (see cuda.conv._dw_tiled_body).  The forward is one (flip 0), and so is the stride-1 input gradient
    (flip 1: the taps flipped, grad_out as src)."""

    __slots__ = ("src", "w", "bias", "dst", "n_src_ch", "n_dst_ch", "terms", "div", "Hs", "Ws", "Hd", "Wd",
                 "kh", "kw", "sh", "sw", "offy", "offx", "dh", "dw", "flip", "stream", "key", "planes", "nhwc")

    def __init__(self, src, w, bias, dst, nhwc=False, **values):
        self.src, self.w, self.bias, self.dst, self.nhwc = src, w, bias, dst, nhwc
        for name, value in values.items():
            setattr(self, name, value)
        self.key = _fast_key(src, self.kh, self.kw, self.sh, self.sw, self.dh, self.dw) if self.terms == 1 else None
        self.planes = dst.size // (self.Hd * self.Wd)

    def bias_or_w(self):
        """The bias, or the taps as a stand-in the kernel never reads (``has_bias`` is 0)."""
        return (0, self.w) if self.bias is None else (1, self.bias)

    def tile_grid(self):
        twc, sb = tile_shape(self.kh, self.Hd, self.Wd)
        return twc, sb, _ceil(self.Hd, sb * _NY), _ceil(self.Wd, twc)


def _tile_can_run(c):
    if c.key is None or c.key[1] != 1:
        return "needs a CUDA 16/32-bit array, K = 3/5/7, stride 1, dilation 1, one tap per plane"
    if c.Wd < _TILE_MIN_W:
        return f"output width {c.Wd} < {_TILE_MIN_W} would leave most lanes idle"
    if c.Hs * c.Ws >= 2**31 or c.planes >= 2**31:
        return "its in-plane offsets and plane index are 32-bit"
    _, _, tiles_y, tiles_x = c.tile_grid()
    return "too many tiles for the grid" if tiles_y >= 2**16 or tiles_x >= 2**16 else None


def _tile_run(c):
    twc, sb, tiles_y, tiles_x = c.tile_grid()
    has_bias, b = c.bias_or_w()
    _core.launch("conv", _tile_plan, (c.kh, c.src.size, c.w.size, b.size, c.dst.size, c.planes, tiles_y, tiles_x,
                                      twc, sb),
                 (c.src, c.w, b, c.dst), (has_bias, c.n_src_ch, c.n_dst_ch, c.div, c.Hs, c.Ws, c.Hd, c.Wd, c.offy,
                                          c.offx, c.flip, twc, sb), like=c.src, stream=c.stream)


def _fast_can_run(c):
    if c.key is None:
        return "needs a CUDA 16/32-bit array, K = 3/5/7, stride 1 or 2, dilation 1, one tap per plane"
    if c.planes * _ceil(c.Hd, _NY) * c.Wd >= 2**31 or c.src.size // (c.Hs * c.Ws) >= 2**31:
        return "its thread index is 32-bit"
    return None


def _fast_run(c):
    strips = _ceil(c.Hd, _NY)
    total = c.planes * strips * c.Wd
    has_bias, b = c.bias_or_w()
    _core.launch("conv", _fast_plan, (c.key, c.src.size, c.w.size, b.size, c.dst.size, total), (c.src, c.w, b, c.dst),
                 (has_bias, c.n_src_ch, c.n_dst_ch, c.div, c.Hs, c.Ws, c.Hd, c.Wd, c.offy, c.offx, c.flip, strips,
                  total), like=c.src, stream=c.stream)


def _tiled_shmem(c):
    PH = (_TH - 1) * c.sh + (c.kh - 1) * c.dh + 1
    PW = (_TW - 1) * c.sw + (c.kw - 1) * c.dw + 1
    return (c.terms * c.kh * c.kw + PH * PW) * _compute_itemsize(c.src.dtype)


def _tiled_can_run(c):
    if _tiled_shmem(c) > _SHARED:
        return f"its window needs {_tiled_shmem(c)} bytes of shared memory, more than {_SHARED}"
    if c.planes >= 2**31 or _ceil(c.Wd, _TW) >= 2**16 or _ceil(c.Hd, _TH) >= 2**16:
        return "too many planes or tiles for the grid"
    return None


def _general_args(c):
    has_bias, b = c.bias_or_w()
    return (In(c.src, (c.src.size,)), In(c.w, (c.w.size,)), In(b, (b.size,)), Out(c.dst, (c.dst.size,)), has_bias,
            c.n_src_ch, c.n_dst_ch, c.terms, c.div, c.Hs, c.Ws, c.Hd, c.Wd, c.kh, c.kw, c.sh, c.sw, c.offy, c.offx,
            c.dh, c.dw, c.flip)


def _tiled_run(c):
    _core.run("conv", "dw_tiled", _general_args(c), like=c.src, grid=(c.planes, _ceil(c.Hd, _TH), _ceil(c.Wd, _TW)),
              block=(_THREADS,), stream=c.stream, shmem=_tiled_shmem(c))


def _direct_run(c):
    _core.run("conv", "dw_direct", _general_args(c), like=c.src, grid=_grid(_core.blocks_for(c.dst.size, _THREADS)),
              block=(_THREADS,), stream=c.stream)


#: the kernels of one depthwise correlation, fastest first: generated shared-memory tiles (stride 1),
#: generated register-blocked flat kernels, the general shared-memory tile, the general direct kernel
#: (the last two also on the host, as the CPU mirror)
CORRELATE_VARIANTS = (Variant("tile", _tile_can_run, _tile_run), Variant("fast", _fast_can_run, _fast_run),
                      Variant("tiled", _tiled_can_run, _tiled_run), Variant("direct", lambda c: None, _direct_run))


def _strided_grad_x(c, fixed):
    """The strided input gradient: a gather per input pixel; ``fixed``: the generated kernel with the sizes
    and stride as constants.  ``c`` = (grad_out, weight, grad_x, dims, stream)."""
    g, weight, grad_x, dims, stream = c[:5]
    N, C, H, W, Cm, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw = dims
    threads = min(_THREADS, _ceil(W, 32) * 32)
    if fixed:
        key = _fast_key(grad_x, kh, kw, sh, sw, dh, dw)
        kernel, sizes = f"dw_grad_x_fixed_{key[0]}_{key[1]}", (ph, pw)
    else:
        kernel, sizes = "dw_grad_x_strided", (kh, kw, sh, sw, ph, pw, dh, dw)
    _core.run("conv", kernel, (In(g, (g.size,)), In(weight, (weight.size,)), Out(grad_x, (grad_x.size,)), C,
                               Cm // C, H, W, Ho, Wo) + sizes + (N * C,),
              like=grad_x, grid=(min(N * C, 2**31 - 1), min(H, 2**16 - 1), min(_ceil(W, threads), 2**16 - 1)),
              block=(threads,), stream=stream)


def _fixed_can_run(c):
    kh, kw, sh, sw, dh, dw = (c[3][i] for i in (5, 6, 9, 10, 13, 14))
    if _fast_key(c[2], kh, kw, sh, sw, dh, dw) is None:
        return "needs a CUDA 16/32-bit array, K = 3/5/7, stride 1 or 2, dilation 1"
    return None


# ---------------------------------------------------------------------------------------------
# channels-last (NHWC) variants: every array an (N, H, W, C) C-contiguous `Arr` (see `_in_layout`)

_NHWC_THREADS = 256          # most threads per block of the generated channels-last kernels
_NHWC_WORD = 32              # most 64-bit channel words per block row (a warp's 256 contiguous bytes)
_NHWC_STRIPS = 4             # strips per thread the forward and input-gradient grids aim at
_NHWC_BLOCKS = 1024          # blocks the grids aim at, at least (if there is that much work)
_NHWC_WGRAD_BLOCKS = 512     # blocks the weight gradient's stage 1 aims at (several waves of its 128-register blocks)
_NHWC_WGRAD_STRIPS = 4       # fewest strips per thread of stage 1, so its partial sums stay small against its work


def _word_values(dtype):
    """Channels per 64-bit word of the generated channels-last kernels (0 for float64: none)."""
    return 0 if dtype == "float64" else 8 // STORAGE[dtype][1]


def _nhwc_chunks(CW):
    """(channel chunks, words per chunk): the words split evenly into chunks of at most `_NHWC_WORD`."""
    chunks = _ceil(CW, _NHWC_WORD)
    return chunks, _ceil(CW, chunks)


def _nhwc_grid_y(strips, pb, chunks):
    """Strip groups (grid y) of the forward / input-gradient kernels: `_NHWC_STRIPS` strips per thread, but
    at least `_NHWC_BLOCKS` blocks where there are strips for them."""
    want = max(_ceil(strips, pb * _NHWC_STRIPS), min(_ceil(strips, pb), _ceil(_NHWC_BLOCKS, chunks)))
    return max(1, min(K.MAX_GRID_YZ, want))


def _nhwc_fast_why(src, dst, channels, why_key):
    """Why the generated channels-last kernels cannot run on ``src`` -> ``dst`` (None when they can)."""
    if why_key:
        return why_key
    V = _word_values(src.dtype)
    if channels % V:
        return f"needs channels in whole 64-bit words (a multiple of {V})"
    if not _core.word_aligned(src, dst):
        return "needs 8-byte aligned arrays"
    N, H, W, _ = dst.shape
    Hs, Ws = src.shape[1:3]
    if N * H * (_ceil(W, 4) + 1) >= 2**31 or max(Ws, W) * channels >= 2**31 or N * max(H, Hs) >= 2**31:
        return "its indices are 32-bit"
    return None


def _nhwc_correlate_can_run(c):
    if not c.nhwc:
        return "needs channels-last (NHWC) arrays"
    return _nhwc_fast_why(c.src, c.dst, c.n_src_ch, None if c.key is not None and c.div == 1 else
                          "needs a CUDA 16/32-bit array, K = 3/5/7, stride 1 or 2, dilation 1, depth multiplier 1")


def _nhwc_correlate_run(c):
    V = _word_values(c.src.dtype)
    (k, s), CW = c.key, c.n_src_ch // V
    chunks, cwb = _nhwc_chunks(CW)
    N = c.dst.shape[0]
    xstrips = _ceil(c.Wd, _conv_source.nhwc_tx(k, s, V))
    strips = N * c.Hd * xstrips
    pb = max(1, min(_NHWC_THREADS // cwb, strips))
    shmem = 0 if _conv_source.nhwc_reg_taps(k, V) else k * k * V * cwb * 4
    has_bias, b = c.bias_or_w()
    _core.run("conv", f"dw_nhwc_fast_{k}_{s}",
              (In(c.src, (c.src.size,)), In(c.w, (c.w.size,)), In(b, (b.size,)), Out(c.dst, (c.dst.size,)), has_bias,
               CW, c.Hs, c.Ws, c.Hd, c.Wd, c.offy, c.offx, c.flip, cwb, xstrips, strips),
              like=c.src, grid=(chunks, _nhwc_grid_y(strips, pb, chunks)), block=(cwb * pb,), stream=c.stream,
              shmem=shmem)


def _nhwc_direct_run(c):
    _core.run("conv", "dw_nhwc_direct", _general_args(c), like=c.src,
              grid=_grid(_core.blocks_for(c.dst.size, _THREADS)), block=(_THREADS,), stream=c.stream)


def _nhwc_only(c):
    return None if c.nhwc else "needs channels-last (NHWC) arrays"


def _nchw_only(can_run):
    """``can_run`` of an NCHW variant, refusing channels-last calls first (used where a list holds both)."""
    return lambda c: "needs NCHW (C-contiguous) arrays" if c.nhwc else can_run(c)


_NCHW_CORRELATE = CORRELATE_VARIANTS
_NHWC_CORRELATE = (Variant("nhwc_fast", _nhwc_correlate_can_run, _nhwc_correlate_run),
                   Variant("nhwc", _nhwc_only, _nhwc_direct_run))
#: every kernel of one depthwise correlation (forward, stride-1 input gradient), by layout: the NCHW ones
#: above, then the channels-last ones (generated per K and stride, on 64-bit words of channels; the general
#: one, also on the host, as the CPU mirror).  A call tries its layout's list (`_layout_of`).
CORRELATE_VARIANTS = tuple(Variant(v.name, _nchw_only(v.can_run), v.run) for v in _NCHW_CORRELATE) + _NHWC_CORRELATE


def _nhwc_strided_can_run(c):
    g, weight, grad_x, dims, stream, nhwc = c
    if not nhwc:
        return "needs channels-last (NHWC) arrays"
    kh, kw, sh, sw, dh, dw = (dims[i] for i in (5, 6, 9, 10, 13, 14))
    key = _fast_key(grad_x, kh, kw, sh, sw, dh, dw)
    return _nhwc_fast_why(g, grad_x, dims[1], None if key is not None and sh > 1 and dims[4] == dims[1] else
                          "needs a CUDA 16/32-bit array, K = 3/5/7, stride 2, dilation 1, depth multiplier 1")


def _nhwc_strided_run(c):
    g, weight, grad_x, dims, stream, _ = c
    N, C, H, W, Cm, k, _, Ho, Wo, s, _, ph, pw, _, _ = dims
    V = _word_values(g.dtype)
    CW = C // V
    chunks, cwb = _nhwc_chunks(CW)
    xstrips = _ceil(W + pw % s, s * _conv_source.NHWC_TP)
    strips = N * H * xstrips
    pb = max(1, min(_NHWC_THREADS // cwb, strips))
    shmem = 0 if _conv_source.nhwc_reg_taps(k, V) else k * k * V * cwb * 4
    _core.run("conv", f"dw_nhwc_grad_x_fast_{k}_{s}",
              (In(g, (g.size,)), In(weight, (weight.size,)), Out(grad_x, (grad_x.size,)), CW, H, W, Ho, Wo, ph, pw,
               cwb, xstrips, strips),
              like=g, grid=(chunks, _nhwc_grid_y(strips, pb, chunks)), block=(cwb * pb,), stream=stream, shmem=shmem)


def _nhwc_gather_run(c):
    g, weight, grad_x, dims, stream, _ = c
    N, C, H, W, Cm, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw = dims
    _core.run("conv", "dw_nhwc_grad_x", (In(g, (g.size,)), In(weight, (weight.size,)), Out(grad_x, (grad_x.size,)),
                                         C, Cm // C, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw),
              like=grad_x, grid=_grid(_core.blocks_for(grad_x.size, _THREADS)), block=(_THREADS,), stream=stream)


def _strided_nchw_only(can_run):
    return lambda c: "needs NCHW (C-contiguous) arrays" if c[5] else can_run(c)


_NCHW_STRIDED = (Variant("fixed", _fixed_can_run, lambda c: _strided_grad_x(c, True)),
                 Variant("strided", lambda c: None, lambda c: _strided_grad_x(c, False)))
_NHWC_STRIDED = (Variant("nhwc_fast", _nhwc_strided_can_run, _nhwc_strided_run),
                 Variant("nhwc", lambda c: None if c[5] else "needs channels-last (NHWC) arrays", _nhwc_gather_run))
#: the input gradient at stride > 1: generated per (K, stride), or the general gather (also the CPU mirror);
#: then the channels-last ones (generated per K and stride 2; the general gather, also the CPU mirror)
STRIDED_GRAD_X_VARIANTS = tuple(Variant(v.name, _strided_nchw_only(v.can_run), v.run)
                                for v in _NCHW_STRIDED) + _NHWC_STRIDED


def _forced_nhwc(op, *forced):
    """The layout forced variants compute in (True: channels-last), or None when none is forced."""
    names = [f for f in forced if f is not None]
    if not names:
        return None
    layouts = {isinstance(f, str) and f.startswith("nhwc") for f in names}
    if len(layouts) > 1:
        raise ValueError(f"{op}: the forced variants {names} compute in different layouts (the nhwc* ones "
                         f"channels-last, the others NCHW): force variants of one layout")
    return layouts.pop()


def _takes_channels_last(arr) -> bool:
    """The automatic layout rule: a torch tensor stored channels-last (`gpuops._core.channels_last`), CPU or
    CUDA, as PyTorch's convolutions decide (the torch fakes follow it through the declaration's
    ``channels_last``, so torch.compile sees the real strides)."""
    return _core.channels_last(arr)


def channels_last_output(x) -> bool:
    """Whether `conv2d_depthwise` (and its backward's grad_x) stores its result channels-last for the array
    ``x`` (real or a torch fake), with no ``out`` and no forced variant: for adapters allocating outputs."""
    return _takes_channels_last(_core.wrap("x", x))


def _layout_of(op, x, out, *forced):
    """True when the call computes channels-last (NHWC): a forced variant's layout, else the input's
    (`_takes_channels_last`), unless a given ``out`` is not channels-last itself."""
    nhwc = _forced_nhwc(op, *forced)
    if nhwc is None:
        return _takes_channels_last(x) and (out is None or _core.channels_last(_core.wrap("out", out)))
    if nhwc and not _core.has_nhwc(x):
        raise ValueError(f"{op}: a channels-last (nhwc*) variant needs torch, numpy, CuPy or simulated arrays, "
                         f"got {x.kind.name}")
    return nhwc


def _in_layout(arr, nhwc):
    """``arr`` C-contiguous in the call's layout: its (N, H, W, C) form for channels-last calls."""
    return _core.nhwc(arr) if nhwc else _core.contiguous(arr)


def _result(arr, given, nhwc):
    """What the caller gets: its own ``out``, else the new array (its (N, C, H, W) form when channels-last)."""
    if given is not None:
        return given
    return _core.nchw(arr) if nhwc else arr.obj


@_ops.guards_out
def conv2d_depthwise(x, weight, bias=None, *, stride=1, padding=0, dilation=1, out=None, stream=None, variant=None):
    """Depthwise 2-D convolution, exactly ``F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)``.

    x: (N, C, H, W); weight: (C·m, 1, kh, kw) with depth multiplier m >= 1 (output channel o reads
    input channel o // m); bias: (C·m,) or None.  stride/padding/dilation: int or (h, w).
    Returns (N, C·m, Ho, Wo), ``Ho = (H + 2·ph - dh·(kh-1) - 1) // sh + 1`` (`ValueError` if < 1),
    stored channels-last for a torch ``x`` stored channels-last (module docstring), else C-contiguous.
    ``variant`` forces one of `CORRELATE_VARIANTS` (tests; ``GPUOPS_LOG=1`` shows the choice).

    >>> import numpy as np, gpuops
    >>> gpuops.conv2d_depthwise(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))[0, 0]
    array([[4., 4.],
           [4., 4.]])
    """
    x, weight, bias, dims = _check_depthwise(x, weight, bias, stride, padding, dilation)
    N, C, H, W, Cm, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw = dims
    nhwc = _layout_of("conv2d_depthwise", x, out, variant)
    x = _in_layout(x, nhwc)
    y = _core.output(out, x, (N, Cm, Ho, Wo), channels_last=nhwc)
    if y.size:
        _variants.choose("conv2d_depthwise", _correlate_variants(nhwc, variant), _Correlation(
            x, weight, bias, y, n_src_ch=C, n_dst_ch=Cm, terms=1, div=Cm // C, Hs=H, Ws=W, Hd=Ho, Wd=Wo, kh=kh,
            kw=kw, sh=sh, sw=sw, offy=-ph, offx=-pw, dh=dh, dw=dw, flip=0, stream=stream, nhwc=nhwc), variant)
    return _result(y, out, nhwc)


def _correlate_variants(nhwc, forced):
    """The list a call chooses from: every variant when one is forced (by name), else its layout's."""
    return CORRELATE_VARIANTS if forced is not None else _NHWC_CORRELATE if nhwc else _NCHW_CORRELATE


@_ops.guards_out
def conv2d_depthwise_backward(grad_out, x, weight, bias=None, *, stride=1, padding=0, dilation=1, out=None,
                              stream=None, variant=None, weight_variant=None):
    """Gradients of `conv2d_depthwise`: ``(grad_x, grad_weight, grad_bias)`` (grad_bias None without bias).
    ``out``: optional arrays to write them into, one per gradient (None for grad_bias without bias).

    grad_out: (N, C·m, Ho, Wo), any strides.  grad_x is the transposed convolution (a gather, tiled
    for stride 1), in ``x``'s memory format as the forward's output; grad_weight and grad_bias are
    deterministic two-stage reductions (no atomics), in either layout.
    ``variant`` forces one of `CORRELATE_VARIANTS` for the stride-1 input gradient (of
    `STRIDED_GRAD_X_VARIANTS` at larger strides), ``weight_variant`` one of `WEIGHT_GRAD_VARIANTS`.
    """
    x, weight, bias, dims = _check_depthwise(x, weight, bias, stride, padding, dilation)
    N, C, H, W, Cm, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw = dims
    m = Cm // C
    grad_out = _core.floating("grad_out", grad_out, ndim=4)
    _core.same_dtype_and_device(x, grad_out)
    if grad_out.shape != (N, Cm, Ho, Wo):
        raise ValueError(f"grad_out must have shape {[N, Cm, Ho, Wo]}, got {list(grad_out.shape)}")
    out_x, out_w, out_b = _core.out_tuple(out, ("grad_x", "grad_weight", "grad_bias"))
    nhwc = _layout_of("conv2d_depthwise_backward", x, out_x, variant, weight_variant)
    x, grad_out = _in_layout(x, nhwc), _in_layout(grad_out, nhwc)
    grad_x = _core.output(out_x, x, (N, C, H, W), channels_last=nhwc)
    grad_w = _core.output(out_w, x, weight.shape)
    grad_b = None if bias is None else _core.output(out_b, x, (Cm,))
    # input gradient: a correlation of grad_out with the flipped taps at stride 1, else a strided gather
    if grad_x.size and sh == 1 and sw == 1:
        _variants.choose("conv2d_depthwise_backward", _correlate_variants(nhwc, variant), _Correlation(
            grad_out, weight, None, grad_x, n_src_ch=Cm, n_dst_ch=C, terms=m, div=1, Hs=Ho, Ws=Wo, Hd=H, Wd=W,
            kh=kh, kw=kw, sh=1, sw=1, offy=ph - (kh - 1) * dh, offx=pw - (kw - 1) * dw, dh=dh, dw=dw, flip=1,
            stream=stream, nhwc=nhwc), variant)
    elif grad_x.size:
        variants = STRIDED_GRAD_X_VARIANTS if variant is not None else _NHWC_STRIDED if nhwc else _NCHW_STRIDED
        _variants.choose("conv2d_depthwise_backward", variants, (grad_out, weight, grad_x, dims, stream, nhwc),
                         variant)
    # weight (and bias) gradient
    variants = WEIGHT_GRAD_VARIANTS if weight_variant is not None else _NHWC_WEIGHT_GRAD if nhwc else _NCHW_WEIGHT_GRAD
    _variants.choose("conv2d_depthwise_backward (weight)", variants,
                     _WeightGrad(x, grad_out, grad_w, grad_b, dims, stream, nhwc), weight_variant)
    return _result(grad_x, out_x, nhwc), grad_w.obj, None if grad_b is None else grad_b.obj


class _WeightGrad:
    """One depthwise weight (and bias) gradient call, as its variants see it."""

    __slots__ = ("x", "grad_out", "grad_w", "grad_b", "dims", "stream", "key", "nhwc")

    def __init__(self, x, grad_out, grad_w, grad_b, dims, stream, nhwc=False):
        self.x, self.grad_out, self.grad_w, self.grad_b, self.dims, self.stream = x, grad_out, grad_w, grad_b, dims, stream
        self.nhwc = nhwc
        N, C, H, W, Cm, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw = dims
        self.key = _fast_key(x, kh, kw, sh, sw, dh, dw)

    @property
    def slots(self):
        """Sums per output channel: the taps, and the bias."""
        return self.dims[5] * self.dims[6] + (self.grad_b is not None)


def _wgrad_fast_can_run(c):
    N, C, H, W, Cm, kh, kw, Ho, Wo = c.dims[:9]
    if c.key is None:
        return "needs a CUDA 16/32-bit array, K = 3/5/7, stride 1 or 2, dilation 1"
    if not N:
        return "needs a non-empty batch"
    if Cm * N >= 2**31 or N * C >= 2**31 or N * _ceil(Ho, _wgrad_ny(kh)) * Wo >= 2**31:
        return "its indices are 32-bit"
    return None


def _wgrad_tile_can_run(c):
    why = _wgrad_fast_can_run(c)
    if why is not None:
        return why
    N, C, H, W, Cm, kh, kw, Ho, Wo = c.dims[:9]
    if c.key[1] != 1:
        return "needs stride 1"
    if Wo < _TILE_MIN_W:
        return f"output width {Wo} < {_TILE_MIN_W} would leave most lanes idle"
    if H * W >= 2**31 or Ho * Wo >= 2**31:
        return "its in-plane offsets are 32-bit"
    twc, sb = tile_shape(kh, Ho, Wo)
    return "too many tiles" if N * _ceil(Ho, sb * _NY) * _ceil(Wo, twc) >= 2**31 else None


def _wgrad_tile_run(c):
    """Stage 1 by the generated shared-memory tile kernel (block = output channel × group of tiles)."""
    x, (N, C, H, W, Cm, kh, _, Ho, Wo, _, _, ph, pw, _, _) = c.x, c.dims
    twc, sb = tile_shape(kh, Ho, Wo)
    tiles_y, tiles_x = _ceil(Ho, sb * _NY), _ceil(Wo, twc)
    items = N * tiles_y * tiles_x
    # enough blocks to fill the GPU, each summing a few tiles before its reduction
    groups = max(1, min(items, _ceil(_WGRAD_BLOCKS // 2, Cm), items // 4))
    partial = _core.scratch(x, (Cm * groups * c.slots,), STORAGE[x.dtype][2], c.stream)
    _core.run("conv", f"dw_wgrad_tile_{kh}",
              (In(x, (x.size,)), In(c.grad_out, (c.grad_out.size,)), Out(partial), C, Cm, Cm // C, H, W, Ho, Wo,
               -ph, -pw, N, groups, int(c.grad_b is not None), twc, sb, tiles_y, tiles_x),
              like=x, grid=(Cm * groups,), block=(_ceil(twc * sb, 32) * 32,), stream=c.stream,
              shmem=_tile_smem(kh, twc, sb))
    _wgrad_final(c, partial, groups)


def _wgrad_fast_run(c):
    """Stage 1 by the generated register-blocked kernels of ``key`` (block = output channel × group of
    images), in bands of tap rows."""
    x, (N, C, H, W, Cm, kh, _, Ho, Wo, _, _, ph, pw, _, _) = c.x, c.dims
    strips = _ceil(Ho, _wgrad_ny(kh))
    per_image = strips * Wo
    threads = _fast_threads(per_image * N)
    # enough blocks to fill the GPU, but each thread should sum several items before the reduction
    groups = max(1, min(N, _ceil(_WGRAD_BLOCKS // 2, Cm), (N * per_image) // (4 * threads)))
    partial = _core.scratch(x, (Cm * groups * c.slots,), STORAGE[x.dtype][2], c.stream)
    for part in range(K.CONV_WGRAD_PARTS[kh]):
        _core.run("conv", f"dw_wgrad_fast_{c.key[0]}_{c.key[1]}_{part}",
                  (In(x, (x.size,)), In(c.grad_out, (c.grad_out.size,)), Out(partial), C, Cm, Cm // C, H, W, Ho,
                   Wo, -ph, -pw, strips, N, groups, int(c.grad_b is not None)),
                  like=x, grid=(Cm * groups,), block=(threads,), stream=c.stream)
    _wgrad_final(c, partial, groups)


def _wgrad_tile_height(c):
    """(rows of output per tile, shared bytes) of DW_WGRAD_TILED, or None when no tile fits in shared memory."""
    N, C, H, W, Cm, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw = c.dims
    item = _compute_itemsize(c.x.dtype)
    tallest = 1
    while tallest < min(Ho, 32):
        tallest *= 2
    for th in (32, 16, 8, 4, 2, 1):
        if th > tallest:
            continue
        PH = (th - 1) * sh + (kh - 1) * dh + 1
        PW = (_TW - 1) * sw + (kw - 1) * dw + 1
        shmem = (th * _TW + PH * PW + _THREADS) * item
        if shmem <= _SHARED:
            return th, shmem
    return None


def _wgrad_general_run(c, tiled):
    """Stage 1 by the general kernels: shared-memory tiles (``tiled``) or one thread per tap and image."""
    x, (N, C, H, W, Cm, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw) = c.x, c.dims
    slots, with_bias = c.slots, int(c.grad_b is not None)
    tpt = max(1, _THREADS // slots)
    common = (C, Cm // C, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw)
    if tiled:
        th, shmem = _wgrad_tile_height(c)
        tiles_x, tiles_y = _ceil(Wo, _TW), _ceil(Ho, th)
        items = N * tiles_x * tiles_y
    else:
        items = N
    groups = max(1, min(_ceil(_WGRAD_BLOCKS, Cm), max(items, 1)))
    partial = _core.scratch(x, (Cm * groups * slots,), STORAGE[x.dtype][2], c.stream)
    args = (In(x, (x.size,)), In(c.grad_out, (c.grad_out.size,)), Out(partial)) + common
    if N == 0:
        _zero_fill(partial)
    elif tiled:
        _core.run("conv", "dw_wgrad_tiled", args + (th, tiles_x, tiles_y, groups, tpt, with_bias),
                  like=x, grid=_grid(Cm * groups), block=(_THREADS,), stream=c.stream, shmem=shmem)
    else:
        _core.run("conv", "dw_wgrad_direct", args + (groups, tpt, with_bias),
                  like=x, grid=_grid(Cm * groups), block=(_THREADS,), stream=c.stream)
    _wgrad_final(c, partial, groups)


def _wgrad_final(c, partial, groups):
    """Stage 2: each tap's (and the bias's) partial sums added in a fixed order (deterministic)."""
    x, Cm, KK = c.x, c.dims[4], c.dims[5] * c.dims[6]
    # without a bias the kernel gets a 1-element stand-in: never the same array twice as an output
    gb = Out(_core.scratch(x, (1,), stream=c.stream) if c.grad_b is None else c.grad_b)
    _core.run("conv", "dw_wgrad_final",
              (In(partial), Out(c.grad_w, (c.grad_w.size,)), gb, groups, KK, int(c.grad_b is not None)),
              like=x, grid=_grid(_core.blocks_for(Cm * c.slots, _THREADS)), block=(_THREADS,), stream=c.stream)


def _nhwc_wgrad_can_run(c):
    if not c.nhwc:
        return "needs channels-last (NHWC) arrays"
    N, C, H, W, Cm = c.dims[:5]
    if c.key is None or Cm != C:
        return "needs a CUDA 16/32-bit array, K = 3/5/7, stride 1 or 2, dilation 1, depth multiplier 1"
    if not N:
        return "needs a non-empty batch"
    return _nhwc_fast_why(c.x, c.grad_out, C, None)


def _nhwc_wgrad_run(c):
    """Stage 1 by the generated channels-last kernel (block = channel words × tap rows × strips), then the
    fixed-order sum over the groups."""
    x, g, (N, C, H, W, Cm, k, _, Ho, Wo, s, _, ph, pw, _, _) = c.x, c.grad_out, c.dims
    V = _word_values(x.dtype)
    CW = C // V
    chunks, cwb = _nhwc_chunks(CW)
    xstrips = _ceil(Wo, _conv_source.nhwc_tx(k, s, V, wgrad=True))
    strips = N * Ho * xstrips
    pb = max(1, min(_NHWC_THREADS // (cwb * k), strips))
    groups = max(1, min(K.MAX_GRID_YZ, strips // (pb * _NHWC_WGRAD_STRIPS), _ceil(_NHWC_WGRAD_BLOCKS, chunks)))
    partial = _core.scratch(x, (groups * c.slots * Cm,), STORAGE[x.dtype][2], c.stream)
    threads = cwb * k * pb
    _core.run("conv", f"dw_nhwc_wgrad_fast_{k}_{s}",
              (In(x, (x.size,)), In(g, (g.size,)), Out(partial), CW, H, W, Ho, Wo, ph, pw, cwb, xstrips, strips,
               int(c.grad_b is not None)),
              like=x, grid=(chunks, groups), block=(threads,), stream=c.stream, shmem=threads * (k + 1) * V * 4)
    _nhwc_wgrad_final(c, partial, groups)


def _nhwc_wgrad_general_run(c):
    """Stage 1 by the general kernel (one thread per group, slot and channel; one group on the host)."""
    x, (N, C, H, W, Cm, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw) = c.x, c.dims
    P = N * Ho * Wo
    groups = max(1, min(P, _ceil(_WGRAD_BLOCKS * _THREADS, c.slots * Cm))) if x.is_cuda else 1
    partial = _core.scratch(x, (groups * c.slots * Cm,), STORAGE[x.dtype][2], c.stream)
    _core.run("conv", "dw_nhwc_wgrad", (In(x, (x.size,)), In(c.grad_out, (c.grad_out.size,)), Out(partial), N, C,
                                        Cm // C, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw, groups,
                                        int(c.grad_b is not None)),
              like=x, grid=_grid(_core.blocks_for(partial.size, _THREADS)), block=(_THREADS,), stream=c.stream)
    _nhwc_wgrad_final(c, partial, groups)


def _nhwc_wgrad_final(c, partial, groups):
    """Stage 2 of the channels-last weight gradient: partial[group, slot, channel] summed over the groups in a
    fixed order (deterministic): a block takes 32 outputs, and K.CONV_WGRAD_FINAL_ROWS threads split each one's
    groups."""
    x, Cm, KK = c.x, c.dims[4], c.dims[5] * c.dims[6]
    gb = Out(_core.scratch(x, (1,), stream=c.stream) if c.grad_b is None else c.grad_b)
    _core.run("conv", "dw_nhwc_wgrad_final",
              (In(partial), Out(c.grad_w, (c.grad_w.size,)), gb, groups, KK, int(c.grad_b is not None)),
              like=x, grid=_grid(_ceil(Cm * c.slots, 32)), block=(32 * K.CONV_WGRAD_FINAL_ROWS,), stream=c.stream)


_NCHW_WEIGHT_GRAD = (
    Variant("tile", _wgrad_tile_can_run, _wgrad_tile_run),
    Variant("fast", _wgrad_fast_can_run, _wgrad_fast_run),
    Variant("tiled", lambda c: None if _wgrad_tile_height(c) else "no tile fits in shared memory",
            lambda c: _wgrad_general_run(c, True)),
    Variant("direct", lambda c: None, lambda c: _wgrad_general_run(c, False)))
_NHWC_WEIGHT_GRAD = (Variant("nhwc_fast", _nhwc_wgrad_can_run, _nhwc_wgrad_run),
                     Variant("nhwc", _nhwc_only, _nhwc_wgrad_general_run))
#: the weight gradient's first stage, fastest first (each followed by the fixed-order final sum): the NCHW
#: kernels, then the channels-last ones (generated per K and stride; the general one, also the CPU mirror)
WEIGHT_GRAD_VARIANTS = tuple(Variant(v.name, _nchw_only(v.can_run), v.run) for v in _NCHW_WEIGHT_GRAD) \
    + _NHWC_WEIGHT_GRAD


def _zero_fill(arr):
    """An empty batch: the weight gradient is zero (partial sums over nothing).  A host-side write, which
    a `gpuops._core.Replay` would not repeat."""
    _core._not_replayable()
    obj = arr.obj
    if hasattr(obj, "fill_"):
        obj.fill_(0)
    elif arr.kind is _core.NUMPY or arr.kind is _core.CUPY:
        obj.fill(0)
    elif arr.kind is _core.SIMULATED:
        _core.SIMULATED.host(arr)[...] = 0
    else:
        import numpy as np
        from gpuops._toolchain import cuda
        cuda.to_device(np.zeros(arr.shape, obj.dtype), to=obj)


# ---------------------------------------------------------------------------------------------
# im2col / col2im


def im2col_shape(shape, kernel_size, *, stride=1, padding=0, dilation=1):
    """Output shape of `im2col` for an input of ``shape`` (checks every argument; shared with the fakes)."""
    if len(shape) not in (3, 4):
        raise ValueError(f"x must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {list(shape)}")
    kh, kw = _core.pair("kernel_size", kernel_size, minimum=1)
    (sh, sw), (ph, pw), (dh, dw) = _params(stride, padding, dilation)
    H, W = shape[-2:]
    return tuple(shape[:-2]) + (kh, kw, _core.window_out_size("output height", H, kh, ph, dh, sh),
                                _core.window_out_size("output width", W, kw, pw, dw, sw))


def col2im_shape(shape, kernel_size, *, stride=1, padding=0, dilation=1, input_size=None):
    """Output shape of `col2im` for columns of ``shape`` (checks every argument; shared with the fakes)."""
    if len(shape) not in (5, 6):
        raise ValueError(f"cols must be 5-D (C, kh, kw, Ho, Wo) or 6-D (N, C, kh, kw, Ho, Wo), "
                         f"got shape {list(shape)}")
    kh, kw = _core.pair("kernel_size", kernel_size, minimum=1)
    (sh, sw), (ph, pw), (dh, dw) = _params(stride, padding, dilation)
    if tuple(shape[-4:-2]) != (kh, kw):
        raise ValueError(f"cols must have (kh, kw) = {(kh, kw)} at axes -4, -3 (kernel_size), "
                         f"got shape {list(shape)}")
    Ho, Wo = shape[-2:]
    if input_size is None:
        H = (Ho - 1) * sh - 2 * ph + dh * (kh - 1) + 1
        W = (Wo - 1) * sw - 2 * pw + dw * (kw - 1) + 1
        if H < 1 or W < 1:
            raise ValueError(f"input_size: the image size implied by cols {list(shape)} and the window "
                             f"parameters would be {(H, W)}; it must be >= 1 (pass input_size)")
    else:
        H, W = _core.pair("input_size", input_size, minimum=1)
    if Ho < 1 or Wo < 1 or (_window(H, kh, ph, dh, sh), _window(W, kw, pw, dw, sw)) != (Ho, Wo):
        raise ValueError(f"input_size {(H, W)} gives a {(_window(H, kh, ph, dh, sh), _window(W, kw, pw, dw, sw))} "
                         f"window grid with these parameters, but cols has (Ho, Wo) = {(Ho, Wo)}")
    return tuple(shape[:-4]) + (H, W)


@_ops.guards_out
def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1, out=None, stream=None):
    """Unfold sliding windows: (C, H, W) -> (C, kh, kw, Ho, Wo), (N, C, H, W) -> (N, C, kh, kw, Ho, Wo).

    ``cols[..., c, i, j, h, w] = x[..., c, h·sh - ph + i·dh, w·sw - pw + j·dw]`` (0 outside); the
    element order of ``F.unfold(x, k, dilation, padding, stride).view(N, C, kh, kw, Ho, Wo)``.
    A batch is one launch.
    """
    x = _core.contiguous(_core.floating("x", x))
    shape = im2col_shape(x.shape, kernel_size, stride=stride, padding=padding, dilation=dilation)
    H, W = x.shape[-2:]
    kh, kw, Ho, Wo = shape[-4:]
    (sh, sw), (ph, pw), (dh, dw) = _params(stride, padding, dilation)
    out = _core.output(out, x, shape)
    n = out.size
    if n:
        _core.run("conv", "im2col",
                  (In(x, (x.size,)), Out(out, (n,)), H, W, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw),
                  like=x, grid=_grid(_core.blocks_for(n, _THREADS)), block=(_THREADS,), stream=stream)
    return out.obj


@_ops.guards_out
def col2im(cols, kernel_size, *, stride=1, padding=0, dilation=1, input_size=None, out=None, stream=None):
    """The exact adjoint of `im2col`: every column entry is added onto the pixel it came from.

    cols: (C, kh, kw, Ho, Wo) or (N, C, kh, kw, Ho, Wo) -> (C, H, W) / (N, C, H, W), with (H, W) =
    ``input_size`` (int or pair) or, when None, the smallest size giving (Ho, Wo):
    ``H = (Ho - 1)·sh - 2·ph + dh·(kh - 1) + 1``.  Computed as a gather (no atomics).
    """
    cols = _core.contiguous(_core.floating("cols", cols))
    shape = col2im_shape(cols.shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         input_size=input_size)
    H, W = shape[-2:]
    kh, kw, Ho, Wo = cols.shape[-4:]
    (sh, sw), (ph, pw), (dh, dw) = _params(stride, padding, dilation)
    out = _core.output(out, cols, shape)
    n = out.size
    if n:
        _core.run("conv", "col2im",
                  (In(cols, (cols.size,)), Out(out, (n,)), H, W, kh, kw, Ho, Wo, sh, sw, ph, pw, dh, dw),
                  like=cols, grid=_grid(_core.blocks_for(n, _THREADS)), block=(_THREADS,), stream=stream)
    return out.obj


def _window(size, k, p, d, s):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@_ops.guards_out
def im2col_backward(grad_out, input_size, kernel_size, *, stride=1, padding=0, dilation=1, out=None, stream=None):
    """Gradient of `im2col` w.r.t. x: ``col2im(grad_out, kernel_size, ..., input_size=input_size)``.

    ``input_size``: (H, W), an int, or the whole input shape (x.shape).
    """
    if isinstance(input_size, (tuple, list)) and len(input_size) in (3, 4):
        g = _core.wrap("grad_out", grad_out)
        lead = tuple(input_size[:-2])
        if lead != tuple(g.shape[:-4]):
            raise ValueError(f"input_size {list(input_size)} does not match grad_out of shape {list(g.shape)}")
        input_size = tuple(input_size[-2:])
    return col2im(grad_out, kernel_size, stride=stride, padding=padding, dilation=dilation,
                  input_size=input_size, out=out, stream=stream)


@_ops.guards_out
def col2im_backward(grad_out, kernel_size, *, stride=1, padding=0, dilation=1, out=None, stream=None):
    """Gradient of `col2im` w.r.t. cols: ``im2col(grad_out, kernel_size, ...)``."""
    return im2col(grad_out, kernel_size, stride=stride, padding=padding, dilation=dilation, out=out,
                  stream=stream)


# ---------------------------------------------------------------------------------------------
# declarations

_WINDOW_PARAMS = (Param("stride", "pair", 1, minimum=1), Param("padding", "pair", 0),
                  Param("dilation", "pair", 1, minimum=1))


def _depthwise_shapes(x, weight, bias=None, *, stride, padding, dilation):
    N, _, _, _, Cm, _, _, Ho, Wo = _check_depthwise(x, weight, bias, stride, padding, dilation)[3][:9]
    return (N, Cm, Ho, Wo)


def _depthwise_example(rng, batch):
    u = rng.uniform
    return (u(-1, 1, (batch, 3, 7, 6)), u(-1, 1, (6, 1, 3, 3)), u(-1, 1, (6,))), dict(stride=1, padding=1,
                                                                                      dilation=1)


CONV2D_DEPTHWISE = _ops.declare(OpSpec(
    name="conv2d_depthwise", forward=conv2d_depthwise, backward=conv2d_depthwise_backward,
    arrays=("x", "weight", "bias?"), params=_WINDOW_PARAMS, shapes=_depthwise_shapes, example=_depthwise_example,
    batch=(True, False, False),
    autocast=True, channels_last=lambda x, weight, bias=None: channels_last_output(x),
    reference=reference.conv2d_depthwise, reference_backward=reference.conv2d_depthwise_backward))


def _im2col_shapes(x, *, kernel_size, stride, padding, dilation):
    return im2col_shape(_core.floating("x", x).shape, kernel_size, stride=stride, padding=padding,
                        dilation=dilation)


def _col2im_shapes(cols, *, kernel_size, stride, padding, dilation, input_size):
    return col2im_shape(_core.floating("cols", cols).shape, kernel_size, stride=stride, padding=padding,
                        dilation=dilation, input_size=input_size)


def _window_of(params):
    return {k: params[k] for k in ("kernel_size", "stride", "padding", "dilation")}


IM2COL = _ops.declare(OpSpec(
    name="im2col", forward=im2col, arrays=("x",),
    params=(Param("kernel_size", "pair", minimum=1, positional=True),) + _WINDOW_PARAMS, shapes=_im2col_shapes,
    vmap="fold", adjoint=("col2im", lambda arrays, params: dict(_window_of(params),
                                                                input_size=tuple(arrays[0].shape[-2:]))),
    example=lambda rng, batch: ((rng.uniform(-1, 1, (batch, 2, 7, 6)),), dict(kernel_size=3, stride=2, padding=1,
                                                                              dilation=1)),
    reference=reference.im2col))

COL2IM = _ops.declare(OpSpec(
    name="col2im", forward=col2im, arrays=("cols",),
    params=(Param("kernel_size", "pair", minimum=1, positional=True),) + _WINDOW_PARAMS
    + (Param("input_size", "pair?", None, minimum=1),), shapes=_col2im_shapes,
    vmap="fold", adjoint=("im2col", lambda arrays, params: _window_of(params)),
    example=lambda rng, batch: ((rng.uniform(-1, 1, (batch, 2, 2, 2, 3, 3)),), dict(kernel_size=2, stride=2,
                                                                                   padding=0, dilation=1,
                                                                                   input_size=(7, 6))),
    reference=reference.col2im))
