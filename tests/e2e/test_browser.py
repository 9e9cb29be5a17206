"""End to end in a real browser: `lifecost ui` serves the planner, Debian's chromium (driven by
Playwright's Python API, never `playwright install`) opens it, changes an input, waits for the
plotly charts of every view and saves a screenshot of each under the test's output folder.

`LIFECOST_UPDATE_SCREENSHOTS=1` also copies them to docs/screenshots/ (dashboard.png, the first
screenful of the Overview, is the README's picture).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 2000}  # tall: Streamlit scrolls inside its main block, not the page
README_CLIP = {"x": 0, "y": 0, "width": 1600, "height": 1000}
LOAD_TIMEOUT_MS = 180_000  # per wait; generous because CI machines may be loaded (cached reruns take < 1 s)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lifecost_command() -> list[str]:
    exe = Path(sys.executable).with_name("lifecost")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from planner_ui.cli import main; main()"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*lifecost_command(), "ui", "--port", str(port), "--host", "127.0.0.1"], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`lifecost ui` did not come up (exit {proc.poll()}):\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport=VIEWPORT)
        pg.set_default_timeout(LOAD_TIMEOUT_MS)
        pg.goto(server, wait_until="domcontentloaded")
        yield pg
        browser.close()


def settle(pg, *, charts: int = 0, metrics: int = 0) -> None:
    """Wait until the script run is over (no stale elements left from the previous view) and at
    least `charts` plotly charts (drawn SVG) and `metrics` metric cards are on the page."""
    try:  # a click starts a rerun a moment later: see it start before waiting for its end
        pg.wait_for_selector('[data-testid="stApp"][data-test-script-state="running"]', timeout=1500)
    except Exception:  # noqa: BLE001 — the run was already over (cached results)
        pass
    pg.wait_for_function(
        """([charts, metrics]) => {
            const app = document.querySelector('[data-testid="stApp"]');
            if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
            if (document.querySelectorAll('[data-stale="true"]').length) return false;
            const drawn = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')].filter(c => c.querySelector('.main-svg')).length;
            const cards = document.querySelectorAll('[data-testid="stMetric"]').length;
            return drawn >= charts && cards >= metrics;
        }""",
        arg=[charts, metrics],
    )
    pg.wait_for_timeout(800)  # let plotly finish its transitions before a screenshot


def assert_no_traceback(pg) -> None:
    assert pg.locator('[data-testid="stException"]').count() == 0
    assert "Traceback (most recent call last)" not in pg.inner_text("body")


def open_view(pg, name: str) -> None:
    pg.locator('[data-testid="stButtonGroup"] button', has_text=name).first.click()


def metric_value(pg, label: str) -> str:
    card = pg.locator('[data-testid="stMetric"]', has=pg.locator('[data-testid="stMetricLabel"]', has_text=label)).first
    return card.locator('[data-testid="stMetricValue"]').inner_text()


@contextlib.contextmanager
def screenshot_on_failure(pg, folder: Path):
    """Keep what the browser showed when a wait or an assertion failed (failure.png)."""
    try:
        yield
    except BaseException:
        pg.screenshot(path=str(folder / "failure.png"))
        raise


def test_every_view_renders_its_charts_after_an_edit(page, tmp_path):
    with screenshot_on_failure(page, tmp_path):
        check_every_view(page, tmp_path)


def check_every_view(pg, tmp_path: Path) -> None:
    settle(pg, charts=2, metrics=18)
    assert_no_traceback(pg)
    before = metric_value(pg, "Throughput")

    # change a value in the scenario builder: double the request rate
    rate = pg.get_by_label("Rate (req/s)")
    rate.fill("8.00")
    rate.press("Enter")
    pg.wait_for_function(
        """(before) => {
            const cards = [...document.querySelectorAll('[data-testid="stMetric"]')];
            const card = cards.find(c => c.innerText.startsWith('THROUGHPUT') || c.innerText.startsWith('Throughput'));
            return card && !card.innerText.includes(before);
        }""",
        arg=before,
    )
    settle(pg, charts=2, metrics=18)
    assert metric_value(pg, "Throughput") != before
    assert_no_traceback(pg)
    shots = {"overview": tmp_path / "overview.png", "dashboard": tmp_path / "dashboard.png"}
    pg.screenshot(path=str(shots["overview"]))
    pg.screenshot(path=str(shots["dashboard"]), clip=README_CLIP)  # the README's picture: the first screenful

    open_view(pg, "Compare")
    settle(pg)
    pg.get_by_role("button", name="Add the sidebar scenario").click()
    settle(pg, charts=1)
    pg.get_by_role("button", name="int4 weights (AWQ)").click()
    settle(pg, charts=4, metrics=8)
    assert_no_traceback(pg)
    shots["compare"] = tmp_path / "compare.png"
    pg.screenshot(path=str(shots["compare"]))

    open_view(pg, "Capacity")
    settle(pg, charts=2, metrics=6)
    assert_no_traceback(pg)
    shots["capacity"] = tmp_path / "capacity.png"
    pg.screenshot(path=str(shots["capacity"]))

    open_view(pg, "Inside one run")
    settle(pg, charts=3, metrics=6)
    assert_no_traceback(pg)
    shots["inside_run"] = tmp_path / "inside_run.png"
    pg.screenshot(path=str(shots["inside_run"]))

    open_view(pg, "Calibration")
    settle(pg, charts=1, metrics=3)
    assert_no_traceback(pg)
    shots["calibration"] = tmp_path / "calibration.png"
    pg.screenshot(path=str(shots["calibration"]))

    for path in shots.values():
        assert path.stat().st_size > 20_000, path  # a real rendering, not a blank page
    if os.environ.get("LIFECOST_UPDATE_SCREENSHOTS") == "1":
        dest = REPO / "docs" / "screenshots"
        dest.mkdir(parents=True, exist_ok=True)
        for name, path in shots.items():
            tmp = dest / f".{name}.png.tmp"
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest / f"{name}.png")


def test_a_trace_with_wrong_columns_shows_an_inline_error_not_a_traceback(page, tmp_path):
    with screenshot_on_failure(page, tmp_path):
        check_bad_trace(page, tmp_path)


def check_bad_trace(pg, tmp_path: Path) -> None:
    bad = tmp_path / "bad_trace.csv"
    bad.write_text("time,input_len,output_len\n0.0,10,20\n0.5,11,21\n")
    uploader = pg.locator('[data-testid="stFileUploader"]', has_text="Replay a trace")
    uploader.locator('input[type="file"]').set_input_files(str(bad))
    error = pg.locator('[data-testid="stSidebar"] [data-testid="stAlertContentError"]', has_text="missing columns")
    error.first.wait_for()
    assert_no_traceback(pg)
