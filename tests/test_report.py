"""The HTML report, the evidence images and the concept heatmaps.

The fixture fabricates a run folder with the layout of docs/ARCHITECTURE.md (random arrays of the
right shapes, a few matplotlib PNGs) so the report is tested without running the pipeline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from feature_complexity.models.spec import ModelSpec  # noqa: E402
from feature_complexity.report.heatmaps import concept_heatmaps, overlay, top_images  # noqa: E402
from feature_complexity.report.html import (  # noqa: E402
    build_report,
    render_feature_evidence,
    select_evidence_features,
)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
SIZE = 16


# ------------------------------------------------------------------------------- fixtures
class TinyNet(nn.Module):
    """Two conv "blocks", GAP, linear head. ``block2`` (8 channels, 8x8) is the spatial layer."""

    def __init__(self, n_classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.block1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, n_classes)

    def forward(self, x):
        return self.fc(self.block2(self.block1(x)).mean(dim=(2, 3)))


def tiny_spec(module: nn.Module, n_classes: int = 4) -> ModelSpec:
    return ModelSpec(name="tiny", module=module, probe_layers=["block1", "block2"], head="fc",
                     num_classes=n_classes, input_size=SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class FakeSource(torch.utils.data.Dataset):
    """Stands in for ``ImageSource``: ``(normalised tensor, label)``, ``raw_image``, ``classes``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
        self.images = images  # (n, H, W, 3) uint8
        self.labels = labels
        self.classes = classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.images[i]).permute(2, 0, 1).float() / 255.0  # mean 0, std 1
        return x, int(self.labels[i])

    def raw_image(self, i: int) -> np.ndarray:
        return self.images[i]


def _png(path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.arange(5), np.arange(5) ** 2)
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def make_run(root: Path, *, k_per_class: int = 6, n_classes: int = 4, n_images: int = 40,
             layers: tuple[str, ...] = ("block1", "block2"), seed: int = 0, figures: bool = True) -> Path:
    """A plausible run folder; returns its path."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    run = root / "run"
    run.mkdir(parents=True)
    k, d = k_per_class * n_classes, 8
    D = rng.random((k, d)).astype(np.float32)
    Z = (rng.random((n_images, k)) * (rng.random((n_images, k)) < 0.4)).astype(np.float32)
    feature_class = np.repeat(np.arange(n_classes), k_per_class)
    per_layer = np.sort(rng.random((len(layers), k)), axis=0)  # decodability grows with depth
    K = 1 - per_layer.mean(axis=0)
    G = rng.normal(size=k)
    df = pd.DataFrame({"feature": np.arange(k), "class": feature_class,
                       "class_name": [f"class-{c}" for c in feature_class],
                       "complexity": K, "importance": G})
    for name, row in zip(layers, per_layer):
        df[f"iv_{name}"] = row
    df["teleport_depth"] = rng.integers(0, len(layers), size=k)
    df.to_parquet(run / "features.parquet", index=False)
    np.savez(run / "dictionary.npz", D=D, feature_class=feature_class)
    np.save(run / "codes.npy", Z)
    np.savez(run / "complexity.npz", per_layer=per_layer, score=K, layer_names=np.array(layers))
    (run / "fidelity.json").write_text(json.dumps({"relative_error": 0.08, "accuracy": 0.81,
                                                   "accuracy_reconstructed": 0.80, "agreement": 0.97}))
    (run / "manifest.json").write_text(json.dumps({
        "model": {"name": "tiny", "checkpoint": None, "weights": None, "build_args": {}},
        "data": {"kind": "fake", "description": "40 random 16px images"},
        "n_images": n_images, "seed": 0,
        "timings": {"activations": 1.5, "dictionary": 0.7, "complexity": 0.2},
        "versions": {"python": "3.x", "torch": torch.__version__},
    }))
    (run / "flow.json").write_text(json.dumps({"spearman_teleport_complexity": 0.41}))
    # the demo's layout: the training-dynamics analysis in a subfolder
    (run / "dynamics").mkdir()
    (run / "dynamics" / "dynamics.json").write_text(json.dumps({"summary": {"spearman_A_K": 0.63}}))
    pd.DataFrame({"feature": np.arange(k), "complexity": K, "A": K * 0.5}).to_parquet(
        run / "dynamics" / "dynamics_features.parquet", index=False)
    if figures:
        _png(run / "dynamics" / "figures" / "mean_complexity.png", "mean complexity over training")
        _png(run / "figures" / "complexity_hist.png", "complexity histogram")
        _png(run / "figures" / "complexity_vs_importance.png", "complexity vs importance")
        _png(run / "figures" / "flow.png", "flow")
    return run


def fake_source(n_images: int = 40, n_classes: int = 4, seed: int = 0) -> FakeSource:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n_images, SIZE, SIZE, 3), dtype=np.uint8)
    labels = rng.integers(0, n_classes, size=n_images)
    return FakeSource(images, labels, [f"class-{c}" for c in range(n_classes)])


# ---------------------------------------------------------------------------- heatmaps
def test_top_images_against_sort():
    Z = np.random.default_rng(0).random((50, 5))
    idx = top_images(Z, 3, 7)
    np.testing.assert_array_equal(idx, np.argsort(Z[:, 3])[::-1][:7])
    assert top_images(Z, 0, 500).shape == (50,)
    with pytest.raises(ValueError, match="does not exist"):
        top_images(Z, 5, 3)


class ColourNet(nn.Module):
    """Spatial layer = the image's three colour channels, average-pooled 2x2 (8x8 from 16x16)."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Identity()
        self.block2 = nn.AvgPool2d(2)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.block2(self.block1(x)).mean(dim=(2, 3)))


def test_heatmap_lights_up_on_the_planted_colour_patch():
    spec = tiny_spec(ColourNet(), n_classes=2)
    x = torch.zeros(2, 3, SIZE, SIZE)
    x[0, 0, 2:8, 9:15] = 1.0  # image 0: red patch top-right
    x[0, 1, 10:15, 1:6] = 1.0  # and a green patch bottom-left
    x[1, 0, 9:15, 1:7] = 1.0  # image 1: red patch bottom-left
    D = np.eye(3, dtype=np.float32)  # atoms: red, green, blue
    heat = concept_heatmaps(spec, x, D, [0, 1])
    assert heat.shape == (2, 2, SIZE, SIZE)
    for b, feat, region in [(0, 0, (slice(2, 8), slice(9, 15))), (0, 1, (slice(10, 15), slice(1, 6))),
                            (1, 0, (slice(9, 15), slice(1, 7)))]:
        h = heat[b, feat]
        mask = np.zeros_like(h, dtype=bool)
        mask[region] = True
        assert h[mask].mean() > 10 * (h[~mask].mean() + 1e-6)
        assert mask[np.unravel_index(h.argmax(), h.shape)]
    # the red feature stays dark on image 1's top-right, where image 0 had its patch
    assert heat[1, 0, 2:8, 9:15].max() < 1e-3


def test_heatmap_channel_mismatch_is_explained():
    spec = tiny_spec(ColourNet(), n_classes=2)
    with pytest.raises(ValueError, match="channels"):
        concept_heatmaps(spec, torch.zeros(1, 3, SIZE, SIZE), np.eye(4, dtype=np.float32), [0])


def test_overlay_keeps_cold_pixels_and_colours_hot_ones():
    img = np.full((4, 4, 3), 100, dtype=np.uint8)
    heat = np.zeros((4, 4))
    heat[0, 0] = 1.0
    out = overlay(img, heat)
    assert out.dtype == np.uint8 and out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[1:, 1:], img[1:, 1:])
    assert not np.array_equal(out[0, 0], img[0, 0])
    with pytest.raises(ValueError, match="heat has shape"):
        overlay(img, np.zeros((3, 3)))


# ------------------------------------------------------------------------------ report
def test_select_evidence_features_bounds_and_extremes():
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"feature": np.arange(1000), "complexity": rng.random(1000),
                       "importance": rng.normal(size=1000)})
    ids = select_evidence_features(df, 40, seed=1)
    assert len(ids) == 40 and len(set(ids)) == 40
    assert int(df["complexity"].idxmin()) in ids and int(df["complexity"].idxmax()) in ids
    assert int(df["importance"].abs().idxmax()) in ids
    assert ids == select_evidence_features(df, 40, seed=1)
    assert select_evidence_features(df.iloc[:30], 40) == list(range(30))


def test_report_without_model_lists_everything_and_says_why(tmp_path):
    run = make_run(tmp_path)
    out = build_report(run, embed="pca")  # UMAP's JIT compile takes a minute
    page = out.read_text()
    assert out == run / "report.html"
    assert "not rendered" in page  # says why there are no evidence images
    for fig in ("complexity_hist.png", "complexity_vs_importance.png", "flow.png", "metafeatures_embedding.png"):
        assert f'src="figures/{fig}"' in page
    assert "spearman_teleport_complexity" in page and "spearman_A_K" in page
    when = page.split('id="sec-when"')[1].split("</section>")[0]
    assert 'src="dynamics/figures/mean_complexity.png"' in when
    where = page.split('id="sec-where"')[1].split("</section>")[0]
    assert 'src="figures/flow.png"' in where
    # no network: no absolute URL anywhere in src/href attributes
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    data = json.loads(page.split('id="feature-data">')[1].split("</script>")[0])
    assert len(data["columns"]["feature"]) == 24 and data["layers"] == ["block1", "block2"]
    assert "A" in data["extra"] and "teleport_depth" in data["extra"]
    assert (run / "metafeatures.parquet").exists()


def test_report_missing_run_folder_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="features.parquet"):
        build_report(tmp_path)


@pytest.mark.slow  # NNLS on a loaded 2-core machine: ~10 s
def test_evidence_is_rendered_once_and_resumable(tmp_path):
    from PIL import Image

    run = make_run(tmp_path)
    spec, ds = tiny_spec(TinyNet()), fake_source()
    paths = render_feature_evidence(run, spec, ds, [0, 5], n_top=3)
    assert all(p.exists() for p in paths)
    w, h = Image.open(paths[0]).size
    assert (w, h) == (3 * 96 + 4, 2 * 96 + 2)
    mtime = paths[0].stat().st_mtime_ns
    render_feature_evidence(run, spec, ds, [0, 5], n_top=3)
    assert paths[0].stat().st_mtime_ns == mtime  # skipped, not redrawn
    with pytest.raises(ValueError, match="same probe images"):
        render_feature_evidence(run, spec, fake_source(n_images=10), [1])


# ----------------------------------------------------------------------------- browser
def _driver():
    if shutil.which("chromedriver") is None and not Path("/usr/bin/chromedriver").exists():
        pytest.skip("chromium-driver is not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1400,1100"):
        opts.add_argument(arg)
    if Path("/usr/bin/chromium").exists():
        opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    return webdriver.Chrome(service=Service(path), options=opts)


def _requested_urls(driver) -> list[str]:
    """URLs of every request the page made, from the DevTools performance log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


@pytest.mark.browser
@pytest.mark.slow
def test_report_in_headless_chromium(tmp_path):
    import pandas as pd
    from selenium.webdriver.common.by import By

    run = make_run(tmp_path)
    out = build_report(run, spec=tiny_spec(TinyNet()), dataset=fake_source(), n_top=4, embed="pca")
    df = pd.read_parquet(run / "features.parquet")
    driver = _driver()
    try:
        driver.get(out.as_uri())
        ARTIFACTS.mkdir(exist_ok=True)
        driver.find_element(By.CSS_SELECTOR, 'th[data-sort="complexity"]').click()
        first = driver.find_element(By.CSS_SELECTOR, "#explorer tr[data-feature]")
        simplest = int(df.loc[df["complexity"].idxmin(), "feature"])
        assert int(first.get_attribute("data-feature")) == simplest
        # descending on a second click
        driver.find_element(By.CSS_SELECTOR, 'th[data-sort="complexity"]').click()
        first = driver.find_element(By.CSS_SELECTOR, "#explorer tr[data-feature]")
        assert int(first.get_attribute("data-feature")) == int(df.loc[df["complexity"].idxmax(), "feature"])
        driver.execute_script("document.getElementById('sec-explorer').scrollIntoView()")
        driver.save_screenshot(str(ARTIFACTS / "report_explorer.png"))

        # filter by class: every remaining row belongs to it
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element(By.ID, "f-class")).select_by_value("2")
        rows = driver.find_elements(By.CSS_SELECTOR, "#explorer tr[data-feature]")
        assert {int(r.get_attribute("data-feature")) for r in rows} == set(df.loc[df["class"] == 2, "feature"])

        # and by importance range and cluster, combined with the class filter
        driver.find_element(By.ID, "f-gmin").send_keys("0")
        n_pos = int(((df["class"] == 2) & (df["importance"] >= 0)).sum())
        assert driver.find_element(By.ID, "page-info").text.startswith(f"{n_pos} of 24")
        driver.find_element(By.ID, "f-gmin").clear()
        driver.execute_script("const e = document.getElementById('f-gmin'); e.value = '';"
                              "e.dispatchEvent(new Event('input'))")
        clusters = pd.read_parquet(run / "metafeatures.parquet")
        Select(driver.find_element(By.ID, "f-class")).select_by_value("")
        Select(driver.find_element(By.ID, "f-cluster")).select_by_value("0")
        n_c0 = int((clusters["cluster"] == 0).sum())
        assert driver.find_element(By.ID, "page-info").text.startswith(f"{n_c0} of 24")
        Select(driver.find_element(By.ID, "f-cluster")).select_by_value("")
        Select(driver.find_element(By.ID, "f-class")).select_by_value("2")
        rows = driver.find_elements(By.CSS_SELECTOR, "#explorer tr[data-feature]")

        rows[0].click()
        detail = driver.find_element(By.ID, "detail")
        assert detail.is_displayed()
        fid = int(rows[0].get_attribute("data-feature"))
        assert f"Feature {fid}" in detail.text
        assert driver.find_elements(By.CSS_SELECTOR, "#detail svg#ivcurve circle")
        img = driver.find_element(By.ID, "evidence-img")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
        driver.execute_script("document.getElementById('detail').scrollIntoView()")
        driver.save_screenshot(str(ARTIFACTS / "report_detail.png"))

        # Resource Timing (Chromium records no entries for file: URLs, so also read the
        # DevTools network log, which sees every request the page makes)
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(r.startswith("file://") for r in resources), resources
        requests = _requested_urls(driver)
        assert any("/figures/" in u for u in requests) and any("/evidence/" in u for u in requests), requests
        assert all(u.startswith(("file://", "data:")) for u in requests), requests
        # every image on the page loaded (figures, evidence strip, detail view)
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)")
        assert not broken, broken
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        driver.quit()


@pytest.mark.browser
def test_report_with_10000_features_stays_light(tmp_path):
    """Paging: only one page of rows is in the DOM, the page opens and sorts quickly."""
    import time

    import pandas as pd
    from selenium.webdriver.common.by import By

    run = make_run(tmp_path, k_per_class=10, n_classes=1000, n_images=20, figures=False,
                   layers=tuple(f"layer{i}" for i in range(16)))
    out = build_report(run, metafeatures=False)
    assert out.stat().st_size < 4_000_000
    df = pd.read_parquet(run / "features.parquet")
    driver = _driver()
    try:
        t0 = time.perf_counter()
        driver.get(out.as_uri())
        driver.find_element(By.CSS_SELECTOR, 'th[data-sort="complexity"]').click()
        first = driver.find_element(By.CSS_SELECTOR, "#explorer tr[data-feature]")
        elapsed = time.perf_counter() - t0
        assert int(first.get_attribute("data-feature")) == int(df.loc[df["complexity"].idxmin(), "feature"])
        assert len(driver.find_elements(By.CSS_SELECTOR, "#explorer tr[data-feature]")) == 50
        assert elapsed < 10, f"opening and sorting 10,000 features took {elapsed:.1f} s"
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        driver.quit()


# --------------------------------------------------------------------------------- CLI
def test_cli_report_without_a_rebuildable_model(tmp_path, capsys):
    from feature_complexity.cli import main

    run = make_run(tmp_path)
    assert main(["report", str(run), "--embed", "pca"]) == 0
    err = capsys.readouterr().err
    assert "no evidence images" in err and "tiny" in err  # names the model it could not rebuild
    assert "cannot rebuild model" in (run / "report.html").read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "features.parquet" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_report_rebuilds_model_and_images_from_the_manifest(tmp_path, capsys):
    """A run of the built-in small ResNet on generated images: the CLI rebuilds both from
    manifest.json and renders evidence."""
    from feature_complexity.cli import main
    from feature_complexity.data.trifeature import trifeature
    from feature_complexity.models.registry import build_model

    spec = build_model("small-resnet", seed=0)
    source = trifeature(12, seed=0)
    run = make_run(tmp_path, k_per_class=2, n_classes=3, n_images=12)
    d = 64  # small-resnet's penultimate width
    rng = np.random.default_rng(0)
    np.savez(run / "dictionary.npz", D=rng.random((6, d)).astype(np.float32), feature_class=np.repeat(np.arange(3), 2))
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["model"] = {**spec.describe(), "checkpoint": None}
    manifest["data"] = source.describe()
    (run / "manifest.json").write_text(json.dumps(manifest))
    # the run's own activations, as the pipeline keeps them: the rebuilt model must reproduce them
    from feature_complexity.activations import extract_activations

    acts = extract_activations(spec, source, batch_size=12, progress=False)
    (run / "activations").mkdir()
    np.save(run / "activations" / "penultimate.npy", np.asarray(acts.penultimate))
    assert main(["report", str(run), "--embed", "pca", "--n-top", "2"]) == 0
    assert sorted(p.name for p in (run / "evidence").iterdir()) == [f"feature_{i:04d}.png" for i in range(6)]
    assert "not rendered" not in (run / "report.html").read_text()

    # another model than the run's (here: other activations recorded) -> no evidence, and why
    shutil.rmtree(run / "evidence")
    np.save(run / "activations" / "penultimate.npy", np.asarray(acts.penultimate) + 1.0)
    capsys.readouterr()
    assert main(["report", str(run), "--embed", "pca", "--n-top", "2"]) == 0
    assert "does not reproduce" in capsys.readouterr().err
    assert not (run / "evidence").exists() or not any((run / "evidence").iterdir())


@pytest.mark.slow
def test_decoder_figure_fig1b_from_a_run(tmp_path):
    """Fig. 1B: probes refitted from the run's own statistics, visualised per block; resumable."""
    from feature_complexity.activations import extract_activations
    from feature_complexity.report.html import render_decoder_figures

    spec, ds = tiny_spec(TinyNet()), fake_source()
    run = make_run(tmp_path)
    acts = extract_activations(spec, ds, batch_size=20, progress=False)
    alpha = np.full((2, 24), 1e-2)
    alpha[0, 1] = np.nan  # the engine's null model for feature 1 on block1: no probe, blank panel
    cx = dict(np.load(run / "complexity.npz"))
    np.savez(run / "complexity.npz", **{**cx, "alpha": alpha})
    paths = render_decoder_figures(run, spec, [0, 1], layers=acts.layers, steps=2)
    assert all(p.exists() and p.parent.name == "figures" for p in paths)
    mtime = paths[0].stat().st_mtime_ns
    render_decoder_figures(run, spec, [0, 1], layers=acts.layers, steps=2)
    assert paths[0].stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_report_with_visualisations(tmp_path):
    run = make_run(tmp_path)
    out = build_report(run, spec=tiny_spec(TinyNet()), dataset=fake_source(), n_top=2, embed="pca",
                       visualize=True, visualize_steps=2, max_visualized_features=2)
    df = __import__("pandas").read_parquet(run / "features.parquet").sort_values("complexity")
    # the extremes are visualised first: the simplest and the most complex feature
    expected = {int(df["feature"].iloc[0]), int(df["feature"].iloc[-1])}
    assert {int(p.stem[-4:]) for p in (run / "visualizations").iterdir()} == expected
    page = out.read_text()
    data = json.loads(page.split('id="feature-data">')[1].split("</script>")[0])
    assert sum(data["columns"]["vis"]) == 2
    assert "Decoder visualisations (Fig. 1B) skipped" in page  # the fake run kept no activations
