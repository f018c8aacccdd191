"""The generated dataset's factors scored as planted ground truth (analyses/factors.py)."""

from __future__ import annotations

import numpy as np


def test_factor_complexity_equals_one_engine_call_per_factor():
    """One engine call for all factors gives each factor what a call of its own gives."""
    from feature_complexity.analyses.factors import factor_complexity
    from feature_complexity.complexity import complexity
    from feature_complexity.data import factor_values, trifeature

    source = trifeature(120, size=16, seed=2)
    rng = np.random.default_rng(0)
    table = np.column_stack([np.asarray(v, dtype=float).reshape(len(source), -1)
                             for v in factor_values(source).values()])
    layers = {f"b{i}": table @ rng.normal(size=(table.shape[1], 6)) + rng.normal(size=(120, 6)) for i in range(3)}
    penultimate = table @ rng.normal(size=(table.shape[1], 5))
    got = factor_complexity(layers, penultimate, source, n_folds=3, seed=1)
    assert list(got) == list(factor_values(source))
    for name, values in factor_values(source).items():
        values = np.asarray(values, dtype=float).reshape(len(source), -1)
        values = values[:, values.std(axis=0) > 0]
        ref = complexity({**layers, "penultimate": penultimate}, values, n_folds=3, seed=1)
        per_layer = ref.per_layer[:-1].mean(axis=1)
        np.testing.assert_allclose(got[name]["per_layer"], per_layer, atol=1e-12)
        np.testing.assert_allclose(got[name]["complexity"], 1 - per_layer.mean(), atol=1e-12)
        np.testing.assert_allclose(got[name]["kept"], ref.per_layer[-1].mean(), atol=1e-12)
        assert got[name]["layer_names"] == ["b0", "b1", "b2"]
