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

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported inside the functions: the registry reads the names below
    from torch import nn

    from .spec import BlockBranches, ModelSpec

__all__ = ["TORCHVISION_BLOCKS", "TORCHVISION_RESNETS", "torchvision_model", "torchvision_preprocessing",
           "torchvision_resnet", "torchvision_spec", "resnet_branches", "resolve_weights"]

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


def resolve_weights(name: str, weights: str) -> Any:
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


def torchvision_model(name: str, *, weights: str | None = None, num_classes: int | None = None,
                      model_kwargs: dict | None = None) -> "tuple[nn.Module, list[str] | None, dict]":
    """Build torchvision model ``name`` with ``torchvision.models.get_model``.

    Args:
        name: a torchvision model name (``"resnet50"``, ``"convnext_tiny"``, ``"vit_b_16"`` …).
        weights: a torchvision weight enum name (``"IMAGENET1K_V1"``, ``"DEFAULT"`` …), downloaded
            by torchvision into its cache; ``None`` for random initialisation.
        num_classes: width of the head; must be the weights' own (or ``None``) with named weights.
        model_kwargs: extra keyword arguments for the model constructor (``image_size`` …).

    Returns:
        ``(module, class names of the weights or None, preprocessing fields)``, the last from the
        weights' own ``transforms()`` (see :func:`torchvision_preprocessing`).
    """
    import torchvision

    kwargs = dict(model_kwargs or {})
    if weights is None:
        module = torchvision.models.get_model(name, weights=None, num_classes=num_classes or 1000, **kwargs)
        return module, None, torchvision_preprocessing(name, None, getattr(module, "image_size", None))
    enum_member = resolve_weights(name, weights)
    categories = list(enum_member.meta.get("categories") or []) or None
    n_weights = len(categories) if categories else 1000
    if num_classes is not None and num_classes != n_weights:
        raise ValueError(
            f"weights {name}.{weights} have a {n_weights}-class head but num_classes={num_classes}; "
            f"drop num_classes, or build with weights=None and load your own --checkpoint"
        )
    try:
        module = torchvision.models.get_model(name, weights=enum_member, **kwargs)
    except OSError as exc:  # URLError and friends: offline, proxy, full disk
        raise ValueError(
            f"could not download torchvision weights {name}.{key_of(enum_member)} from "
            f"{enum_member.url}: {exc}. Download them once on a machine with internet (torchvision "
            f"caches them under ~/.cache/torch), or pass a local file with --checkpoint"
        ) from exc
    return module, categories, torchvision_preprocessing(name, enum_member)


def torchvision_preprocessing(name: str, enum_member: Any | None, image_size: int | None = None) -> dict:
    """``ModelSpec`` preprocessing fields from a weights' ``transforms()`` (no download).

    For random weights (``enum_member=None``) the first of ``DEFAULT``, then every weight of the
    model, whose crop is ``image_size`` (224 when ``None``) is used, so a random control is
    preprocessed like the trained model; none matching: the classic 256/224 bilinear rule.

    Returns ``{"input_size", "resize_size", "interpolation", "mean", "std"}``.
    """
    import torchvision

    from .spec import IMAGENET_MEAN, IMAGENET_STD

    enum = torchvision.models.get_model_weights(name)
    wanted = 224 if image_size is None else int(image_size)
    candidates = [enum_member] if enum_member is not None else [enum.DEFAULT, *enum]
    for member in candidates:
        t = member.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        if enum_member is not None or crop == wanted:
            return {"input_size": crop, "resize_size": max(crop, resize), "interpolation": t.interpolation.value,
                    "mean": tuple(float(m) for m in t.mean), "std": tuple(float(v) for v in t.std)}
    return {"input_size": wanted, "resize_size": None, "interpolation": "bilinear",
            "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def torchvision_resnet(name: str, *, weights: str | None = None,
                       num_classes: int | None = None) -> tuple[nn.Module, list[str] | None]:
    """Build torchvision ResNet ``name``; returns the module and the class names of its weights
    (see :func:`torchvision_model`)."""
    if name not in TORCHVISION_RESNETS:
        raise ValueError(f"'{name}' is not a torchvision ResNet; known: {', '.join(TORCHVISION_RESNETS)}")
    module, categories, _ = torchvision_model(name, weights=weights, num_classes=num_classes)
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


def torchvision_spec(module: nn.Module, *, name: str, class_names: list[str] | None = None,
                     preprocessing: dict | None = None) -> "ModelSpec":
    """The :class:`ModelSpec` of a torchvision ResNet, head ``fc``.

    ``preprocessing``: the fields of :func:`torchvision_preprocessing` (default: 224 px,
    ImageNet mean/std, resize 256, bilinear).
    """
    import dataclasses

    from ._blocks import resnet_spec
    from .spec import IMAGENET_MEAN, IMAGENET_STD

    prep = dict(preprocessing or {"input_size": 224, "mean": IMAGENET_MEAN, "std": IMAGENET_STD})
    spec = resnet_spec(
        module, _STAGES, main=_main_branch, skip=_skip_branch, name=name, head="fc",
        input_size=prep.pop("input_size"), mean=prep.pop("mean"), std=prep.pop("std"), class_names=class_names,
    )
    return dataclasses.replace(spec, **prep) if prep else spec
