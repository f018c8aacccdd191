"""Atomic writes: the file appears whole or not at all, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from feature_complexity.io import atomic_path, read_json, save_npy, write_json


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert read_json(target) == {"a": 1}  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


def test_permissions_follow_umask(tmp_path):
    mask = os.umask(0o022)
    try:
        save_npy(tmp_path / "a.npy", np.arange(3))
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.npy").stat().st_mode) == 0o644
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(3))


def test_json_converts_numpy_and_non_finite(tmp_path):
    write_json(tmp_path / "x.json", {"v": np.float32(1.5), "a": np.arange(2), "nan": float("nan")})
    assert read_json(tmp_path / "x.json") == {"v": 1.5, "a": [0, 1], "nan": None}
