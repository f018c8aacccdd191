"""The project's own small ResNet, for the built-in demo on 32-px generated images.

A torchvision-style ResNet shrunk for small inputs and a 2-core CPU:

    conv1 (3x3, widths[0]) - bn1 - relu
    layer1.{0..b1-1} ... layerS.{0..bS-1}   basic blocks; the first block of every stage after the
                                            first has stride 2 and a 1x1-conv + BN projection
                                            shortcut called ``downsample``
    global average pool - flatten - fc (widths[-1] -> num_classes)

Defaults: 3 stages x 2 blocks, widths 16/32/64, stem stride 1 (about 0.18M parameters). The penultimate vector is
the input of ``fc``, shape ``(n_images, widths[-1])``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ._blocks import BasicBlock, resnet_spec

if TYPE_CHECKING:
    from .spec import ModelSpec

__all__ = ["SMALL_MEAN", "SMALL_STD", "SmallBlock", "SmallResNet", "small_spec"]

# generated images live in [0, 1] with no natural statistics: centre and scale to [-1, 1]
SMALL_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
SMALL_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)


class SmallBlock(BasicBlock):
    """conv3x3-BN-ReLU-conv3x3-BN plus the (identity or ``downsample``) shortcut, then ReLU.

    ``bn2`` outputs the main branch before the addition; no in-place operation touches it.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__(in_planes, planes, stride)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)


class SmallResNet(nn.Module):
    """A small ResNet of basic blocks.

    Args:
        widths: channels of each stage, e.g. ``(16, 32, 64)``.
        blocks_per_stage: blocks in every stage (an int) or one count per stage.
        num_classes: output width of ``fc``.
        in_channels: image channels.
        stem_stride: stride of ``conv1``; 2 quarters the compute of every stage (blocks then see
            16x16, 8x8, 4x4 maps on 32-px images), for the fastest CPU demo.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int | Sequence[int] = 2,
        num_classes: int = 10,
        in_channels: int = 3,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"small-resnet: widths must be positive channel counts, got {widths}")
        counts = ([int(blocks_per_stage)] * len(widths) if isinstance(blocks_per_stage, int)
                  else [int(b) for b in blocks_per_stage])
        if len(counts) != len(widths) or any(b < 1 for b in counts):
            raise ValueError(
                f"small-resnet: blocks_per_stage must be a positive int or one positive count per "
                f"stage ({len(widths)} stages), got {blocks_per_stage}"
            )
        if num_classes < 2:
            raise ValueError(f"small-resnet: num_classes must be >= 2, got {num_classes}")
        if stem_stride not in (1, 2):
            raise ValueError(f"small-resnet: stem_stride must be 1 or 2, got {stem_stride}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        self.n_stages = len(widths)
        for stage, (planes, n_blocks) in enumerate(zip(widths, counts), start=1):
            blocks = []
            for i in range(n_blocks):
                stride = 2 if (i == 0 and stage > 1) else 1
                blocks.append(SmallBlock(in_planes, planes, stride))
                in_planes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # zero-init the last BN of each block: every block starts as the identity, which makes
        # short CPU trainings converge faster (Goyal et al. 2017)
        for m in self.modules():
            if isinstance(m, SmallBlock):
                nn.init.zeros_(m.bn2.weight)

    def stages(self) -> list[nn.Sequential]:
        """The stage containers ``layer1 … layerS`` in forward order."""
        return [getattr(self, f"layer{s}") for s in range(1, self.n_stages + 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for stage in self.stages():
            out = stage(out)
        # pooling + flatten here, so the head's input is exactly the penultimate vector
        return self.fc(torch.flatten(self.avgpool(out), 1))


def small_spec(module: SmallResNet, *, name: str = "small-resnet", class_names: list[str] | None = None) -> "ModelSpec":
    """The :class:`ModelSpec` of a :class:`SmallResNet`: every block a probe layer, head ``fc``."""
    return resnet_spec(
        module, [f"layer{s}" for s in range(1, module.n_stages + 1)],
        main=lambda block: "bn2", skip=lambda block: None if block.downsample is None else "downsample",
        name=name, head="fc", input_size=32, mean=SMALL_MEAN, std=SMALL_STD, class_names=class_names,
    )
