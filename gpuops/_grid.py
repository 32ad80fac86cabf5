"""Launch-geometry helpers shared by the core, the family modules and the kernel modules.

Numba-free and importing nothing from gpuops but `gpuops._constants`, so that any layer may use it
without import cycles (gpuops._core re-exports `blocks_for`).
"""
from gpuops._constants import MAX_GRID_X


def blocks_for(n: int, threads: int, items_per_thread: int = 1) -> int:
    """Number of blocks covering ``n`` items; at least one (kernels bounds-check), at most 2**31 - 1."""
    per_block = threads * items_per_thread
    return max(1, min((n + per_block - 1) // per_block, MAX_GRID_X))
