"""@cuda.jit kernels, one module per op family.  Importing any of them imports numba-cuda."""
