"""The activation pass: hooks, pooling, branch capture, resumable store, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feature_complexity.activations import extract_activations
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


class _Stopping:
    """The images of ``inner``; reading image ``stop_at`` raises KeyboardInterrupt (a kill)."""

    def __init__(self, inner, stop_at, seen=None):
        self.inner, self.stop_at, self.seen = inner, stop_at, seen

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        if i >= self.stop_at:
            raise KeyboardInterrupt
        if self.seen is not None:
            self.seen.append(i)
        return self.inner[i]


@pytest.fixture
def many_images():
    """2,500 tiny images: three row-store chunks of 1,024."""
    from conftest import TinyImages

    return TinyImages(n=2500, size=8)


def test_store_resumes_after_interruption_from_its_finished_chunks(tiny_spec, many_images, tmp_path):
    full = extract_activations(tiny_spec, many_images, batch_size=256, progress=False)
    store = tmp_path / "acts"
    with pytest.raises(KeyboardInterrupt):
        extract_activations(tiny_spec, _Stopping(many_images, 2100), batch_size=256, store=store, progress=False)
    seen: list[int] = []
    again = extract_activations(tiny_spec, _Stopping(many_images, 10**9, seen), batch_size=256, store=store,
                                progress=False)
    assert min(seen[1:]) == 2048 and len(seen) == 2500 - 2048 + 1  # seen[0]: the width probe reads image 0
    for name in tiny_spec.probe_layers:
        np.testing.assert_array_equal(again.layers[name], full.layers[name])
    np.testing.assert_array_equal(again.labels, full.labels)


def test_store_redone_with_other_settings_never_resumes_stale_rows(tiny_spec, many_images, tmp_path):
    store = tmp_path / "acts"
    full = extract_activations(tiny_spec, many_images, batch_size=256, store=store, progress=False)
    expected = {n: np.array(v) for n, v in full.layers.items()}
    del full
    with pytest.raises(KeyboardInterrupt):  # other settings (branches): the pass is redone
        extract_activations(tiny_spec, _Stopping(many_images, 1500), batch_size=256, store=store,
                            capture_branches=True, progress=False)
    again = extract_activations(tiny_spec, many_images, batch_size=256, store=store, progress=False)
    for name in tiny_spec.probe_layers:
        np.testing.assert_allclose(again.layers[name], expected[name], atol=1e-6)


def test_store_does_not_resume_a_pass_of_other_weights(tiny_spec, many_images, tmp_path):
    import torch

    store = tmp_path / "acts"
    with pytest.raises(KeyboardInterrupt):
        extract_activations(tiny_spec, _Stopping(many_images, 2100), batch_size=256, store=store, progress=False)
    with torch.no_grad():
        tiny_spec.get("fc").weight.mul_(2.0)  # another checkpoint of the same architecture
    fresh = extract_activations(tiny_spec, many_images, batch_size=256, progress=False)
    resumed = extract_activations(tiny_spec, many_images, batch_size=256, store=store, progress=False)
    np.testing.assert_allclose(resumed.logits, fresh.logits, atol=1e-6)
