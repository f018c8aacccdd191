"""`import feature_complexity` stays light, and every public name resolves."""

from __future__ import annotations

import subprocess
import sys

import numpy as np


def test_import_does_not_load_heavy_dependencies():
    code = ("import sys, feature_complexity, feature_complexity.data, feature_complexity.models; "
            "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib', 'pandas', 'umap') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_names_resolve():
    import feature_complexity as fc

    for name in fc.__all__:
        assert getattr(fc, name) is not None, name


def test_fc_complexity_after_submodule_import():
    """Importing the submodule must not break ``fc.complexity(...)`` (the submodule attribute
    shadows the function of the same name)."""
    import feature_complexity as fc
    import feature_complexity.complexity  # noqa: F401

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5))
    res = fc.complexity({"a": x}, x[:, :2] @ np.array([[1.0], [2.0]]))
    assert res.score.shape == (1,) and res.score[0] < 0.01
