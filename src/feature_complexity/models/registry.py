"""Build a :class:`ModelSpec` by name, from a local checkpoint, or around any ``nn.Module``.

Built-in names (see :func:`known_models`):

- torchvision ImageNet ResNets: ``resnet18 … resnet152``, ``wide_resnet50_2``,
  ``wide_resnet101_2``, ``resnext50_32x4d``, ``resnext101_32x8d``, ``resnext101_64x4d``;
  ``weights=`` takes torchvision's weight names (``"IMAGENET1K_V2"`` …);
- ``cifar-resnet20/32/44/56/110``: He et al. 2016 CIFAR ResNets with option-A shortcuts, in the
  layout of akamaster/pytorch_resnet_cifar10 (so its checkpoints load as they are);
- ``small-resnet``: the project's small ResNet for the demo (``widths``, ``blocks_per_stage``).

``build_model`` is deterministic given its arguments (``seed`` fixes the random initialisation)
and records them in ``spec.build_args``, so ``build_model(spec.name, **spec.build_args)``
rebuilds the same architecture, e.g. to load the checkpoints of a training run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .spec import IMAGENET_MEAN, IMAGENET_STD, BlockBranches, ModelSpec, _describe_candidates
from .torchvision_resnets import TORCHVISION_BLOCKS as _TORCHVISION_BLOCKS
from .torchvision_resnets import TORCHVISION_RESNETS as _TORCHVISION

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["build_model", "known_models", "spec_from_module", "load_checkpoint", "read_state_dict"]

_CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # mirrors cifar_resnet.CIFAR_DEPTHS without importing torch
_CIFAR = tuple(f"cifar-resnet{d}" for d in _CIFAR_DEPTHS)
_SMALL = "small-resnet"
_SMALL_KWARGS = ("widths", "blocks_per_stage", "in_channels", "stem_stride")
# wrapper keys under which training scripts commonly store the weights
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
# prefixes added by nn.DataParallel / DistributedDataParallel and torch.compile
_PREFIXES = ("module.", "_orig_mod.")


def known_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return [*_TORCHVISION, *_CIFAR, _SMALL]


def _canonical_name(name: str) -> str:
    """``"CIFAR_ResNet20"`` -> ``"cifar-resnet20"``; unknown names raise ``ValueError``."""
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key.startswith(("cifar_", "small_")):
        key = key.replace("_", "-", 1)
    if key not in known_models():
        raise ValueError(
            f"unknown model '{name}'; known models are: {', '.join(known_models())} "
            f"(for another architecture, wrap your nn.Module with spec_from_module)"
        )
    return key


def build_model(
    name: str,
    *,
    weights: str | None = None,
    checkpoint: str | Path | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    seed: int | None = None,
    **family_kwargs: Any,
) -> ModelSpec:
    """Build a named model and describe it.

    Args:
        name: one of :func:`known_models` (``"resnet50"``, ``"cifar-resnet20"``, ``"small-resnet"`` …).
        weights: torchvision weight name (torchvision models only), e.g. ``"IMAGENET1K_V2"``;
            downloaded by torchvision into its cache.
        checkpoint: a local file with a state dict (raw, or under ``"state_dict"`` / ``"model"``;
            ``module.`` prefixes are stripped). Exclusive with ``weights``.
        num_classes: width of the head. Default: the checkpoint's head when one is given, else
            1000 (torchvision) or 10 (CIFAR, small-resnet).
        class_names: human-readable class names (default: the weights' categories, or the
            CIFAR-10 names for a 10-class CIFAR ResNet).
        seed: seeds the random initialisation (the global torch RNG is left untouched).
        **family_kwargs: ``small-resnet`` only: ``widths`` (default ``(16, 32, 64)``),
            ``blocks_per_stage`` (default 2), ``in_channels`` (default 3), ``stem_stride`` (1 or 2,
            default 1). When a checkpoint is given, widths, blocks and channels not given are read
            from it (the stride leaves no trace in the weights: pass it).

    Returns:
        A validated :class:`ModelSpec` in eval mode, with ``build_args`` set so that
        ``build_model(spec.name, **spec.build_args)`` rebuilds it.
    """
    import torch

    key = _canonical_name(name)
    if weights is not None and checkpoint is not None:
        raise ValueError("give either weights= (torchvision's) or checkpoint= (a local file), not both")
    if weights is not None and key not in _TORCHVISION:
        raise ValueError(
            f"weights='{weights}' only applies to torchvision models ({', '.join(_TORCHVISION)}); "
            f"for {key}, load a local file with checkpoint="
        )
    if key != _SMALL and family_kwargs:
        raise ValueError(f"{key} takes no argument(s) {sorted(family_kwargs)}; only small-resnet takes {list(_SMALL_KWARGS)}")
    unknown = sorted(set(family_kwargs) - set(_SMALL_KWARGS))
    if unknown:
        raise ValueError(f"small-resnet takes {list(_SMALL_KWARGS)}, got unexpected {unknown}")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 2):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")

    state = read_state_dict(checkpoint) if checkpoint is not None else None
    if state is not None and num_classes is None:
        num_classes = _head_classes(state)
    if state is not None and key == _SMALL:
        family_kwargs = {**_small_kwargs_from_state(state), **family_kwargs}

    # fork_rng: a seeded build must not change the caller's random stream
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        spec, resolved = _build(key, weights=weights, num_classes=num_classes, class_names=class_names, family_kwargs=family_kwargs)
    if state is not None:
        load_checkpoint(spec.module, state, model_name=key, source=str(checkpoint))
    spec.module.eval()
    spec.build_args = {
        "weights": weights,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "num_classes": spec.num_classes,
        "seed": seed,
        **resolved,
    }
    if class_names is not None:
        spec.build_args["class_names"] = list(class_names)
    return spec


def _build(
    key: str,
    *,
    weights: str | None,
    num_classes: int | None,
    class_names: Sequence[str] | None,
    family_kwargs: dict[str, Any],
) -> tuple[ModelSpec, dict[str, Any]]:
    """Construct module + spec for a canonical name; also return the resolved family kwargs."""
    names = list(class_names) if class_names is not None else None
    if key in _TORCHVISION:
        from .torchvision_resnets import torchvision_resnet, torchvision_spec

        module, categories = torchvision_resnet(key, weights=weights, num_classes=num_classes)
        return torchvision_spec(module, name=key, class_names=names if names is not None else categories), {}
    if key in _CIFAR:
        from .cifar_resnet import cifar_resnet, cifar_spec

        module = cifar_resnet(int(key.removeprefix("cifar-resnet")), num_classes=num_classes or 10)
        return cifar_spec(module, name=key, class_names=names), {}
    from .small_resnet import SmallResNet, small_spec

    widths = [int(w) for w in family_kwargs.get("widths", (16, 32, 64))]
    blocks = family_kwargs.get("blocks_per_stage", 2)
    blocks = int(blocks) if isinstance(blocks, int) else [int(b) for b in blocks]
    in_channels = int(family_kwargs.get("in_channels", 3))
    stem_stride = int(family_kwargs.get("stem_stride", 1))
    module = SmallResNet(
        widths=widths, blocks_per_stage=blocks, num_classes=num_classes or 10, in_channels=in_channels, stem_stride=stem_stride
    )
    resolved = {"widths": widths, "blocks_per_stage": blocks, "in_channels": in_channels, "stem_stride": stem_stride}
    return small_spec(module, name=key, class_names=names), resolved


# ---------------------------------------------------------------------- any nn.Module
def spec_from_module(
    module: "nn.Module",
    *,
    probe_layers: Sequence[str] | str,
    head: str,
    num_classes: int | None = None,
    input_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    penultimate: str | None = None,
    spatial_layer: str | None = None,
    branches: Mapping[str, BlockBranches] | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "custom",
) -> ModelSpec:
    """Describe any ``nn.Module``: name its probe modules (forward order) and its head.

    Args:
        module: the model; called on a batch ``(n, 3, input_size, input_size)`` it returns logits.
        probe_layers: module names (as in ``module.named_modules()``) of the residual blocks, in
            forward order.
        head: name of the module whose input is the penultimate vector ``(n, d)`` and whose output
            is the logits ``(n, num_classes)``.
        num_classes: read from ``head`` when it is (or ends with) an ``nn.Linear``.
        penultimate, spatial_layer, branches, input_size, mean, std, class_names, name: see
            :class:`ModelSpec`.

    Raises:
        ValueError: a name is not a sub-module (the message lists the model's blocks), or
            ``num_classes`` cannot be inferred.
    """
    from torch import nn

    if not isinstance(module, nn.Module):
        raise ValueError(f"spec_from_module needs a torch nn.Module, got {type(module).__name__}")
    layers = [probe_layers] if isinstance(probe_layers, str) else list(probe_layers)
    if num_classes is None:
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
        num_classes=int(num_classes),
        input_size=int(input_size),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        penultimate=penultimate,
        spatial_layer=spatial_layer,
        branches=dict(branches or {}),
        class_names=list(class_names) if class_names is not None else None,
    )


# ---------------------------------------------------------------------- checkpoints
def read_state_dict(path: str | Path) -> "dict[str, torch.Tensor]":
    """Read a checkpoint file into a flat state dict with ``module.`` prefixes stripped.

    Accepts a raw state dict, a dict holding it under ``"state_dict"``, ``"model_state_dict"``,
    ``"model"`` or ``"net"`` (other entries such as ``"best_prec1"`` or ``"epoch"`` are ignored),
    or a pickled ``nn.Module``. Loads with ``weights_only=True`` first; files that need full
    unpickling are then loaded with ``weights_only=False`` (only open checkpoints you trust).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a torch checkpoint, or holds no state dict.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: '{path}' (resolved: '{path.resolve()}')")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - the safe loader fails in many ways on non-tensor pickles
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any failure means "not a readable checkpoint"
            raise ValueError(f"cannot read checkpoint '{path}' with torch.load: {exc}") from exc
    return _extract_state_dict(obj, source=str(path))


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
    wrong = [(k, tuple(state[k].shape), expected[k]) for k in expected if k in state and tuple(state[k].shape) != expected[k]]
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


def _stage_blocks(state: Mapping[str, Any]) -> dict[int, int]:
    """``{stage: n_blocks}`` from keys ``layer{stage}.{block}.…``."""
    counts: dict[int, int] = {}
    for k in state:
        m = re.match(r"layer(\d+)\.(\d+)\.", k)
        if m:
            s, b = int(m.group(1)), int(m.group(2))
            counts[s] = max(counts.get(s, 0), b + 1)
    return dict(sorted(counts.items()))


def _head_classes(state: Mapping[str, "torch.Tensor"]) -> int | None:
    """Output width of the head (``fc`` or ``linear``) stored in a state dict, if any."""
    for head in ("fc.weight", "linear.weight"):
        if head in state and state[head].ndim == 2:
            return int(state[head].shape[0])
    return None


def _small_kwargs_from_state(state: Mapping[str, "torch.Tensor"]) -> dict[str, Any]:
    """``widths`` / ``blocks_per_stage`` / ``in_channels`` of a small-resnet checkpoint."""
    blocks = _stage_blocks(state)
    if not blocks or "conv1.weight" not in state:
        return {}
    try:
        widths = [int(state[f"layer{s}.0.bn2.weight"].shape[0]) for s in blocks]
    except KeyError:
        return {}
    counts = list(blocks.values())
    return {
        "widths": widths,
        "blocks_per_stage": counts[0] if len(set(counts)) == 1 else counts,
        "in_channels": int(state["conv1.weight"].shape[1]),
    }


def _guess_architecture(state: Mapping[str, "torch.Tensor"], *, exclude: str | None = None) -> str:
    """A sentence describing the checkpoint's structure and the built-in models it fits."""
    import torch

    blocks = _stage_blocks(state)
    if not blocks:
        return "It has no 'layerX.Y' residual blocks: wrap your own nn.Module with spec_from_module."
    counts = tuple(blocks.values())
    bottleneck = any(re.match(r"layer\d+\.\d+\.conv3\.", k) for k in state)
    kind = "bottleneck" if bottleneck else "basic"
    if len(set(counts)) == 1:
        shape = f"{len(counts)} stages of {counts[0]} {kind} blocks"
    else:
        shape = f"{len(counts)} stages of {'/'.join(map(str, counts))} {kind} blocks"
    n_classes = _head_classes(state)
    candidates: list[str] = []
    if len(counts) == 3 and len(set(counts)) == 1 and 6 * counts[0] + 2 in _CIFAR_DEPTHS:
        candidates.append(f"cifar-resnet{6 * counts[0] + 2}")
    candidates += [n for n, b in _TORCHVISION_BLOCKS.items() if b == counts]
    candidates.append(_SMALL)
    wanted = {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    matches = []
    for cand in candidates:
        try:
            # on the meta device: shapes only, no memory, no initialisation cost
            with torch.device("meta"):
                kwargs = _small_kwargs_from_state(state) if cand == _SMALL else {}
                spec, _ = _build(cand, weights=None, num_classes=n_classes, class_names=None, family_kwargs=kwargs)
        except (ValueError, TypeError):
            continue
        have = {k: tuple(v.shape) for k, v in spec.module.state_dict().items() if not k.endswith("num_batches_tracked")}
        if have == wanted:
            if cand == _SMALL:
                matches.append(f"{_SMALL} (widths={kwargs['widths']}, blocks_per_stage={kwargs['blocks_per_stage']})")
            elif cand == exclude:  # right family, other head: the user forced num_classes
                matches.append(f"{cand} with num_classes={n_classes}")
            else:
                matches.append(cand)
    head = f", a {n_classes}-class head" if n_classes else ""
    if matches:
        return f"The checkpoint has {shape}{head}: did you mean --model {' or '.join(matches)}?"
    return f"The checkpoint has {shape}{head}; no built-in model matches it exactly (see known_models())."
