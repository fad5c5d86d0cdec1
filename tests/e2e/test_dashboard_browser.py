"""``nsmctl dashboard`` in a real browser against a live two-node fabric.

Headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by selenium) opens the
page served by ``nsmctl dashboard`` (a subprocess asking both nodes' nsmgrs), sees the client's
connection appear UP with its counters and the components up, then the endpoint is killed
(SIGKILL) and the connection's row must show what a user would see: DOWN, GONE, or healed to
another endpoint. Screenshots of both moments are saved under the test's ``tmp_path`` (the
paths are printed). The browser, the dashboard and the fabric are always stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.fabric import endpoint_cidrs
from tests.e2e.conftest import MakeFabric

selenium = pytest.importorskip("selenium", reason="selenium (the dev extras) is not installed")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="chromium and chromium-driver are missing: run scripts/setup.sh --test")


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    """Poll ``check`` (the page updates every 2 s) until it holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.25)  # polling a browser page, bounded by the deadline


@contextlib.contextmanager
def dashboard(args: list[str]) -> Iterator[str]:
    """``nsmctl ARGS dashboard --listen 127.0.0.1:0`` running; yields its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "nsmctl", *args, "dashboard", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the first line names the URL
        assert "serving the dashboard at " in line, line
        yield line.split(" at ", 1)[1].split()[0]
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(DRIVER)))
    try:
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        driver.quit()


#: read in one script, so a table re-rendered meanwhile (every 2 s) cannot leave half of it
#: stale (a row found, then gone when its cell is read: StaleElementReferenceException)
_ROWS = """const cell = (r, name) =>
    ((r.querySelector('td.' + name) || {}).textContent || '').trim();
return Array.from(document.querySelectorAll('#connections tbody tr')).map(r => [
    r.dataset.id || '', (r.dataset.state || '') + ' ' + cell(r, 'endpoint'), cell(r, 'rx')]);"""


def rows(driver: WebDriver) -> dict[str, tuple[str, str]]:
    """Every connection row of the table: its full ID → ("STATE endpoint-cell", rx cell)."""
    return {row_id: (state, rx) for row_id, state, rx in driver.execute_script(_ROWS)}


def row_state(driver: WebDriver) -> dict[str, str]:
    """Every connection row of the table: its full ID → "STATE endpoint-cell"."""
    return {row_id: state for row_id, (state, _) in rows(driver).items()}


async def test_dashboard_shows_a_connection_and_its_endpoint_dying(
    make_fabric: MakeFabric, tmp_path: Path
) -> None:
    fabric = await make_fabric(nodes=2)
    await fabric.add_endpoint("nse-db-n2", ["secure-db"], node=2, cidrs=endpoint_cidrs(0))
    client = await fabric.add_client("nsc", node=1, urls=["kernel://secure-db/nsm0"])
    conn_id = client.connection()["id"]
    args = ["--registry", fabric.registry_url, "--timeout", "3"]
    for node in fabric.nodes:
        args += ["--nsmgr", f"unix://{node.nsmgr_socket}"]
    with dashboard(args) as url, browser() as driver:
        driver.get(url)
        wait_until("the connection UP in the table",
                   lambda: row_state(driver).get(conn_id, "").startswith("UP nse-db-n2"), 30)
        chips = {c.get_attribute("data-component"): c.get_attribute("data-up")
                 for c in driver.find_elements(By.CSS_SELECTOR, "#health li")}
        assert chips.get("registry") == "true", chips
        assert sum(1 for k, v in chips.items() if k.startswith("forwarder") and v == "true") == 2
        assert driver.find_elements(By.CSS_SELECTOR, f'#graph path.edge.UP[data-id="{conn_id}"]')
        rx = rows(driver)[conn_id][1]
        assert rx != "-", "live counters are shown"
        before = tmp_path / "dashboard-up.png"
        driver.save_screenshot(str(before))
        print(f"screenshot: {before}")

        fabric.kill("nse-db-n2")

        wait_until("the connection's row to go DOWN/GONE or to another endpoint",
                   lambda: not row_state(driver).get(conn_id, "UP nse-db-n2").startswith(
                       "UP nse-db-n2"), 60)
        after = tmp_path / "dashboard-endpoint-killed.png"
        driver.save_screenshot(str(after))
        print(f"screenshot: {after}  (row: {row_state(driver)[conn_id]})")
        if os.environ.get("VWIRE_DASHBOARD_SCREENSHOTS"):
            dest = Path(os.environ["VWIRE_DASHBOARD_SCREENSHOTS"])
            dest.mkdir(parents=True, exist_ok=True)
            for shot in (before, after):
                shutil.copy(shot, dest / shot.name)
