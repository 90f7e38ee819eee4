"""Small layers shared by the ported TensorFlow models."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's ``SAME`` padding (extra pixel bottom/right).

    Weights trained in TF with stride 2 expect this asymmetric padding; the
    symmetric padding of ``nn.Conv2d`` shifts every feature map by a pixel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top == bottom and left == right:  # symmetric: the convolution pads by itself, no copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[nn.Conv2d, nn.Module]:
    """An inference-only conv with the batch norm folded in, and the identity that replaces the norm."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    return fuse_conv_bn_eval(conv.eval(), bn.eval()), nn.Identity()
