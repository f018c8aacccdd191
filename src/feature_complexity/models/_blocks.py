"""What the built-in ResNet families share: the basic block, and the walk over ``<stage>.<i>``
blocks that gives a :class:`ModelSpec` its probe layers and per-block branches.

A family describes a model by naming its stages and head and saying, for one block, which
sub-module outputs the main branch and which (if any) the skip branch: see :func:`resnet_spec`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .spec import BlockBranches, ModelSpec

__all__ = ["BasicBlock", "residual_blocks", "resnet_spec"]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN main branch plus a skip branch, then ReLU.

    ``bn2`` outputs the main branch before the addition; no in-place operation touches it, so
    hooks may keep references to it. Subclasses register their shortcut module after calling
    ``super().__init__`` (the state-dict keys stay ``conv1, bn1, conv2, bn2, <shortcut>``) and
    implement :meth:`skip`.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        """The skip branch of input ``x``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.skip(x))


def residual_blocks(
    module: nn.Module,
    stages: Sequence[str],
    *,
    main: Callable[[nn.Module], str],
    skip: Callable[[nn.Module], str | None],
) -> tuple[list[str], dict[str, BlockBranches]]:
    """Probe layers (every block ``<stage>.<i>``, forward order) and their branches.

    Args:
        module: the model; each name in ``stages`` is an ``nn.Sequential`` of residual blocks.
        stages: the stage containers in forward order, e.g. ``["layer1", "layer2", "layer3"]``.
        main: for one block, the name inside it of the module that outputs the main branch
            (``"bn2"``); for a block type it does not know it may raise ``ValueError("is a
            MyBlock, not …")``, which gets the block's name in front.
        skip: for one block, the name inside it of the projection shortcut, or ``None`` when the
            skip is the identity (the block's input).

    Returns:
        ``(probe_layers, branches)``, every block's sum followed by ``torch.relu``.
    """
    probe_layers: list[str] = []
    branches: dict[str, BlockBranches] = {}
    for stage in stages:
        for i, block in enumerate(module.get_submodule(stage).children()):
            block_name = f"{stage}.{i}"
            try:
                main_name = f"{block_name}.{main(block)}"
            except ValueError as err:  # name the block: "layer2.0 is a MyBlock, not …"
                raise ValueError(f"{block_name} {err}") from err
            skip_name = skip(block)
            probe_layers.append(block_name)
            branches[block_name] = BlockBranches(
                main=main_name,
                skip=None if skip_name is None else f"{block_name}.{skip_name}",
                post=torch.relu,
            )
    return probe_layers, branches


def resnet_spec(
    module: nn.Module,
    stages: Sequence[str],
    *,
    main: Callable[[nn.Module], str],
    skip: Callable[[nn.Module], str | None],
    name: str,
    head: str,
    input_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    class_names: list[str] | None,
) -> ModelSpec:
    """The :class:`ModelSpec` of a ResNet: every block of ``stages`` a probe layer (see
    :func:`residual_blocks`), the last one the spatial layer, ``head`` an ``nn.Linear`` whose
    input is the pooled, flattened output of the last block."""
    probe_layers, branches = residual_blocks(module, stages, main=main, skip=skip)
    head_module: Any = module.get_submodule(head)
    return ModelSpec(
        name=name, module=module, probe_layers=probe_layers, head=head,
        num_classes=int(head_module.out_features), input_size=input_size, mean=mean, std=std,
        spatial_layer=probe_layers[-1], branches=branches, class_names=class_names,
    )
