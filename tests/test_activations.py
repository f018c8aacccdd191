"""The activation pass: hooks, pooling, branch capture, resumable store, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from feature_complexity.activations import Activations, extract_activations
from feature_complexity.models.hooks import capture


def _reference(spec, images):
    """Pooled outputs computed by hand, without hooks: an independent path through the model."""
    net = spec.module
    with torch.no_grad():
        x = torch.relu(net.stem(images))
        b0 = net.layer1[0](x)
        b1 = net.layer1[1](b0)
        pen = b1.mean(dim=(2, 3))
        return {"layer1.0": b0.mean(dim=(2, 3)), "layer1.1": b1.mean(dim=(2, 3))}, pen, net.fc(pen)


def test_extract_matches_manual_forward(tiny_spec, tiny_images):
    acts = extract_activations(tiny_spec, tiny_images, batch_size=10, progress=False)
    layers, pen, logits = _reference(tiny_spec, tiny_images.images)
    for name in tiny_spec.probe_layers:
        np.testing.assert_allclose(acts.layers[name], layers[name].numpy(), atol=1e-5)
    np.testing.assert_allclose(acts.penultimate, pen.numpy(), atol=1e-5)
    np.testing.assert_allclose(acts.logits, logits.numpy(), atol=1e-5)
    np.testing.assert_array_equal(acts.labels, tiny_images.labels)
    assert acts.n_images == len(tiny_images)


def test_hooks_are_removed_even_on_error(tiny_spec):
    modules = [tiny_spec.get(n) for n in tiny_spec.probe_layers + [tiny_spec.head, "layer1.0.bn2"]]
    with pytest.raises(RuntimeError):
        with capture(tiny_spec, branches=True):
            raise RuntimeError("boom")
    for m in modules:
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_branch_capture_is_exact(tiny_spec, tiny_images):
    """post(skip + main) reproduces each block's output (raw, unpooled tensors)."""
    with capture(tiny_spec, branches=True, pool=False) as rec, torch.no_grad():
        tiny_spec.module(tiny_images.images[:8])
    for block, br in tiny_spec.branches.items():
        rebuilt = br.post(rec["skip"][block] + rec["main"][block])
        torch.testing.assert_close(rebuilt, rec["layers"][block], atol=1e-6, rtol=0)


def test_pooled_branches_sum_to_pre_activation(tiny_spec, tiny_images):
    acts = extract_activations(tiny_spec, tiny_images, capture_branches=True, progress=False)
    with capture(tiny_spec, branches=True, pool=False) as rec, torch.no_grad():
        tiny_spec.module(tiny_images.images)
    for block in tiny_spec.branches:
        pre = (rec["skip"][block] + rec["main"][block]).mean(dim=(2, 3)).numpy()
        np.testing.assert_allclose(acts.skip[block] + acts.main[block], pre, atol=1e-5)


def test_store_resumes_after_interruption(tiny_spec, tiny_images, tmp_path):
    full = extract_activations(tiny_spec, tiny_images, batch_size=8, progress=False)

    class Interrupting:
        """Raises KeyboardInterrupt after 3 batches have been read."""

        def __init__(self, inner, stop_at):
            self.inner, self.stop_at = inner, stop_at

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            if i >= self.stop_at:
                raise KeyboardInterrupt
            return self.inner[i]

    store = tmp_path / "acts"
    import feature_complexity.activations as mod

    # force a progress flush after every batch so the interruption leaves work behind
    original = mod.time.perf_counter
    clock = iter(range(0, 10_000, 10))
    mod.time.perf_counter = lambda: next(clock)
    try:
        with pytest.raises(KeyboardInterrupt):
            extract_activations(tiny_spec, Interrupting(tiny_images, 24), batch_size=8, store=store,
                                progress=False)
    finally:
        mod.time.perf_counter = original
    done = json.loads((store / "progress.json").read_text())["done"]
    assert 0 < done <= 24

    seen = []

    class Recording:
        def __len__(self):
            return len(tiny_images)

        def __getitem__(self, i):
            seen.append(i)
            return tiny_images[i]

    resumed = extract_activations(tiny_spec, Recording(), batch_size=8, store=store, progress=False)
    assert min(seen) == done  # finished images were not recomputed
    for name in tiny_spec.probe_layers:
        np.testing.assert_allclose(resumed.layers[name], full.layers[name], atol=1e-6)
    loaded = Activations.load(store)
    np.testing.assert_allclose(loaded.logits, full.logits, atol=1e-6)


def test_non_finite_activations_get_a_clear_error(tiny_spec, tiny_images):
    tiny_images.images[5] = float("nan")
    with pytest.raises(ValueError, match="non-finite.*layer1.0.*images \\[5\\]"):
        extract_activations(tiny_spec, tiny_images, batch_size=16, progress=False)


def test_empty_dataset_and_missing_branches(tiny_spec):
    with pytest.raises(ValueError, match="empty"):
        extract_activations(tiny_spec, [], progress=False)
    tiny_spec.branches = {}
    with pytest.raises(ValueError, match="does not describe its residual branches"):
        with capture(tiny_spec, branches=True):
            pass


def test_image_classes(tiny_spec, tiny_images):
    acts = extract_activations(tiny_spec, tiny_images, progress=False)
    acts.labels[:3] = -1
    auto = acts.image_classes("auto")
    np.testing.assert_array_equal(auto[:3], acts.predictions[:3])
    np.testing.assert_array_equal(auto[3:], acts.labels[3:])
    with pytest.raises(ValueError, match="no label"):
        acts.image_classes("label")
    with pytest.raises(ValueError, match="unknown class source"):
        acts.image_classes("nope")


def test_store_redone_with_other_settings_never_resumes_stale_rows(tiny_spec, tiny_images, tmp_path):
    """A pass with other settings overwrites the arrays; if it is interrupted before its first
    progress flush, the old progress record must not make a later run with the old settings
    trust the (now overwritten) arrays."""
    store = tmp_path / "acts"
    full = extract_activations(tiny_spec, tiny_images, batch_size=8, store=store, progress=False)
    expected = {n: np.array(v) for n, v in full.layers.items()}
    expected_logits = np.array(full.logits)
    del full

    class Interrupting:
        def __len__(self):
            return len(tiny_images)

        def __getitem__(self, i):
            if i >= 8:
                raise KeyboardInterrupt
            return tiny_images[i]

    with pytest.raises(KeyboardInterrupt):  # other settings (branches): the pass is redone
        extract_activations(tiny_spec, Interrupting(), batch_size=8, store=store,
                            capture_branches=True, progress=False)
    again = extract_activations(tiny_spec, tiny_images, batch_size=8, store=store, progress=False)
    for name in tiny_spec.probe_layers:
        np.testing.assert_allclose(again.layers[name], expected[name], atol=1e-6)
    np.testing.assert_allclose(again.logits, expected_logits, atol=1e-6)


def test_store_does_not_resume_a_pass_of_other_weights(tiny_spec, tiny_images, tmp_path):
    """Same architecture and name, other weights (another checkpoint): the interrupted pass of
    the first model must not supply the first rows of the second model's activations."""
    store = tmp_path / "acts"

    class Interrupting:
        def __len__(self):
            return len(tiny_images)

        def __getitem__(self, i):
            if i >= 16:
                raise KeyboardInterrupt
            return tiny_images[i]

    import feature_complexity.activations as mod

    original = mod.time.perf_counter
    clock = iter(range(0, 10_000, 10))  # a progress flush after every batch
    mod.time.perf_counter = lambda: next(clock)
    try:
        with pytest.raises(KeyboardInterrupt):
            extract_activations(tiny_spec, Interrupting(), batch_size=8, store=store, progress=False)
    finally:
        mod.time.perf_counter = original
    assert json.loads((store / "progress.json").read_text())["done"] > 0

    with torch.no_grad():  # "another checkpoint" of the same model
        for p in tiny_spec.module.parameters():
            p.mul_(1.5)
    expected = extract_activations(tiny_spec, tiny_images, batch_size=8, progress=False)
    got = extract_activations(tiny_spec, tiny_images, batch_size=8, store=store, progress=False)
    np.testing.assert_allclose(got.penultimate, expected.penultimate, atol=1e-5)
    np.testing.assert_allclose(got.logits, expected.logits, atol=1e-5)
