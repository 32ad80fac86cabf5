"""Construction-time parameter checks of the correlation drop-ins.

They run the core's own checks (gpuops.correlations), so a bad parameter raises at construction the
ValueError/TypeError, with the message, that a call would raise.  The checks want an input shape; an
image so large that every valid window fits leaves the parameters as the only thing that can fail.
"""
from gpuops import correlations

# |int parameters| < 2**31 (gpuops._core.integer), so every valid window is far smaller than this
_ANY_IMAGE = (1, 1, 2 ** 64, 2 ** 64)


def sampler_params(kernel_size, patch_size, stride, padding, dilation, dilation_patch):
    """The six `spatial_correlation_sample` parameters, checked, as [h, w] lists (the op's int[2])."""
    geo = correlations._sampler_geometry(_ANY_IMAGE, kernel_size, patch_size, stride, padding, dilation,
                                         dilation_patch, "spatial_correlation_sample")
    return [list(geo.k), list(geo.p), list(geo.s), list(geo.pad), list(geo.dil), list(geo.dp)]


def correlation_params(pad_size, kernel_size, max_displacement, stride1, stride2):
    """The five `correlation` parameters, checked, as ints."""
    params = (pad_size, kernel_size, max_displacement, stride1, stride2)
    correlations._correlation_geometry(_ANY_IMAGE, *params)
    return [int(v) for v in params]
