"""RAFT's correlation block for JAX and Flax (exposed as ``gpuops.jax.CorrBlock``; docs/ops.md §10, §12).

A pytree holding the pyramid of `gpuops.adapters.jax.corr_pyramid` (or, with ``alternate=True``, the feature
maps for `corr_lookup`), called with coordinates: it can be built inside ``jax.jit`` / ``jax.grad`` /
a Flax module's ``__call__``, or passed into a jitted function as an argument.  Every formula is in
gpuops/pyramid.py, gpuops/raft.py and their kernels.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from gpuops import _core, _ops
from gpuops.adapters.jax import corr_lookup, corr_pyramid, corr_pyramid_lookup

_SIXTEEN_BIT = (jnp.dtype("float16"), jnp.dtype("bfloat16"))


@jax.tree_util.register_pytree_node_class
class CorrBlock:
    """RAFT's ``CorrBlock(fmap1, fmap2, num_levels=4, radius=4)`` (``alternate=True``: AlternateCorrBlock) as a
    JAX pytree, called as ``block(coords)``; the same interface and output as `gpuops.torch.CorrBlock`.

    fmap1, fmap2: (N, C, H, W), one shape; coords: (N, 2, H, W), channel 0 = x, in pixels of fmap2.
    Returns (N, num_levels·L², H, W) float32, L = 2·radius + 1, level-major, x-offset-major::

        out[n, i·L² + (dx+r)·L + (dy+r), h, w] = 1/√C · Σ_c fmap1[n,c,h,w] · s_c^i(x/2^i + dx, y/2^i + dy)

    ``alternate=False``: the all-pairs pyramid is built once, at construction (`corr_pyramid`), and each call
    looks it up (`corr_pyramid_lookup`); ``alternate=True``: each call runs `corr_lookup` on the maps (no
    volume).  16-bit maps are upcast to float32 at construction and coords cast to the maps' dtype.
    Gradients (``jax.grad``) reach the maps through the pyramid and the coordinates.  Bad sizes and
    parameters raise at construction, with the ops' messages.  The pytree's leaves are the pyramid's
    levels (or the two maps); num_levels, radius and alternate are static.
    """

    def __init__(self, fmap1, fmap2, num_levels=4, radius=4, alternate=False):
        if not isinstance(alternate, bool):
            raise TypeError(f"alternate must be a bool, got {type(alternate).__name__}")
        maps = []
        for name, fmap in (("fmap1", fmap1), ("fmap2", fmap2)):
            if not (hasattr(fmap, "shape") and hasattr(fmap, "dtype")):
                raise TypeError(f"{name} must be an array (a JAX or numpy array), got {type(fmap).__name__}")
            fmap = jnp.asarray(fmap)
            maps.append(fmap.astype(jnp.float32) if fmap.dtype in _SIXTEEN_BIT else fmap)
        fmap1, fmap2 = maps
        # corr_lookup's own checks and messages, on shapes (coords as a call will pass them)
        coords_shape = (fmap1.shape[0], 2, *fmap1.shape[2:]) if fmap1.ndim == 4 else (2,)
        metas = (_core.meta("fmap1", fmap1.shape, fmap1.dtype), _core.meta("fmap2", fmap2.shape, fmap2.dtype),
                 _core.meta("coords", coords_shape, fmap1.dtype))
        _ops.REGISTRY["corr_lookup"].output_shape(metas, dict(radius=radius, num_levels=num_levels))
        self.num_levels, self.radius, self.alternate = int(num_levels), int(radius), alternate
        self.arrays = (fmap1, fmap2) if alternate else corr_pyramid(fmap1, fmap2, num_levels=self.num_levels)

    @property
    def pyramid(self):
        """The levels (N, H, W, H >> i, W >> i) (``alternate=False``)."""
        return None if self.alternate else self.arrays

    def __call__(self, coords):
        coords = jnp.asarray(coords).astype(self.arrays[0].dtype)
        if self.alternate:
            out = corr_lookup(*self.arrays, coords, radius=self.radius, num_levels=self.num_levels)
        else:
            out = corr_pyramid_lookup(self.arrays, coords, radius=self.radius)
        return out.astype(jnp.float32)

    def tree_flatten(self):
        return (self.arrays,), (self.num_levels, self.radius, self.alternate)

    @classmethod
    def tree_unflatten(cls, static, children):
        block = object.__new__(cls)
        block.num_levels, block.radius, block.alternate = static
        (block.arrays,) = children
        return block

    def __repr__(self):
        return f"CorrBlock(num_levels={self.num_levels}, radius={self.radius}, alternate={self.alternate})"
