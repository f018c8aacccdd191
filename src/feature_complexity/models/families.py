"""The built-in model families: torchvision's ImageNet ResNets and its ConvNeXt / RegNet / ViT
models, timm models by name (``timm:<name>``), the CIFAR ResNets of He et al. 2016, and the
project's small ResNet (see :mod:`.family` for the contract).

Each family imports torch only when it builds, so listing the names stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .family import ModelFamily, register_family
from .timm_models import PRETRAINED, TIMM_PREFIX
from .torchvision_other import TORCHVISION_OTHER, TORCHVISION_VITS
from .torchvision_resnets import TORCHVISION_RESNETS

if TYPE_CHECKING:
    import torch

    from .spec import ModelSpec

__all__ = ["TorchvisionResNets", "TorchvisionOther", "TimmModels", "CifarResNets", "SmallResNets", "stage_blocks"]

_CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # mirrors cifar_resnet.CIFAR_DEPTHS without importing torch


def stage_blocks(state: Mapping[str, Any]) -> dict[int, int]:
    """``{stage: n_blocks}`` from state-dict keys ``layer{stage}.{block}.…``."""
    counts: dict[int, int] = {}
    for k in state:
        m = re.match(r"layer(\d+)\.(\d+)\.", k)
        if m:
            s, b = int(m.group(1)), int(m.group(2))
            counts[s] = max(counts.get(s, 0), b + 1)
    return dict(sorted(counts.items()))


@register_family
class TorchvisionResNets(ModelFamily):
    """``resnet18 … resnet152``, wide ResNets and ResNeXts of torchvision (224 px, ImageNet)."""

    name = "torchvision-resnet"
    weights_help = "torchvision weight names such as IMAGENET1K_V2 (downloaded by torchvision)"
    named_weights = True

    def names(self) -> list[str]:
        return list(TORCHVISION_RESNETS)

    def build(self, key: str, *, weights: str | None, num_classes: int | None,
              class_names: list[str] | None, **kwargs: Any) -> tuple["ModelSpec", dict[str, Any]]:
        from .torchvision_resnets import torchvision_model, torchvision_spec

        module, categories, prep = torchvision_model(key, weights=weights, num_classes=num_classes)
        return torchvision_spec(module, name=key, class_names=class_names or categories, preprocessing=prep), {}


@register_family
class TorchvisionOther(ModelFamily):
    """torchvision's ConvNeXt (``convnext_tiny`` …), RegNet (``regnet_y_400mf`` …) and ViT
    (``vit_b_16`` …) models; ``model_kwargs`` go to ``get_model`` (``image_size`` for a ViT),
    ``token_pool`` (ViT) is ``"cls"`` or ``"mean"``."""

    name = "torchvision-other"
    kwargs = ("model_kwargs", "token_pool")
    weights_help = "torchvision weight names such as IMAGENET1K_V1 (downloaded by torchvision)"
    named_weights = True
    checkpoint_guess = False  # no layerX.Y blocks, and 24 models, some huge

    def names(self) -> list[str]:
        return list(TORCHVISION_OTHER)

    def build(self, key: str, *, weights: str | None, num_classes: int | None,
              class_names: list[str] | None, **kwargs: Any) -> tuple["ModelSpec", dict[str, Any]]:
        from .torchvision_other import other_spec
        from .torchvision_resnets import torchvision_model

        model_kwargs = dict(kwargs.get("model_kwargs") or {})
        token_pool = kwargs.get("token_pool")
        if token_pool is not None and key not in TORCHVISION_VITS:
            raise ValueError(f"token_pool only applies to torchvision's ViTs ({', '.join(TORCHVISION_VITS)}), "
                             f"not {key}")
        module, categories, prep = torchvision_model(key, weights=weights, num_classes=num_classes,
                                                     model_kwargs=model_kwargs)
        spec = other_spec(module, name=key, class_names=class_names or categories, preprocessing=prep,
                          token_pool=token_pool)
        resolved: dict[str, Any] = {"model_kwargs": model_kwargs} if model_kwargs else {}
        if key in TORCHVISION_VITS:
            resolved["token_pool"] = spec.token_pool
        return spec, resolved

    def head_classes(self, state: Mapping[str, "torch.Tensor"]) -> int | None:
        for head in ("heads.head.weight", "classifier.2.weight", "fc.weight"):
            if head in state and state[head].ndim == 2:
                return int(state[head].shape[0])
        return None


@register_family
class TimmModels(ModelFamily):
    """Any timm model with a ResNet, staged (ConvNeXt) or transformer (ViT, DeiT, DINOv2, CLIP)
    layout, as ``timm:<name>`` (``timm:resnet50.a1_in1k``); ``model_kwargs`` go to
    ``timm.create_model`` (``img_size``, ``depth`` …); ``token_pool`` (transformers) is
    ``"cls"`` or ``"mean"``; ``num_classes=0`` drops the head."""

    name = "timm"
    kwargs = ("model_kwargs", "token_pool")
    weights_help = (f"'{PRETRAINED}' (timm downloads the weights of the name's tag, e.g. "
                    "timm:resnet50.a1_in1k) or the tag itself (weights='a1_in1k')")
    named_weights = True
    headless = True
    checkpoint_guess = False  # open-ended: the names cannot be enumerated

    def names(self) -> list[str]:
        return [f"{TIMM_PREFIX}<name>"]

    def canonical(self, name: str) -> str | None:
        key = name.strip()
        if not key.lower().startswith(TIMM_PREFIX):
            return None
        rest = key[len(TIMM_PREFIX):].strip()
        if not rest:
            raise ValueError("give a timm model name after 'timm:', e.g. timm:resnet50.a1_in1k")
        return TIMM_PREFIX + rest  # timm's names (and hf-hub ids) keep their case

    def build(self, key: str, *, weights: str | None, num_classes: int | None,
              class_names: list[str] | None, **kwargs: Any) -> tuple["ModelSpec", dict[str, Any]]:
        from .timm_models import timm_model, timm_spec

        model_kwargs = dict(kwargs.get("model_kwargs") or {})
        if "num_classes" in model_kwargs or "pretrained" in model_kwargs:
            raise ValueError("pass num_classes= and weights= to build_model, not inside model_kwargs")
        module, names = timm_model(key[len(TIMM_PREFIX):], weights=weights, num_classes=num_classes,
                                   model_kwargs=model_kwargs)
        spec = timm_spec(module, name=key, token_pool=kwargs.get("token_pool"),
                         class_names=class_names or names)
        resolved: dict[str, Any] = {"model_kwargs": model_kwargs} if model_kwargs else {}
        resolved["token_pool"] = spec.token_pool
        return spec, resolved

    def head_classes(self, state: Mapping[str, "torch.Tensor"]) -> int | None:
        """The head's width; ``0`` when the checkpoint has no classifier keys (a backbone)."""
        found = super().head_classes(state)
        return 0 if found is None else found


@register_family
class CifarResNets(ModelFamily):
    """``cifar-resnet20/32/44/56/110`` with option-A shortcuts (akamaster's layout and checkpoints)."""

    name = "cifar-resnet"

    def names(self) -> list[str]:
        return [f"cifar-resnet{d}" for d in _CIFAR_DEPTHS]

    def canonical(self, name: str) -> str | None:
        key = name.strip().lower()
        key = key.replace("_", "-", 1) if key.startswith("cifar_") else key
        return key if key in self.names() else None

    def build(self, key: str, *, weights: str | None, num_classes: int | None,
              class_names: list[str] | None, **kwargs: Any) -> tuple["ModelSpec", dict[str, Any]]:
        from .cifar_resnet import cifar_resnet, cifar_spec

        module = cifar_resnet(int(key.removeprefix("cifar-resnet")), num_classes=num_classes or 10)
        return cifar_spec(module, name=key, class_names=class_names), {}


@register_family
class SmallResNets(ModelFamily):
    """``small-resnet``: the demo's small ResNet (``widths``, ``blocks_per_stage``, ``in_channels``,
    ``stem_stride``)."""

    name = "small-resnet"
    kwargs = ("widths", "blocks_per_stage", "in_channels", "stem_stride")

    def names(self) -> list[str]:
        return ["small-resnet"]

    def canonical(self, name: str) -> str | None:
        key = name.strip().lower()
        return "small-resnet" if key in ("small-resnet", "small_resnet") else None

    def build(self, key: str, *, weights: str | None, num_classes: int | None,
              class_names: list[str] | None, **kwargs: Any) -> tuple["ModelSpec", dict[str, Any]]:
        from .small_resnet import SmallResNet, small_spec

        widths = [int(w) for w in kwargs.get("widths", (16, 32, 64))]
        blocks = kwargs.get("blocks_per_stage", 2)
        blocks = int(blocks) if isinstance(blocks, int) else [int(b) for b in blocks]
        resolved: dict[str, Any] = {"widths": widths, "blocks_per_stage": blocks,
                    "in_channels": int(kwargs.get("in_channels", 3)),
                    "stem_stride": int(kwargs.get("stem_stride", 1))}
        module = SmallResNet(num_classes=num_classes or 10, **resolved)
        return small_spec(module, name=key, class_names=class_names), resolved

    def kwargs_from_state(self, key: str, state: Mapping[str, "torch.Tensor"]) -> dict[str, Any]:
        blocks = stage_blocks(state)
        if not blocks or "conv1.weight" not in state:
            return {}
        try:
            widths = [int(state[f"layer{s}.0.bn2.weight"].shape[0]) for s in blocks]
        except KeyError:
            return {}
        counts = list(blocks.values())
        return {"widths": widths, "blocks_per_stage": counts[0] if len(set(counts)) == 1 else counts,
                "in_channels": int(state["conv1.weight"].shape[1])}
