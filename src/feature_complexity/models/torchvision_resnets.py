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

if TYPE_CHECKING:  # torch is imported inside the functions: the registry reads the names below
    from torch import nn

    from .spec import BlockBranches, ModelSpec

__all__ = ["TORCHVISION_BLOCKS", "TORCHVISION_RESNETS", "torchvision_resnet", "torchvision_spec", "resnet_branches"]

#: blocks per stage of each model (also narrows the architecture guess for a checkpoint)
TORCHVISION_BLOCKS: dict[str, tuple[int, ...]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
    "wide_resnet50_2": (3, 4, 6, 3),
    "wide_resnet101_2": (3, 4, 23, 3),
    "resnext50_32x4d": (3, 4, 6, 3),
    "resnext101_32x8d": (3, 4, 23, 3),
    "resnext101_64x4d": (3, 4, 23, 3),
}
TORCHVISION_RESNETS: tuple[str, ...] = tuple(TORCHVISION_BLOCKS)


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


_STAGES = ("layer1", "layer2", "layer3", "layer4")


def _main_branch(block: nn.Module) -> str:
    """``bn3`` of a ``Bottleneck``, ``bn2`` of a ``BasicBlock``."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    if isinstance(block, Bottleneck):
        return "bn3"
    if isinstance(block, BasicBlock):
        return "bn2"
    # a user-modified model: no branch capture for unknown block types
    raise ValueError(f"is a {type(block).__name__}, not a torchvision BasicBlock/Bottleneck")


def _skip_branch(block: nn.Module) -> str | None:
    return None if block.downsample is None else "downsample"


def resnet_branches(module: nn.Module) -> "tuple[list[str], dict[str, BlockBranches]]":
    """Probe layers (every block of ``layer1 … layer4``, forward order) and their branches.

    The main branch is read at ``bn2`` (``BasicBlock``) or ``bn3`` (``Bottleneck``), the skip
    branch at ``downsample`` when the block has one (``None``: identity, the block input).
    """
    from ._blocks import residual_blocks

    return residual_blocks(module, _STAGES, main=_main_branch, skip=_skip_branch)


def torchvision_spec(module: nn.Module, *, name: str, class_names: list[str] | None = None) -> "ModelSpec":
    """The :class:`ModelSpec` of a torchvision ResNet: 224 px, ImageNet mean/std, head ``fc``."""
    from ._blocks import resnet_spec
    from .spec import IMAGENET_MEAN, IMAGENET_STD

    return resnet_spec(
        module, _STAGES, main=_main_branch, skip=_skip_branch,
        name=name, head="fc", input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=class_names,
    )
