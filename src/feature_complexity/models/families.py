"""The built-in model families: torchvision's ImageNet ResNets, the CIFAR ResNets of He et al.
2016, and the project's small ResNet (see :mod:`.family` for the contract).

Each family imports torch only when it builds, so listing the names stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .family import ModelFamily, register_family
from .torchvision_resnets import TORCHVISION_RESNETS

if TYPE_CHECKING:
    import torch

    from .spec import ModelSpec

__all__ = ["TorchvisionResNets", "CifarResNets", "SmallResNets", "stage_blocks"]

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

    def names(self) -> list[str]:
        return list(TORCHVISION_RESNETS)

    def build(self, key: str, *, weights: str | None, num_classes: int | None,
              class_names: list[str] | None, **kwargs: Any) -> tuple["ModelSpec", dict[str, Any]]:
        from .torchvision_resnets import torchvision_resnet, torchvision_spec

        module, categories = torchvision_resnet(key, weights=weights, num_classes=num_classes)
        return torchvision_spec(module, name=key, class_names=class_names or categories), {}


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
        resolved = {"widths": widths, "blocks_per_stage": blocks,
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
