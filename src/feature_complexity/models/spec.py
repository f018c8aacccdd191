"""One description of a model: everything the pipeline needs to know about it.

A :class:`ModelSpec` names, inside an ``nn.Module``:

- ``probe_layers``: the modules whose outputs are the depths ``l`` of the complexity metric
  (the residual stream after every block, in forward order);
- ``head``: the classification head; its *input* is the penultimate vector (the space the
  dictionary ``D`` lives in) and its *output* the logits. ``None`` for a backbone without one
  (DINOv2, CLIP image towers, timm models built with ``num_classes=0``): ``penultimate`` then
  names the module whose output is the representation, and there are no logits;
- ``penultimate``: optionally, a module whose output (pooled, see below) is the penultimate
  vector, for models whose head input is not it or that have no head;
- ``branches``: for every residual addition (a *unit*), where its skip branch and its main
  (residual) branch can be read before the addition (the residual-flow analysis). A ResNet block
  holds one unit named after the block; a transformer block holds two, ``<block>.attn`` and
  ``<block>.mlp``;
- how outputs are pooled to one vector per image: a spatial map ``(b, C, H, W)`` by its spatial
  mean; a token sequence ``(b, T, C)`` by ``token_pool``: ``"cls"`` (the class token, index 0) or
  ``"mean"`` (the mean of the patch tokens, after the ``prefix_tokens`` class / register /
  distillation tokens). Both are linear, so pooled ``skip + main`` is the pooled sum;
- where the spatial penultimate map is (``spatial_layer``, ``spatial_norm``: concept heatmaps);
- the input preprocessing (``input_size``, ``resize_size``, ``interpolation``, ``crop_mode``,
  ``mean``, ``std``), taken from the weights' own transforms where the family knows them.

Every name is checked against ``module.named_modules()`` at construction, and a wrong name gets
an error that lists the names that exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily so that `import feature_complexity` stays light
    import torch
    from torch import nn

__all__ = ["BlockBranches", "ModelSpec", "IMAGENET_MEAN", "IMAGENET_STD", "TOKEN_POOLS", "SKIP_SOURCES"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: how a token sequence ``(b, T, C)`` is pooled: the class token, or the mean of the patch tokens
TOKEN_POOLS: tuple[str, ...] = ("mean", "cls")
#: where an identity skip comes from (``BlockBranches.skip is None``)
SKIP_SOURCES: tuple[str, ...] = ("input", "previous")
# torchvision's InterpolationMode values (timm uses the same spellings)
_INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")
_CROP_MODES = ("center", "squash", "border")


@dataclass(frozen=True)
class BlockBranches:
    """Where to read the two inputs of one residual addition (a *unit*), before the addition.

    The unit computes ``out = post(skip + main)`` (``post`` is a ReLU for the ResNets here, none
    for ConvNeXt and transformers).

    Attributes:
        main: name of the module whose output is the main (residual) branch, e.g.
            ``"layer1.0.bn2"``, or ``"blocks.3.drop_path1"`` for a ViT's attention (after its
            LayerScale and drop-path).
        skip: name of the module whose output is the skip branch (a projection shortcut such as
            ``"layer2.0.downsample"``), or ``None`` when the skip is an identity: ``skip_from``
            then says which tensor it is.
        post: the function applied to the sum (``torch.relu`` for the ResNets here); used to check
            that capture is exact (``post(skip + main) == unit output``).
        block: the probe layer (residual block) this addition belongs to. ``None``: the unit's own
            key in :attr:`ModelSpec.branches` (one addition per block, as in ResNets).
        skip_from: for an identity skip (``skip=None``): ``"input"``, the input of ``block`` (the
            residual stream entering it), or ``"previous"``, the output ``skip + main`` of the
            previous unit of the same block (the stream between a transformer's two additions;
            that unit must have no ``post``).
    """

    main: str
    skip: str | None = None
    post: Callable[["torch.Tensor"], "torch.Tensor"] | None = None
    block: str | None = None
    skip_from: str = "input"


@dataclass
class ModelSpec:
    """A model and the names of the places the pipeline reads from it.

    Attributes:
        name: a short name for reports, e.g. ``"resnet50"``, ``"timm:convnext_tiny.fb_in1k"``.
        module: the ``nn.Module`` (put in eval mode by the pipeline).
        probe_layers: names of the residual-block modules, in forward order. Their outputs,
            pooled, are the layers ``f_l`` of the complexity metric.
        head: name of the classification head module (input: penultimate vector, shape
            ``(n, d)``; output: logits, shape ``(n, n_classes)``), or ``None`` for a model
            without one (then ``penultimate`` is required and ``num_classes`` is ``None``).
        num_classes: number of classes the head predicts; ``None`` without a head.
        input_size: side of the square input image in pixels (the centre crop).
        mean, std: per-channel normalisation applied after scaling pixels to [0, 1].
        penultimate: optional module name whose output, pooled, is the penultimate vector.
            ``None``: the head's input.
        spatial_layer: module whose output is the spatial penultimate map: ``(b, C, H, W)`` for
            CNNs (the last block), ``(b, T, C)`` for transformers (the normed token sequence;
            the patch tokens after ``prefix_tokens`` form the grid). ``None``: the last probe layer.
        spatial_norm: optional module applied to the spatial map per position (in the spatial
            layer's own layout, prefix tokens removed) so each position is normed the way the head
            sees the pooled vector: ConvNeXt's ``head.norm`` (LayerNorm2d), a ViT's ``fc_norm``.
        token_pool: how a token sequence ``(b, T, C)`` is pooled to ``(b, C)`` (probe layers,
            branches, penultimate module): ``"cls"`` (token 0) or ``"mean"`` (patch tokens).
        prefix_tokens: tokens before the patch tokens (class, register, distillation); skipped
            by ``"mean"`` pooling and by the spatial grid. 0 for CNNs.
        branches: per residual addition (unit), where to read its skip and main branches
            (residual flow), in forward order. Empty when the model does not support branch capture.
        class_names: optional human-readable class names, index = class id.
        build_args: the keyword arguments that rebuild this model with
            ``build_model(spec.name, **spec.build_args)`` (JSON-able; empty for custom models).
            Pass ``checkpoint=...`` on top to rebuild it around another checkpoint.
        resize_size: shorter side the image is resized to before the centre crop of
            ``input_size``; ``None``: ``round(input_size * 256 / 224)`` (the classic ImageNet rule).
        interpolation: resize interpolation (torchvision ``InterpolationMode`` value).
        crop_mode: ``"center"`` (resize the short side, centre-crop), or timm's ``"squash"`` /
            ``"border"``.
    """

    name: str
    module: "nn.Module"
    probe_layers: list[str]
    head: str | None
    num_classes: int | None
    input_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    penultimate: str | None = None
    spatial_layer: str | None = None
    branches: dict[str, BlockBranches] = field(default_factory=dict)
    class_names: list[str] | None = None
    build_args: dict = field(default_factory=dict)
    spatial_norm: str | None = None
    token_pool: str = "mean"
    prefix_tokens: int = 0
    resize_size: int | None = None
    interpolation: str = "bilinear"
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def module_names(self) -> list[str]:
        """Names of all sub-modules of ``module`` (``named_modules`` order, root excluded)."""
        return [name for name, _ in self.module.named_modules() if name]

    def validate(self) -> None:
        """Check every name against the model; raise ``ValueError`` listing what exists."""
        if not self.probe_layers:
            raise ValueError(
                f"model '{self.name}': probe_layers is empty; give the names of its residual blocks "
                f"(candidates: {_describe_candidates(self.module)})"
            )
        if len(set(self.probe_layers)) != len(self.probe_layers):
            raise ValueError(f"model '{self.name}': probe_layers has duplicates: {self.probe_layers}")
        self._validate_head()
        named: list[tuple[str, str]] = [("probe layer", n) for n in self.probe_layers]
        for role, value in (("head", self.head), ("penultimate", self.penultimate),
                            ("spatial layer", self.spatial_layer), ("spatial norm", self.spatial_norm)):
            if value is not None:
                named.append((role, value))
        named += self._validate_branches()
        existing = set(self.module_names())
        for role, module_name in named:
            if module_name not in existing:
                raise ValueError(
                    f"model '{self.name}': {role} '{module_name}' not found; "
                    f"the model's residual blocks are: {_describe_candidates(self.module)}"
                    f" (all module names: `[n for n, _ in model.named_modules()]`)"
                )
        self._validate_preprocessing()

    def _validate_head(self) -> None:
        if self.head is None:
            if self.penultimate is None:
                raise ValueError(
                    f"model '{self.name}' has no head (head=None), so penultimate= must name the module "
                    "whose output is the representation (e.g. timm's 'head' Identity or 'fc_norm')")
            if self.num_classes is not None:
                raise ValueError(f"model '{self.name}' has no head (head=None) but num_classes="
                                 f"{self.num_classes}; pass num_classes=None, or name the head")
            if self.class_names is not None:
                raise ValueError(f"model '{self.name}' has no head (head=None): class_names do not apply")
            return
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise ValueError(f"model '{self.name}': num_classes must be an integer >= 2, got {self.num_classes!r} "
                             "(a model without a classification head has head=None)")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"model '{self.name}': {len(self.class_names)} class names for {self.num_classes} classes"
            )

    def _validate_branches(self) -> list[tuple[str, str]]:
        """Check units against probe layers and each other; return the module names they use."""
        named: list[tuple[str, str]] = []
        previous: tuple[str, BlockBranches] | None = None
        done_blocks: set[str] = set()
        for unit, br in self.branches.items():
            block = self.unit_block(unit)
            if block not in self.probe_layers:
                where = ("" if br.block is not None
                         else " (give BlockBranches(block=...) for a unit that is not a block)")
                raise ValueError(
                    f"model '{self.name}': branches are given for '{unit}', whose block '{block}' is not a "
                    f"probe layer{where}; probe layers are: {', '.join(self.probe_layers)}")
            prev_block = None if previous is None else self.unit_block(previous[0])
            if block != prev_block and block in done_blocks:
                raise ValueError(f"model '{self.name}': the units of block '{block}' are not consecutive in "
                                 f"branches; list every block's units together, in forward order")
            done_blocks.add(block)
            if br.skip_from not in SKIP_SOURCES:
                raise ValueError(f"model '{self.name}': unit '{unit}' has skip_from='{br.skip_from}'; "
                                 f"use one of {SKIP_SOURCES}")
            if br.skip_from == "previous":
                if br.skip is not None:
                    raise ValueError(f"model '{self.name}': unit '{unit}' names a skip module '{br.skip}' "
                                     "and skip_from='previous'; give one of them")
                if previous is None or prev_block != block:
                    raise ValueError(f"model '{self.name}': unit '{unit}' takes its skip from the previous "
                                     f"unit, but it is the first unit of block '{block}'; use skip_from='input'")
                if previous[1].post is not None:
                    raise ValueError(f"model '{self.name}': unit '{unit}' takes its skip from the previous unit "
                                     f"'{previous[0]}', whose post function makes its output differ from skip + main")
            named.append((f"main branch of '{unit}'", br.main))
            if br.skip is not None:
                named.append((f"skip branch of '{unit}'", br.skip))
            previous = (unit, br)
        return named

    def _validate_preprocessing(self) -> None:
        if len(self.mean) != len(self.std):
            raise ValueError(f"model '{self.name}': mean {self.mean} and std {self.std} differ in length")
        if self.token_pool not in TOKEN_POOLS:
            raise ValueError(f"model '{self.name}': token_pool='{self.token_pool}'; use one of {TOKEN_POOLS}")
        if not isinstance(self.prefix_tokens, int) or self.prefix_tokens < 0:
            raise ValueError(f"model '{self.name}': prefix_tokens must be an integer >= 0, got {self.prefix_tokens!r}")
        if self.token_pool == "cls" and self.prefix_tokens < 1:
            raise ValueError(f"model '{self.name}': token_pool='cls' needs a class token (prefix_tokens >= 1); "
                             "use token_pool='mean' for a model without one")
        if self.resize_size is not None and self.resize_size < self.input_size:
            raise ValueError(f"model '{self.name}': resize_size {self.resize_size} is smaller than the "
                             f"crop input_size {self.input_size}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"model '{self.name}': interpolation '{self.interpolation}'; use one of {_INTERPOLATIONS}")
        if self.crop_mode not in _CROP_MODES:
            raise ValueError(f"model '{self.name}': crop_mode '{self.crop_mode}'; use one of {_CROP_MODES}")

    # ------------------------------------------------------------------ helpers
    def get(self, module_name: str) -> "nn.Module":
        """The sub-module called ``module_name`` (validated names only)."""
        return self.module.get_submodule(module_name)

    def unit_block(self, unit: str) -> str:
        """The probe layer (block) that residual unit ``unit`` belongs to."""
        br = self.branches[unit]
        return unit if br.block is None else br.block

    @property
    def spatial(self) -> str:
        """The module whose output is the spatial penultimate map."""
        return self.spatial_layer if self.spatial_layer is not None else self.probe_layers[-1]

    @property
    def has_head(self) -> bool:
        """Whether the model has a classification head (logits, importance, fidelity)."""
        return self.head is not None

    @property
    def resize(self) -> int:
        """Shorter side before the centre crop (``resize_size`` or the 256/224 rule)."""
        return self.resize_size if self.resize_size is not None else int(round(self.input_size * 256 / 224))

    @property
    def crop_pct(self) -> float:
        """Fraction of the resized image kept by the centre crop (timm's ``crop_pct``)."""
        return self.input_size / self.resize

    def pool(self, t: "torch.Tensor") -> "torch.Tensor":
        """Pool one output to ``(b, C)`` the way this model is read (see :func:`.hooks.pool`)."""
        from .hooks import pool

        return pool(t, tokens=self.token_pool, prefix_tokens=self.prefix_tokens)

    def describe(self) -> dict:
        """A JSON-able summary for manifests and reports."""
        if self.head is None:
            representation = (f"no classification head: the representation is the output of "
                              f"'{self.penultimate}' (pooled); no logits, so no importance or fidelity")
        else:
            where = f"the output of '{self.penultimate}'" if self.penultimate else f"the input of '{self.head}'"
            representation = f"{where}; logits from '{self.head}' ({self.num_classes} classes)"
        return {
            "name": self.name,
            "probe_layers": list(self.probe_layers),
            "head": self.head,
            "penultimate": self.penultimate,
            "representation": representation,
            "spatial_layer": self.spatial,
            "spatial_norm": self.spatial_norm,
            "num_classes": self.num_classes,
            "token_pool": self.token_pool,
            "prefix_tokens": self.prefix_tokens,
            "input_size": self.input_size,
            "resize_size": self.resize,
            "crop_pct": round(self.crop_pct, 4),
            "crop_mode": self.crop_mode,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "branch_capture": bool(self.branches),
            "branch_units": list(self.branches),
            "build_args": {k: (v if isinstance(v, (int, float, str, bool, list, tuple, dict, type(None))) else str(v))
                           for k, v in self.build_args.items()},
            "n_parameters": int(sum(p.numel() for p in self.module.parameters())),
        }


def _describe_candidates(module: "nn.Module") -> str:
    """Names that look like residual blocks (modules named ``layerX.Y``, ``blocks.i``,
    ``stages.i.blocks.j`` …), else the top-level children: what a user most likely meant."""
    import re

    names = [n for n, _ in module.named_modules() if n]
    pattern = (r"((layer|stage|blocks?)\d*[._]\d+|stages\.\d+\.blocks\.\d+|encoder\.layers\.encoder_layer_\d+"
               r"|trunk_output\.block\d+\.block\d+-\d+|features\.\d+\.\d+)")
    blocks = [n for n in names if re.fullmatch(pattern, n)]
    if not blocks:
        blocks = [n for n, _ in module.named_children()]
    if len(blocks) > 40:
        blocks = blocks[:20] + ["…"] + blocks[-5:]
    return ", ".join(blocks) if blocks else "(none)"
