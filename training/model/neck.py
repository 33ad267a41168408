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
        if self.offset.bias is not None:  # always, with Conv2d's default bias=True
            nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(in_channels, out_channels, 3, padding=1)
        nn.init.kaiming_uniform_(self.conv.weight, a=1)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        offset = self.offset(x)
        if self.training and torch.is_grad_enabled() and x.device.type == "cpu":
            # torchvision's CPU backward of deform_conv2d is ~10x slower than sampling + matmul
            return deform_conv3x3_by_sampling(x, offset, self.conv.weight, self.conv.bias)
        if torch.is_autocast_enabled(x.device.type):
            # torchvision's kernel has no autocast rule: run it in fp32 on fp32 inputs
            with torch.autocast(x.device.type, enabled=False):
                return self.conv(x.float(), offset.float())
        return self.conv(x, offset)


def deform_conv3x3_by_sampling(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Same result as torchvision's deform_conv2d (3x3, stride 1, padding 1, one offset group):
    bilinear samples at p + k + offset (zeros outside), then a matmul with the kernel.
    offset [B, 18, H, W] holds (dy, dx) per kernel tap, row-major taps.

    Positions and samples are computed in fp32 whatever the autocast dtype: in bf16 a position
    of a few hundred pixels is off by up to half a pixel (docs/ARCHITECTURE.md, "Mixed
    precision"). Only the matmul with the kernel runs in the autocast dtype."""
    batch, channels, height, width = x.shape
    with torch.autocast(x.device.type, enabled=False):
        offset = offset.float()
        ys = torch.arange(height, device=x.device, dtype=torch.float32).view(1, 1, height, 1)
        xs = torch.arange(width, device=x.device, dtype=torch.float32).view(1, 1, 1, width)
        taps = torch.arange(9, device=x.device)
        tap_y = (taps // 3 - 1).float().view(1, 9, 1, 1)
        tap_x = (taps % 3 - 1).float().view(1, 9, 1, 1)
        sample_y = ys + tap_y + offset[:, 0::2]  # [B, 9, H, W]
        sample_x = xs + tap_x + offset[:, 1::2]
        # grid_sample with align_corners=True maps -1..1 to pixel centres 0..size-1
        grid = torch.stack(
            [2 * sample_x / max(width - 1, 1) - 1, 2 * sample_y / max(height - 1, 1) - 1], dim=-1
        ).view(batch, 9 * height, width, 2)
        sampled = F.grid_sample(
            x.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )
    columns = sampled.view(batch, channels, 9, height * width).flatten(1, 2)  # [B, C*9, HW]
    out = weight.flatten(1) @ columns.to(x.dtype)  # weight [O, C, 3, 3] -> [O, C*9]
    return (out + bias.view(1, -1, 1)).view(batch, -1, height, width)


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
