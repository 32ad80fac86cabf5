"""gpuops: GPU tensor operations in Python (numba-cuda), for numpy, PyTorch, CuPy and JAX.

The functional API below is framework-agnostic: it takes numpy arrays (CPU mirrors), torch tensors
(CPU or CUDA), CuPy arrays or any ``__cuda_array_interface__`` object, and returns the kind it was
given.  Autograd lives in the adapters: ``gpuops.torch`` (PyTorch ops and modules) and ``gpuops.jax``
(custom_vjp functions).  Importing gpuops compiles nothing and imports neither torch nor JAX.
"""
from gpuops.conv import (col2im, col2im_backward, conv2d_depthwise, conv2d_depthwise_backward, im2col,
                         im2col_backward)
from gpuops.correlations import (correlation, correlation_backward, spatial_correlation_sample,
                                spatial_correlation_sample_backward)
from gpuops.diag import cdgmm, cdgmm_backward, dgmm, dgmm_backward
from gpuops.elementwise import gsmelu, gsmelu_backward, ncrelu, ncrelu_backward
from gpuops.raft import corr_lookup, corr_lookup_backward, patch_correlate, patch_correlate_backward
from gpuops.pyramid import corr_pyramid, corr_pyramid_backward, corr_pyramid_lookup, corr_pyramid_lookup_backward
from gpuops.perpixel import involution, involution_backward, weighted_filter, weighted_filter_backward

__version__ = "0.1.0"

__all__ = ["gsmelu", "gsmelu_backward", "ncrelu", "ncrelu_backward", "spatial_correlation_sample",
           "spatial_correlation_sample_backward", "correlation", "correlation_backward", "conv2d_depthwise",
           "conv2d_depthwise_backward", "im2col", "im2col_backward", "col2im", "col2im_backward", "dgmm",
           "dgmm_backward", "cdgmm", "cdgmm_backward", "involution", "involution_backward",
           "weighted_filter", "weighted_filter_backward", "patch_correlate", "patch_correlate_backward",
           "corr_lookup", "corr_lookup_backward", "corr_pyramid", "corr_pyramid_backward", "corr_pyramid_lookup",
           "corr_pyramid_lookup_backward"]
