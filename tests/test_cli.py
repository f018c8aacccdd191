"""The command line: help lists every command; bad input ends in one clear line, exit code 2,
never a traceback from deep inside torch."""

from __future__ import annotations

import pytest

from feature_complexity.cli import build_parser, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "demo", "train", "dynamics", "flow", "report"):
        assert command in out


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_unknown_model(capsys, tmp_path):
    err = _error(capsys, ["run", "--model", "resnet5000", "--data", "trifeature", "--out", str(tmp_path)])
    assert "resnet50" in err  # the known names are listed


def test_missing_data_folder(capsys, tmp_path):
    err = _error(capsys, ["run", "--model", "small-resnet", "--data", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "run")])
    assert "nope" in err


def test_missing_checkpoint(capsys, tmp_path):
    err = _error(capsys, ["run", "--model", "cifar-resnet20", "--checkpoint", str(tmp_path / "x.th"),
                          "--data", "trifeature", "--out", str(tmp_path / "run")])
    assert "x.th" in err


def test_checkpoint_of_another_architecture(capsys, tmp_path, shared_data):
    err = _error(capsys, ["run", "--model", "cifar-resnet32",
                          "--checkpoint", str(shared_data / "models" / "resnet20-cifar10.th"),
                          "--data", "trifeature", "--out", str(tmp_path / "run")])
    assert "cifar-resnet20" in err  # the hint names the architecture that fits


def test_unreadable_image(capsys, tmp_path):
    from PIL import Image
    import numpy as np

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.full((32, 32, 3), 20 * i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "b" / "broken.jpg").write_bytes(b"not an image")
    err = _error(capsys, ["run", "--model", "small-resnet", "--num-classes", "2", "--data",
                          str(tmp_path / "imgs"), "--out", str(tmp_path / "run"), "--atoms-per-class", "2",
                          "--no-report", "--quiet"])
    assert "broken.jpg" in err


def test_too_few_images_for_the_atoms(capsys, tmp_path):
    err = _error(capsys, ["run", "--model", "small-resnet", "--num-classes", "8", "--data", "trifeature",
                          "--limit", "40", "--atoms-per-class", "10", "--out", str(tmp_path / "run"),
                          "--no-report", "--no-flow", "--quiet"])
    assert "atoms" in err and "class" in err


def test_parser_builds_without_side_effects():
    parser = build_parser()
    args = parser.parse_args(["run", "--model", "resnet50", "--data", "x", "--out", "y"])
    assert args.atoms_per_class == 10 and args.folds == 5 and args.device == "cpu"
