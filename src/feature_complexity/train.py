"""Training with checkpoints, for the training-dynamics analysis (paper section 6).

:func:`train` trains the module of a :class:`~feature_complexity.models.spec.ModelSpec` with a
standard recipe (SGD with momentum and weight decay, cosine or step schedule, random crop with
4-px padding and horizontal flips for natural images) and saves checkpoints at every epoch end
and at early fractions of the first epoch (step 0 is the untrained model), because the early
dynamics are the interesting part.

Run folder::

    out_dir/
      train.json                      configuration, versions, one entry per checkpoint (metrics)
      checkpoints/step_{step:07d}.pt  {"state_dict", "epoch" (float), "step", "model_name",
                                       "build_args", "config", "metrics", "optimizer",
                                       "scheduler", "rng_state"}

Determinism and resume. The order of the images in epoch ``e`` is a function of ``(seed, e)``
only, and the augmentation of the batch at global step ``s`` a function of ``(seed, s)`` only.
So a run interrupted anywhere resumes from its last checkpoint (weights, optimizer, scheduler,
RNG states restored), replays the rest of that epoch's order, and ends with the same weights as
an uninterrupted run.

:func:`list_checkpoints` orders checkpoints made here or elsewhere (a folder or a list of files)
by the step or epoch they record, or by a number in their file names.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .io import atomic_path, package_versions, write_json

if TYPE_CHECKING:  # torch is imported lazily so that `import feature_complexity` stays light
    import torch
    from torch.utils.data import Dataset

    from feature_complexity.models.spec import ModelSpec

__all__ = [
    "TrainConfig",
    "CheckpointInfo",
    "train",
    "list_checkpoints",
    "read_checkpoint",
    "load_weights",
    "checkpoint_steps",
    "epoch_order",
    "train_stage",
    "TRAIN_SETTINGS",
]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".th", ".ckpt", ".tar", ".bin")

# settings that may change between an interrupted run and its resumption without changing the
# result (where it runs and how fast, not what it computes)
_RESUME_FREE = {"num_workers", "device", "eval_batch_size"}


@dataclass
class TrainConfig:
    """The training recipe. Every field is recorded in ``train.json`` and in each checkpoint.

    Attributes:
        epochs: number of passes over the training set.
        batch_size: images per SGD step; the last incomplete batch of an epoch is dropped so
            that every epoch has ``len(train_set) // batch_size`` steps.
        lr: peak learning rate.
        momentum, weight_decay: SGD parameters.
        schedule: ``"cosine"`` (per-step cosine decay to 0) or ``"step"`` (multiply by
            ``step_gamma`` at each fraction of training in ``step_milestones``).
        step_milestones, step_gamma: the step schedule.
        augment: random crop (4-px zero padding in normalised space, i.e. the mean colour) and
            horizontal flip. ``None``: on for natural images, off for generated datasets (those
            carrying a ``factors`` table), whose positions and orientations are the factors.
        seed: seeds the image order, the augmentation and torch's global RNG.
        early_fractions: fractions of the first epoch at which to save extra checkpoints;
            ``0.0`` is the untrained model.
        num_workers: data-loader worker processes.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
        eval_batch_size: batch size for the evaluation pass at each checkpoint.
    """

    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    step_milestones: tuple[float, ...] = (0.5, 0.75)
    step_gamma: float = 0.1
    augment: bool | None = None
    seed: int = 0
    early_fractions: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5)
    num_workers: int = 0
    device: str = "cpu"
    eval_batch_size: int = 512

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad field and what it should be."""
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            # batch norm in training mode cannot normalise a batch of one image
            raise ValueError(f"batch_size must be >= 2, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"schedule must be 'cosine' or 'step', got {self.schedule!r}")
        if any(not 0 < m < 1 for m in self.step_milestones):
            raise ValueError(f"step_milestones must be fractions in (0, 1), got {self.step_milestones}")
        if any(not 0 <= f < 1 for f in self.early_fractions):
            raise ValueError(
                f"early_fractions must be fractions of the first epoch in [0, 1), got {self.early_fractions}"
            )
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint file and the training time it records.

    Attributes:
        path: the file.
        epoch: training time in epochs (fractional for early checkpoints); for files ordered by
            the number in their name, that number; ``None`` when unknown.
        step: optimizer steps taken, or ``None`` when the file does not record it.
        order_key: the number the checkpoints were sorted by.
        order_source: ``"step"``, ``"epoch"`` or ``"file name"``: where ``order_key`` came from.
    """

    path: Path
    epoch: float | None
    step: int | None
    order_key: float = field(default=0.0, compare=False)
    order_source: str = field(default="step", compare=False)

    @property
    def name(self) -> str:
        """A short, unique-in-a-run label: ``step_0000390`` or the file's stem."""
        return f"step_{self.step:07d}" if self.step is not None else self.path.stem


# ---------------------------------------------------------------------------------- schedule
def checkpoint_steps(steps_per_epoch: int, epochs: int, early_fractions: Sequence[float]) -> list[int]:
    """Global steps at which checkpoints are saved, sorted, without duplicates.

    Early points are ``round(f * steps_per_epoch)`` for ``f`` in ``early_fractions`` (so 0.0 is
    step 0, the untrained model); then every epoch end ``e * steps_per_epoch``, ``e = 1..epochs``.
    """
    steps = {int(round(f * steps_per_epoch)) for f in early_fractions}
    steps |= {e * steps_per_epoch for e in range(1, epochs + 1)}
    return sorted(steps)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The image order of epoch ``epoch``: a permutation of ``range(n)``, a function of
    ``(seed, epoch)`` only, so that a resumed run replays exactly the order it was interrupted in."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


class _LRFactor:
    """Multiplier of the peak learning rate at a global step (a class, not a lambda, so the
    scheduler's state is picklable)."""

    def __init__(self, schedule: str, total_steps: int, milestones: Sequence[float], gamma: float):
        self.schedule = schedule
        self.total_steps = max(int(total_steps), 1)
        self.milestones = [int(round(m * total_steps)) for m in milestones]
        self.gamma = gamma

    def __call__(self, step: int) -> float:
        if self.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))
        return self.gamma ** sum(step >= m for m in self.milestones)


def _augment(x: "torch.Tensor", seed: int, step: int) -> "torch.Tensor":
    """Random crop after 4-px zero padding, and horizontal flip, per image.

    Args:
        x: batch ``(B, C, H, W)``, normalised (so zero padding is the mean colour).
        seed, step: the randomness is a function of these only (resume-exact).

    Returns:
        ``(B, C, H, W)`` on the same device.
    """
    import torch
    import torch.nn.functional as F

    B, C, H, W = x.shape
    pad = 4
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0]))
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=gen)
    flip = torch.rand(B, generator=gen) < 0.5
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = oy[:, None] + torch.arange(H)[None, :]  # (B, H)
    cols = ox[:, None] + torch.arange(W)[None, :]  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip is a crop read backwards
    dev = x.device
    return padded[
        torch.arange(B, device=dev)[:, None, None, None],
        torch.arange(C, device=dev)[None, :, None, None],
        rows.to(dev)[:, None, :, None],
        cols.to(dev)[:, None, None, :],
    ]


# ---------------------------------------------------------------------------------- I/O helpers
def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _torch_load(path: Path, trust: bool = False) -> Any:
    """Load a checkpoint file on the CPU with the safe loader; full unpickling only when ``trust``
    (``--trust-checkpoint``): see :func:`feature_complexity.models.registry.torch_load`."""
    from .models.registry import torch_load

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    return torch_load(path, trust=trust)


# ---------------------------------------------------------------------------------- train
def train(
    spec: "ModelSpec",
    train_set: "Dataset",
    out_dir: str | os.PathLike,
    config: TrainConfig | None = None,
    *,
    eval_set: "Dataset | None" = None,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> list[Path]:
    """Train ``spec.module`` on ``train_set``, saving checkpoints; resume if ``out_dir`` holds
    an interrupted run with the same configuration.

    Args:
        spec: the model (its module is trained in place). Its ``name`` and ``build_args`` (when
            the registry set them) are stored in each checkpoint so the model can be rebuilt.
        train_set: a torch ``Dataset`` of ``(normalised image (C, H, W), label)``.
        out_dir: run folder (created).
        config: the recipe; default :class:`TrainConfig`.
        eval_set: optional dataset whose top-1 accuracy is recorded at every checkpoint.
        progress: show a tqdm bar with images/s.
        on_step: called with the global step after every optimizer step (tests use it to
            simulate an interruption by raising).

    Returns:
        The checkpoint paths, in training order (all of them, including those of an earlier,
        interrupted invocation).
    """
    import torch

    config = config or TrainConfig()
    config.validate()
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    n = len(train_set)  # type: ignore[arg-type]  # torch stubs: Dataset has no __len__
    augment = _check_train_set(train_set, n, spec.num_classes, config)
    run_config = config.to_dict() | {"augment": bool(augment)}

    steps_per_epoch = n // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    save_at = set(checkpoint_steps(steps_per_epoch, config.epochs, config.early_fractions))
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{config.device}' requested but CUDA is not available; use --device cpu")

    model = spec.module.to(device)
    optimizer, scheduler = _sgd(model, config, total_steps)
    meta = _run_meta(spec, run_config, n, eval_set, steps_per_epoch, total_steps)
    run = _Run(spec=spec, config=config, model=model, optimizer=optimizer, scheduler=scheduler, device=device,
               ckpt_dir=ckpt_dir, train_json=out / "train.json", meta=meta, steps_per_epoch=steps_per_epoch,
               total_steps=total_steps, eval_set=eval_set)

    torch.manual_seed(config.seed)
    step = _resume(run, out, progress)
    if step == 0 and 0 in save_at and not (ckpt_dir / "step_0000000.pt").exists():
        run.save(0, {"train_loss": None, "train_acc": None, "eval_acc": run.evaluate()})
    _train_loop(run, train_set, n, step, save_at, augment, progress, on_step)
    meta["finished"] = True
    write_json(run.train_json, meta)
    return [ckpt_dir / Path(c["file"]).name for c in meta["checkpoints"]]


def _check_train_set(train_set: "Dataset", n: int, num_classes: int | None, config: TrainConfig) -> bool:
    """Refuse a training set of less than one batch or with labels outside the model's classes;
    return whether to augment (``config.augment``, or ``None`` resolved from the dataset)."""
    if n < config.batch_size:
        raise ValueError(
            f"the training set has {n} images, fewer than one batch of {config.batch_size}; "
            f"lower the batch size (--batch-size) or use more images"
        )
    _check_labels(train_set, num_classes)
    augment = config.augment
    if augment is None:
        augment = getattr(train_set, "factors", None) is None
    return augment


def _sgd(model: "torch.nn.Module", config: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    """The SGD optimizer of the recipe and its per-step learning-rate scheduler."""
    import torch

    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _LRFactor(config.schedule, total_steps, config.step_milestones, config.step_gamma)
    )
    return optimizer, scheduler


def _run_meta(spec: "ModelSpec", run_config: dict[str, Any], n: int, eval_set: "Dataset | None",
              steps_per_epoch: int, total_steps: int) -> dict[str, Any]:
    """The contents of ``train.json`` before the first checkpoint."""
    return {
        "model_name": spec.name,
        "build_args": getattr(spec, "build_args", None),
        "model": spec.describe(),
        "config": run_config,
        "versions": package_versions(),
        "n_train": n,
        "n_eval": None if eval_set is None else len(eval_set),  # type: ignore[arg-type]  # torch stubs: no __len__
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "checkpoints": [],
        "finished": False,
    }


@dataclass
class _Run:
    """What one :func:`train` call shares between resuming, checkpointing and the step loop."""

    spec: "ModelSpec"
    config: TrainConfig
    model: "torch.nn.Module"
    optimizer: Any
    scheduler: Any
    device: "torch.device"
    ckpt_dir: Path
    train_json: Path
    meta: dict[str, Any]
    steps_per_epoch: int
    total_steps: int
    eval_set: "Dataset | None"

    def save(self, step: int, metrics: dict[str, float | None]) -> Path:
        """Write the checkpoint of ``step`` and list it (with ``metrics``) in ``train.json``."""
        path = self.ckpt_dir / f"step_{step:07d}.pt"
        _atomic_torch_save(
            {
                "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "epoch": step / self.steps_per_epoch,
                "step": step,
                "model_name": self.spec.name,
                "build_args": self.meta["build_args"],
                "config": self.meta["config"],
                "metrics": metrics,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng_state": _get_rng_state(),
            },
            path,
        )
        self.meta["checkpoints"].append({"file": f"checkpoints/{path.name}", "step": step,
                                         "epoch": step / self.steps_per_epoch, **metrics})
        write_json(self.train_json, self.meta)
        return path

    def evaluate(self) -> float | None:
        """Top-1 accuracy on the evaluation set, ``None`` without one."""
        if self.eval_set is None:
            return None
        return _accuracy(self.model, self.eval_set, self.device, self.config.eval_batch_size,
                         self.config.num_workers)


def _resume(run: _Run, out: Path, progress: bool) -> int:
    """Restore an interrupted run from its last checkpoint (weights, optimizer, scheduler, RNG
    states, checkpoint list); return the step to continue from (0 when there is none)."""
    existing = sorted(run.ckpt_dir.glob("step_*.pt"))
    if not existing:
        return 0
    meta, train_json, steps_per_epoch = run.meta, run.train_json, run.steps_per_epoch
    old = json.loads(train_json.read_text()) if train_json.is_file() else {}
    _check_resumable(old, meta, out)
    last = existing[-1]
    state = _torch_load(last)
    run.model.load_state_dict(state["state_dict"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state.get("rng_state"))
    step = int(state["step"])
    meta["checkpoints"] = [c for c in old.get("checkpoints", []) if c["step"] <= step]
    # listed from the files, not only train.json: an interruption between writing the last
    # checkpoint and updating train.json must not lose it
    listed = {c["step"] for c in meta["checkpoints"]}
    for path in existing:
        s = int(path.stem.split("_")[1])
        if s not in listed and s <= step:
            info = _torch_load(path) if path != last else state
            meta["checkpoints"].append({"file": f"checkpoints/{path.name}", "step": s,
                                        "epoch": s / steps_per_epoch, **info.get("metrics", {})})
    meta["checkpoints"].sort(key=lambda c: c["step"])
    if progress and step < run.total_steps:
        print(f"resuming {out} from {last.name} (epoch {state['epoch']:.3f})")
    return step


def _train_loop(run: _Run, train_set: "Dataset", n: int, step: int, save_at: set[int], augment: bool,
                progress: bool, on_step: Callable[[int], None] | None) -> None:
    """The SGD steps from ``step`` to the end, epoch by epoch, checkpointing at the steps in ``save_at``."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    config, model, device = run.config, run.model, run.device
    optimizer, scheduler = run.optimizer, run.scheduler
    steps_per_epoch, total_steps = run.steps_per_epoch, run.total_steps
    bar = tqdm(total=total_steps, initial=step, unit="step", disable=not progress, desc="train")
    loss_sum, correct, seen = 0.0, 0, 0
    t0, images_t0 = time.perf_counter(), 0
    try:
        while step < total_steps:
            epoch = step // steps_per_epoch
            offset = step % steps_per_epoch
            order = epoch_order(n, config.seed, epoch)[offset * config.batch_size: steps_per_epoch * config.batch_size]
            loader = DataLoader(
                train_set,
                batch_size=config.batch_size,
                sampler=order.tolist(),
                num_workers=config.num_workers,
                pin_memory=device.type == "cuda",
                drop_last=False,  # the order already holds whole batches only
            )
            model.train()
            for x, y in loader:
                x = x.to(device, non_blocking=True)
                y = torch.as_tensor(y).to(device, non_blocking=True)
                if augment:
                    x = _augment(x, config.seed, step)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.detach().argmax(1) == y).sum())
                seen += len(y)
                images_t0 += len(y)
                bar.update(1)
                if progress:
                    rate = images_t0 / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(epoch=f"{step / steps_per_epoch:.2f}", loss=f"{float(loss):.3f}",
                                    img_s=f"{rate:.0f}", refresh=False)
                if on_step is not None:
                    on_step(step)
                if step in save_at:
                    metrics = {"train_loss": loss_sum / seen, "train_acc": correct / seen,
                               "eval_acc": run.evaluate()}
                    run.save(step, metrics)
                    model.train()
                    loss_sum, correct, seen = 0.0, 0, 0
                    if progress:
                        bar.write(f"checkpoint step {step} (epoch {step / steps_per_epoch:.2f}): "
                                  + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None))
    finally:
        bar.close()


def _check_labels(dataset: Any, num_classes: int | None) -> None:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        return
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"training labels range over [{labels.min()}, {labels.max()}] but the model has "
            f"{num_classes} classes; build the model with num_classes={int(labels.max()) + 1}"
        )


def _check_resumable(old: dict, new: dict, out: Path) -> None:
    """An existing run may be resumed only if it computes the same thing."""
    if not old:
        raise ValueError(
            f"'{out / 'checkpoints'}' holds checkpoints but '{out / 'train.json'}' is missing, so the "
            f"run cannot be resumed safely; use a new --out folder"
        )
    diffs = []
    for key in ("model_name", "n_train", "steps_per_epoch", "total_steps"):
        if old.get(key) != new.get(key):
            diffs.append(f"{key}: {old.get(key)} -> {new.get(key)}")
    for key, value in new["config"].items():
        if key not in _RESUME_FREE and old.get("config", {}).get(key) != value:
            diffs.append(f"{key}: {old.get('config', {}).get(key)} -> {value}")
    if diffs:
        raise ValueError(
            f"'{out}' holds a training run with a different configuration ({'; '.join(diffs)}); "
            f"resume it with the same settings or train into a new --out folder"
        )


def _get_rng_state() -> dict[str, Any]:
    import torch

    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any] | None) -> None:
    import torch

    if not state:
        return
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("python") is not None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


def _accuracy(model: "torch.nn.Module", dataset: "Dataset", device: "torch.device",
              batch_size: int, num_workers: int) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` (eval mode, no gradients)."""
    import torch
    from torch.utils.data import DataLoader

    model.eval()
    correct, seen = 0, 0
    with torch.no_grad():
        for x, y in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
            y = torch.as_tensor(y).to(device)
            correct += int((model(x.to(device)).argmax(1) == y).sum())
            seen += len(y)
    return correct / max(seen, 1)


# ---------------------------------------------------------------------------------- checkpoints
def read_checkpoint(path: str | os.PathLike, *, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint file (CPU) as a dict with at least ``state_dict``.

    Understands this package's format, the community CIFAR format (``{"state_dict": …}``, keys
    possibly prefixed ``module.``), torchvision reference scripts (``{"model": …, "epoch": …}``),
    ``{"model_state_dict": …}`` and a plain state dict. The ``module.`` prefix is removed. Files
    that need full unpickling are refused unless ``trust``.
    """
    import torch

    raw = _torch_load(Path(path), trust)
    if not isinstance(raw, dict):
        raise ValueError(f"checkpoint '{path}' holds a {type(raw).__name__}, not a dict of weights")
    out: dict[str, Any]
    for key in ("state_dict", "model_state_dict", "model"):
        if key in raw and isinstance(raw[key], dict):
            out = dict(raw)
            out["state_dict"] = raw[key]
            break
    else:
        if raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
            out = {"state_dict": raw}
        else:
            raise ValueError(
                f"checkpoint '{path}' has no weights: expected a state dict or a dict with a "
                f"'state_dict', 'model_state_dict' or 'model' entry; found keys {sorted(raw)[:10]}"
            )
    out["state_dict"] = {
        (k[len("module."):] if k.startswith("module.") else k): v for k, v in out["state_dict"].items()
    }
    return out


def load_weights(spec: "ModelSpec", path: str | os.PathLike, *, trust: bool = False) -> dict[str, Any]:
    """Load a checkpoint's weights into ``spec.module`` (strictly); return the checkpoint dict.

    Raises ``ValueError`` naming missing, unexpected and mis-shaped keys (and the built-in model
    the checkpoint matches, if any) when it does not fit the architecture.
    """
    from .models.registry import load_checkpoint

    ckpt = read_checkpoint(path, trust=trust)
    load_checkpoint(spec.module, ckpt["state_dict"], model_name=spec.name, source=str(path))
    return ckpt


def _number_in_name(path: Path) -> float | None:
    numbers = re.findall(r"\d+(?:\.\d+)?", path.stem)
    return float(numbers[-1]) if numbers else None


def list_checkpoints(folder_or_files: str | os.PathLike | Iterable[str | os.PathLike], *,
                     trust: bool = False) -> list[CheckpointInfo]:
    """Checkpoints ordered by the training time they record.

    Args:
        folder_or_files: a folder (its files ending in .pt, .pth, .th, .ckpt, .tar, .bin), a
            training run folder of ``feature-complexity train`` (its ``training/checkpoints``), or
            a list of files, made here or elsewhere.

    Returns:
        One :class:`CheckpointInfo` per file, sorted by step when every file records one, else by
        epoch when every file records one, else by the last number in each file name.

    Raises:
        FileNotFoundError: the folder or a file does not exist, or the folder has no checkpoint.
        ValueError: the files cannot be ordered (say which files and how to fix it), or two
            files claim the same training time.
    """
    if isinstance(folder_or_files, (str, os.PathLike)):
        root = Path(folder_or_files)
        for inner in (root / "training" / "checkpoints", root / "checkpoints"):  # a training run folder
            if root.is_dir() and inner.is_dir() and not any(p.suffix in CHECKPOINT_SUFFIXES for p in root.iterdir()):
                root = inner
                break
        if root.is_dir():
            files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
            if not files:
                raise FileNotFoundError(
                    f"no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}) in folder '{root}'"
                )
        elif root.is_file():
            files = [root]
        else:
            raise FileNotFoundError(f"checkpoint folder or file '{root}' does not exist")
    else:
        files = [Path(p) for p in folder_or_files]
        if not files:
            raise ValueError("no checkpoint files given")
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"checkpoint '{f}' does not exist")

    records = []
    for f in files:
        raw = _torch_load(f, trust)
        step = epoch = None
        if isinstance(raw, dict):
            if isinstance(raw.get("step"), (int, np.integer)) and not isinstance(raw.get("step"), bool):
                step = int(raw["step"])
            if isinstance(raw.get("epoch"), (int, float, np.number)) and not isinstance(raw.get("epoch"), bool):
                epoch = float(raw["epoch"])
        records.append((f, epoch, step, _number_in_name(f)))

    if all(r[2] is not None for r in records):
        source, keys = "step", [float(r[2]) for r in records if r[2] is not None]  # (all are)
    elif all(r[1] is not None for r in records):
        source, keys = "epoch", [r[1] for r in records if r[1] is not None]
    elif all(r[3] is not None for r in records):
        source, keys = "file name", [r[3] for r in records if r[3] is not None]
    else:
        bad = [str(r[0]) for r in records if r[2] is None and r[1] is None and r[3] is None]
        raise ValueError(
            "cannot order the checkpoints: they do not all record a 'step' or 'epoch', and "
            f"{', '.join(bad) or 'some files'} have no number in their file name; save 'epoch' in "
            "each checkpoint dict or name the files by epoch (e.g. epoch_12.pt)"
        )
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"several checkpoints share the same {source} {dup}; give one file per training time")
    infos = [
        CheckpointInfo(path=r[0], epoch=r[1] if r[1] is not None else (k if source == "file name" else None),
                       step=r[2], order_key=k, order_source=source)
        for r, k in zip(records, keys)
    ]
    return sorted(infos, key=lambda c: c.order_key)


# ---------------------------------------------------------------------------------- the stage
#: the recipe fields that change the trained weights (not where or how fast training runs)
TRAIN_SETTINGS = tuple(f for f in TrainConfig.__dataclass_fields__ if f not in _RESUME_FREE)


def train_stage(new_spec: Callable[[], "ModelSpec"], train_set: "Dataset", *, eval_set: "Dataset | None" = None,
                folder: str = "training") -> Any:
    """Training as a stage of the one loop (``ctx.config`` is the :class:`TrainConfig`).

    Its key digests the recipe, the training images (input ``"train_data"``) and the architecture
    and initialisation (input ``"init"``); the checkpoints go in ``<run>/<folder>/``, the stage's
    work folder, so an interrupted training resumes from its last checkpoint and a changed recipe
    or data starts over. The result is the list of checkpoints (:func:`list_checkpoints`).
    """
    from .stages import Stage

    def compute(ctx: Any) -> list[CheckpointInfo]:
        out = ctx.workdir("train", ctx.out / folder) if ctx.out is not None else None
        if out is None:
            raise ValueError("training needs a run folder for its checkpoints")
        train(new_spec(), train_set, out, ctx.config, eval_set=eval_set, progress=ctx.progress)
        return list_checkpoints(out / "checkpoints")

    return Stage("train", compute, settings=TRAIN_SETTINGS, inputs=("train_data", "init"),
                 save=lambda result, out: None, load=lambda out: list_checkpoints(out / folder / "checkpoints"),
                 outputs=(f"{folder}/train.json",))
