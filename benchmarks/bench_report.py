"""How long the report takes at ImageNet scale: build time, file size, load time in Chromium.

Fakes a run folder of 10,000 features and 1,000 classes (16 blocks, 300 features with evidence
thumbnails, a dozen figures: :func:`feature_complexity.report.sample.fake_run_folder`), renders
``report.html`` from it as ``feature-complexity report RUN_DIR`` would, and opens it in headless
Chromium (when chromium and chromedriver are installed) to time the load and a sort.

    .venv/bin/python benchmarks/bench_report.py [--features 10000] [--classes 1000] [--keep DIR]

Numbers only: nothing is asserted (the tests check behaviour, not speed).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def _browser_times(page: Path) -> dict[str, float] | None:
    """Seconds to open the page (until the first table page is drawn) and to sort by K."""
    if shutil.which("chromedriver") is None:
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = Options()
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    if Path("/usr/bin/chromium").exists():
        opts.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        start = time.perf_counter()
        driver.get(page.as_uri())  # returns after the load event (the script has run)
        driver.find_element(By.CSS_SELECTOR, "#explorer tr[data-feature]")
        load = time.perf_counter() - start
        start = time.perf_counter()
        driver.execute_script("document.querySelector('th[data-sort=\"complexity\"]').click()")
        driver.find_element(By.CSS_SELECTOR, "#explorer tr[data-feature]")
        sort = time.perf_counter() - start
        rows = len(driver.find_elements(By.CSS_SELECTOR, "#explorer tr[data-feature]"))
        nav = driver.execute_script("const t = performance.timing; return (t.loadEventEnd - t.navigationStart) / 1000")
        return {"load_s": load, "load_event_s": float(nav), "sort_s": sort, "rows_in_dom": rows}
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--thumbnails", type=int, default=300)
    parser.add_argument("--report-mb", type=float, default=25.0)
    parser.add_argument("--keep", default=None, help="write the fake run folder here and keep it")
    args = parser.parse_args()

    from feature_complexity.report import render_report
    from feature_complexity.report.sample import fake_run_folder

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_report_"))
    try:
        start = time.perf_counter()
        run = fake_run_folder(root / "run", n_features=args.features, n_classes=args.classes, n_layers=args.layers,
                              n_thumbnails=args.thumbnails, n_figures=12, tile=64)
        print(f"fake run folder: {args.features:,} features, {args.classes:,} classes, {args.layers} blocks, "
              f"{args.thumbnails} thumbnails ({time.perf_counter() - start:.1f} s to write)")
        start = time.perf_counter()
        page = render_report(run, report_mb=args.report_mb)
        build = time.perf_counter() - start
        print(f"build: {build:.2f} s   size: {page.stat().st_size / 1e6:.1f} MB (budget {args.report_mb:g} MB)")
        times = _browser_times(page)
        if times is None:
            print("load: not measured (chromium-driver is not installed)")
        else:
            print(f"load in headless Chromium: {times['load_s']:.2f} s to the first table page "
                  f"(load event {times['load_event_s']:.2f} s); sort by K: {times['sort_s']:.2f} s; "
                  f"rows in the DOM: {times['rows_in_dom']}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
