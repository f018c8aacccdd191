"""The CIFAR ResNets of He et al. 2016 (section 4.2): depth ``6n + 2``, option-A shortcuts.

The module layout matches akamaster/pytorch_resnet_cifar10 exactly, so that its community
checkpoints (``../shared/data/models/resnet20-cifar10.th``) load without renaming:

    conv1 (3x3, 16) - bn1 - relu
    layer1.{0..n-1}  16 channels, 32x32
    layer2.{0..n-1}  32 channels, 16x16 (layer2.0 has stride 2 and an option-A shortcut)
    layer3.{0..n-1}  64 channels,  8x8  (layer3.0 idem)
    global average pool - flatten - linear (64 -> num_classes)

Every block has a ``shortcut`` sub-module (``nn.Identity`` or :class:`OptionAShortcut`, neither
with parameters, so the state-dict keys are unchanged) so that forward hooks can read the skip
branch. The penultimate vector is the input of ``linear``: the pooled, flattened output of the
last block, shape ``(n_images, 64)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ._blocks import BasicBlock, resnet_spec

if TYPE_CHECKING:
    from .spec import ModelSpec

__all__ = [
    "CIFAR_DEPTHS",
    "CIFAR10_CLASSES",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "BasicBlockA",
    "CifarResNet",
    "OptionAShortcut",
    "cifar_resnet",
    "cifar_spec",
]

#: depth -> blocks per stage (depth = 6n + 2)
CIFAR_DEPTHS: dict[int, int] = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}

CIFAR10_CLASSES: list[str] = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]

# The akamaster checkpoints were trained with the ImageNet statistics (see ../shared/data/README.md).
CIFAR_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
CIFAR_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class OptionAShortcut(nn.Module):
    """Parameter-free shortcut of He et al. 2016 "option A".

    Subsamples every second pixel and zero-pads the channel dimension equally on both sides:
    ``(n, C, H, W) -> (n, C + 2 * pad, ceil(H / 2), ceil(W / 2))``.
    """

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.pad pads from the last dimension backwards: (W, W, H, H, C, C)
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


class BasicBlockA(BasicBlock):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

    ``bn2`` outputs the main branch and ``shortcut`` the skip branch, before the addition. No
    in-place operation touches either, so hooks may keep references to them.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__(in_planes, planes, stride)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            if (planes - in_planes) % 2:
                raise ValueError(f"option-A shortcut needs an even channel increase, got {in_planes}->{planes}")
            self.shortcut = OptionAShortcut((planes - in_planes) // 2)
        else:
            self.shortcut = nn.Identity()

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs with three stages of ``n`` basic blocks (16/32/64 channels).

    Args:
        blocks_per_stage: ``n``; depth is ``6n + 2``.
        num_classes: output width of ``linear``.
    """

    # the stages are set with setattr in __init__; declared here for type checkers
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(self, blocks_per_stage: int, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for stage, (planes, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlockA(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        # the initialisation of the reference implementation (Kaiming normal on conv and linear)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # pooling + flatten here, so the head's input is exactly the penultimate vector
        out = torch.flatten(self.avgpool(out), 1)
        return self.linear(out)


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    """A randomly initialised CIFAR ResNet of the given ``depth`` (20, 32, 44, 56 or 110)."""
    if depth not in CIFAR_DEPTHS:
        raise ValueError(f"CIFAR ResNet depth must be one of {sorted(CIFAR_DEPTHS)}, got {depth}")
    return CifarResNet(CIFAR_DEPTHS[depth], num_classes=num_classes)


def cifar_spec(module: CifarResNet, *, name: str, class_names: list[str] | None = None) -> "ModelSpec":
    """The :class:`ModelSpec` of a :class:`CifarResNet`: every block a probe layer, head ``linear``."""
    if class_names is None and module.linear.out_features == 10:
        class_names = list(CIFAR10_CLASSES)
    return resnet_spec(
        module, ["layer1", "layer2", "layer3"],
        main=lambda block: "bn2",
        skip=lambda block: "shortcut" if isinstance(block.shortcut, OptionAShortcut) else None,
        name=name, head="linear", input_size=32, mean=CIFAR_MEAN, std=CIFAR_STD, class_names=class_names,
    )
