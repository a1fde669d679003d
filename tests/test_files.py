"""Hostile paths (part of issue 15): inputs that are not regular files or are too large,
outputs that are not regular files or belong to a run, permissions from the umask, and
errors that name the user's path."""

import errno
import json
import os
import stat

import pytest
from conftest import CONFIGS, XOR_YAML

from backprop_cli import files as files_module
from backprop_cli.errors import ConfigError, OutputError
from backprop_cli.files import atomic_write, check_file


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.slow
@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_run_files_follow_the_umask(cli, write_config, tmp_path, umask, mask, mode):
    umask(mask)
    root = tmp_path / "runs"
    assert cli("train", write_config(XOR_YAML), "--runs-dir", root, "--quiet").exit_code == 0
    run = next(root.iterdir())
    for name in ("config.yaml", "history.csv", "weights.json", "data.json", "summary.json", "loss.png"):
        assert stat.S_IMODE((run / name).stat().st_mode) == mode, name


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "out.csv"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640


@pytest.mark.parametrize("kind", ["symlink", "fifo", "device", "folder"])
def test_writing_never_replaces_what_is_not_a_regular_file(tmp_path, kind):
    real = tmp_path / "real.txt"
    real.write_text("keep")
    target = tmp_path / "target"
    if kind == "symlink":
        target.symlink_to(real)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target = files_module.Path("/dev/null")
    name = {"symlink": "symbolic link", "fifo": "FIFO", "device": "character device", "folder": "folder"}[kind]
    with pytest.raises(OutputError, match=f"^{target}: is a {name}; writing would replace it "):
        atomic_write(target, "new")
    assert real.read_text() == "keep" and os.path.lexists(target)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_cli_refuses_a_device_as_output(cli, tmp_path):
    result = cli("init", "/dev/null", "--force")
    assert result.exit_code == 2
    assert (
        result.stderr
        == "Error: /dev/null: is a character device; writing would replace it (give a regular file or a new path)\n"
    )
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.slow
def test_predict_output_may_not_overwrite_the_run(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    assert cli("train", write_config(XOR_YAML), "--runs-dir", root, "--quiet").exit_code == 0
    run = next(root.iterdir())
    before = (run / "weights.json").read_bytes()
    (tmp_path / "in.csv").write_text("x1,x2\n0,1\n")
    result = cli("predict", run, "--csv", tmp_path / "in.csv", "--output", run / "weights.json")
    assert result.exit_code == 2
    assert result.stderr == f"Error: {run / 'weights.json'}: is a file of the run folder {run}; write elsewhere\n"
    assert (run / "weights.json").read_bytes() == before


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_inputs_must_be_regular_files(cli, tmp_path, write_config, kind):
    # a FIFO would block the read and /dev/zero never ends: both are refused before opening
    if kind == "fifo":
        config = tmp_path / "config.yaml"
        os.mkfifo(config)
        result = cli("train", config, "--runs-dir", tmp_path / "r")
        expected = f"Error: {config}: is a FIFO, not a regular file; give a config file\n"
    else:
        config = write_config("model: {layers: [2, 1]}\ndata: {csv: /dev/zero}\n")
        result = cli("train", config, "--runs-dir", tmp_path / "r")
        expected = "Error: /dev/zero: is a character device, not a regular file; give a data file\n"
    assert result.exit_code == 2 and result.stderr == expected
    assert not (tmp_path / "r").exists()


def test_a_config_over_the_size_limit_is_refused(tmp_path):
    from backprop_cli.config import load_config

    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 120_000)  # 1.1 MiB
    with pytest.raises(ConfigError, match=r"^.*big\.yaml: 1\.1 MiB, over the 1 MiB limit for a config file$"):
        load_config(path)


def test_check_file_follows_symlinks_to_regular_files(tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("a\n1\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    check_file(link, "data file", ConfigError)  # no error


def test_a_full_disk_names_the_users_path(cli, tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files_module.os, "fsync", full)
    out = tmp_path / "step.md"
    result = cli("explain", CONFIGS / "worked_example.yaml", "--output", out)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {out}: No space left on device\n"
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_bad_run_file_is_refused_by_size(tmp_path, monkeypatch):
    from backprop_cli.errors import RunError
    from backprop_cli.files import read_json

    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"status": "completed", "padding": "x" * 1_200_000}))
    monkeypatch.setattr(files_module, "RUN_FILE_LIMIT", files_module.MiB)
    with pytest.raises(RunError, match=r"summary\.json: 1\.1 MiB, over the 1 MiB limit for a run file$"):
        read_json(path)


# -- run-folder files of the wrong shape or types ----------------------------------------------------


@pytest.fixture
def iris_run(cli, tmp_path):
    root = tmp_path / "runs"
    assert cli("train", CONFIGS / "iris.yaml", "--runs-dir", root, "--quiet", "--epochs", "20").exit_code == 0
    return root, next(root.iterdir())


def _patch(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.slow
@pytest.mark.parametrize(
    "file,changes,command,message",
    [
        (
            "summary.json",
            {"started_at": 5},
            ["runs", "compare", "RUN", "RUN"],
            "started_at: input should be a valid string (got 5)",
        ),
        (
            "summary.json",
            {"last_epoch": "x"},
            ["train", str(CONFIGS / "iris.yaml"), "--from", "RUN"],
            "last_epoch: input should be a valid integer (got 'x')",
        ),
        (
            "data.json",
            {"feature_names": 5},
            ["predict", "RUN", "--input", "1,2,3,4"],
            "feature_names: input should be a valid list (got 5)",
        ),
        (
            "data.json",
            {"scaling": {"kind": "standard", "shift": [0.0], "factor": [1.0]}},
            ["predict", "RUN", "--input", "1,2,3,4"],
            "scaling.shift: expected 4 numbers, one per input",
        ),
        (
            "weights.json",
            {"layers": [{"weights": "oops"}]},
            ["predict", "RUN", "--input", "1,2,3,4"],
            "layers.0.weights: input should be a valid list (got 'oops')",
        ),
    ],
    ids=[
        "started_at a number",
        "last_epoch a string",
        "feature_names a number",
        "scaling too short",
        "weights a string",
    ],
)
def test_a_run_file_of_the_wrong_shape_is_one_line_and_exit_1(cli, iris_run, file, changes, command, message):
    root, run = iris_run
    _patch(run / file, **changes)
    args = [str(run) if a == "RUN" else a for a in command]
    result = cli(*args, "--runs-dir", root)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {run / file}: {message}\n"


@pytest.mark.slow
def test_a_broken_summary_is_marked_in_the_listing_and_skipped_by_predict(cli, iris_run, tmp_path):
    root, good = iris_run
    (root / "bad").mkdir()
    (root / "bad" / "config.yaml").write_text((good / "config.yaml").read_text())
    (root / "bad" / "summary.json").write_bytes(b"\xff\xfe not UTF-8")
    listing = cli("runs", "--runs-dir", root)
    assert listing.exit_code == 0
    row = next(line for line in listing.stdout.splitlines() if " bad " in line)
    assert [cell.strip() for cell in row.split("│")][1:4] == ["bad", "", "corrupt"]
    result = cli("predict", "--runs-dir", root, "--input", "5.1,3.5,1.4,0.2", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["class"] == "setosa"


@pytest.mark.slow
def test_a_running_run_whose_process_is_gone_is_stale(cli, iris_run):
    import platform
    import subprocess
    import sys

    root, run = iris_run
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _patch(run / "summary.json", status="running", pid=int(gone.stdout), host=platform.node())
    row = next(line for line in cli("runs", "--runs-dir", root).stdout.splitlines() if run.name in line)
    assert [cell.strip() for cell in row.split("│")][3] == "stale"
    _patch(run / "summary.json", pid=os.getpid())  # a live process: still running
    row = next(line for line in cli("runs", "--runs-dir", root).stdout.splitlines() if run.name in line)
    assert [cell.strip() for cell in row.split("│")][3] == "running"


@pytest.mark.slow
def test_a_run_records_its_process_while_it_runs(cli, write_config, tmp_path, monkeypatch):
    from backprop_cli.run_folders import write as runs_write

    seen = {}
    real = runs_write.finish_run

    def peek(run, *args, **kwargs):
        seen.update(json.loads((run / "summary.json").read_text()))
        return real(run, *args, **kwargs)

    monkeypatch.setattr("backprop_cli.api.finish_run", peek)  # the one code path of train
    assert cli("train", write_config(XOR_YAML), "--runs-dir", tmp_path / "r", "--quiet").exit_code == 0
    assert seen["status"] == "running" and seen["pid"] == os.getpid() and isinstance(seen["host"], str)


@pytest.mark.slow
def test_predict_on_a_diverged_run_says_so(cli, write_config, tmp_path):
    text = (
        XOR_YAML.replace("output_activation: sigmoid", "output_activation: identity")
        .replace("learning_rate: 0.1", "learning_rate: 0.9")
        .replace("epochs: 200", "epochs: 1000")
    )
    root = tmp_path / "r"
    assert cli("train", write_config(text), "--runs-dir", root, "--quiet").exit_code == 1
    run = next(root.iterdir())
    epoch = json.loads((run / "summary.json").read_text())["diverged_at_epoch"]
    result = cli("predict", run, "--input", "0,1")
    assert result.exit_code == 0
    assert (
        result.stderr == f"Warning: {run}: this run diverged at epoch {epoch}: its weights are the last finite ones\n"
    )
    assert "e+" in result.stdout  # a huge output in 4 significant digits, not 150
