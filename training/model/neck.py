"""AFA neck: deformable laterals, a top-down path by concatenation, a deformable output conv.

Produces P3 (stride 8) only: the reference's P4..P7 carry no positives and are optional.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d


class DeformConv3x3(nn.Module):
    """DCNv1 3x3; offsets from a plain 3x3 conv initialised to zero (a regular conv at start)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(in_channels, 2 * 3 * 3, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(in_channels, out_channels, 3, padding=1)
        nn.init.kaiming_uniform_(self.conv.weight, a=1)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x, self.offset(x))


class AFANeck(nn.Module):
    """L5 = lat5; L4 = cat(lat4, up(L5)); L3 = cat(lat3, up(L4)); P3 = dcn(L3)."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        self.lateral3, self.lateral4, self.lateral5 = (
            DeformConv3x3(c, channels) for c in in_channels
        )
        self.output = DeformConv3x3(3 * channels, channels)

    def forward(self, c3: Tensor, c4: Tensor, c5: Tensor) -> Tensor:
        level5 = self.lateral5(c5)
        level4 = cat_upsampled(self.lateral4(c4), level5)
        level3 = cat_upsampled(self.lateral3(c3), level4)
        return self.output(level3)


def cat_upsampled(lateral: Tensor, coarser: Tensor) -> Tensor:
    """Concatenate a lateral map with the 2x nearest upsampling of the coarser level."""
    return torch.cat([lateral, F.interpolate(coarser, scale_factor=2.0, mode="nearest")], dim=1)
