"""`backprop train` end to end: exit codes, printed summary, and the run folder contract."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CONFIGS, XOR_YAML

from backprop_cli.run_folders import create_run_dir


def _only_run(root):
    runs = [p for p in root.iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow
def test_train_writes_a_complete_run_folder(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    root = tmp_path / "runs"
    result = cli("train", path, "--runs-dir", root, "--epochs", "300")
    assert result.exit_code == 0, result.output
    run = _only_run(root)
    assert f"run folder: {run}" in result.stdout
    assert "final loss (sse):" in result.stdout and "predictions (final weights)" in result.stdout
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "history.csv", "weights.json", "summary.json", "data.json"} <= names
    # XOR is a 2-input classifier with 5 neurons: every plot applies
    for png in ("loss.png", "accuracy.png", "decision_boundary.png", "network.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert not [n for n in names if n.endswith(".tmp")]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["training"]["epochs"] == 300 and config["name"] == "xor"
    rows = list(csv.reader((run / "history.csv").open()))
    assert rows[0] == ["epoch", "loss", "accuracy"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, 301))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_run"] == 300
    assert summary["final_loss"] == float(rows[-1][1])
    assert summary["learning_rate"] == 0.1 and summary["seed"] == 1
    assert set(summary["versions"]) >= {"backprop", "numpy", "python"}
    weights = json.loads((run / "weights.json").read_text())
    assert [np.shape(l["weights"]) for l in weights["layers"]] == [(2, 2), (1, 2)]
    assert [len(l["biases"]) for l in weights["layers"]] == [2, 1]


@pytest.mark.slow
@pytest.mark.parametrize("coretype", ["SkylakeX", None])
def test_summary_records_numpys_blas_and_its_core_type(cli, write_config, tmp_path, monkeypatch, coretype):
    # the BLAS kernels decide the last bits of every matrix product: reruns compare only alike
    if coretype is None:
        monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    else:
        monkeypatch.setenv("OPENBLAS_CORETYPE", coretype)
    result = cli("train", write_config(XOR_YAML), "--runs-dir", tmp_path / "runs", "--epochs", "5", "--quiet")
    assert result.exit_code == 0, result.output
    blas = json.loads((_only_run(tmp_path / "runs") / "summary.json").read_text())["versions"]["blas"]
    assert blas["OPENBLAS_CORETYPE"] == coretype
    config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    assert (blas["name"], blas["version"]) == (config["name"], config["version"])


@pytest.mark.slow
def test_weights_round_trip_exactly(cli, write_config, tmp_path):
    from backprop_cli.run_folders import load_run

    path = write_config(XOR_YAML)
    root = tmp_path / "runs"
    assert cli("train", path, "--runs-dir", root, "--quiet").exit_code == 0
    run = _only_run(root)
    loaded = load_run(run)
    # retrain in-process: the saved weights must equal the trained ones bit for bit
    from backprop_cli.config import load_config
    from backprop_cli.experiment import dataset, fit, network

    cfg = load_config(path)
    net = network(cfg)
    fit(cfg, dataset(cfg, "x"), net)
    assert np.array_equal(loaded.net.theta, net.theta)


@pytest.mark.slow
def test_quiet_prints_only_the_run_path(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    result = cli("train", write_config(XOR_YAML), "--runs-dir", root, "--quiet")
    assert result.exit_code == 0
    assert result.stdout == f"{_only_run(root)}\n"


@pytest.mark.slow
def test_divergence_exits_1_and_marks_the_run(cli, write_config, tmp_path):
    text = XOR_YAML.replace("output_activation: sigmoid", "output_activation: identity").replace(
        "learning_rate: 0.1", "learning_rate: 1.0e+300"
    )
    root = tmp_path / "runs"
    result = cli("train", write_config(text), "--runs-dir", root)
    assert result.exit_code == 1
    run = _only_run(root)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged"
    epoch = summary["diverged_at_epoch"]
    assert result.stderr.startswith(f"Error: training diverged at epoch {epoch} (learning rate 1e+300)")
    rows = list(csv.reader((run / "history.csv").open()))
    assert len(rows) - 1 == epoch - 1
    assert (run / "weights.json").exists()


@pytest.mark.slow
def test_non_terminal_output_uses_plain_progress_lines(cli, write_config, tmp_path):
    result = cli("train", write_config(XOR_YAML), "--runs-dir", tmp_path / "r")
    assert "epoch 1/200 (0%)  loss " in result.stdout
    assert "epoch 200/200 (100%)  loss " in result.stdout
    assert "ep/s" in result.stdout


def test_run_folders_never_collide(tmp_path):
    made = {create_run_dir(tmp_path, "same") for _ in range(5)}
    assert len(made) == 5


def test_shipped_configs_validate(cli):
    for config in sorted(CONFIGS.glob("*.yaml")):
        result = cli("validate", config)
        assert result.exit_code == 0, (config, result.output)


def test_version(cli):
    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.startswith("backprop ")


def test_from_a_run_without_a_config_trains_with_the_runs_own(cli, write_config, tmp_path):
    runs = tmp_path / "runs"
    assert cli("train", write_config(XOR_YAML), "--runs-dir", runs, "--epochs", "100", "-q").exit_code == 0
    result = cli("train", "--from", "latest", "--runs-dir", runs, "--epochs", "50", "-q")
    assert result.exit_code == 0, result.output
    newest = Path(result.stdout.strip())
    lines = (newest / "history.csv").read_text().splitlines()
    assert lines[1].startswith("101,") and lines[-1].startswith("150,")
    assert json.loads((newest / "summary.json").read_text())["continued"] == "exactly"


def test_train_without_a_config_or_a_run_says_what_it_needs(cli, tmp_path):
    result = cli("train", "--runs-dir", tmp_path)
    assert result.exit_code == 2
    assert "Missing argument 'CONFIG': the YAML config to train (or --from RUN, with the run's own)" in result.output
