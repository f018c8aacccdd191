"""The command line, tried as a new user would: every bad input ends in exit code 2 and one line
naming the problem and the fix (never a traceback), nothing stale is reused, nothing silent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from feature_complexity.cli import build_parser, main

# a run of a few seconds: a random-init CIFAR ResNet-20 on generated images, nothing optional
FAST = ["--folds", "3", "--atoms-per-class", "2", "--ci-groups", "0", "--robustness-images", "0",
        "--evidence-features", "0", "--no-report", "--quiet", "--threads", "1"]


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    return lines[-1]


def _folder(root: Path, classes: dict[str, int], size: int = 32, gray: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
            (img.convert("L") if i < gray else img).save(root / c / f"{i:03d}.png")
    return root


def test_help_lists_every_command_and_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "demo", "train", "dynamics", "flow", "report"):
        assert command in out
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for flag in ("--seed", "--folds", "--batch-size", "--atoms-per-class"):
        assert flag in out
    assert "(default: 0)" in out and "(default: 256)" in out and "cifar-resnet20" in out and "timm:" in out


def test_unknown_flag_prints_the_sub_commands_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--model", "x", "--data", "y", "--out", "z", "--no-such-flag"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: feature-complexity run" in err and "--no-such-flag" in err


def test_unknown_model_lists_the_known_ones(capsys, tmp_path):
    err = _error(capsys, ["run", "--model", "resnet5000", "--weights", "random", "--data", "trifeature",
                          "--out", str(tmp_path)])
    assert "resnet50" in err


def test_a_random_network_only_when_asked_for(capsys, tmp_path):
    err = _error(capsys, ["run", "--model", "cifar-resnet20", "--data", "trifeature", "--out", str(tmp_path / "r")])
    assert "--weights random" in err and "--checkpoint" in err


def test_pickled_checkpoint_needs_trust(capsys, tmp_path):
    import torch

    from feature_complexity.models.registry import build_model

    spec = build_model("cifar-resnet20", seed=0)
    torch.save(spec.module, tmp_path / "module.pt")  # a whole pickled module
    argv = ["run", "--model", "cifar-resnet20", "--checkpoint", str(tmp_path / "module.pt"), "--data", "trifeature",
            "--limit", "200", "--out", str(tmp_path / "r"), *FAST]
    err = _error(capsys, argv)
    assert "--trust-checkpoint" in err and "arbitrary code" in err
    assert main([*argv, "--trust-checkpoint"]) == 0


def test_data_with_other_classes_is_grouped_by_prediction_and_finishes(capsys, tmp_path):
    """3 class folders for a 10-class model (the README's case): labels ignored, said once;
    classes with too few predicted images are skipped, not fatal."""
    data = _folder(tmp_path / "imgs", {"a": 10, "b": 10, "c": 10})
    assert main(["run", "--model", "cifar-resnet20", "--weights", "random", "--data", str(data), "--out",
                 str(tmp_path / "r"), *FAST]) == 0
    err = capsys.readouterr().err
    assert "3 classes, the model 10: labels are ignored" in err
    err = _error(capsys, ["run", "--model", "cifar-resnet20", "--weights", "random", "--data", str(data),
                          "--class-source", "label", "--out", str(tmp_path / "r2"), *FAST])
    assert "--class-source prediction" in err


def test_fit_data_keeps_all_its_images_and_drops_labels_of_other_classes(capsys, tmp_path):
    """--limit subsets the probe images only; --fit-data of 3 classes for a 10-class model is
    grouped by prediction like --data (its folder indices are not the model's classes)."""
    import json

    fit = _folder(tmp_path / "fit", {"a": 12, "b": 12, "c": 12})
    out = tmp_path / "r"
    assert main(["run", "--model", "cifar-resnet20", "--weights", "random", "--data", "trifeature",
                 "--limit", "20", "--fit-data", str(fit), "--fit-memory", "1", "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "the fit data has 3 classes, the model 10: labels are ignored" in err
    layout = json.loads((out / "fit_samples" / "layout.json").read_text())
    assert layout["n_rows"] == 36, layout  # every fit image, not --limit 20
    err = _error(capsys, ["run", "--model", "cifar-resnet20", "--weights", "random", "--data", "trifeature",
                          "--fit-data", str(fit), "--fit-memory", "0", "--out", str(tmp_path / "r2"), *FAST])
    assert "--fit-memory must be a positive number" in err


def test_converted_images_are_said_once_with_counts(capsys, tmp_path):
    data = _folder(tmp_path / "imgs", {"a": 6, "b": 6}, gray=2)
    main(["run", "--model", "small-resnet", "--weights", "random", "--num-classes", "2", "--data", str(data),
          "--out", str(tmp_path / "r"), *FAST])
    err = capsys.readouterr().err
    assert err.count("are not RGB") == 1 and "of 12 images" in err and "4 are not RGB" in err


def test_replaced_images_are_refused_until_overwrite(capsys, tmp_path):
    data = _folder(tmp_path / "imgs", {"cat": 8, "dog": 8})
    argv = ["run", "--model", "small-resnet", "--weights", "random", "--num-classes", "2", "--data", str(data),
            "--out", str(tmp_path / "r"), *FAST]
    assert main(argv) == 0
    for f in (data / "cat").iterdir():  # the same names, other pictures
        shutil.copyfile(data / "dog" / f.name, f)
    err = _error(capsys, argv)
    assert "the probe input" in err and "--overwrite" in err
    assert main([*argv, "--overwrite"]) == 0
    assert "computed now" in capsys.readouterr().out


def test_rerun_says_what_was_reused_and_reprints_no_old_times(capsys, tmp_path):
    argv = ["run", "--model", "cifar-resnet20", "--weights", "random", "--data", "trifeature", "--limit", "200",
            "--out", str(tmp_path / "r"), *FAST]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "model accuracy" in out and "computed now" in out
    (tmp_path / "r" / ".codes.npy.deadbeef.tmp").write_bytes(b"left by a kill")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "computed now" not in out and "reused from an earlier run: activations" in out
    assert not (tmp_path / "r" / ".codes.npy.deadbeef.tmp").exists()


def test_a_run_folder_in_use_is_refused(capsys, tmp_path):
    from feature_complexity.stages import RunLock

    with RunLock(tmp_path / "r"):
        err = _error(capsys, ["run", "--model", "cifar-resnet20", "--weights", "random", "--data", "trifeature",
                              "--limit", "200", "--out", str(tmp_path / "r"), *FAST])
    assert "in use by pid" in err


@pytest.mark.parametrize("device, words", [("cuda", "no usable NVIDIA GPU"), ("gpu", "not a device")])
def test_bad_devices(capsys, tmp_path, device, words):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    err = _error(capsys, ["run", "--model", "cifar-resnet20", "--weights", "random", "--data", "trifeature",
                          "--out", str(tmp_path / "r"), "--device", device])
    assert words in err and "--device cpu" in err or words in err


def test_out_that_is_a_file_or_not_writable(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    err = _error(capsys, ["run", "--model", "cifar-resnet20", "--weights", "random", "--data", "trifeature",
                          "--out", str(tmp_path / "file")])
    assert "is a file" in err
    ro = Path("/sys/feature-complexity-test")  # read-only for everyone, root included
    if ro.parent.exists() and not ro.exists():
        err = _error(capsys, ["run", "--model", "cifar-resnet20", "--weights", "random", "--data", "trifeature",
                              "--out", str(ro)])
        assert "not writable" in err


def test_a_full_disk_is_a_clear_error_and_leaves_the_run_resumable(capsys, tmp_path, monkeypatch):
    import feature_complexity.store as store

    argv = ["run", "--model", "cifar-resnet20", "--weights", "random", "--data", "trifeature", "--limit", "200",
            "--out", str(tmp_path / "r"), *FAST]
    real = store.shutil.disk_usage
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    err = _error(capsys, argv)
    assert "not enough free disk space" in err and "rerun the same command to resume" in err
    monkeypatch.undo()
    assert main(argv) == 0


def test_too_few_images_is_said_before_the_forward_pass_with_the_flag(capsys, tmp_path, monkeypatch):
    import feature_complexity.activations as activations

    def no_pass(*a, **k):
        raise AssertionError("the forward pass ran before the class sizes were checked")

    monkeypatch.setattr(activations, "extract_activations", no_pass)
    argv = ["run", "--model", "small-resnet", "--weights", "random", "--num-classes", "8", "--data", "trifeature",
            "--limit", "5", "--out", str(tmp_path / "r"), "--quiet"]
    err = _error(capsys, argv)
    assert "--atoms-per-class 1" in err and "n_atoms_per_class" not in err


def test_unreadable_image_names_the_file(capsys, tmp_path):
    data = _folder(tmp_path / "imgs", {"a": 6, "b": 6})
    (data / "b" / "broken.jpg").write_bytes(b"not an image")
    err = _error(capsys, ["run", "--model", "small-resnet", "--weights", "random", "--num-classes", "2", "--data",
                          str(data), "--out", str(tmp_path / "r"), *FAST])
    assert "broken.jpg" in err


def test_checkpoint_of_another_architecture(capsys, tmp_path, shared_data):
    err = _error(capsys, ["run", "--model", "cifar-resnet32",
                          "--checkpoint", str(shared_data / "models" / "resnet20-cifar10.th"),
                          "--data", "trifeature", "--out", str(tmp_path / "run")])
    assert "cifar-resnet20" in err


def test_plural():
    from feature_complexity.cli._common import plural

    assert plural(1, "class") == "1 class" and plural(3, "class") == "3 classes" and plural(2, "image") == "2 images"


def test_parser_defaults_are_consistent():
    parser = build_parser()
    run = parser.parse_args(["run", "--model", "resnet50", "--data", "x", "--out", "y"])
    train = parser.parse_args(["train", "--model", "resnet50", "--data", "x", "--out", "y"])
    assert run.atoms_per_class == 10 and run.folds == 5 and run.device == "cpu"
    assert run.data_seed == train.data_seed == 0


def test_manifest_records_inputs_and_versions(capsys, tmp_path):
    assert main(["run", "--model", "cifar-resnet20", "--weights", "random", "--data", "trifeature", "--limit", "200",
                 "--out", str(tmp_path / "r"), *FAST]) == 0
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert {"model", "probe", "architecture"} <= set(manifest["fingerprints"])
    assert manifest["model"]["weights"] == "random" and "torch" in manifest["versions"]
    assert manifest["command"][:3] == ["feature-complexity", "run", "--model"]
