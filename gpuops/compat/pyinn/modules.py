"""pyinn.modules: ``from gpuops.compat.pyinn.modules import Conv2dDepthwise``."""
import torch

from gpuops.compat.pyinn import conv2d_depthwise

__all__ = ["Conv2dDepthwise"]


class Conv2dDepthwise(torch.nn.Conv2d):
    """pyinn's ``Conv2dDepthwise(channels, kernel_size, stride=1, padding=0, dilation=1, bias=True)``.

    As in pyinn it is an ``nn.Conv2d(channels, channels, kernel_size, stride, padding, dilation,
    groups=channels, bias=bias)`` (same parameters, initialisation and state_dict, weight of shape
    (channels, 1, kh, kw)) whose forward is `conv2d_depthwise`, i.e. exactly
    ``F.conv2d(input, weight, bias, stride, padding, dilation, groups=channels)``.
    """

    def __init__(self, channels, kernel_size, stride=1, padding=0, dilation=1, bias=True):
        super().__init__(channels, channels, kernel_size, stride, padding, dilation, groups=channels, bias=bias)

    def forward(self, input):
        return conv2d_depthwise(input, self.weight, self.bias, self.stride, self.padding, self.dilation)
