"""backprop runs rm / clean and the list's filters: only folders backprop wrote go, never one
still training, and never without a yes."""

import json
import os

import pytest
from conftest import XOR_YAML

pytestmark = pytest.mark.slow  # each trains runs in a real command


def _runs(cli, write_config, tmp_path, n=2):
    runs = tmp_path / "runs"
    config = write_config(XOR_YAML)
    for _ in range(n):
        assert cli("train", config, "--runs-dir", runs, "-q").exit_code == 0
    return runs, sorted(runs.iterdir())


def _mark(folder, **fields):
    summary = json.loads((folder / "summary.json").read_text())
    summary.update(fields)
    (folder / "summary.json").write_text(json.dumps(summary))


def test_rm_asks_removes_and_refuses_what_is_not_a_run(cli, write_config, tmp_path):
    runs, (a, b) = _runs(cli, write_config, tmp_path)
    result = cli("runs", "rm", a.name, "--runs-dir", runs)  # no terminal to ask at: refused
    assert result.exit_code == 2 and "add --yes to remove without asking" in result.stderr and a.exists()
    (runs / "notes").mkdir()
    result = cli("runs", "rm", a.name, "notes", "--runs-dir", runs, "--yes")
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"Error: {runs / 'notes'}: not a run or study folder backprop wrote (no readable summary.json); nothing removed\n"
    )
    assert a.exists()  # every folder is checked before any is removed
    result = cli("runs", "rm", a.name, "--runs-dir", runs, "--yes")
    assert result.exit_code == 0 and result.stdout == f"removed {a}\n" and not a.exists() and b.exists()


def test_a_run_still_training_is_never_removed(cli, write_config, tmp_path):
    runs, (a, _) = _runs(cli, write_config, tmp_path)
    _mark(a, status="running", pid=os.getpid(), host=os.uname().nodename)
    result = cli("runs", "rm", a.name, "--runs-dir", runs, "--yes")
    assert result.exit_code == 1 and "still training (pid" in result.stderr and a.exists()
    _mark(a, pid=2**22 + 12345)  # its process is gone: stale, and clean takes it
    result = cli("runs", "clean", "--status", "stale", "--runs-dir", runs, "--yes")
    assert result.exit_code == 0 and not a.exists()


def test_clean_and_the_filters(cli, write_config, tmp_path):
    runs, (a, b) = _runs(cli, write_config, tmp_path)
    _mark(a, status="interrupted")
    listed = cli("runs", "--runs-dir", runs, "--status", "interrupted").stdout
    assert a.name in listed and b.name not in listed
    assert cli("runs", "--runs-dir", runs, "--name", "nomatch").stdout == f"no matching runs under {runs}\n"
    assert cli("runs", "clean", "--status", "runnning", "--runs-dir", runs).exit_code == 2
    assert cli("runs", "clean", "--status", "running", "--runs-dir", runs, "--yes").exit_code == 2
    result = cli("runs", "clean", "--status", "failed,interrupted", "--runs-dir", runs, "--yes")
    assert result.exit_code == 0 and not a.exists() and b.exists()
    result = cli("runs", "clean", "--status", "failed", "--runs-dir", runs, "--yes")
    assert result.stdout == "nothing removed\n"


def test_show_of_a_study_prints_its_table(cli, write_config, tmp_path):
    runs = tmp_path / "runs"
    result = cli("sweep", write_config(XOR_YAML), "--grid", "training.learning_rate=0.1,1", "--runs-dir", runs, "-q")
    assert result.exit_code == 0
    study = next(runs.iterdir())
    shown = cli("runs", "show", study).stdout
    assert "grid.csv" in shown and "cell_001" in shown and "cell_002" in shown


def test_every_command_says_one_thing_of_a_missing_run_and_of_a_study(cli, write_config, tmp_path):
    runs = tmp_path / "runs"
    trained = cli("sweep", write_config(XOR_YAML), "--grid", "training.learning_rate=0.1,1", "--runs-dir", runs, "-q")
    assert trained.exit_code == 0
    study = next(runs.iterdir())
    nope = tmp_path / "nope"
    for command in (["predict", nope, "--input", "0,1"], ["evaluate", nope], ["report", nope], ["diagnose", nope],
                    ["export", nope], ["runs", "show", nope]):  # fmt: skip
        missing = cli(*command)
        assert missing.exit_code == 2 and missing.stderr == f"Error: {nope}: no such run folder\n", command
    said = f"Error: {study}: a grid study, not a run: give one of its runs ({study / 'cell_001'})\n"
    for command in (["predict", study, "--input", "0,1"], ["evaluate", study], ["diagnose", study], ["export", study]):
        result = cli(*command)
        assert result.exit_code == 2 and result.stderr == said, command
    result = cli("runs", "compare", study, study / "cell_001")
    assert result.exit_code == 2 and result.stderr == said


def test_numbers_have_one_format(cli, write_config, tmp_path):
    from backprop_cli.cli.display import value_texts

    assert value_texts([0.01, 0.03162277660168379, 1.0]) == ["0.01", "0.0316228", "1"]
    # six digits would show two rates alike: then every digit
    assert value_texts([0.1, 0.10000001]) == ["0.1", "0.10000001"]
    runs, (a, _) = _runs(cli, write_config, tmp_path)
    _mark(a, final_loss=0.06273784828682062, accuracy=0.9833333333333333)
    shown = cli("runs", "show", a).stdout
    assert "0.0627378 " in shown and "0.9833 " in shown and "0.0627378482" not in shown


def test_a_folder_with_anything_backprop_did_not_write_is_never_removed(cli, write_config, tmp_path, monkeypatch):
    runs, (a, b) = _runs(cli, write_config, tmp_path)
    (a / "notes.md").write_text("mine")
    result = cli("runs", "rm", a, "--yes")
    assert (
        result.exit_code == 2
        and result.stderr == f"Error: {a}: holds notes.md, which backprop did not write; nothing removed\n"
    )
    project = tmp_path / "project"  # a user's project: a config.yaml, code, its own runs
    project.mkdir()
    (project / "config.yaml").write_text("model: {layers: [2, 1]}\n")
    (project / "summary.json").write_text('{"status": "failed"}')
    result = cli("runs", "rm", project, "--yes")
    assert (
        result.exit_code == 2 and "its summary.json was not written by backprop" in result.stderr and project.exists()
    )
    monkeypatch.chdir(b)
    result = cli("runs", "rm", ".", "--yes")
    assert (
        result.exit_code == 2
        and result.stderr == "Error: .: the current folder (or one that holds it); nothing removed\n"
    )
    monkeypatch.chdir(tmp_path)
    result = cli("runs", "rm", b, runs / b.name, "--yes")  # the same folder twice: removed once
    assert result.exit_code == 0 and result.stdout == f"removed {b.resolve()}\n"


def test_the_name_filter_takes_a_glob(cli, write_config, tmp_path):
    runs, (a, _) = _runs(cli, write_config, tmp_path)
    assert a.name in cli("runs", "--runs-dir", runs, "--name", "xor-*").stdout
    assert cli("runs", "--runs-dir", runs, "--name", "iris-*").stdout == f"no matching runs under {runs}\n"
