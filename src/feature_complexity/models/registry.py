"""Build a :class:`ModelSpec` by name, from a local checkpoint, or around any ``nn.Module``.

Built-in names (see :func:`known_models`):

- torchvision ImageNet ResNets: ``resnet18 … resnet152``, ``wide_resnet50_2``,
  ``wide_resnet101_2``, ``resnext50_32x4d``, ``resnext101_32x8d``, ``resnext101_64x4d``;
  ``weights=`` takes torchvision's weight names (``"IMAGENET1K_V2"`` …);
- ``cifar-resnet20/32/44/56/110``: He et al. 2016 CIFAR ResNets with option-A shortcuts, in the
  layout of akamaster/pytorch_resnet_cifar10 (so its checkpoints load as they are);
- ``small-resnet``: the project's small ResNet for the demo (``widths``, ``blocks_per_stage``);
- torchvision's ConvNeXt (``convnext_tiny`` …), RegNet (``regnet_y_400mf`` …) and ViT
  (``vit_b_16`` …), with torchvision's weight names and the weights' own preprocessing;
- ``timm:<name>`` (``timm:resnet50.a1_in1k``, ``timm:vit_base_patch16_224.augreg_in21k_ft_in1k``
  …) when timm is installed (``pip install 'feature-complexity[timm]'``): ``weights="pretrained"``
  lets timm download the tagged weights, ``num_classes=0`` builds a backbone without a head.

``build_model`` is deterministic given its arguments (``seed`` fixes the random initialisation)
and records them in ``spec.build_args``, so ``build_model(spec.name, **spec.build_args)``
rebuilds the same architecture, e.g. to load the checkpoints of a training run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .family import families, family_for
from .spec import IMAGENET_MEAN, IMAGENET_STD, BlockBranches, ModelSpec, _describe_candidates

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["RANDOM", "build_model", "known_models", "spec_from_module", "load_checkpoint", "read_state_dict"]

# wrapper keys under which training scripts commonly store the weights
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
# prefixes added by nn.DataParallel / DistributedDataParallel and torch.compile
_PREFIXES = ("module.", "_orig_mod.")
#: ``weights=RANDOM`` asks for a randomly initialised network (a control, never a default)
RANDOM = "random"


def known_models() -> list[str]:
    """Names accepted by :func:`build_model` (patterns such as ``timm:<name>`` for open families)."""
    return [n for fam in families() for n in fam.names()]


def build_model(
    name: str,
    *,
    weights: str | None = None,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    seed: int | None = None,
    trust_checkpoint: bool = False,
    **family_kwargs: Any,
) -> ModelSpec:
    """Build a named model and describe it.

    Args:
        name: one of :func:`known_models` (``"resnet50"``, ``"cifar-resnet20"``, ``"small-resnet"`` …).
        weights: the family's weight name (torchvision: ``"IMAGENET1K_V2"``; timm:
            ``"pretrained"`` or the name's tag), or ``"random"`` / ``None`` for a randomly
            initialised network. Exclusive with ``checkpoint``.
        checkpoint: a local file with a state dict (raw, or under ``"state_dict"`` / ``"model"``;
            ``module.`` prefixes are stripped).
        num_classes: width of the head. Default: the checkpoint's head when one is given, else
            the family's default (1000 for ImageNet families, 10 for CIFAR and small-resnet).
            ``0``: no classification head (timm models only; ``spec.head`` is then ``None``).
        class_names: human-readable class names (default: the weights' categories, or the
            CIFAR-10 names for a 10-class CIFAR ResNet).
        seed: seeds the random initialisation (the global torch RNG is left untouched).
        trust_checkpoint: allow full unpickling of a checkpoint that the safe loader
            (``torch.load(weights_only=True)``) refuses. Only for files you trust: unpickling runs
            arbitrary code.
        **family_kwargs: family-specific options (``small-resnet``: ``widths``,
            ``blocks_per_stage``, ``in_channels``, ``stem_stride``; timm and torchvision's
            ConvNeXt/RegNet/ViT: ``model_kwargs`` for the constructor, ``token_pool``). With a
            checkpoint, options the weights imply are read from it.

    Returns:
        A validated :class:`ModelSpec` in eval mode, with ``build_args`` set so that
        ``build_model(spec.name, **spec.build_args)`` rebuilds it.
    """
    import torch

    fam, key = family_for(name)
    if weights == RANDOM:
        weights = None
    if weights is not None and checkpoint is not None:
        raise ValueError("give either weights= (named weights) or checkpoint= (a local file), not both")
    unknown = sorted(set(family_kwargs) - set(fam.kwargs))
    if unknown:
        takes = f"only {list(fam.kwargs)}" if fam.kwargs else "none"
        raise ValueError(f"{key} takes no argument(s) {unknown} (it takes {takes})")
    if weights is not None and not fam.named_weights:
        raise ValueError(f"weights='{weights}' only applies to torchvision models and timm:<name> (named "
                         f"weights); {key} has {fam.weights_help}")
    _check_num_classes(num_classes, fam.headless, key)
    state = read_state_dict(checkpoint, trust=trust_checkpoint) if checkpoint is not None else None
    if state is not None:
        num_classes = num_classes if num_classes is not None else fam.head_classes(state)
        _check_num_classes(num_classes, fam.headless, key)
        family_kwargs = {**fam.kwargs_from_state(key, state), **family_kwargs}
    # fork_rng: a seeded build must not change the caller's random stream
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        spec, resolved = fam.build(key, weights=weights, num_classes=num_classes,
                                   class_names=list(class_names) if class_names is not None else None,
                                   **family_kwargs)
    if state is not None:
        load_checkpoint(spec.module, state, model_name=key, source=str(checkpoint))
    spec.module.eval()
    # a headless model is rebuilt with num_classes=0 (None would give the family's default head)
    spec.build_args = {"weights": weights, "checkpoint": None if checkpoint is None else str(checkpoint),
                       "num_classes": spec.num_classes if spec.head is not None else 0, "seed": seed, **resolved}
    if class_names is not None:
        spec.build_args["class_names"] = list(class_names)
    return spec


def _check_num_classes(num_classes: Any, headless: bool, key: str) -> None:
    if num_classes is None or (isinstance(num_classes, int) and not isinstance(num_classes, bool)
                               and (num_classes >= 2 or num_classes == 0)):
        if num_classes == 0 and not headless:
            raise ValueError(f"num_classes=0 (no classification head) is for timm:<name> models; {key} always "
                             "has a head: pass num_classes >= 2 or leave it out")
        return
    raise ValueError(f"num_classes must be an integer >= 2 (or 0 for no head, timm models), got {num_classes!r}")


# ---------------------------------------------------------------------- any nn.Module
def spec_from_module(
    module: "nn.Module",
    *,
    probe_layers: Sequence[str] | str,
    head: str | None,
    num_classes: int | None = None,
    input_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    penultimate: str | None = None,
    spatial_layer: str | None = None,
    branches: Mapping[str, BlockBranches] | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "custom",
    **fields: Any,
) -> ModelSpec:
    """Describe any ``nn.Module``: name its probe modules (forward order) and its head.

    Args:
        module: the model; called on a batch ``(n, 3, input_size, input_size)`` it returns logits.
        probe_layers: module names (as in ``module.named_modules()``) of the residual blocks, in
            forward order.
        head: name of the module whose input is the penultimate vector ``(n, d)`` and whose output
            is the logits ``(n, num_classes)``; ``None`` for a backbone without a head (then
            ``penultimate`` is required and there are no logits).
        num_classes: read from ``head`` when it is (or ends with) an ``nn.Linear``.
        penultimate, spatial_layer, branches, input_size, mean, std, class_names, name: see
            :class:`ModelSpec`.
        **fields: the other :class:`ModelSpec` fields (``token_pool``, ``prefix_tokens``,
            ``spatial_norm``, ``resize_size``, ``interpolation``, ``crop_mode``).

    Raises:
        ValueError: a name is not a sub-module (the message lists the model's blocks), or
            ``num_classes`` cannot be inferred.
    """
    from torch import nn

    if not isinstance(module, nn.Module):
        raise ValueError(f"spec_from_module needs a torch nn.Module, got {type(module).__name__}")
    layers = [probe_layers] if isinstance(probe_layers, str) else list(probe_layers)
    allowed = {"token_pool", "prefix_tokens", "spatial_norm", "resize_size", "interpolation", "crop_mode"}
    if set(fields) - allowed:
        raise ValueError(f"spec_from_module takes no argument(s) {sorted(set(fields) - allowed)}; "
                         f"the optional ModelSpec fields are {sorted(allowed)}")
    if num_classes is None and head is not None:
        existing = {n for n, _ in module.named_modules() if n}
        if head not in existing:
            raise ValueError(
                f"model '{name}': head '{head}' not found; the model's residual blocks are: "
                f"{_describe_candidates(module)}; top-level modules: "
                f"{', '.join(n for n, _ in module.named_children())}"
            )
        linears = [m for m in module.get_submodule(head).modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(
                f"model '{name}': cannot infer num_classes, head '{head}' is a "
                f"{type(module.get_submodule(head)).__name__} with no nn.Linear; pass num_classes="
            )
        num_classes = linears[-1].out_features
    return ModelSpec(
        name=name,
        module=module,
        probe_layers=layers,
        head=head,
        num_classes=None if num_classes is None else int(num_classes),
        input_size=int(input_size),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        penultimate=penultimate,
        spatial_layer=spatial_layer,
        branches=dict(branches or {}),
        class_names=list(class_names) if class_names is not None else None,
        **fields,
    )


# ---------------------------------------------------------------------- checkpoints
def read_state_dict(path: str | Path, *, trust: bool = False) -> "dict[str, torch.Tensor]":
    """Read a checkpoint file into a flat state dict with ``module.`` prefixes stripped.

    Accepts a raw state dict, a dict holding it under ``"state_dict"``, ``"model_state_dict"``,
    ``"model"`` or ``"net"`` (other entries such as ``"best_prec1"`` or ``"epoch"`` are ignored),
    or a pickled ``nn.Module``. Loads with ``torch.load(weights_only=True)``, which cannot run
    code; a file that needs full unpickling is refused unless ``trust`` (``--trust-checkpoint``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a torch checkpoint, holds no state dict, or needs full
            unpickling and ``trust`` is false.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: '{path}' (resolved: '{path.resolve()}')")
    return _extract_state_dict(torch_load(path, trust=trust), source=str(path))


def torch_load(path: Path, *, trust: bool) -> Any:
    """``torch.load`` on the CPU: the safe loader, or full unpickling only when ``trust``."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_error:  # noqa: BLE001 - the safe loader fails in many ways on pickles
        reason = str(safe_error).strip().splitlines()[0][:200] if str(safe_error).strip() else type(safe_error).__name__
        if "Weights only load failed" not in str(safe_error):  # not a pickle of objects: not a checkpoint
            raise ValueError(f"cannot read checkpoint '{path}' with torch.load: {reason}") from safe_error
        if not trust:
            raise ValueError(
                f"checkpoint '{path}' cannot be read by the safe loader (torch.load weights_only=True: "
                f"{reason}); it holds pickled Python objects, and unpickling can run arbitrary code. If "
                "you trust the file, pass --trust-checkpoint (trust_checkpoint=True)") from None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure means "not a readable checkpoint"
            raise ValueError(f"cannot read checkpoint '{path}' with torch.load: {exc}") from exc


def _extract_state_dict(obj: Any, *, source: str) -> "dict[str, torch.Tensor]":
    """Unwrap checkpoint containers down to ``{name: tensor}``, prefixes stripped."""
    import torch
    from torch import nn

    for _ in range(3):  # a few levels of nesting, e.g. {"model": {"state_dict": ...}}
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj), None)
            if inner is None:
                break
            obj = inner
        else:
            break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"checkpoint '{source}' holds no state dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(
            f"checkpoint '{source}' is a dict without a state dict: entries {bad[:5]} are not tensors "
            f"and none of the keys {list(_WRAPPER_KEYS)} is present"
        )
    state: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        for prefix in _PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix):]
        state[k] = v
    return state


def load_checkpoint(
    module: "nn.Module",
    path: "str | Path | Mapping[str, torch.Tensor]",
    *,
    model_name: str | None = None,
    source: str | None = None,
) -> "nn.Module":
    """Load a checkpoint (a file, or a state dict already read) into ``module``, strictly.

    Args:
        module: the model to fill; modified in place and returned.
        path: a checkpoint file (see :func:`read_state_dict`) or a state dict.
        model_name: the architecture's name, for the error message.
        source: what to call the checkpoint in messages (default: ``path``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: missing or unexpected keys, or shapes that differ; the message names them and
            suggests the built-in model the checkpoint matches, if any.
    """
    if isinstance(path, Mapping):
        state = _extract_state_dict(path, source=source or "<state dict>")
    else:
        state = read_state_dict(path)
    source = source or (str(path) if not isinstance(path, Mapping) else "<state dict>")
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    # BatchNorm's num_batches_tracked does not exist in checkpoints from torch < 0.4.1
    # (e.g. the akamaster CIFAR ResNets); it does not affect eval-mode outputs
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [(k, tuple(state[k].shape), expected[k]) for k in expected
             if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        arch = f"'{model_name}'" if model_name else type(module).__name__
        parts = [f"checkpoint '{source}' does not match the architecture {arch}:"]
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({_preview(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_preview(unexpected)})")
        if wrong:
            parts.append(
                f"{len(wrong)} wrong shape(s) ("
                + "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in wrong[:3])
                + (" …" if len(wrong) > 3 else "")
                + ")"
            )
        raise ValueError(parts[0] + " " + "; ".join(parts[1:]) + ". " + _guess_architecture(state, exclude=model_name))
    module.load_state_dict(state, strict=False)  # strictness checked above, up to num_batches_tracked
    return module


def _preview(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f", … {len(keys) - n} more" if len(keys) > n else "")


def _guess_architecture(state: Mapping[str, "torch.Tensor"], *, exclude: str | None = None) -> str:
    """A sentence describing the checkpoint's structure and the built-in models it fits."""

    import torch

    from .families import stage_blocks

    blocks = stage_blocks(state)
    if not blocks:
        return "It has no 'layerX.Y' residual blocks: wrap your own nn.Module with spec_from_module."
    counts = tuple(blocks.values())
    kind = "bottleneck" if any(re.match(r"layer\d+\.\d+\.conv3\.", k) for k in state) else "basic"
    shape = (f"{len(counts)} stages of {counts[0]} {kind} blocks" if len(set(counts)) == 1
             else f"{len(counts)} stages of {'/'.join(map(str, counts))} {kind} blocks")
    wanted = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    matches, n_classes = [], None
    for fam in families():
        if not fam.checkpoint_guess:
            continue
        n_classes = fam.head_classes(state) or n_classes
        for cand in fam.names():
            if ":" in cand:  # an open-ended family (timm:<name>) cannot be enumerated
                continue
            kwargs = fam.kwargs_from_state(cand, state)
            try:
                with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                    spec, _ = fam.build(cand, weights=None, num_classes=fam.head_classes(state),
                                        class_names=None, **kwargs)
            except (ValueError, TypeError):
                continue
            have = {k: tuple(v.shape) for k, v in spec.module.state_dict().items()
                    if not k.endswith("num_batches_tracked")}
            if have != wanted:
                continue
            extra = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "in_channels")
            label = f"{cand} ({extra})" if extra else cand
            # the model asked for, with other options or another head: say which
            matches.append(f"{label} with num_classes={n_classes}" if cand == exclude else label)
    head = f", a {n_classes}-class head" if n_classes else ""
    if matches:
        return f"The checkpoint has {shape}{head}: did you mean --model {' or '.join(matches)}?"
    return f"The checkpoint has {shape}{head}; no built-in model matches it exactly (see known_models())."
