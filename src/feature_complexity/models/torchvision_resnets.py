"""torchvision's ImageNet ResNets (ResNet, Wide ResNet, ResNeXt) as :class:`ModelSpec`.

Probe layers are the residual blocks ``layer1.0 … layer4.{n-1}`` in forward order (16 for a
ResNet50, the unit of depth of the paper). The head is ``fc``, whose input is the pooled,
flattened output of the last block: the penultimate vector, shape ``(n_images, 512)`` for
basic-block models and ``(n_images, 2048)`` for bottleneck models (wide and ResNeXt included).

Note for hook writers: torchvision blocks add the skip branch *in place* into the output of
``bn2`` / ``bn3`` (``out += identity``) and apply an in-place ReLU. A hook that keeps the tensor
given to it must copy (or pool) it immediately.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .spec import BlockBranches, ModelSpec

__all__ = ["TORCHVISION_RESNETS", "torchvision_resnet", "torchvision_spec", "resnet_branches"]

TORCHVISION_RESNETS: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
)


def resolve_weights(name: str, weights: str) -> object:
    """torchvision's weight enum member ``weights`` of model ``name`` (e.g. ``"IMAGENET1K_V2"``).

    Raises ``ValueError`` listing the valid names when ``weights`` is not one of them.
    """
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    valid = list(enum.__members__)
    # accept the fully qualified spelling too ("ResNet50_Weights.IMAGENET1K_V2")
    key = weights.split(".")[-1]
    if key not in enum.__members__:
        raise ValueError(
            f"unknown weights '{weights}' for {name}; torchvision's weights for it are: "
            f"{', '.join(valid)} (or give a local file with --checkpoint)"
        )
    return enum[key]


def torchvision_resnet(name: str, *, weights: str | None = None, num_classes: int | None = None) -> tuple[nn.Module, list[str] | None]:
    """Build torchvision model ``name``; returns the module and the class names of its weights.

    Args:
        name: one of :data:`TORCHVISION_RESNETS`.
        weights: a torchvision weight enum name (``"IMAGENET1K_V1"``, ``"DEFAULT"`` …), downloaded
            by torchvision into its cache; ``None`` for random initialisation.
        num_classes: width of ``fc``; must be 1000 (or ``None``) with ImageNet weights.
    """
    import torchvision

    if name not in TORCHVISION_RESNETS:
        raise ValueError(f"'{name}' is not a torchvision ResNet; known: {', '.join(TORCHVISION_RESNETS)}")
    if weights is None:
        module = torchvision.models.get_model(name, weights=None, num_classes=num_classes or 1000)
        return module, None
    enum_member = resolve_weights(name, weights)
    categories = list(enum_member.meta.get("categories") or []) or None
    n_weights = len(categories) if categories else 1000
    if num_classes is not None and num_classes != n_weights:
        raise ValueError(
            f"weights {name}.{weights} have a {n_weights}-class head but num_classes={num_classes}; "
            f"drop num_classes, or build with weights=None and load your own --checkpoint"
        )
    try:
        module = torchvision.models.get_model(name, weights=enum_member)
    except OSError as exc:  # URLError and friends: offline, proxy, full disk
        raise ValueError(
            f"could not download torchvision weights {name}.{key_of(enum_member)} from "
            f"{enum_member.url}: {exc}. Download them once on a machine with internet (torchvision "
            f"caches them under ~/.cache/torch), or pass a local file with --checkpoint"
        ) from exc
    return module, categories


def key_of(enum_member: object) -> str:
    """``ResNet50_Weights.IMAGENET1K_V2`` -> ``"IMAGENET1K_V2"``."""
    return str(getattr(enum_member, "name", enum_member))


def resnet_branches(module: nn.Module) -> "tuple[list[str], dict[str, BlockBranches]]":
    """Probe layers (every block of ``layer1 … layer4``, forward order) and their branches.

    The main branch is read at ``bn2`` (``BasicBlock``) or ``bn3`` (``Bottleneck``), the skip
    branch at ``downsample`` when the block has one (``None``: identity, the block input).
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    from .spec import BlockBranches

    probe_layers: list[str] = []
    branches: dict[str, BlockBranches] = {}
    for stage in (1, 2, 3, 4):
        for i, block in enumerate(getattr(module, f"layer{stage}")):
            block_name = f"layer{stage}.{i}"
            if isinstance(block, Bottleneck):
                main = f"{block_name}.bn3"
            elif isinstance(block, BasicBlock):
                main = f"{block_name}.bn2"
            else:  # a user-modified model: no branch capture for unknown block types
                raise ValueError(f"{block_name} is a {type(block).__name__}, not a torchvision BasicBlock/Bottleneck")
            skip = f"{block_name}.downsample" if block.downsample is not None else None
            probe_layers.append(block_name)
            branches[block_name] = BlockBranches(main=main, skip=skip, post=torch.relu)
    return probe_layers, branches


def torchvision_spec(module: nn.Module, *, name: str, class_names: list[str] | None = None) -> "ModelSpec":
    """The :class:`ModelSpec` of a torchvision ResNet: 224 px, ImageNet mean/std, head ``fc``."""
    from .spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

    probe_layers, branches = resnet_branches(module)
    return ModelSpec(
        name=name,
        module=module,
        probe_layers=probe_layers,
        head="fc",
        num_classes=module.fc.out_features,
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        spatial_layer=probe_layers[-1],
        branches=branches,
        class_names=class_names,
    )
