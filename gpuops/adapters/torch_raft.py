"""RAFT's correlation block over gpuops (exposed as ``gpuops.torch.CorrBlock``; docs/ops.md §10, §12).

A thin holder around the generated ops `gpuops.adapters.torch.corr_pyramid` / `corr_pyramid_lookup`
(RAFT's CorrBlock) and `corr_lookup` (its AlternateCorrBlock): every formula is in gpuops/pyramid.py,
gpuops/raft.py and their kernels.
"""
from __future__ import annotations

import torch
from torch import nn

from gpuops import _core, _ops, pyramid
from gpuops.adapters.torch import corr_lookup, corr_pyramid, corr_pyramid_lookup

_SIXTEEN_BIT = (torch.float16, torch.bfloat16)


class CorrBlock(nn.Module):
    """RAFT's ``CorrBlock(fmap1, fmap2, num_levels=4, radius=4)`` (and ``AlternateCorrBlock``), called as
    ``block(coords)``.

    fmap1, fmap2: (N, C, H, W), one shape; coords: (N, 2, H, W), channel 0 = x, in pixels of fmap2.
    Returns (N, num_levels·L², H, W), L = 2·radius + 1, level-major, x-offset-major within a level,
    float32 (RAFT's CorrBlock ends with ``.float()``; its alternate block is float32 only):

        out[n, i·L² + (dx+r)·L + (dy+r), h, w] = 1/√C · Σ_c fmap1[n,c,h,w] · s_c^i(x/2^i + dx, y/2^i + dy)

    with s^i the bilinear sample, zeros outside, of fmap2 average-pooled 2×2 i times.  Gradients reach
    fmap1, fmap2 and coords (RAFT detaches coords itself; its alternate CUDA block returned none).

    ``alternate=False`` (RAFT's CorrBlock): the all-pairs pyramid is built once, here, with `corr_pyramid`
    ((N, H, W, H >> i, W >> i) per level: O((H·W)²) memory), and each call looks it up with
    `corr_pyramid_lookup`; in training the pyramid's backward runs once, with the level gradients of every
    call summed into one buffer in place (`_LevelGradients`: each lookup adds its windows' footprints, instead
    of a dense gradient per call that autograd would then sum; coords get a gradient only when they require
    one; ``pyramid`` then holds the levels' values without autograd history).  That eager path is taken when
    the maps require grad outside torch.compile; a block built inside a compiled region (or without grad) runs
    the registered ops.  ``alternate=True`` (AlternateCorrBlock): each call computes `corr_lookup` from the
    feature maps, without the volume (memory O(C·H·W)).  Both give the same values.  16-bit
    feature maps are upcast to float32 once, here (RAFT's model calls CorrBlock with ``fmap.float()``), and
    coords are cast to the maps' dtype: the ops take one dtype, and 16-bit coordinates would lose
    sub-pixel precision.  Bad sizes and parameters raise at construction, as RAFT's avg_pool2d would for
    too many levels.
    """

    def __init__(self, fmap1, fmap2, num_levels=4, radius=4, alternate=False):
        super().__init__()
        if not isinstance(alternate, bool):
            raise TypeError(f"alternate must be a bool, got {type(alternate).__name__}")
        for name, fmap in (("fmap1", fmap1), ("fmap2", fmap2)):
            if not isinstance(fmap, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(fmap).__name__}")
        if fmap1.dtype in _SIXTEEN_BIT:
            fmap1 = fmap1.float()
        if fmap2.dtype in _SIXTEEN_BIT:
            fmap2 = fmap2.float()
        # corr_lookup's own checks and messages, on shapes (coords as a call will pass them): both modes take
        # the same arguments
        coords_shape = (fmap1.shape[0], 2, *fmap1.shape[2:]) if fmap1.dim() == 4 else (2,)
        metas = (_core.meta("fmap1", fmap1.shape, fmap1.dtype), _core.meta("fmap2", fmap2.shape, fmap2.dtype),
                 _core.meta("coords", coords_shape, fmap1.dtype))
        _ops.REGISTRY["corr_lookup"].output_shape(metas, dict(radius=radius, num_levels=num_levels))
        self.num_levels, self.radius, self.alternate = int(num_levels), int(radius), alternate
        self.dtype = fmap1.dtype
        self._grads = None
        if alternate:
            self.fmap1, self.fmap2 = fmap1, fmap2
        elif (torch.is_grad_enabled() and (fmap1.requires_grad or fmap2.requires_grad)
              and not torch.compiler.is_compiling()):
            self._grads = _LevelGradients()
            self._token, *levels = _BuildPyramid.apply(self._grads, self.num_levels, fmap1, fmap2)
            self.pyramid = tuple(levels)
        else:
            self.pyramid = corr_pyramid(fmap1, fmap2, num_levels=self.num_levels)

    def forward(self, coords):
        coords = coords.to(self.dtype)
        if self.alternate:
            out = corr_lookup(self.fmap1, self.fmap2, coords, radius=self.radius, num_levels=self.num_levels)
        elif self._grads is not None:
            if torch.compiler.is_compiling():
                raise RuntimeError("this CorrBlock was built for eager training (its maps require grad); "
                                   "build it inside the compiled region, where it runs the registered ops")
            out = _LookupPyramid.apply(self._grads, self.radius, self._token, coords, *self.pyramid)
        else:
            out = corr_pyramid_lookup(self.pyramid, coords, radius=self.radius)
        return out.float()

    def extra_repr(self):
        return f"num_levels={self.num_levels}, radius={self.radius}, alternate={self.alternate}"


class _LevelGradients:
    """The level gradients of one training-mode block's backward passes: every lookup's backward adds into one
    buffer per level (`gpuops.pyramid.corr_pyramid_lookup_backward_add`), and the pyramid's backward takes the
    sum.  Buffers are kept per backward pass (autograd's graph task), so a pass started inside another (a hook
    calling autograd.grad) keeps its own; a lookup adds only in a pass that will run the pyramid's backward
    (a gradient for coords alone adds nothing, and leaves nothing).  No levels are kept here: the lookups save
    them for their backward, so the pyramid goes with the block and the graph's saved tensors."""

    __slots__ = ("passes",)

    def __init__(self):
        self.passes = {}

    def for_this_pass(self, levels, build_node):
        """This pass's buffers (zeros at first), or None when it does not run the pyramid's backward."""
        if not torch._C._will_engine_execute_node(build_node):
            return None
        task = torch._C._current_graph_task_id()
        buffers = self.passes.get(task)
        if buffers is None:
            buffers = self.passes[task] = [torch.zeros_like(level) for level in levels]
        return buffers

    def take(self):
        """This pass's summed buffers (None when no lookup added), now used on the current stream."""
        buffers = self.passes.pop(torch._C._current_graph_task_id(), None)
        for buf in buffers or ():
            if buf.is_cuda:         # added on the lookups' streams, read and freed on this one
                buf.record_stream(torch.cuda.current_stream(buf.device))
        return buffers


class _BuildPyramid(torch.autograd.Function):
    """corr_pyramid -> (token, *levels), the levels without autograd history: the lookups depend on the empty
    token, so autograd runs this backward once, after every lookup's has added its share."""

    @staticmethod
    def forward(ctx, grads, num_levels, fmap1, fmap2):
        levels = pyramid.corr_pyramid(fmap1.detach(), fmap2.detach(), num_levels=num_levels)
        ctx.mark_non_differentiable(*levels)
        ctx.grads, ctx.num_levels = grads, num_levels
        ctx.save_for_backward(fmap1, fmap2)
        return (fmap1.new_empty(0), *levels)

    @staticmethod
    def backward(ctx, _token_grad, *_level_grads):
        summed = ctx.grads.take()
        if summed is None:
            return None, None, None, None
        fmap1, fmap2 = ctx.saved_tensors
        g1, g2 = pyramid.corr_pyramid_backward(summed, fmap1.detach(), fmap2.detach(), num_levels=ctx.num_levels)
        return (None, None, *_no_derivative(g1 if ctx.needs_input_grad[2] else None,
                                            g2 if ctx.needs_input_grad[3] else None,
                                            anchor=fmap1 if fmap1.requires_grad else fmap2))


class _LookupPyramid(torch.autograd.Function):
    """corr_pyramid_lookup on ``levels``; its backward adds the level gradients in place."""

    @staticmethod
    def forward(ctx, grads, radius, token, coords, *levels):
        ctx.grads, ctx.radius, ctx.build_node = grads, radius, token.grad_fn
        ctx.save_for_backward(coords, token, *levels)
        return pyramid.corr_pyramid_lookup(levels, coords.detach(), radius=radius)

    @staticmethod
    def backward(ctx, grad_out):
        coords, token, *levels = ctx.saved_tensors
        buffers = ctx.grads.for_this_pass(levels, ctx.build_node)
        grad_coords = None
        if buffers is not None or ctx.needs_input_grad[3]:
            _, grad_coords = pyramid.corr_pyramid_lookup_backward_add(
                grad_out.detach(), levels, coords.detach(), radius=ctx.radius, out=(buffers, None),
                coords_grad=ctx.needs_input_grad[3])
        # a defined (empty) gradient for the token, so that autograd orders the pyramid's backward after this one
        # across streams
        return (None, None, token.new_zeros(0), *_no_derivative(grad_coords, anchor=token), *(None,) * len(levels))


def _no_derivative(*grads, anchor):
    """``grads`` as they are, or, in a backward that records a graph (create_graph=True), marked so that
    differentiating them again raises instead of treating them as constants (a silently wrong second
    derivative).  ``anchor``: a saved input that requires grad, so that the marked gradients do too."""
    if not torch.is_grad_enabled():
        return grads
    return tuple(None if g is None else _Underivable.apply(g, anchor) for g in grads)


class _Underivable(torch.autograd.Function):
    """The identity on a gradient computed by the training path; its own gradient raises."""

    @staticmethod
    def forward(ctx, grad, anchor):
        return grad.view_as(grad)

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError("gpuops.torch.CorrBlock: double backward (the gradient of its gradient, e.g. "
                           "autograd.grad(..., create_graph=True) followed by another backward) is not supported "
                           "on its training path")
