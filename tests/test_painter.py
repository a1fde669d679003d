"""The drawing worker: plots drawn in another process equal those drawn here, failures are
warnings, a dead worker costs time and never a plot, and no worker outlives its command."""

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, XOR_YAML

from backprop_cli import painter as painter_module
from backprop_cli.painter import Painter


def _jobs(folder: Path):
    epochs = np.arange(1, 101)
    curves = {"training": (epochs, np.exp(-epochs / 30.0))}
    return [
        (folder / "loss.png", "loss_plot", (curves, "a loss")),
        (folder / "accuracy.png", "metric_plot", (epochs, {"training": np.linspace(0.5, 1, 100)}, "accuracy")),
    ]


def _children() -> list[str]:
    """Command lines of this process's living children that are drawing workers."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and state != "Z" and "backprop_cli.painter" in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.slow
def test_the_worker_draws_what_this_process_would(tmp_path):
    (tmp_path / "here").mkdir()
    (tmp_path / "there").mkdir()
    assert Painter(background=False).draw(_jobs(tmp_path / "here")) == []
    with Painter() as worker:
        assert worker.worker is not None
        assert worker.draw(_jobs(tmp_path / "there")) == []
    for name in ("loss.png", "accuracy.png"):
        assert (tmp_path / "there" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()
    assert _children() == []


@pytest.mark.slow
def test_a_plot_that_fails_in_the_worker_is_a_warning(tmp_path):
    bad = (tmp_path / "bad.png", "loss_plot", ({"x": (None, None)}, "broken"))
    with Painter() as worker:
        warnings = worker.draw([bad, *_jobs(tmp_path)])
    assert len(warnings) == 1 and warnings[0].startswith(f"{tmp_path / 'bad.png'}: plot not written: ")
    assert (tmp_path / "loss.png").exists() and not (tmp_path / "bad.png").exists()


def test_a_dead_worker_costs_no_plot(tmp_path):
    with Painter() as worker:
        worker.worker.kill()
        worker.worker.wait()
        assert worker.draw(_jobs(tmp_path)) == []
        assert worker.worker is None  # given up: the rest was drawn here
    assert (tmp_path / "loss.png").exists() and (tmp_path / "accuracy.png").exists()


def test_no_worker_falls_back_to_drawing_here(tmp_path, monkeypatch):
    monkeypatch.setattr(painter_module, "_start", lambda: None)
    worker = Painter()
    assert worker.worker is None and worker.draw(_jobs(tmp_path)) == []
    assert (tmp_path / "loss.png").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [["train", "XOR"], ["sweep-lr", str(CONFIGS / "worked_example.yaml"), "--lrs", "0.5,1"], ["train", "missing.yaml"]],
    ids=["train", "sweep-lr", "config error"],
)
def test_no_worker_outlives_its_command(cli, write_config, tmp_path, args):
    args = [write_config(XOR_YAML) if a == "XOR" else a for a in args]
    result = cli(*args, "--runs-dir", tmp_path / "runs")
    assert result.exit_code in (0, 2)
    assert _children() == []


def _worker_answers(jobs) -> list:
    """Send `jobs` to a worker of its own (`python -m backprop_cli.painter`) and read its answers."""
    import json
    import subprocess
    import sys

    worker = subprocess.Popen(
        [sys.executable, "-m", "backprop_cli.painter"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    out, _ = worker.communicate(b"".join(painter_module.frame(job) for job in jobs), timeout=120)
    assert worker.returncode == 0
    return [json.loads(line) for line in out.decode().splitlines()]


@pytest.mark.slow
@pytest.mark.skipif(painter_module._slots() < 2, reason="one core: the worker draws in turn")
def test_answers_come_in_the_order_of_the_jobs_though_drawn_at_once(tmp_path):
    # a slow plot first (a large image), then one that fails at once: the failure is finished
    # first, and still answered second
    values = np.arange(144.0).reshape(12, 12) + 1
    names = [f"{v:g}" for v in range(12)]
    slow = (tmp_path / "slow.png", "heatmap", (values, (names, names), ("a", "b"), "loss", "slow"))
    bad = (tmp_path / "bad.png", "loss_plot", ({"x": (None, None)}, "broken"))
    answers = _worker_answers([slow, bad, *_jobs(tmp_path)])
    assert answers[0] is None and answers[1].startswith(f"{tmp_path / 'bad.png'}: plot not written: ")
    assert answers[2:] == [None, None] and (tmp_path / "slow.png").exists()


@pytest.mark.slow
@pytest.mark.skipif(painter_module._slots() < 2, reason="one core: the worker draws in turn")
def test_a_drawing_process_that_dies_is_a_warning_and_the_rest_is_drawn(tmp_path):
    dies = (tmp_path / "dies.png", "launch.leave", (5,))  # ends its process at once, answering nothing
    answers = _worker_answers([dies, *_jobs(tmp_path)])
    assert answers[0].startswith(f"{tmp_path / 'dies.png'}: plot not written: the drawing process ended")
    assert answers[1:] == [None, None] and (tmp_path / "loss.png").exists()


def test_a_stale_matplotlib_lock_is_removed_and_said(tmp_path):
    # a first run killed while matplotlib wrote its font cache leaves the lock: every later
    # plotting process would wait 5 s for it, and never save the cache
    import json
    import os
    import subprocess
    import sys
    import time

    from conftest import CONFIGS

    cache = tmp_path / "mpl"
    cache.mkdir()
    lock = cache / "fontlist-v390.json.matplotlib-lock"
    lock.write_text("")
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    fresh = cache / "other.matplotlib-lock"  # one held right now by another process: left alone
    fresh.write_text("")
    env = {**os.environ, "MPLCONFIGDIR": str(cache)}
    argv = [sys.executable, "-m", "backprop_cli", "train", str(CONFIGS / "xor.yaml"), "--epochs", "50"]
    proc = subprocess.run(argv + ["--runs-dir", str(tmp_path / "runs"), "-q"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"backprop: removed {lock}, left by a process killed while it wrote matplotlib's cache" in proc.stderr
    assert not lock.exists() and fresh.exists()
    fonts = list(cache.glob("fontlist-*.json"))
    assert fonts and json.loads(fonts[0].read_text())  # the cache was written, whole
