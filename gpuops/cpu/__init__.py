"""@njit(parallel=True) CPU mirrors of the CUDA kernels, one module per op family."""
