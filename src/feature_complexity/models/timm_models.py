"""timm models by name (``timm:<name>``) as :class:`ModelSpec`.

``timm:resnet50.a1_in1k``, ``timm:convnext_tiny.fb_in22k_ft_in1k``,
``timm:vit_base_patch16_224.augreg_in21k_ft_in1k``, ``timm:deit_small_patch16_224`` … are built
by ``timm.create_model``; ``weights="pretrained"`` (or the tag itself, ``weights="a1_in1k"``)
lets timm download the tagged weights on the user's machine, ``weights=None`` gives a random
initialisation, and a local file goes through the registry's ``checkpoint=``.

Structure (probe points in forward order, units of the residual flow):

- ResNet-like (``layer1.0 … layer4.{n-1}``): one unit per block, main at the last of
  ``bn2``/``bn3``, ``se``, ``drop_path``; skip ``downsample`` or the block input; ``post`` the
  block's final activation;
- staged models (``stages.i.blocks.j``, ConvNeXt): one unit per ConvNeXt block
  ``x + drop_path(ls(mlp(norm(dwconv(x)))))``, main at ``drop_path``, skip at ``shortcut``;
- transformers (``blocks.i``): the residual stream after every block, and two units per
  ``Block``: ``blocks.i.attn`` (skip: the block input; main: ``drop_path1``, i.e. after
  LayerScale) and ``blocks.i.mlp`` (skip: the stream between the additions; main: ``drop_path2``).

The head is timm's own classifier (``model.get_classifier()``), so ``head(penultimate)`` are the
logits; a model built with ``num_classes=0`` (DINOv2, CLIP towers) has no head and its
representation is the output of the classifier's ``Identity`` (``forward_head(pre_logits=True)``).
Preprocessing comes from timm's data config for the model (``resolve_model_data_config``).

timm stays optional: nothing here imports it before a model is built, and a missing timm raises
:class:`MissingDependencyError` naming the extra to install.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from .spec import BlockBranches, ModelSpec

__all__ = ["TIMM_PREFIX", "MissingDependencyError", "import_timm", "timm_model", "timm_spec", "timm_preprocessing"]

TIMM_PREFIX = "timm:"
PRETRAINED = "pretrained"
INSTALL_HINT = "pip install 'feature-complexity[timm]'"


class MissingDependencyError(ImportError, ValueError):
    """An optional dependency is not installed (a ``ValueError`` too, so the CLI reports it)."""


def import_timm() -> Any:
    """The ``timm`` module, or :class:`MissingDependencyError` saying how to install it."""
    try:
        import timm
    except ImportError as exc:
        raise MissingDependencyError(
            f"timm:<name> models need the timm package, which is not installed: {INSTALL_HINT} "
            "(or pip install 'timm>=1.0')") from exc
    return timm


# ---------------------------------------------------------------------- building
def _check_name(timm: Any, name: str) -> tuple[str, str | None]:
    """``(architecture, tag)`` of a timm name; ``ValueError`` with close matches if unknown."""
    from timm.models import split_model_name_tag

    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=6, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}" if close else "see timm.list_models('<pattern>*')"
        raise ValueError(f"unknown timm model '{arch}' ({hint}); use --model timm:<name>")
    if tag:
        tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{arch}.*")]
        if tag not in tags:
            raise ValueError(f"timm has no weights tagged '{tag}' for {arch}; its tags are: "
                             f"{', '.join(tags) or '(none)'}")
    return arch, tag or None


def _weights_name(arch: str, tag: str | None, weights: str) -> str:
    """The full timm name whose weights ``weights`` asks for (``"pretrained"`` or a tag)."""
    if weights == PRETRAINED:
        return f"{arch}.{tag}" if tag else arch
    if tag is not None and weights != tag:
        raise ValueError(f"timm:{arch}.{tag} names the tag '{tag}' but weights='{weights}'; pass "
                         f"weights='pretrained' (or weights='{tag}')")
    return f"{arch}.{weights}"


def timm_model(name: str, *, weights: str | None, num_classes: int | None,
               model_kwargs: Mapping[str, Any] | None = None) -> "tuple[nn.Module, list[str] | None]":
    """Build timm model ``name`` (no ``timm:`` prefix); returns the module and, for pretrained
    weights with an ImageNet head, the class names.

    Args:
        name: a timm name, optionally tagged (``"resnet50.a1_in1k"``).
        weights: ``None`` (random initialisation), ``"pretrained"`` (the name's tag, or timm's
            default tag) or a tag (``"a1_in1k"``); timm downloads them from the Hugging Face Hub.
        num_classes: head width; ``0`` for no head; ``None`` for the model's default. With
            pretrained weights only ``None``, ``0`` or the weights' own width.
        model_kwargs: extra ``timm.create_model`` arguments (``img_size``, ``depth`` …).
    """
    timm = import_timm()
    from timm.models import get_pretrained_cfg

    arch, tag = _check_name(timm, name)
    kwargs = dict(model_kwargs or {})
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if weights is None:
        return _create(timm, name, pretrained=False, kwargs=kwargs), None
    full = _weights_name(arch, tag, weights)
    _check_name(timm, full)
    cfg = get_pretrained_cfg(full)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise ValueError(f"timm has no downloadable weights for '{full}'; pick a tagged name from "
                         f"timm.list_pretrained('{arch}*'), or pass a local --checkpoint")
    if num_classes not in (None, 0, cfg.num_classes):
        raise ValueError(f"weights {full} have a {cfg.num_classes}-class head but num_classes={num_classes}; "
                         "drop num_classes (or 0 for no head), or build with weights=None and load your own "
                         "--checkpoint")
    try:
        module = _create(timm, full, pretrained=True, kwargs=kwargs)
    except (OSError, RuntimeError, ImportError) as exc:  # offline, hub errors, missing hub client
        raise ValueError(
            f"could not fetch timm weights for {full}: {exc}. timm downloads them from the Hugging Face "
            "Hub into ~/.cache/huggingface; download once on a machine with internet, or pass a local "
            "file with --checkpoint") from exc
    return module, _imagenet_names(timm, module)


def _create(timm: Any, name: str, *, pretrained: bool, kwargs: dict[str, Any]) -> "nn.Module":
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:  # an argument the model class does not take
        raise ValueError(f"timm model '{name}' rejects the arguments {sorted(kwargs)}: {exc}") from exc


def _imagenet_names(timm: Any, module: "nn.Module") -> list[str] | None:
    """Short class names of an ImageNet head (timm's packaged label files; no download)."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(module)
    if not subset or not getattr(module, "num_classes", 0):
        return None
    names = [d.split(",")[0].strip() for d in ImageNetInfo(subset).label_descriptions()]
    return names if len(names) == module.num_classes else None


# ---------------------------------------------------------------------- preprocessing
def timm_preprocessing(module: "nn.Module") -> dict[str, Any]:
    """``ModelSpec`` preprocessing fields from timm's data config for ``module``.

    Returns ``{"input_size", "resize_size", "interpolation", "crop_mode", "mean", "std"}``;
    ``resize_size`` follows timm's eval transform (``floor(input_size / crop_pct)``). A ViT built
    for another image size (``img_size=``) takes its own size, the crop fraction kept.
    """
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(module)
    _, h, w = cfg["input_size"]
    embed = getattr(module, "patch_embed", None)
    fixed = getattr(embed, "img_size", None)
    if fixed is not None and getattr(embed, "strict_img_size", True) and tuple(fixed) != (h, w):
        h, w = fixed  # the config describes the pretrained resolution, not this model's
    if h != w:
        raise ValueError(f"timm's data config asks for a {h}x{w} input; only square inputs are supported "
                         "(wrap the model with spec_from_module and your own preprocessing)")
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    interpolation = cfg.get("interpolation") or "bilinear"
    return {"input_size": int(h), "resize_size": max(int(h), math.floor(h / crop_pct)),
            "interpolation": "bicubic" if interpolation == "random" else interpolation,
            "crop_mode": cfg.get("crop_mode") or "center",
            "mean": tuple(float(m) for m in cfg["mean"]), "std": tuple(float(s) for s in cfg["std"])}


# ---------------------------------------------------------------------- structure
def _names_by_identity(module: "nn.Module") -> dict[int, str]:
    return {id(m): n for n, m in module.named_modules() if n}


def _resnet_units(module: "nn.Module") -> "tuple[list[str], dict[str, BlockBranches]] | None":
    """Probe layers ``layer1.0 …`` and, for timm's stock BasicBlock/Bottleneck, one unit each."""
    from timm.models.resnet import BasicBlock, Bottleneck

    from .spec import BlockBranches

    stages = [s for s in ("layer1", "layer2", "layer3", "layer4") if hasattr(module, s)]
    if len(stages) < 2:
        return None
    probe, branches = [], {}
    for stage in stages:
        for i, block in enumerate(module.get_submodule(stage).children()):
            name = f"{stage}.{i}"
            probe.append(name)
            kind = type(block)
            # a subclass with its own forward (SE variants, res2net …) may add the skip elsewhere
            if kind.forward is Bottleneck.forward or kind.forward is BasicBlock.forward:
                last = "bn3" if kind.forward is Bottleneck.forward else "bn2"
                main = next(a for a in ("drop_path", "se", last) if getattr(block, a, None) is not None)
                post: Any = block.act3 if last == "bn3" else block.act2  # the block's own activation module
                branches[name] = BlockBranches(main=f"{name}.{main}", post=post, skip=(
                    None if block.downsample is None else f"{name}.downsample"))
    return probe, branches if len(branches) == len(probe) else {}


def _staged_units(module: "nn.Module") -> "tuple[list[str], dict[str, BlockBranches]] | None":
    """Probe layers ``stages.i.blocks.j`` and, for ConvNeXt blocks, one unit each."""
    from timm.models.convnext import ConvNeXtBlock

    from .spec import BlockBranches

    stages = getattr(module, "stages", None)
    if stages is None or not all(hasattr(s, "blocks") for s in stages):
        return None
    probe, branches = [], {}
    for i, stage in enumerate(stages):
        for j, block in enumerate(stage.blocks):
            name = f"stages.{i}.blocks.{j}"
            probe.append(name)
            if type(block).forward is ConvNeXtBlock.forward:
                # x = drop_path(gamma * mlp(norm(conv_dw(x)))) + shortcut(x): LayerScale is inside main
                branches[name] = BlockBranches(main=f"{name}.drop_path", skip=f"{name}.shortcut")
    return probe, branches if len(branches) == len(probe) else {}


def _transformer_units(module: "nn.Module") -> "tuple[list[str], dict[str, BlockBranches]] | None":
    """Probe layers ``blocks.i`` and, for timm's stock ViT ``Block``, its two additions."""
    from timm.models.vision_transformer import Block

    from .spec import BlockBranches

    blocks = getattr(module, "blocks", None)
    if blocks is None or getattr(module, "patch_embed", None) is None:
        return None
    probe, branches = [], {}
    for i, block in enumerate(blocks):
        name = f"blocks.{i}"
        probe.append(name)
        if type(block).forward is Block.forward:
            # x = x + drop_path1(ls1(attn(norm1(x)))); x = x + drop_path2(ls2(mlp(norm2(x))))
            branches[f"{name}.attn"] = BlockBranches(main=f"{name}.drop_path1", block=name, skip_from="input")
            branches[f"{name}.mlp"] = BlockBranches(main=f"{name}.drop_path2", block=name, skip_from="previous")
    return probe, branches if len(branches) == 2 * len(probe) else {}


def _classifier(module: "nn.Module", name: str) -> tuple[str | None, str | None, int | None]:
    """``(head, penultimate, num_classes)`` from timm's ``get_classifier()``."""
    from torch import nn

    get_classifier: Any = getattr(module, "get_classifier", None)
    clf = get_classifier() if callable(get_classifier) else None
    if isinstance(clf, (tuple, list)):
        raise ValueError(f"timm:{name} has {len(clf)} heads whose logits it averages (a distilled DeiT); "
                         "use the non-distilled model (e.g. timm:deit_small_patch16_224), or describe it "
                         "with spec_from_module")
    where = _names_by_identity(module).get(id(clf)) if clf is not None else None
    if where is None:
        raise ValueError(f"timm:{name}: cannot find its classifier module (get_classifier()); describe it "
                         "with spec_from_module")
    if isinstance(clf, nn.Identity):  # num_classes=0: the Identity's output is forward_head(pre_logits=True)
        return None, where, None
    if not isinstance(clf, nn.Linear):
        raise ValueError(f"timm:{name}: its classifier '{where}' is a {type(clf).__name__}, not a Linear "
                         "(a convolutional head); describe it with spec_from_module")
    return where, None, int(clf.out_features)


def _spatial(module: "nn.Module", probe: list[str], transformer: bool) -> tuple[str, str | None]:
    """``(spatial_layer, spatial_norm)``: where the map the head pools is, and the norm the head
    applies after pooling (applied per position by :func:`.spatial.spatial_tokens`)."""
    from torch import nn

    def real(name: str) -> bool:  # the module exists and does something
        try:
            return not isinstance(module.get_submodule(name), nn.Identity)
        except AttributeError:
            return False

    if transformer:  # `norm` (Identity when fc_norm is used instead) then `fc_norm` after pooling
        return ("norm" if hasattr(module, "norm") else probe[-1]), ("fc_norm" if real("fc_norm") else None)
    layer = "norm_pre" if real("norm_pre") else probe[-1]  # ConvNeXt with head_norm_first
    return layer, ("head.norm" if real("head.norm") else None)


def timm_spec(module: "nn.Module", *, name: str, token_pool: str | None = None,
              class_names: list[str] | None = None) -> "ModelSpec":
    """The :class:`ModelSpec` of a timm model (see the module docstring for the structure).

    Args:
        module: a model made by ``timm.create_model``.
        name: the spec's name (``"timm:resnet50.a1_in1k"``).
        token_pool: ``"cls"`` or ``"mean"`` for transformers; default: what the model's head
            does (``global_pool='token'`` reads the class token, anything else pools patches).
        class_names: names of the head's classes.

    Raises:
        ValueError: the architecture is none of the supported layouts (the message suggests
            ``spec_from_module``), or its classifier is not one linear layer.
    """
    from .spec import ModelSpec

    found, transformer = None, False
    for describe in (_resnet_units, _staged_units, _transformer_units):
        found = describe(module)
        if found is not None:
            transformer = describe is _transformer_units
            break
    if found is None:
        raise ValueError(
            f"{name}: timm's {type(module).__name__} has none of the residual layouts supported by name "
            "(layer1.0 …, stages.i.blocks.j, blocks.i); describe it with spec_from_module(model, "
            "probe_layers=[...], head=...)")
    probe, branches = found
    head, penultimate, num_classes = _classifier(module, name.removeprefix(TIMM_PREFIX))
    prefix = int(getattr(module, "num_prefix_tokens", 0)) if transformer else 0
    if token_pool is None:
        token_pool = "cls" if transformer and prefix and getattr(module, "global_pool", "") == "token" else "mean"
    spatial_layer, spatial_norm = _spatial(module, probe, transformer)
    return ModelSpec(
        name=name, module=module, probe_layers=probe, head=head, num_classes=num_classes,
        penultimate=penultimate, spatial_layer=spatial_layer, spatial_norm=spatial_norm, branches=branches,
        token_pool=token_pool, prefix_tokens=prefix, class_names=class_names if head is not None else None,
        **timm_preprocessing(module),
    )
