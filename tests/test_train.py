"""Training with checkpoints: schedule of checkpoints, exact resume, checkpoint ordering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from feature_complexity.models.spec import ModelSpec  # noqa: E402
from feature_complexity.train import (  # noqa: E402
    TrainConfig,
    _augment,
    checkpoint_steps,
    epoch_order,
    list_checkpoints,
    load_weights,
    read_checkpoint,
    train,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyNet(nn.Module):
    """Two 'blocks' with batch norm (running statistics must survive the resume too)."""

    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block2(self.block1(x))).flatten(1))


def tiny_spec(seed: int = 0) -> ModelSpec:
    torch.manual_seed(seed)
    return ModelSpec(name="tiny", module=TinyNet(), probe_layers=["block1", "block2"], head="fc",
                     num_classes=3, input_size=8)


class TensorSource(torch.utils.data.Dataset):
    """Minimal stand-in for an ImageSource: (image, label) plus a ``labels`` array."""

    def __init__(self, n: int = 40, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = np.arange(n) % 3
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.x[torch.arange(n), torch.as_tensor(self.labels)] += 2.0  # class c: channel c brighter

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.labels[i])


CFG = dict(epochs=2, batch_size=8, lr=0.05, augment=True, seed=3, early_fractions=(0.0, 0.2, 0.5))


def test_checkpoint_steps_and_order():
    assert checkpoint_steps(10, 3, (0.0, 0.1, 0.25, 0.5)) == [0, 1, 2, 5, 10, 20, 30]
    # 0.5 of a 2-step epoch rounds onto step 1; epoch ends deduplicate with early points
    assert checkpoint_steps(2, 2, (0.0, 0.5, 0.99)) == [0, 1, 2, 4]
    a, b = epoch_order(50, 0, 1), epoch_order(50, 0, 1)
    assert np.array_equal(a, b) and sorted(a) == list(range(50))
    assert not np.array_equal(epoch_order(50, 0, 1), epoch_order(50, 0, 2))


def test_learning_rate_schedules():
    from feature_complexity.train import _LRFactor

    cos = _LRFactor("cosine", 100, (0.5, 0.75), 0.1)
    assert [cos(s) for s in (0, 50, 100)] == pytest.approx([1.0, 0.5, 0.0])
    assert cos(25) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))
    step = _LRFactor("step", 100, (0.5, 0.75), 0.1)
    assert [step(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_augment_is_a_crop_or_flip_of_the_padded_image():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5) + 1
    y = _augment(x, seed=0, step=7)
    assert y.shape == x.shape
    assert torch.equal(y, _augment(x, seed=0, step=7))  # a function of (seed, step)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(2):
        windows = [padded[i, :, r:r + 5, c:c + 5] for r in range(9) for c in range(9)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.equal(y[i], w) for w in windows)


def test_train_writes_checkpoints_and_metadata(tmp_path: Path):
    data = TensorSource()
    paths = train(tiny_spec(), data, tmp_path, TrainConfig(**CFG), eval_set=data, progress=False)
    # 40 images / 8 = 5 steps per epoch; early 0, 1 (0.2), 2 (0.5 -> round(2.5)=2), epoch ends 5, 10
    assert [p.name for p in paths] == [f"step_{s:07d}.pt" for s in (0, 1, 2, 5, 10)]
    meta = json.loads((tmp_path / "train.json").read_text())
    assert meta["finished"] and meta["steps_per_epoch"] == 5 and "torch" in meta["versions"]
    assert [c["step"] for c in meta["checkpoints"]] == [0, 1, 2, 5, 10]
    ck = torch.load(paths[2], weights_only=True)  # our files load without unpickling code
    assert ck["epoch"] == pytest.approx(0.4) and ck["step"] == 2 and ck["model_name"] == "tiny"
    assert set(ck) >= {"state_dict", "config", "metrics", "optimizer", "scheduler", "rng_state", "build_args"}
    assert ck["metrics"]["train_loss"] > 0 and 0 <= ck["metrics"]["eval_acc"] <= 1
    assert ck["config"]["augment"] is True
    # the data is separable: training must learn something
    assert meta["checkpoints"][-1]["eval_acc"] > max(0.6, meta["checkpoints"][0]["eval_acc"])
    # the untrained model differs from the trained one and reloads exactly
    spec = tiny_spec(seed=99)
    load_weights(spec, paths[-1])
    for k, v in read_checkpoint(paths[-1])["state_dict"].items():
        assert torch.equal(spec.module.state_dict()[k], v)
    assert not torch.equal(read_checkpoint(paths[0])["state_dict"]["fc.weight"],
                           read_checkpoint(paths[-1])["state_dict"]["fc.weight"])


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path: Path):
    data = TensorSource()
    full = train(tiny_spec(), data, tmp_path / "full", TrainConfig(**CFG), progress=False)

    class Interrupt(Exception):
        pass

    def stop_at_7(step: int) -> None:  # mid-epoch 2, two steps after the epoch-1 checkpoint
        if step == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tiny_spec(), data, tmp_path / "cut", TrainConfig(**CFG), progress=False, on_step=stop_at_7)
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").glob("*.pt"))[-1] == "step_0000005.pt"
    # the resumed process starts from a differently initialised model: everything must come from disk
    resumed = train(tiny_spec(seed=123), data, tmp_path / "cut", TrainConfig(**CFG), progress=False)
    assert [p.name for p in resumed] == [p.name for p in full]
    for a, b in zip(full, resumed):
        sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
        for k in sa["state_dict"]:
            assert torch.equal(sa["state_dict"][k], sb["state_dict"][k]), (a.name, k)
        assert sa["metrics"] == sb["metrics"]
    meta = json.loads((tmp_path / "cut" / "train.json").read_text())
    assert [c["step"] for c in meta["checkpoints"]] == [0, 1, 2, 5, 10] and meta["finished"]


def test_resume_with_other_settings_is_refused(tmp_path: Path):
    data = TensorSource()
    train(tiny_spec(), data, tmp_path, TrainConfig(**(CFG | {"epochs": 1})), progress=False)
    with pytest.raises(ValueError, match="different configuration.*lr"):
        train(tiny_spec(), data, tmp_path, TrainConfig(**(CFG | {"epochs": 1, "lr": 0.2})), progress=False)


def test_bad_input(tmp_path: Path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(tiny_spec(), TensorSource(n=6), tmp_path, TrainConfig(batch_size=8), progress=False)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear").validate()
    bad = TensorSource()
    bad.labels = bad.labels + 5
    with pytest.raises(ValueError, match="num_classes"):
        train(tiny_spec(), bad, tmp_path, TrainConfig(batch_size=8), progress=False)


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_list_checkpoints_orders_by_recorded_time_and_foreign_files(tmp_path: Path):
    sd = TinyNet().state_dict()
    # our own format: ordered by step even though names sort differently
    own = tmp_path / "own"
    own.mkdir()
    for name, step in [("b.pt", 2), ("a.pt", 10), ("c.pt", 0)]:
        _save(own / name, {"state_dict": sd, "step": step, "epoch": step / 5})
    infos = list_checkpoints(own)
    assert [i.step for i in infos] == [0, 2, 10] and [i.path.name for i in infos] == ["c.pt", "b.pt", "a.pt"]
    assert infos[1].epoch == pytest.approx(0.4) and infos[1].order_source == "step"

    # torchvision-reference style: {"model", "epoch"}; a list of files in any order
    tv = [_save(tmp_path / f"model_{e}.pth", {"model": sd, "epoch": e}) for e in (7, 1, 3)]
    assert [i.epoch for i in list_checkpoints(tv)] == [1.0, 3.0, 7.0]

    # plain state dicts (with a DataParallel prefix): ordered by the number in the name, 2 < 10
    plain = tmp_path / "plain"
    plain.mkdir()
    for e in (10, 2, 1):
        _save(plain / f"epoch{e}.th", {f"module.{k}": v for k, v in sd.items()})
    infos = list_checkpoints(plain)
    assert [i.path.name for i in infos] == ["epoch1.th", "epoch2.th", "epoch10.th"]
    assert infos[0].order_source == "file name"
    assert set(read_checkpoint(infos[0].path)["state_dict"]) == set(sd)  # prefix stripped

    # unorderable: no step/epoch and no number in the name
    odd = tmp_path / "odd"
    odd.mkdir()
    _save(odd / "final.pt", sd)
    _save(odd / "best.pt", sd)
    with pytest.raises(ValueError, match="cannot order"):
        list_checkpoints(odd)
    with pytest.raises(ValueError, match="same"):
        list_checkpoints([own / "a.pt", own / "a.pt"])
    with pytest.raises(FileNotFoundError):
        list_checkpoints(tmp_path / "missing")
    # a checkpoint of another architecture is refused with the keys named
    other = _save(tmp_path / "other.pt", {"state_dict": {"conv.weight": torch.zeros(1)}})
    with pytest.raises(ValueError, match="does not match"):
        load_weights(tiny_spec(), other)
