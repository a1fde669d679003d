"""A run is never lost: signals mid-training, failing writes, failing plots, unwritable roots."""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import XOR_YAML

from backprop_cli import files as files_module
from backprop_cli.files import atomic_write
from backprop_cli.run_folders import write as runs_module


def _start_training(tmp_path, epochs=50_000_000):
    config = tmp_path / "long.yaml"
    config.write_text(XOR_YAML.replace("epochs: 200", f"epochs: {epochs}"))
    root = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "backprop_cli", "train", str(config), "--runs-dir", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    # readiness: the first progress line ("epoch 1/...") is printed once training has begun
    first = proc.stdout.readline()
    assert first.startswith("epoch 1/"), first + proc.stderr.read()
    folders = list(root.glob("*/summary.json"))
    return proc, folders[0].parent


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_training_saves_an_interrupted_run(tmp_path, sig):
    proc, run = _start_training(tmp_path)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    rows = list(csv.reader((run / "history.csv").open()))
    assert len(rows) - 1 == summary["epochs_run"] > 0
    assert (run / "weights.json").exists()
    assert not list(run.glob(".*tmp")), "no temporary file may be left behind"
    assert f"Interrupted after epoch {summary['epochs_run']}" in err


@pytest.mark.slow
def test_second_ctrl_c_during_the_save_does_not_corrupt_it(tmp_path, monkeypatch):
    proc, run = _start_training(tmp_path)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)  # back to back: the second lands while the first is handled
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    json.loads((run / "weights.json").read_text())


@pytest.mark.slow
def test_ctrl_c_during_the_save_names_the_saved_run(cli, write_config, tmp_path, monkeypatch):
    real = runs_module.write_json

    def interrupted_after(path, data):  # a Ctrl-C arrives while summary.json is written
        real(path, data)
        if path.name == "summary.json" and data.get("status") == "completed":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(runs_module, "write_json", interrupted_after)
    root = tmp_path / "runs"
    result = cli("train", write_config(XOR_YAML), "--runs-dir", root, "--quiet")
    run = next(root.iterdir())
    assert result.exit_code == 130
    assert result.stderr == f"Interrupted while saving; the run was saved (completed): {run}\n"
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_starting_up_is_interrupted_not_a_traceback(tmp_path, sig):
    # the signal arrives just as the command line's imports begin, before Typer or any handler
    config = tmp_path / "c.yaml"
    config.write_text(XOR_YAML)
    script = tmp_path / "start.py"
    script.write_text(
        textwrap.dedent(f"""
            import builtins, os, sys
            sys.argv = ["backprop", "train", {str(config)!r}]
            real_import = builtins.__import__

            def hook(name, *args, **kwargs):
                if name == "backprop_cli.cli":
                    os.kill(os.getpid(), {int(sig)})
                return real_import(name, *args, **kwargs)

            builtins.__import__ = hook
            from backprop_cli.launch import main
            main()
        """)
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 130 and proc.stderr == "Interrupted.\n", proc.stderr


@pytest.mark.parametrize(
    "code, handler, expect",
    [
        ("3", False, (3, "")),
        ("3", True, (3, "ran")),
        ("'a message'", False, (1, "a message\n")),
        ("None", True, (0, "ran")),
    ],
    ids=["fast", "a handler runs", "a message", "None is 0"],
)
def test_leaving_keeps_exit_codes_output_and_exit_handlers(code, handler, expect):
    # the fast exit skips the interpreter's teardown only when no handler would run at exit
    script = "import atexit, sys\n"
    script += "atexit.register(lambda: sys.stderr.write('ran'))\n" if handler else ""
    script += f"print('out', end='')\nfrom backprop_cli.launch import leave\nleave({code})\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # output buffered, as by default
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert (proc.returncode, proc.stderr) == expect and proc.stdout == "out"


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def failing_replace(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(files_module.os, "replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_atomic_write_on_a_full_disk_leaves_nothing_half_written(tmp_path, monkeypatch):
    target = tmp_path / "weights.json"
    target.write_text("old")
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_module.os, "fsync", full_disk)
    with pytest.raises(OSError):
        atomic_write(target, "x" * 1000)
    monkeypatch.setattr(files_module.os, "fsync", real_fsync)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.json"]


def test_writing_to_dev_full_fails_cleanly():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with pytest.raises(OSError) as info:
        with open("/dev/full", "w") as f:
            f.write("x" * 10)
            f.flush()
    assert info.value.errno == errno.ENOSPC


@pytest.mark.slow
def test_full_disk_while_saving_a_run_exits_1_and_marks_it_failed(cli, write_config, tmp_path, monkeypatch):
    real = runs_module.atomic_write

    def fail_history(path, content):
        if path.name == "history.csv":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, content)

    monkeypatch.setattr(runs_module, "atomic_write", fail_history)
    root = tmp_path / "runs"
    result = cli("train", write_config(XOR_YAML), "--runs-dir", root)
    assert result.exit_code == 1
    run = next(root.iterdir())
    assert result.stderr == f"Error: {run}: cannot write the run files: No space left on device\n"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]


def test_a_failed_plot_is_a_warning_not_a_lost_run(cli, write_config, tmp_path, monkeypatch):
    from backprop_cli import painter, plots

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "loss_plot", broken)
    monkeypatch.setattr(painter, "_start", lambda: None)  # no worker: the plots are drawn here
    root = tmp_path / "runs"
    result = cli("train", write_config(XOR_YAML), "--runs-dir", root)
    assert result.exit_code == 0
    run = next(root.iterdir())
    assert f"Warning: {run / 'loss.png'}: plot not written: no fonts" in result.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert not (run / "loss.png").exists()


def test_runs_root_that_is_a_file(cli, write_config, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = cli("train", write_config(XOR_YAML), "--runs-dir", blocker)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {blocker}: cannot create the runs folder: File exists\n"


def test_unwritable_runs_root(cli, write_config, tmp_path, monkeypatch):
    from pathlib import Path

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    root = tmp_path / "runs"
    result = cli("train", write_config(XOR_YAML), "--runs-dir", root)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {root}: cannot create the runs folder: Permission denied\n"


def test_debug_shows_the_traceback_and_keeps_the_exit_code(cli, write_config):
    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 0"))
    plain = cli("train", path)
    result = cli("--debug", "train", path)
    assert plain.exit_code == result.exit_code == 2
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "backprop_cli.errors.ConfigError" in result.stderr and result.stderr.endswith(plain.stderr)
    missing = cli("--debug", "predict", "nope")
    assert missing.exit_code == 2 and "Traceback" in missing.stderr
    assert missing.stderr.endswith("Error: nope: no such run folder\n")


def test_empty_inline_data(cli, write_config):
    path = write_config("model: {layers: [2, 2, 1]}\ndata: {inputs: [], targets: []}\n")
    result = cli("train", path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: data.inputs: the data set is empty\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_before_main_runs_says_interrupted_and_exits_130(sig):
    # the launcher's first statements: a signal between its import and main() (while the
    # command's other imports run) ends with the words and code of any other interruption
    script = f"import os, signal, time\nimport backprop_cli.launch\nos.kill(os.getpid(), {int(sig)})\ntime.sleep(10)\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert (proc.returncode, proc.stderr) == (130, "Interrupted.\n")


def test_a_process_that_ignores_ctrl_c_keeps_ignoring_it_after_importing_the_launcher():
    # the drawing worker ignores Ctrl-C and may import launch (for launch.leave)
    script = (
        "import os, signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nimport backprop_cli.launch\n"
        "os.kill(os.getpid(), signal.SIGINT)\nprint('still here')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (0, "still here\n")
