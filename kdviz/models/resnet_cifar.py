"""The CIFAR ResNets of He et al. 2016 (section 4.2) with option-A shortcuts.

Option A: where a block halves the resolution and doubles the channels, the shortcut subsamples by
2 and zero-pads the new channels; it has no parameters. Parameter names follow the public
implementation the pretrained files in ``../shared/data/pretrained`` were saved from (``conv1``,
``bn1``, ``layer1.0.conv1``, ..., ``linear``), so those files load as they are.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .registry import register_model


class PadShortcut(nn.Module):
    """Option A: stride-2 subsampling and zero channels; parameter-free."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.pad = extra_channels // 2

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(planes - in_planes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        planes = width
        stages = []
        for i in range(3):
            out = width * 2**i
            layers = [BasicBlock(planes, out, 1 if i == 0 else 2)]
            layers += [BasicBlock(out, out) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*layers))
            planes = out
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(planes, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _description(depth: int) -> str:
    return f"CIFAR ResNet-{depth} (He et al. 2016, option-A shortcuts, {(depth - 2) // 6} blocks a stage)"


@register_model(family="resnet_cifar", description=_description(20), pretrained_file="resnet20-12fca82f.th")
def resnet20(num_classes: int = 10) -> nn.Module:
    """ResNet-20: 3 basic blocks a stage; the pretrained ``resnet20`` file loads into it as it is."""
    return CifarResNet(3, num_classes)


@register_model(family="resnet_cifar", description=_description(32))
def resnet32(num_classes: int = 10) -> nn.Module:
    """ResNet-32: 5 basic blocks a stage."""
    return CifarResNet(5, num_classes)


@register_model(family="resnet_cifar", description=_description(44))
def resnet44(num_classes: int = 10) -> nn.Module:
    """ResNet-44: 7 basic blocks a stage."""
    return CifarResNet(7, num_classes)


@register_model(family="resnet_cifar", description=_description(56), pretrained_file="resnet56-4bfd9763.th")
def resnet56(num_classes: int = 10) -> nn.Module:
    """ResNet-56: 9 basic blocks a stage; the pretrained ``resnet56`` file loads into it as it is."""
    return CifarResNet(9, num_classes)
