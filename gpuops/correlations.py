"""The correlation family: spatial_correlation_sample (FlowNetC correlation, raw sums, 5-D output) and
correlation (the FlowNet/Caffe layer, normalised, 4-D output).

Contract: docs/ops.md (spatial_correlation_sample, correlation).  Kernels: gpuops/cuda/correlation.py; CPU mirrors: gpuops/cpu/correlation.py.
``correlation`` is computed by the sampler's kernels: kernel_size=k, patch_size=D, stride=stride1,
padding=pad_size − max_displacement (may be negative: the kernels take signed padding), dilation=1,
dilation_patch=stride2, scaled by 1/(k²·C).
"""

from gpuops import _constants as K
from gpuops import _core, _ops, _variants, reference
from gpuops._core import In, Out
from gpuops._ops import OpSpec, Param
from gpuops._variants import Variant

# launch geometry shared with gpuops.cuda.correlation (gpuops._constants: one definition, numba-free)
_TX, _TY = K.CORR_TX, K.CORR_TY
_G = K.CORR_G
_FWD_W2 = K.CORR_FWD_W2
_BWD_W2 = K.CORR_BWD_W2
_BWD_CB = {"float16": K.CORR_BWD_CB, "bfloat16": K.CORR_BWD_CB, "float32": K.CORR_BWD_CB, "float64": K.CORR_BWD_CB64}
_MAX_GRID_YZ = K.MAX_GRID_YZ
_DIRECT_THREADS = 256
# register-tiled fast paths (gpuops.cuda.correlation RT kernels)
_RT_GROUPS = K.CORR_RT_GROUPS
_RT_NW = K.CORR_RT_NW
_RT_ROWS = K.CORR_RT_ROWS
_RT_CB = K.CORR_RT_CB
_RT_LDP = {d: d.bit_length() - 1 for d in K.CORR_RT_DILATIONS}
_RT_MIN_PW = 5
#: the RT kernels index their inputs (and grad_out) with 32-bit offsets
_RT_MAX_SIZE = K.CORR_RT_MAX_ELEMENTS
_SHORT = ("float16", "bfloat16", "float32")


class _Geometry:
    """Validated parameters of one sampler call (all int pairs) and the derived sizes."""

    __slots__ = ("k", "p", "s", "pad", "dil", "dp", "N", "C", "H", "W", "oH", "oW")

    def params(self):
        return (self.k[0], self.k[1], self.s[0], self.s[1], self.pad[0], self.pad[1], self.dil[0], self.dil[1],
                self.p[0], self.p[1], self.dp[0], self.dp[1])


def _inputs(input1, input2):
    a = _core.floating("input1", input1, ndim=4)
    b = _core.floating("input2", input2, ndim=4)
    _core.same_dtype_and_device(a, b)
    _core.same_shape(a, b)
    return _core.contiguous(a), _core.contiguous(b)


def _sampler_geometry(shape, kernel_size, patch_size, stride, padding, dilation, dilation_patch, name):
    geo = _Geometry()
    geo.k = _core.pair("kernel_size", kernel_size, minimum=1)
    geo.p = _core.pair("patch_size", patch_size, minimum=1)
    geo.s = _core.pair("stride", stride, minimum=1)
    geo.pad = _core.pair("padding", padding, minimum=0)
    geo.dil = _core.pair("dilation", dilation, minimum=1)
    geo.dp = _core.pair("dilation_patch", dilation_patch, minimum=1)
    geo.N, geo.C, geo.H, geo.W = shape
    geo.oH = _core.window_out_size(name, geo.H, geo.k[0], geo.pad[0], geo.dil[0], geo.s[0])
    geo.oW = _core.window_out_size(name, geo.W, geo.k[1], geo.pad[1], geo.dil[1], geo.s[1])
    return geo


def _correlation_params(pad_size, kernel_size, max_displacement, stride1, stride2):
    pad = _core.integer("pad_size", pad_size, minimum=0)
    k = _core.integer("kernel_size", kernel_size, minimum=1)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {k}")
    md = _core.integer("max_displacement", max_displacement, minimum=0)
    return pad, k, md, _core.integer("stride1", stride1, minimum=1), _core.integer("stride2", stride2, minimum=1)


def _correlation_geometry(shape, pad_size, kernel_size, max_displacement, stride1, stride2):
    pad, k, md, s1, s2 = _correlation_params(pad_size, kernel_size, max_displacement, stride1, stride2)
    N, C, H, W = shape
    kr = (k - 1) // 2
    sizes = []
    for axis, size in (("height", H), ("width", W)):
        if size < 1:
            raise ValueError(f"correlation: the inputs must be non-empty along the {axis}, got size {size}")
        span = size + 2 * pad - 2 * (md + kr)
        out = -(-span // s1)                                    # ceil
        if out < 1:
            raise ValueError(f"correlation: output {axis} would be {out} (input {size}, pad_size {pad}, "
                             f"max_displacement {md}, kernel_size {k}, stride1 {s1}); it must be >= 1")
        sizes.append(out)
    geo = _Geometry()
    D = 2 * (md // s2) + 1
    geo.k, geo.p, geo.s = (k, k), (D, D), (s1, s1)
    geo.pad, geo.dil, geo.dp = (pad - md, pad - md), (1, 1), (s2, s2)
    geo.N, geo.C, geo.H, geo.W = shape
    geo.oH, geo.oW = sizes
    # the sampler's output size with these parameters is the Caffe size (docs/ops.md, correlation)
    assert (H + 2 * (pad - md) - (k - 1) - 1) // s1 + 1 == geo.oH
    return geo


def _group(patch_w, dp_w, w2):
    return max(1, min(_G, patch_w, (w2 - _TX) // dp_w + 1))


def _suffix(dtype):
    return "64" if dtype == "float64" else ""


def _rt_group(patch_w):
    """The RT kernels' group width for ``patch_w`` columns: fewest computed columns, then the wider."""
    return min(_RT_GROUPS, key=lambda g: (-(-patch_w // g) * g, -g))


def _rt_region(geo):
    """(ldp, region rows, region columns) of the RT kernels, or None when they do not apply."""
    ldp = _RT_LDP.get(geo.dp[1])
    if ldp is None or geo.p[1] < _RT_MIN_PW:
        return None
    return ldp, _RT_ROWS >> ldp, 32 << ldp


class _Call:
    """The values of one correlation call the variants choose on (``g``, ``gin1``, ``gin2``: backward)."""

    __slots__ = ("a", "b", "geo", "out", "scale", "stream", "ext_y", "ext_x", "g", "gin1", "gin2")

    def __init__(self, a, b, geo, scale, stream, out=None, g=None, gin1=None, gin2=None):
        self.a, self.b, self.geo, self.scale, self.stream = a, b, geo, scale, stream
        self.out, self.g, self.gin1, self.gin2 = out, g, gin1, gin2
        self.ext_y = (geo.k[0] - 1) * geo.dil[0] + 1
        self.ext_x = (geo.k[1] - 1) * geo.dil[1] + 1

    @property
    def out4(self):
        geo = self.geo
        return (geo.N, geo.p[0] * geo.p[1], geo.oH, geo.oW)


def _rt_can_run(c, backward=False):
    region = _rt_region(c.geo)
    if not c.a.is_cuda:
        return "needs a CUDA array"
    if region is None:
        return f"needs dilation_patch 1, 2 or 4 and a patch at least {_RT_MIN_PW} wide"
    if c.a.dtype not in _SHORT:
        return "is 16/32-bit only"
    if c.a.size >= _RT_MAX_SIZE or backward and c.g.size >= _RT_MAX_SIZE:
        return "indexes with 32-bit offsets"
    if backward and (c.geo.k != (1, 1) or c.geo.s != (1, 1)):
        return "its backward needs kernel_size 1 and stride 1"
    if not backward and (c.ext_y > region[1] or c.ext_x > region[2]):
        return "the window is larger than its region"
    return None


def _forward_rt(c):
    geo, (ldp, ry, rx) = c.geo, _rt_region(c.geo)
    G = _rt_group(geo.p[1])
    ngroups = -(-geo.p[1] // G)
    tyo = (ry - c.ext_y) // geo.s[0] + 1
    txo = (rx - c.ext_x) // geo.s[1] + 1
    tiles_x = -(-geo.oW // txo)
    tiles = -(-geo.oH // tyo) * tiles_x
    grid = (tiles, min(geo.p[0] * ngroups, _MAX_GRID_YZ), min(geo.N, _MAX_GRID_YZ))
    _core.run("correlation", f"sample_forward_rt{G}",
              (In(c.a, (c.a.size,)), In(c.b, (c.b.size,)), Out(c.out, c.out4), geo.C, geo.H, geo.W) + geo.params()
              + (ldp, G, ngroups, tyo, txo, tiles_x, float(c.scale)),
              like=c.a, grid=grid, block=(32, _RT_NW), stream=c.stream)


def _backward_rt(c):
    geo, (ldp, ry, rx) = c.geo, _rt_region(c.geo)
    G = _rt_group(geo.p[1])
    ngroups = -(-geo.p[1] // G)
    tiles_x = -(-geo.W // rx)
    tiles = -(-geo.H // ry) * tiles_x
    grid = (tiles, min(-(-geo.C // _RT_CB), _MAX_GRID_YZ), min(2 * geo.N, _MAX_GRID_YZ))
    flat = (c.a.size,)
    _core.run("correlation", f"sample_backward_rt{G}",
              (In(c.g, (c.g.size,)), In(c.a, flat), In(c.b, flat), Out(c.gin1, flat), Out(c.gin2, flat),
               geo.N, geo.p[0] * geo.p[1], geo.oH, geo.oW, geo.C, geo.H, geo.W, geo.pad[0], geo.pad[1], geo.p[0],
               geo.p[1], geo.dp[0], geo.dp[1], ldp, ngroups, tiles_x, float(c.scale)),
              like=c.a, grid=grid, block=(32, _RT_NW), stream=c.stream)


def _tiled_can_run(c):
    if c.a.is_cuda and (c.ext_y > _TY or c.ext_x > _TX):
        return f"the window ({c.ext_y}×{c.ext_x}) must fit its {_TY}×{_TX} tile"
    return None


def _forward_tiled(c):
    geo = c.geo
    tyo = (_TY - c.ext_y) // geo.s[0] + 1 if c.ext_y <= _TY else 1
    txo = (_TX - c.ext_x) // geo.s[1] + 1 if c.ext_x <= _TX else 1
    tiles_y, tiles_x = -(-geo.oH // tyo), -(-geo.oW // txo)
    gsz = _group(geo.p[1], geo.dp[1], _FWD_W2)
    ngroups = -(-geo.p[1] // gsz)
    grid = (tiles_y * tiles_x, min(geo.p[0] * ngroups, _MAX_GRID_YZ), min(geo.N, _MAX_GRID_YZ))
    _core.run("correlation", "sample_forward" + _suffix(c.a.dtype),
              (In(c.a), In(c.b), Out(c.out, c.out4)) + geo.params() + (gsz, ngroups, tyo, txo, tiles_x,
                                                                      float(c.scale)),
              like=c.a, grid=grid, block=(_TX, _TY), stream=c.stream)


def _forward_direct(c):
    n = c.out.size
    _core.run("correlation", "sample_forward_direct",
              (In(c.a), In(c.b), Out(c.out, c.out4)) + c.geo.params() + (float(c.scale), 0.0),
              like=c.a, grid=lambda: (_core.blocks_for(n, _DIRECT_THREADS),), block=(_DIRECT_THREADS,),
              stream=c.stream)


def _backward_tiled(c):
    geo = c.geo
    gsz = _group(geo.p[1], geo.dp[1], _BWD_W2)
    ngroups = -(-geo.p[1] // gsz)
    tiles_x = -(-geo.W // _TX)
    tiles = -(-geo.H // _TY) * tiles_x
    grid = (tiles, min(-(-geo.C // _BWD_CB[c.a.dtype]), _MAX_GRID_YZ), min(2 * geo.N, _MAX_GRID_YZ))
    _core.run("correlation", "sample_backward" + _suffix(c.a.dtype),
              (In(c.g, c.out4), In(c.a), In(c.b), Out(c.gin1), Out(c.gin2)) + geo.params()
              + (gsz, ngroups, tiles_x, float(c.scale)),
              like=c.a, grid=grid, block=(_TX, _TY), stream=c.stream)


#: the forward's kernels, fastest first: register-tiled (generated per group width), shared-memory tiles
#: (also the CPU mirror), one thread per output for windows larger than a tile
FORWARD_VARIANTS = (Variant("register_tiled", _rt_can_run, _forward_rt),
                    Variant("tiled", _tiled_can_run, _forward_tiled),
                    Variant("direct", lambda c: None, _forward_direct))
#: the backward's: register-tiled, then the general gather (also the CPU mirror); both deterministic
BACKWARD_VARIANTS = (Variant("register_tiled", lambda c: _rt_can_run(c, backward=True), _backward_rt),
                     Variant("tiled", lambda c: None, _backward_tiled))


def _forward(a, b, geo, out, scale, stream, variant=None):
    if out.size:
        _variants.choose("correlation", FORWARD_VARIANTS, _Call(a, b, geo, scale, stream, out=out), variant)


def _backward_outputs(out, a):
    out1, out2 = _core.out_tuple(out, ("grad_input1", "grad_input2"))
    return _core.output(out1, a, a.shape), _core.output(out2, a, a.shape)


def _backward(grad_out, a, b, geo, out, scale, stream, expected_shape, variant=None):
    g = _core.floating("grad_out", grad_out)
    _core.same_dtype_and_device(a, g)
    if tuple(g.shape) != tuple(expected_shape):
        raise ValueError(f"grad_out must have shape {list(expected_shape)} (the forward output's), "
                         f"got {list(g.shape)}")
    g = _core.contiguous(g)
    gin1, gin2 = _backward_outputs(out, a)
    if a.size == 0:
        return gin1.obj, gin2.obj
    if g.size == 0:        # nothing flows back (cannot happen with validated sizes; kept for safety)
        raise ValueError("grad_out must not be empty")
    _variants.choose("correlation_backward", BACKWARD_VARIANTS,
                     _Call(a, b, geo, scale, stream, g=g, gin1=gin1, gin2=gin2), variant)
    return gin1.obj, gin2.obj


# ---------------------------------------------------------------------------------------------
# spatial_correlation_sample


@_ops.guards_out
def spatial_correlation_sample(input1, input2, *, kernel_size=1, patch_size=1, stride=1, padding=0, dilation=1,
                               dilation_patch=1, out=None, stream=None, variant=None):
    """FlowNetC correlation as raw sums (docs/ops.md): (N, C, H, W) × 2 -> (N, pH, pW, oH, oW).

    With u = h·sH − padH, v = w·sW − padW and the patch shift
    ``sy = (ph − (pH−1)//2)·dpH``, ``sx = (pw − (pW−1)//2)·dpW``::

        out[n, ph, pw, h, w] = Σ_c Σ_{i<kH, j<kW} input1[n, c, u + i·dilH, v + j·dilW]
                                                  · input2[n, c, u + i·dilH + sy, v + j·dilW + sx]

    A term is dropped when either position is outside the image; no normalisation.  oH, oW are the
    windowed output sizes of (H, W) for kernel_size, padding, dilation and stride (independent of the
    patch).  Every parameter is an int or an (h, w) pair; kernel_size, patch_size, stride, dilation and
    dilation_patch must be >= 1, padding >= 0.  For even patch sizes the shift above (the original's
    CPU code and backward) is the definition.  FlowNetC: kernel_size=1, patch_size=21,
    dilation_patch=2.  16-bit inputs accumulate in float32, float64 in float64; output dtype = input
    dtype.  ``out`` (an (N, pH, pW, oH, oW) array to write into) and ``stream`` are optional;
    ``variant`` forces one of `FORWARD_VARIANTS` (`BACKWARD_VARIANTS` for the backward).
    """
    a, b = _inputs(input1, input2)
    geo = _sampler_geometry(a.shape, kernel_size, patch_size, stride, padding, dilation, dilation_patch,
                            "spatial_correlation_sample")
    res = _core.output(out, a, (geo.N, geo.p[0], geo.p[1], geo.oH, geo.oW))
    _forward(a, b, geo, res, 1.0, stream, variant)
    return res.obj


@_ops.guards_out
def spatial_correlation_sample_backward(grad_out, input1, input2, *, kernel_size=1, patch_size=1, stride=1,
                                        padding=0, dilation=1, dilation_patch=1, out=None, stream=None,
                                        variant=None):
    """Gradients of `spatial_correlation_sample`: ``(grad_input1, grad_input2)``, the exact adjoint.

    grad_out: (N, pH, pW, oH, oW), any strides.  Computed as deterministic gathers (no atomics).
    ``out`` may be a pair of arrays to write the two gradients into.
    """
    a, b = _inputs(input1, input2)
    geo = _sampler_geometry(a.shape, kernel_size, patch_size, stride, padding, dilation, dilation_patch,
                            "spatial_correlation_sample_backward")
    return _backward(grad_out, a, b, geo, out, 1.0, stream, (geo.N, geo.p[0], geo.p[1], geo.oH, geo.oW), variant)


# ---------------------------------------------------------------------------------------------
# correlation (FlowNet / Caffe)


@_ops.guards_out
def correlation(input1, input2, *, pad_size=0, kernel_size=1, max_displacement=0, stride1=1, stride2=1, out=None,
                stream=None, variant=None):
    """The FlowNet/Caffe correlation layer (docs/ops.md, correlation): (N, C, H, W) × 2 -> (N, D², Ho, Wo).

    kr = (k−1)//2, R = max_displacement // stride2, D = 2R+1, both inputs zero-padded by pad_size
    (P1, P2), ``Ho = ceil((H + 2·pad_size − 2·(max_displacement + kr)) / stride1)`` (Wo alike)::

        out[n, (p+R)·D + (o+R), y, x] = 1/(k²·C) · Σ_c Σ_{i,j<k} P1[n, c, y·s1 + md + i, x·s1 + md + j]
                                                  · P2[n, c, y·s1 + md + i + p·s2, x·s1 + md + j + o·s2]

    (p vertical, o horizontal displacement: y-displacement-major channels; the window is centred,
    Caffe's definition, not NVIDIA's shifted one).  kernel_size must be odd; every parameter is an int.
    FlowNetC: pad_size=20, kernel_size=1, max_displacement=20, stride1=1, stride2=2 (441 channels).
    """
    a, b = _inputs(input1, input2)
    geo = _correlation_geometry(a.shape, pad_size, kernel_size, max_displacement, stride1, stride2)
    D = geo.p[0]
    res = _core.output(out, a, (geo.N, D * D, geo.oH, geo.oW))
    _forward(a, b, geo, res, 1.0 / (geo.k[0] * geo.k[1] * max(geo.C, 1)), stream, variant)
    return res.obj


@_ops.guards_out
def correlation_backward(grad_out, input1, input2, *, pad_size=0, kernel_size=1, max_displacement=0, stride1=1,
                         stride2=1, out=None, stream=None, variant=None):
    """Gradients of `correlation`: ``(grad_input1, grad_input2)``, the exact adjoint for every stride.

    grad_out: (N, D², Ho, Wo), any strides.  ``out`` may be a pair of arrays to write into.
    """
    a, b = _inputs(input1, input2)
    geo = _correlation_geometry(a.shape, pad_size, kernel_size, max_displacement, stride1, stride2)
    D = geo.p[0]
    return _backward(grad_out, a, b, geo, out, 1.0 / (geo.k[0] * geo.k[1] * max(geo.C, 1)), stream,
                     (geo.N, D * D, geo.oH, geo.oW), variant)


# ---------------------------------------------------------------------------------------------
# declarations


def _sampler_shapes(input1, input2, **params):
    a, _ = _inputs(input1, input2)
    geo = _sampler_geometry(a.shape, *params.values(), "spatial_correlation_sample")
    return (geo.N, geo.p[0], geo.p[1], geo.oH, geo.oW)


def _correlation_shapes(input1, input2, **params):
    a, _ = _inputs(input1, input2)
    geo = _correlation_geometry(a.shape, *params.values())
    return (geo.N, geo.p[0] * geo.p[1], geo.oH, geo.oW)


def _feature_pair(rng, batch):
    return rng.uniform(-1, 1, (batch, 3, 6, 7)), rng.uniform(-1, 1, (batch, 3, 6, 7))


SPATIAL_CORRELATION_SAMPLE = _ops.declare(OpSpec(
    name="spatial_correlation_sample", forward=spatial_correlation_sample,
    backward=spatial_correlation_sample_backward, arrays=("input1", "input2"),
    params=(Param("kernel_size", "pair", 1, minimum=1), Param("patch_size", "pair", 1, minimum=1),
            Param("stride", "pair", 1, minimum=1), Param("padding", "pair", 0),
            Param("dilation", "pair", 1, minimum=1), Param("dilation_patch", "pair", 1, minimum=1)),
    shapes=_sampler_shapes, vmap="fold", autocast=True,
    example=lambda rng, batch: (_feature_pair(rng, batch), dict(kernel_size=1, patch_size=5, stride=1, padding=0,
                                                                dilation=1, dilation_patch=2)),
    reference=reference.spatial_correlation_sample, reference_backward=reference.spatial_correlation_sample_backward))

CORRELATION = _ops.declare(OpSpec(
    name="correlation", forward=correlation, backward=correlation_backward, arrays=("input1", "input2"),
    params=(Param("pad_size", "int", 0), Param("kernel_size", "int", 1, minimum=1),
            Param("max_displacement", "int", 0), Param("stride1", "int", 1, minimum=1),
            Param("stride2", "int", 1, minimum=1)),
    shapes=_correlation_shapes, vmap="fold", check_params=_correlation_params, autocast=True,
    example=lambda rng, batch: (_feature_pair(rng, batch), dict(pad_size=2, kernel_size=1, max_displacement=2,
                                                                stride1=1, stride2=2)),
    reference=reference.correlation, reference_backward=reference.correlation_backward))


__all__ = ["spatial_correlation_sample", "spatial_correlation_sample_backward", "correlation",
           "correlation_backward"]
