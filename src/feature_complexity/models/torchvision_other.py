"""torchvision's other residual families as :class:`ModelSpec`: ConvNeXt, RegNet, ViT.

Built by name through ``torchvision.models.get_model`` with torchvision's weight names
(``IMAGENET1K_V1`` …) and the weights' own preprocessing (``weights.transforms()``).

- ConvNeXt (``convnext_tiny`` …): probe layers every ``CNBlock`` of ``features.1, 3, 5, 7``;
  one unit each, ``input + stochastic_depth(layer_scale * block(input))``: main at
  ``stochastic_depth`` (after the LayerScale), identity skip. Head ``classifier.2``, whose input
  is ``LayerNorm2d(avgpool(x))``; per position the map is normed by ``classifier.0``.
- RegNet (``regnet_y_400mf``, ``regnet_x_…``): every ``ResBottleneckBlock`` of
  ``trunk_output.block1 … block4`` (``trunk_output.block1.block1-0`` …), one unit each,
  ``relu(proj(x) + f(x))``: main at ``f``, skip at ``proj`` or the block input. Head ``fc``.
- ViT (``vit_b_16`` …): the residual stream after every ``encoder.layers.encoder_layer_i``, two
  units per block (torchvision's ``EncoderBlock`` does ``x = dropout(attn(ln_1(input))) + input``
  then ``x + mlp(ln_2(x))``): ``<block>.attn`` (main ``dropout``, skip the block input) and
  ``<block>.mlp`` (main ``mlp``, skip the stream between the additions). Both sums are visible
  through hooks on existing submodules, so no canonizer is needed. The head ``heads.head`` reads
  the class token after ``encoder.ln``; the spatial map is ``encoder.ln``'s patch tokens.

Note for hook writers: ConvNeXt adds the input *in place* into ``stochastic_depth``'s output
(``result += input``); hooks must copy or pool it at once (``capture`` does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from .spec import BlockBranches, ModelSpec

__all__ = ["TORCHVISION_CONVNEXTS", "TORCHVISION_REGNETS", "TORCHVISION_VITS", "TORCHVISION_OTHER",
           "other_spec", "convnext_spec", "regnet_spec", "vit_spec"]

TORCHVISION_CONVNEXTS: tuple[str, ...] = ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large")
TORCHVISION_REGNETS: tuple[str, ...] = tuple(
    f"regnet_{kind}_{size}" for kind in ("y", "x")
    for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf", "128gf")
    if not (kind == "x" and size == "128gf"))
TORCHVISION_VITS: tuple[str, ...] = ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")
TORCHVISION_OTHER: tuple[str, ...] = TORCHVISION_CONVNEXTS + TORCHVISION_REGNETS + TORCHVISION_VITS


def _last_linear(module: "nn.Module", head: str) -> int:
    """Output width of the ``nn.Linear`` called ``head``."""
    linear: Any = module.get_submodule(head)
    return int(linear.out_features)


def convnext_spec(module: "nn.Module", *, name: str, class_names: list[str] | None = None,
                  preprocessing: dict | None = None) -> "ModelSpec":
    """The spec of a torchvision ``ConvNeXt`` (see the module docstring)."""
    from torchvision.models.convnext import CNBlock

    from .spec import BlockBranches, ModelSpec

    probe = [n for n, m in module.named_modules() if isinstance(m, CNBlock)]
    branches = {n: BlockBranches(main=f"{n}.stochastic_depth") for n in probe}
    return ModelSpec(name=name, module=module, probe_layers=probe, head="classifier.2",
                     num_classes=_last_linear(module, "classifier.2"), spatial_layer=probe[-1],
                     spatial_norm="classifier.0", branches=branches, class_names=class_names,
                     **(preprocessing or {"input_size": 224}))


def regnet_spec(module: "nn.Module", *, name: str, class_names: list[str] | None = None,
                preprocessing: dict | None = None) -> "ModelSpec":
    """The spec of a torchvision ``RegNet`` (see the module docstring)."""
    import torch
    from torchvision.models.regnet import ResBottleneckBlock

    from .spec import BlockBranches, ModelSpec

    probe, branches = [], {}
    for n, m in module.named_modules():
        if isinstance(m, ResBottleneckBlock):
            probe.append(n)
            # activation is ReLU(inplace=True) in torchvision; use the block's own so a
            # user-modified activation stays exact
            post = m.activation if isinstance(m.activation, torch.nn.Module) else torch.relu
            branches[n] = BlockBranches(main=f"{n}.f", skip=None if m.proj is None else f"{n}.proj", post=post)
    return ModelSpec(name=name, module=module, probe_layers=probe, head="fc",
                     num_classes=_last_linear(module, "fc"), spatial_layer=probe[-1], branches=branches,
                     class_names=class_names, **(preprocessing or {"input_size": 224}))


def vit_branches(probe: list[str]) -> "dict[str, BlockBranches]":
    """Two units per ``EncoderBlock``: ``<block>.attn`` then ``<block>.mlp``."""
    from .spec import BlockBranches

    branches: dict[str, BlockBranches] = {}
    for n in probe:
        branches[f"{n}.attn"] = BlockBranches(main=f"{n}.dropout", block=n, skip_from="input")
        branches[f"{n}.mlp"] = BlockBranches(main=f"{n}.mlp", block=n, skip_from="previous")
    return branches


def vit_spec(module: "nn.Module", *, name: str, class_names: list[str] | None = None,
             preprocessing: dict | None = None, token_pool: str = "cls") -> "ModelSpec":
    """The spec of a torchvision ``VisionTransformer`` (see the module docstring).

    ``token_pool``: ``"cls"`` (default: what the head reads) or ``"mean"`` (patch tokens).
    """
    from torchvision.models.vision_transformer import EncoderBlock

    from .spec import ModelSpec

    probe = [n for n, m in module.named_modules() if isinstance(m, EncoderBlock)]
    prep = dict(preprocessing or {})
    vit: Any = module
    prep["input_size"] = int(vit.image_size)  # torchvision's ViT asserts this exact size
    return ModelSpec(name=name, module=module, probe_layers=probe, head="heads.head",
                     num_classes=_last_linear(module, "heads.head"), spatial_layer="encoder.ln",
                     branches=vit_branches(probe), class_names=class_names, token_pool=token_pool,
                     prefix_tokens=1, **prep)


def other_spec(module: "nn.Module", *, name: str, class_names: list[str] | None = None,
               preprocessing: dict | None = None, token_pool: str | None = None) -> "ModelSpec":
    """The spec of torchvision model ``name`` (one of :data:`TORCHVISION_OTHER`)."""
    if name in TORCHVISION_CONVNEXTS:
        return convnext_spec(module, name=name, class_names=class_names, preprocessing=preprocessing)
    if name in TORCHVISION_REGNETS:
        return regnet_spec(module, name=name, class_names=class_names, preprocessing=preprocessing)
    if name in TORCHVISION_VITS:
        return vit_spec(module, name=name, class_names=class_names, preprocessing=preprocessing,
                        token_pool=token_pool or "cls")
    raise ValueError(f"'{name}' is not one of torchvision's ConvNeXt/RegNet/ViT models: {', '.join(TORCHVISION_OTHER)}")
