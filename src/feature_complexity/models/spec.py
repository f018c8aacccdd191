"""One description of a model: everything the pipeline needs to know about it.

A :class:`ModelSpec` names, inside an ``nn.Module``:

- ``probe_layers``: the modules whose outputs are the depths ``l`` of the complexity metric
  (the output of every residual block, in forward order);
- ``head``: the classification head; its *input* is the penultimate vector (the space the
  dictionary ``D`` lives in) and its *output* the logits;
- ``penultimate``: optionally, a module whose output (globally average-pooled when spatial) is the
  penultimate vector, for models whose head input is not it;
- ``branches``: for residual blocks, where the skip branch and the main (residual) branch can be
  read before their addition (used by the residual-flow analysis);
- the input preprocessing (``input_size``, ``mean``, ``std``).

Every name is checked against ``module.named_modules()`` at construction, and a wrong name gets
an error that lists the names that exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch is imported lazily so that `import feature_complexity` stays light
    import torch
    from torch import nn

__all__ = ["BlockBranches", "ModelSpec", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BlockBranches:
    """Where to read the two branches of one residual block, before their addition.

    The block computes ``out = post(skip(x) + main(x))`` where ``post`` is usually a ReLU.

    Attributes:
        main: name of the module whose output is the main (residual) branch, e.g. ``"layer1.0.bn2"``.
        skip: name of the module whose output is the skip branch (a projection shortcut such as
            ``"layer2.0.downsample"``), or ``None`` when the skip is the identity: the block's
            input is then the skip branch.
        post: the function applied to the sum (``torch.relu`` for the ResNets here); used to check
            that capture is exact (``post(skip + main) == block output``).
    """

    main: str
    skip: str | None = None
    post: Callable[["torch.Tensor"], "torch.Tensor"] | None = None


@dataclass
class ModelSpec:
    """A model and the names of the places the pipeline reads from it.

    Attributes:
        name: a short name for reports, e.g. ``"resnet50"``.
        module: the ``nn.Module`` (put in eval mode by the pipeline).
        probe_layers: names of the residual-block modules, in forward order. Their outputs,
            globally average-pooled, are the layers ``f_l`` of the complexity metric.
        head: name of the classification head module (input: penultimate vector, shape
            ``(n, d)``; output: logits, shape ``(n, n_classes)``).
        num_classes: number of classes the head predicts.
        input_size: side of the square input image in pixels.
        mean, std: per-channel normalisation applied after scaling pixels to [0, 1].
        penultimate: optional module name whose output is the penultimate vector (pooled when
            spatial). ``None``: the head's input.
        spatial_layer: module whose spatial output, pooled, gives the penultimate vector (the last
            block for a ResNet); used for concept heatmaps. ``None``: the last probe layer.
        branches: per probe layer, where to read its skip and main branches (residual flow).
            Empty when the model does not support branch capture.
        class_names: optional human-readable class names, index = class id.
        build_args: the keyword arguments that rebuild this model with
            ``build_model(spec.name, **spec.build_args)`` (JSON-able; empty for custom models).
            Pass ``checkpoint=...`` on top to rebuild it around another checkpoint.
    """

    name: str
    module: "nn.Module"
    probe_layers: list[str]
    head: str
    num_classes: int
    input_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    penultimate: str | None = None
    spatial_layer: str | None = None
    branches: dict[str, BlockBranches] = field(default_factory=dict)
    class_names: list[str] | None = None
    build_args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def module_names(self) -> list[str]:
        """Names of all sub-modules of ``module`` (``named_modules`` order, root excluded)."""
        return [name for name, _ in self.module.named_modules() if name]

    def validate(self) -> None:
        """Check every name against the model; raise ``ValueError`` listing what exists."""
        existing = set(self.module_names())
        if not self.probe_layers:
            raise ValueError(
                f"model '{self.name}': probe_layers is empty; give the names of its residual blocks "
                f"(candidates: {_describe_candidates(self.module)})"
            )
        if len(set(self.probe_layers)) != len(self.probe_layers):
            raise ValueError(f"model '{self.name}': probe_layers has duplicates: {self.probe_layers}")
        named: list[tuple[str, str]] = [("probe layer", n) for n in self.probe_layers]
        named.append(("head", self.head))
        if self.penultimate is not None:
            named.append(("penultimate", self.penultimate))
        if self.spatial_layer is not None:
            named.append(("spatial layer", self.spatial_layer))
        for block, br in self.branches.items():
            if block not in self.probe_layers:
                raise ValueError(
                    f"model '{self.name}': branches are given for '{block}', which is not a probe "
                    f"layer; probe layers are: {', '.join(self.probe_layers)}"
                )
            named.append((f"main branch of '{block}'", br.main))
            if br.skip is not None:
                named.append((f"skip branch of '{block}'", br.skip))
        for role, module_name in named:
            if module_name not in existing:
                raise ValueError(
                    f"model '{self.name}': {role} '{module_name}' not found; "
                    f"the model's residual blocks are: {_describe_candidates(self.module)}"
                    f" (all module names: `[n for n, _ in model.named_modules()]`)"
                )
        if self.num_classes < 2:
            raise ValueError(f"model '{self.name}': num_classes must be >= 2, got {self.num_classes}")
        if len(self.mean) != len(self.std):
            raise ValueError(f"model '{self.name}': mean {self.mean} and std {self.std} differ in length")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"model '{self.name}': {len(self.class_names)} class names for {self.num_classes} classes"
            )

    # ------------------------------------------------------------------ helpers
    def get(self, module_name: str) -> "nn.Module":
        """The sub-module called ``module_name`` (validated names only)."""
        return self.module.get_submodule(module_name)

    @property
    def spatial(self) -> str:
        """The module whose spatial output feeds the penultimate vector."""
        return self.spatial_layer if self.spatial_layer is not None else self.probe_layers[-1]

    def describe(self) -> dict:
        """A JSON-able summary for manifests and reports."""
        return {
            "name": self.name,
            "probe_layers": list(self.probe_layers),
            "head": self.head,
            "penultimate": self.penultimate,
            "spatial_layer": self.spatial,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "branch_capture": bool(self.branches),
            "build_args": {k: (str(v) if not isinstance(v, (int, float, str, bool, list, tuple, type(None))) else v)
                           for k, v in self.build_args.items()},
            "n_parameters": int(sum(p.numel() for p in self.module.parameters())),
        }


def _describe_candidates(module: "nn.Module") -> str:
    """Names that look like residual blocks (modules with a ``downsample``/``shortcut`` or named
    ``layerX.Y``), else the top-level children: what a user most likely meant."""
    import re

    names = [n for n, _ in module.named_modules() if n]
    blocks = [n for n in names if re.fullmatch(r"(layer|stage|blocks?)\d*[._]\d+", n)]
    if not blocks:
        blocks = [n for n, _ in module.named_children()]
    if len(blocks) > 40:
        blocks = blocks[:20] + ["…"] + blocks[-5:]
    return ", ".join(blocks) if blocks else "(none)"
