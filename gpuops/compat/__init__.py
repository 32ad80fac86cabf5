"""Drop-in replacements for the original CUDA extensions: same signatures, same observable results.

Swap ``from op.gsmelu import gsmelu`` (pytorch-cuda-ops) for ``from gpuops.compat.pytorch_cuda_ops import
gsmelu``, ``import pyinn as P`` for ``import gpuops.compat.pyinn as P``, and so on.
"""
