"""The report: it renders a run folder (no model), is one self-contained file within its size
budget, shows every section readably, and runs as the last stage of a run.

Fast tests use a fabricated run folder (:func:`feature_complexity.report.sample.fake_run_folder`);
``slow`` ones a real run of the tiny model; ``browser`` ones open the page in headless Chromium.
"""

from __future__ import annotations

import json
import re
import shutil
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest

from feature_complexity.report import render_report, report_context
from feature_complexity.report.sample import fake_run_folder

SRC = Path(__file__).resolve().parents[1] / "src"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _script_json(page: str, element_id: str) -> dict:
    return json.loads(page.split(f'id="{element_id}">')[1].split("</script>")[0])


@pytest.fixture(scope="module")
def _fake_template(tmp_path_factory) -> Path:
    return fake_run_folder(tmp_path_factory.mktemp("fake") / "run", n_features=40, n_thumbnails=12, n_figures=6)


@pytest.fixture
def fake_run(_fake_template: Path, tmp_path: Path) -> Path:
    """A fabricated run folder of 40 features, 6 figures and 12 thumbnails (a fresh copy per test)."""
    return Path(shutil.copytree(_fake_template, tmp_path / "run"))


# ---------------------------------------------------------------------------------- templates
def test_no_html_in_python_files():
    """The page is made of package templates: no HTML document is written in Python."""
    offenders = [str(p) for p in SRC.rglob("*.py") if "<html" in p.read_text(encoding="utf-8").lower()]
    assert not offenders, offenders


def test_templates_and_static_files_are_package_data():
    import tomllib

    root = resources.files("feature_complexity.report")
    names = ["templates/report.html.j2", "templates/macros.j2", "templates/sections/summary.j2",
             "templates/sections/question.j2", "templates/sections/findings.j2", "templates/sections/explorer.j2",
             "templates/sections/footer.j2", "static/report.css", "static/explorer.js"]
    for name in names:
        assert root.joinpath(*name.split("/")).is_file(), name
    # every template is matched by the package-data globs, so a wheel carries it
    globs = tomllib.loads((SRC.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = globs["feature_complexity"]
    folder = SRC / "feature_complexity"
    for path in [*(folder / "report" / "templates").rglob("*.j2"), *(folder / "report" / "static").iterdir()]:
        rel = path.relative_to(folder)
        assert any(rel.match(p) for p in patterns), rel


# ---------------------------------------------------------------------------------- rendering
def test_renders_a_folder_without_the_model_and_embeds_every_figure(fake_run):
    out = render_report(fake_run)
    page = out.read_text()
    assert out == fake_run / "report.html"
    index = json.loads((fake_run / "figures" / "index.json").read_text())
    for name, info in index.items():
        block = re.search(rf'<figure class="fig" data-figure="{name}"[^>]*>(.*?)</figure>', page, re.S)
        assert block, f"figure {name} is not in the page"
        assert 'src="data:image/png;base64,' in block.group(1)
        assert info["title"] in block.group(1) and info["caption"] in block.group(1)
    # each figure lands in the section its stage named
    where = page.split('id="sec-where"')[1].split("</section>")[0]
    assert 'data-figure="figure_3"' in where and 'data-figure="figure_0"' not in where
    findings = page.split('id="sec-findings"')[1].split("</section>")[0]
    assert 'data-figure="figure_5"' in findings


def test_page_fetches_nothing(fake_run):
    page = render_report(fake_run).read_text()
    assert "default-src 'none'" in page  # the browser itself refuses any fetch
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)  # the explorer's own code sets data: URIs
    for attr in re.findall(r'(?:src|href)="([^"]*)"', markup):
        assert attr.startswith(("data:", "#")), attr
    js = (resources.files("feature_complexity.report") / "static" / "explorer.js").read_text()
    assert "fetch(" not in js and "XMLHttpRequest" not in js and "import(" not in js
    assert not re.search(r"https?://", page.replace("http://www.w3.org", ""))
    assert "@import" not in page and "url(" not in page.split("<style>")[1].split("</style>")[0]


def test_bad_run_dir_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_report(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="features.parquet"):
        render_report(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        render_report(tmp_path / "file")
    run = fake_run_folder(tmp_path / "run", n_thumbnails=0, n_figures=0)
    (run / "flow.json").write_text("{not json")
    with pytest.raises(ValueError, match="flow.json is not valid JSON"):
        render_report(run)


def test_summary_puts_the_model_accuracy_beside_what_the_dictionary_keeps(tmp_path):
    chance = fake_run_folder(tmp_path / "a", n_classes=10, accuracy=0.11, n_figures=0, n_thumbnails=0)
    page = render_report(chance).read_text()
    assert 'id="accuracy-warning"' in page and "near chance level" in page
    assert "11.0 % (chance 10.0 %)" in page
    trained = fake_run_folder(tmp_path / "b", n_classes=10, accuracy=0.91, n_figures=0, n_thumbnails=0)
    assert 'id="accuracy-warning"' not in render_report(trained).read_text()


def test_stage_timings_say_what_was_computed_and_reused(fake_run):
    ctx = report_context(fake_run)
    assert ("activations", "reused", "12.0 s") in ctx["summary"]["stages"]["rows"]
    assert "computed 1 stage (1.0 s) and reused 1 finished one" in ctx["summary"]["stages"]["sentence"]


def test_findings_table_renders_each_verdict(fake_run):
    page = render_report(fake_run).read_text()
    table = page.split('id="findings"')[1].split("</table>")[0]
    rows = re.findall(r'<tr data-claim="([^"]+)" data-verdict="([^"]+)">(.*?)</tr>', table, re.S)
    assert {v for _, v, _ in rows} == {"reproduced", "not_reproduced", "not_specific_to_training", "inconclusive"}
    claim, verdict, cells = rows[0]
    assert "-0.50 [-0.60, -0.40]" in cells  # this model's value [interval]
    assert "random-init: 0.01 [-0.10, 0.12]" in cells  # the control's value [interval]
    assert "the reason for verdict reproduced" in cells and "negative (&lt; 0)" in cells
    assert 'id="no-control"' not in page


def test_findings_without_a_control_say_so(tmp_path):
    run = fake_run_folder(tmp_path / "run", control=False, n_figures=0, n_thumbnails=0)
    page = render_report(run).read_text()
    assert 'id="no-control"' in page and "--controls random-init" in page
    (run / "findings.json").unlink()
    assert "No findings.json in this run folder" in render_report(run).read_text()


def test_flow_and_dynamics_are_sentences_and_tables(fake_run):
    flow = json.loads((fake_run / "flow.json").read_text())
    flow["teleport_spearman"] = {"rho": None, "p_value": None}
    flow["teleport_depth_counts"] = [0] * len(flow["blocks"]) + [flow["n_features"]]
    (fake_run / "flow.json").write_text(json.dumps(flow))
    page = render_report(fake_run).read_text()
    where = page.split('id="sec-where"')[1].split("</section>")[0]
    assert "undefined: constant: every feature has the same teleport depth, &#39;never&#39;" in where
    assert "<td>never</td><td>40</td>" in where and "teleport_depth_counts" not in where
    when = page.split('id="sec-when"')[1].split("</section>")[0]
    assert "Spearman(A, K) = 0.60" in when and "<td>epoch_010</td>" in when and "spearman_A_K" not in when


def test_explorer_data_labels_every_column(fake_run):
    data = report_context(fake_run)["data_json"]
    data = json.loads(data.replace("<\\/", "</"))
    frame = pd.read_parquet(fake_run / "features.parquet")
    assert data["n"] == len(frame) and data["columns"]["feature"] == list(range(len(frame)))
    assert data["meta"]["teleport_depth"]["label"] == "teleport depth"
    assert "never" in data["meta"]["teleport_depth"]["tip"] and data["teleport_never"] == 4
    assert data["meta"]["A"]["label"] == "temporal decoding score A"
    assert data["meta"]["weird_score"] == {"label": "weird score", "kind": "number",
                                           "tip": data["meta"]["weird_score"]["tip"]}
    assert "no description" in data["meta"]["weird_score"]["tip"]
    assert data["meta"]["noise_sensitivity_0.1"]["label"] == "noise sensitivity, σ = 0.1"
    assert data["meta"]["hierarchy_level_1"]["kind"] == "int"  # cluster ids stored as floats show as ids
    assert all(isinstance(v, int) for v in data["columns"]["hierarchy_level_1"])
    assert "embed_x" not in data["columns"] and data["interval"] is True
    assert len(data["iv"]) == len(frame) * len(data["layers"]) == len(frame) * 4


def test_budget_is_respected_and_the_page_says_what_was_left_out(tmp_path):
    run = fake_run_folder(tmp_path / "run", n_features=200, n_thumbnails=120, n_figures=2)
    full = render_report(run, out=tmp_path / "full.html")
    one = (run / "evidence" / "feature_00000.jpg") if (run / "evidence" / "feature_00000.jpg").exists() else \
        next((run / "evidence").glob("*.jpg"))
    budget_mb = (full.stat().st_size - 60 * 4 / 3 * one.stat().st_size) / 1e6  # room for about 60 fewer
    page_path = render_report(run, report_mb=budget_mb)
    page = page_path.read_text()
    assert page_path.stat().st_size <= budget_mb * 1e6
    evidence = _script_json(page, "evidence-data")
    n_in, n_out = len(evidence["images"]), len(evidence["left_out"])
    assert n_in + n_out == 120 and 0 < n_out and 0 < n_in
    assert f"{n_out:,} features' thumbnails did not fit" in page and "evidence/feature_NNNNN.jpg" in page
    assert f"Size budget {budget_mb:.3g} MB" in page
    # the embedded ones come first in the evidence stage's priority order (after the strip's)
    index = json.loads((run / "evidence" / "index.json").read_text())
    embedded = {int(f) for f in evidence["images"]}
    rest = [f for f in index["selected"] if f not in embedded]
    assert all(str(f) in evidence["left_out"] for f in rest)
    assert not (set(index["selected"][:n_in - 6]) - embedded)


def test_no_evidence_says_why_and_how(tmp_path):
    run = fake_run_folder(tmp_path / "run", n_thumbnails=0, n_figures=0)
    page = render_report(run).read_text()
    assert "the evidence stage has not run" in page and "--evidence" in page
    assert 'id="spectrum-strip"' not in page


# ---------------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny model analysed end to end with the report (12 features; few images for the appendix
    analyses: this is about the report, not their numbers)."""
    from conftest import TinyImages, make_tiny_spec
    from feature_complexity.pipeline import RunConfig, run_analysis

    out = tmp_path_factory.mktemp("tiny") / "run"
    cheap = RunConfig(n_atoms_per_class=3, n_folds=3, batch_size=32, nmf_max_iter=200, robustness_draws=2,
                      robustness_images=16, redundancy_masks=2, n_bootstrap=100)
    run_analysis(make_tiny_spec(), TinyImages(), out, cheap, progress=False)
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(run, dest)
    return dest


@pytest.mark.slow
def test_report_is_the_last_stage_of_a_run(tiny_run):
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    assert manifest["stages"]["report"]["status"] == "computed"
    assert manifest["stages"]["evidence"]["status"] == "computed"
    page = (tiny_run / "report.html").read_text()
    evidence = _script_json(page, "evidence-data")
    assert len(evidence["images"]) == 12  # every feature: k <= config.evidence_features
    assert 'data-figure="metafeatures_gallery"' in page


@pytest.mark.slow
def test_report_cli_rerenders_without_the_model_and_reuses_everything(tiny_run, tmp_path, capsys):
    from feature_complexity.cli import main

    run = _copy(tiny_run, tmp_path)
    (run / "report.html").unlink()
    assert main(["report", str(run), "--quiet"]) == 0
    assert (run / "report.html").exists() and "report.html" in capsys.readouterr().out
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["report"]["status"] == "computed"
    assert all(v["status"] == "reused" for k, v in stages.items() if k != "report"), stages
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(run), "--n-top", "3"]) == 2
    assert "add --evidence" in capsys.readouterr().err
    # a model the registry cannot rebuild: the evidence is refused, and why
    assert main(["report", str(run), "--evidence", "--quiet"]) == 2
    assert "cannot rebuild model 'tiny'" in capsys.readouterr().err


@pytest.mark.slow
def test_rerender_never_recomputes_a_stage_it_cannot_rebuild(tiny_run, tmp_path):
    """A run with extra stages (the demo's dynamics) has a feature table this command's stage list
    would compute differently: it must be left as it is, and the page rendered from the files."""
    from feature_complexity.report import rerender

    run = _copy(tiny_run, tmp_path)
    record = json.loads((run / ".stages" / "features.json").read_text())
    record["key"] = "made-with-extra-stages"
    (run / ".stages" / "features.json").write_text(json.dumps(record))
    before = (run / "features.parquet").read_bytes()
    (run / "report.html").unlink()
    assert rerender(run, progress=False) == run / "report.html"
    assert (run / "report.html").exists() and (run / "features.parquet").read_bytes() == before
    assert json.loads((run / ".stages" / "features.json").read_text())["key"] == "made-with-extra-stages"


@pytest.mark.slow
def test_rebuilt_inputs_must_be_the_runs_own(tiny_run):
    import torch

    from conftest import TinyImages, make_tiny_spec
    from feature_complexity.cli.report_cmd import _check_reproduces
    from feature_complexity.report.rerun import check_inputs_match

    manifest = json.loads((tiny_run / "manifest.json").read_text())
    spec, probe = make_tiny_spec(), TinyImages()
    assert check_inputs_match(spec, probe, manifest) is None
    assert _check_reproduces(spec, probe, tiny_run) is None
    with torch.no_grad():
        spec.module.fc.weight.add_(1.0)
        spec.module.stem.weight.mul_(1.5)
    assert "model weights rebuilt from manifest.json are not the run's" in check_inputs_match(spec, probe, manifest)
    assert "does not reproduce the run's activations" in _check_reproduces(spec, probe, tiny_run)
    assert "probe images" in check_inputs_match(make_tiny_spec(), TinyImages(seed=1), manifest)


@pytest.mark.slow
def test_report_evidence_rebuilds_the_model_and_images_from_the_manifest(tmp_path, capsys):
    """A run of a registered model (small-resnet from a checkpoint) on generated images: the CLI
    rebuilds both from manifest.json, checks them, and renders the evidence with other settings."""
    import torch

    from feature_complexity.cli import main
    from feature_complexity.data import trifeature
    from feature_complexity.models.registry import build_model
    from feature_complexity.pipeline import RunConfig, run_analysis

    ckpt = tmp_path / "small.pt"
    torch.save(build_model("small-resnet", seed=0).module.state_dict(), ckpt)
    spec = build_model("small-resnet", checkpoint=str(ckpt))
    source = trifeature(48, seed=0)
    cheap = RunConfig(n_atoms_per_class=2, n_folds=2, batch_size=48, nmf_max_iter=100, robustness_draws=2,
                      robustness_images=8, redundancy_masks=2, n_bootstrap=100, evidence_features=4, n_top=3)
    run = tmp_path / "run"
    run_analysis(spec, source, run, cheap, model_info={"name": "small-resnet", "checkpoint": str(ckpt)},
                 data_info=source.describe(), progress=False)
    assert len(json.loads((run / "evidence" / "index.json").read_text())["files"]) <= 4
    capsys.readouterr()
    assert main(["report", str(run), "--evidence", "--evidence-features", "6", "--n-top", "2", "--quiet"]) == 0
    index = json.loads((run / "evidence" / "index.json").read_text())
    assert index["n_top"] == 2 and 0 < len(index["files"]) <= 6
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["evidence"]["status"] == "computed" and stages["report"]["status"] == "computed"
    # another checkpoint than the run's: refused before any evidence is drawn, and why
    other = tmp_path / "other.pt"
    torch.save(build_model("small-resnet", seed=1).module.state_dict(), other)
    assert main(["report", str(run), "--evidence", "--checkpoint", str(other), "--quiet"]) == 2
    assert "model weights rebuilt from manifest.json are not the run's" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- the browser
def _driver():
    if shutil.which("chromedriver") is None and not Path("/usr/bin/chromedriver").exists():
        pytest.skip("chromium-driver is not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    if Path("/usr/bin/chromium").exists():
        opts.binary_location = "/usr/bin/chromium"
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)


def _requested_urls(driver) -> list[str]:
    """Every request the page made, from the DevTools network log (which sees file: URLs too)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _click(driver, css: str) -> None:
    el = driver.find_element("css selector", css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    el.click()


@pytest.mark.browser
@pytest.mark.slow
def test_page_copied_alone_works_in_chromium(fake_run, tmp_path):
    from selenium.webdriver.common.by import By

    alone = tmp_path / "mailed" / "report.html"
    alone.parent.mkdir()
    shutil.copy(render_report(fake_run), alone)  # without its run folder
    frame = pd.read_parquet(fake_run / "features.parquet")
    driver = _driver()
    try:
        driver.get(alone.as_uri())
        rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#explorer tr[data-feature]")  # noqa: E731
        _click(driver, 'th[data-sort="complexity"]')
        assert int(rows()[0].get_attribute("data-feature")) == int(frame.loc[frame["complexity"].idxmin(), "feature"])
        _click(driver, 'th[data-sort="complexity"]')
        assert int(rows()[0].get_attribute("data-feature")) == int(frame.loc[frame["complexity"].idxmax(), "feature"])
        assert len(rows()) == 40
        # a feature with thumbnails: the detail view shows its interval, curve and images
        _click(driver, "#f-evidence")
        assert driver.find_element(By.ID, "page-info").text.startswith("12 of 40")
        first = rows()[0]
        fid = int(first.get_attribute("data-feature"))
        driver.execute_script("arguments[0].click()", first)
        detail = driver.find_element(By.ID, "detail")
        assert detail.is_displayed() and f"Feature {fid}" in detail.text
        lo = frame.loc[fid, "complexity_lo"]
        assert f"[{lo:.3f}," in detail.text
        assert len(driver.find_elements(By.CSS_SELECTOR, "#detail svg#ivcurve circle")) == 4
        img = driver.find_element(By.ID, "evidence-img")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)")
        assert not broken, broken
        requests = _requested_urls(driver)
        assert all(u == alone.as_uri() or u.startswith("data:") for u in requests), requests
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        driver.quit()


@pytest.mark.browser
@pytest.mark.slow
def test_ten_thousand_features_page_and_sort(tmp_path):
    """Paging: one page of rows in the DOM; sorting and filtering 10,000 features works."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    run = fake_run_folder(tmp_path / "run", n_features=10_000, n_classes=1000, n_layers=16, n_thumbnails=50,
                          n_figures=2)
    out = render_report(run)
    frame = pd.read_parquet(run / "features.parquet")
    driver = _driver()
    try:
        driver.get(out.as_uri())
        _click(driver, 'th[data-sort="complexity"]')
        first = driver.find_element(By.CSS_SELECTOR, "#explorer tr[data-feature]")
        assert int(first.get_attribute("data-feature")) == int(frame.loc[frame["complexity"].idxmin(), "feature"])
        assert len(driver.find_elements(By.CSS_SELECTOR, "#explorer tr[data-feature]")) == 50
        Select(driver.find_element(By.ID, "f-class")).select_by_value("7")
        shown = {int(r.get_attribute("data-feature")) for r in
                 driver.find_elements(By.CSS_SELECTOR, "#explorer tr[data-feature]")}
        assert shown == set(frame.loc[frame["class"] == 7, "feature"])
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        driver.quit()
