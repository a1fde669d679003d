"""The live page and serve's pages in a real browser: Debian's Chromium, headless, driven by
Playwright, against a real `backprop` process. The page must load without a console error,
its curve gain points as epochs pass, pause hold the epoch, step advance it by exactly one,
a rate change reach history.csv from the next epoch, and stop leave a complete run marked
interrupted."""

import csv
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import CONFIGS

playwright = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(BROWSER is None, reason="no headless browser installed (Debian: apt-get install chromium)"),
]
expect = playwright.expect


class Backprop:
    """A `backprop` child whose stderr is read on a thread; `address()` waits for the line it
    prints when its server is ready."""

    def __init__(self, *args, cwd):
        env = {**os.environ, "MPLCONFIGDIR": str(cwd / "mpl"), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backprop_cli", *map(str, args)],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue = queue.Queue()
        self.said: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stderr:
            self.said.append(line)
            self.lines.put(line)

    def address(self):
        """The page's address: the first URL the child prints (its readiness message)."""
        while True:
            line = self.lines.get(timeout=60)
            if "http://" in line:
                return "http://" + line.split("http://", 1)[1].split()[0]

    def finish(self):
        out, _ = self.process.communicate(timeout=60)
        return self.process.returncode, out


@pytest.fixture
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _page(browser, width, errors):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def test_watch_and_steer_a_run(tmp_path, browser):
    child = Backprop(
        "train", CONFIGS / "xor.yaml", "--epochs", "1000000", "--live", "--paused", "--runs-dir", tmp_path / "runs",
        cwd=tmp_path,
    )  # fmt: skip
    url = child.address()
    errors: list[str] = []
    page = _page(browser, 1280, errors)
    assert page.goto(url).status == 200
    expect(page.locator("#status")).to_have_text("paused")
    expect(page.locator("#epoch")).to_have_text("0")
    page.click("#step")
    expect(page.locator("#epoch")).to_have_text("1")
    page.fill("#steps", "20")
    page.click("#stepn")
    expect(page.locator("#epoch")).to_have_text("21")
    page.fill("#newrate", "2")
    page.click("#setrate")  # while paused after epoch 21: from epoch 22 on
    expect(page.locator("#changes")).to_contain_text("from epoch 22: 2")
    points = int(page.locator("#curve").get_attribute("data-points"))
    page.click("#run")
    expect(page.locator("#status")).to_have_text("running")
    for _ in range(600):  # the page's CSP forbids evaluated predicates: poll the attribute
        if int(page.locator("#curve").get_attribute("data-points")) > points + 50:
            break
        page.wait_for_timeout(50)
    assert int(page.locator("#curve").get_attribute("data-points")) > points + 50
    page.screenshot(path=str(tmp_path / "live-1280.png"), full_page=True)
    page.click("#pause")
    expect(page.locator("#status")).to_have_text("paused")
    held = int(page.locator("#epoch").text_content())
    page.click("#step")
    expect(page.locator("#epoch")).to_have_text(str(held + 1))
    expect(page.locator("#status")).to_have_text("paused")
    narrow = _page(browser, 800, errors)  # a second page joins: it gets the curves so far
    narrow.goto(url)
    expect(narrow.locator("#epoch")).to_have_text(str(held + 1))
    narrow.screenshot(path=str(tmp_path / "live-800.png"), full_page=True)
    page.click("#stop")
    expect(page.locator("#status")).to_have_text("interrupted")
    code, _ = child.finish()
    assert code == 130, child.said
    assert errors == []
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs_run"] == held + 1
    with open(run / "history.csv") as f:
        rates = [float(r["learning_rate"]) for r in csv.DictReader(f)]
    assert rates[:21] == [0.1] * 21 and set(rates[21:]) == {2.0}  # xor.yaml trains at 0.1
    assert "lr_changes:\n    22: 2.0\n" in (run / "config.yaml").read_text()
    assert (run / "weights.json").exists() and not (run / "live.json").exists()
    keep = os.environ.get("BACKPROP_SCREENSHOTS")  # a folder to keep them in, for a person to look at
    for shot in ("live-1280.png", "live-800.png") if keep else ():
        shutil.copy(tmp_path / shot, Path(keep) / shot)


def test_without_the_token_the_page_is_refused(tmp_path, browser):
    child = Backprop("train", CONFIGS / "xor.yaml", "--live", "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    url = child.address()
    page = browser.new_page()
    assert page.goto(url.split("?")[0]).status == 403
    assert page.goto(url.replace("token=", "token=x")).status == 403
    child.process.send_signal(signal.SIGINT)  # still waiting for a page: nothing was trained
    code, _ = child.finish()
    assert code == 130
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_serve_lists_runs_and_shows_their_reports(tmp_path, browser):
    root = tmp_path / "runs"
    subprocess.run(
        [sys.executable, "-m", "backprop_cli", "train", str(CONFIGS / "xor.yaml"), "--epochs", "300", "--runs-dir", str(root), "-q"],
        check=True, cwd=tmp_path, env={**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}, capture_output=True,
    )  # fmt: skip
    child = Backprop("serve", root, cwd=tmp_path)
    url = child.address()
    errors: list[str] = []
    page = _page(browser, 1000, errors)
    assert page.goto(url).status == 200
    page.click("table a")
    expect(page.locator("h1")).to_contain_text("xor")
    expect(page.locator("body")).to_contain_text("Final weights")
    assert page.locator("img").count() >= 2  # the plots, embedded
    assert errors == []
    base = url.split("?")[0].rstrip("/")
    token = url.split("token=")[1]
    assert page.goto(f"{base}/run/..%2F..%2Fetc?token={token}").status == 404
    assert (
        page.goto(f"{base}/run/%2e%2e%2fetc?token={token}").status == 404
    )  # (a bare %2e%2e the browser itself resolves)
    child.process.send_signal(signal.SIGINT)
    assert child.finish()[0] == 130
