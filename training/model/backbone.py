"""Torchvision-layout ResNet trunk (C3, C4, C5) with a configurable norm layer.

Parameter names follow torchvision (conv1, bn1, layer1..layer4) so that a torchvision ImageNet
state dict loads from a local file.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from .config import ModelConfig


def group_count(channels: int) -> int:
    """GroupNorm groups: 32 as in the reference where the width allows, never fewer than 4
    channels per group, so that a narrow network does not get instance norm (which wipes each
    channel's spatial mean and contrast per image)."""
    return math.gcd(32, max(channels // 4, 1))


def norm_factory(kind: str) -> Callable[[int], nn.Module]:
    """The 2d norm layer constructor for a config's `norm` name."""
    if kind == "frozen_bn":
        return FrozenBatchNorm2d
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "gn":
        return lambda channels: nn.GroupNorm(group_count(channels), channels)
    raise ValueError(f"unknown norm {kind!r}; choose frozen_bn, bn or gn")


class ResNetTrunk(nn.Module):
    """ResNet stem and four stages; forward returns C3 (stride 8), C4 (16), C5 (32)."""

    # the stages, set by name in __init__ (torchvision's parameter names)
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        norm = norm_factory(config.norm)
        self.block = Bottleneck if config.block == "bottleneck" else BasicBlock
        self.inplanes = config.base_width
        self.conv1 = nn.Conv2d(3, self.inplanes, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = [config.base_width * 2**i for i in range(4)]
        strides = (1, 2, 2, 2)
        stages = zip(widths, config.layers, strides, strict=True)
        for index, (width, blocks, stride) in enumerate(stages):
            setattr(self, f"layer{index + 1}", self._stage(width, blocks, stride, norm))
        self.channels = [w * self.block.expansion for w in widths]  # layer1..layer4 outputs
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _stage(self, width: int, blocks: int, stride: int, norm) -> nn.Sequential:
        out = width * self.block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False), norm(out)
            )
        layers = [self.block(self.inplanes, width, stride, downsample, norm_layer=norm)]
        self.inplanes = out
        layers += [self.block(out, width, norm_layer=norm) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5

    def res5_copy(self) -> nn.Sequential:
        """An independent copy of layer4 for the ROI branch (NAE-style box head)."""
        return copy.deepcopy(self.layer4)

    def freeze_stem_and_res2(self) -> None:
        for module in (self.conv1, self.bn1, self.layer1):
            for param in module.parameters():
                param.requires_grad_(False)


def load_backbone_weights(trunk: ResNetTrunk, path: Path) -> None:
    """Load a torchvision resnet state dict file into the trunk; a clear error if it doesn't fit."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = trunk.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    # FrozenBatchNorm2d has no num_batches_tracked; ignore that key either way
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"backbone weights {path} do not fit this ResNet "
            f"({len(missing)} missing e.g. {missing[:3]}, {len(unexpected)} unexpected e.g. "
            f"{unexpected[:3]}, {len(wrong_shape)} of wrong shape e.g. {wrong_shape[:3]}); "
            "pass a torchvision resnet state dict of the config's depth, with a BN-type norm"
        )
    trunk.load_state_dict(state, strict=False)
