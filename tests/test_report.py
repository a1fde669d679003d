"""report.html (issue 19): one self-contained page, rendered in a real headless browser."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import XOR_YAML


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory):
    from typer.testing import CliRunner

    from backprop_cli.cli import app

    root = tmp_path_factory.mktemp("report")
    config = root / "xor.yaml"
    config.write_text(XOR_YAML)
    args = ["train", str(config), "--runs-dir", str(root / "runs"), "--animate", "--frames", "10", "-q"]
    assert CliRunner().invoke(app, args).exit_code == 0
    return next((root / "runs").iterdir())


@pytest.mark.slow
def test_the_report_is_one_self_contained_page(cli, xor_run):
    result = cli("report", xor_run)
    assert result.exit_code == 0, result.output
    page = (xor_run / "report.html").read_text()
    assert result.stdout == f"report: {xor_run / 'report.html'}\n"
    sources = re.findall(r'src="([^"]*)"', page)
    pngs = sorted(p.name for p in xor_run.glob("*.png"))
    assert len(sources) == len(pngs) + 1  # every plot, and the animation
    assert all(s.startswith("data:image/") for s in sources)
    assert sum(s.startswith("data:image/gif;base64,") for s in sources) == 1
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for name in pngs:
        assert f"<figcaption>{name}</figcaption>" in page
    assert "The first training step, by hand" in page and "w1" in page and "delta" in page
    assert "Final weights" in page and "layer 2: 1 x 2" in page
    assert "loss: sse" in page  # the config


@pytest.mark.slow
def test_a_study_report_has_its_table(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    path = write_config(XOR_YAML)
    assert cli("sweep-lr", path, "--lrs", "0.5,1,2", "--runs-dir", root, "-q").exit_code == 0
    folder = next(root.iterdir())
    assert cli("report", "--runs-dir", root, folder.name, "--output", tmp_path / "page.html").exit_code == 0
    page = (tmp_path / "page.html").read_text()
    assert "<h2>Results</h2>" in page and "learning_rate" in page and "lr_0.5" in page
    assert page.count("data:image/png") == 2  # loss_curves.png, loss_grid.png


def test_report_of_a_missing_run_is_a_usage_error(cli, tmp_path):
    result = cli("report", tmp_path / "nothing")
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path / 'nothing'}: no such run folder\n"  # as every command says it


def _colour_share(png):
    from PIL import Image

    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=float) / 255
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    return float((saturation > 0.1).mean())


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no headless browser installed (Debian: apt-get install chromium)")
def test_the_report_renders_in_a_headless_browser_with_every_image(cli, xor_run, tmp_path):
    assert cli("report", xor_run).exit_code == 0
    page = xor_run / "report.html"

    def shot(html, name):
        png = tmp_path / name
        # wait for the page's images to decode and paint before the screenshot is taken
        cmd = [BROWSER, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
               "--run-all-compositor-stages-before-draw", "--virtual-time-budget=10000",
               f"--screenshot={png}", "--window-size=1200,4000", html.resolve().as_uri()]  # fmt: skip
        subprocess.run(cmd, capture_output=True, timeout=120, check=True)
        return _colour_share(png)

    # the plots are colour (blue and red edges, class regions, curves); text and tables are not
    rendered = shot(page, "page.png")
    if rendered <= 0.01:  # a loaded machine can take the screenshot before the images paint: once more
        rendered = shot(page, "page-again.png")
    # the same page with its images broken: what a page whose images failed to load looks like
    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text().replace("base64,", "base64,!"))
    assert rendered > 0.01 and shot(broken, "broken.png") < 0.002, rendered


@pytest.mark.slow
def test_open_hands_the_page_to_the_web_browser(cli, xor_run, monkeypatch):
    import webbrowser

    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda uri: opened.append(uri) or True)
    assert cli("report", xor_run, "--open").exit_code == 0
    assert opened == [(xor_run / "report.html").resolve().as_uri()]
    monkeypatch.setattr(webbrowser, "open", lambda uri: False)
    result = cli("report", xor_run, "--open")
    assert result.exit_code == 0
    assert result.stderr == f"Warning: no web browser found; open {xor_run / 'report.html'} yourself\n"


@pytest.mark.parametrize("chain", [False, True], ids=["batched", "chained"])
def test_a_chained_sweep_says_so_in_its_titles_and_its_report(cli, write_config, tmp_path, monkeypatch, chain):
    from backprop_cli.painter import Painter

    titles = []
    submit = Painter.submit

    def record(self, jobs):
        titles.extend(
            str(job[2][-2] if job[1] == "study_plot" else job[2][-1]) for job in jobs if "loss" in job[0].name
        )
        return submit(self, jobs)

    monkeypatch.setattr(Painter, "submit", record)
    args = ["sweep-lr", write_config(XOR_YAML), "--lrs", "0.5,1", "--runs-dir", tmp_path, "-q"]
    result = cli(*args, *(["--chain"] if chain else []))
    assert result.exit_code == 0, result.output
    study = next(p for p in tmp_path.iterdir() if p.is_dir())
    said = [t for t in titles if "by learning_rate" in t or t.endswith("loss") or "(chained)" in t]
    assert said and all(t.endswith("(chained)") == chain for t in said), titles
    page = cli("report", study)
    assert page.exit_code == 0
    html = (study / "report.html").read_text()
    assert ("a chained learning-rate sweep" in html) == chain and ("a learning-rate sweep" in html) != chain


@pytest.mark.slow
def test_a_study_report_has_its_config_and_keeps_lists_whole(cli, write_config, tmp_path):
    import html
    import re

    from conftest import XOR_YAML

    runs = tmp_path / "runs"
    grid = ["--grid", "model.layers=[2,2,1],[2,4,1]", "--epochs", "20", "--runs-dir", runs, "-q"]
    assert cli("sweep", write_config(XOR_YAML), *grid).exit_code == 0
    study = next(runs.iterdir())
    assert cli("report", study).exit_code == 0
    text = html.unescape(re.sub("<[^>]+>", " ", (study / "report.html").read_text()))
    assert "grid.json (what the study asked for):" in text and "- [2, 4, 1]" in text
    assert "[2, 2, 1], [2, 4, 1]" in text  # the summary's grid value: a list of lists, not 2, 2, 1, 2, 4, 1
    assert (
        cli("sweep-lr", write_config(XOR_YAML), "--lrs", "0.1,0.5", "--runs-dir", tmp_path / "s", "-q").exit_code == 0
    )
    sweep = next((tmp_path / "s").iterdir())
    assert cli("report", sweep).exit_code == 0
    assert "lr_0.1/config.yaml (the study's first run; its rate or seed varies):" in html.unescape(
        (sweep / "report.html").read_text()
    )
