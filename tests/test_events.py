"""--tensorboard: the event files, read back with TensorBoard's own reader, hold every history
value of the run (and of each study cell), the learning rate, the histograms and the HParams
summaries."""

import csv
import json
import sys

import numpy as np
import pytest
from conftest import XOR_YAML

pytest.importorskip("tensorboardX")
accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

from backprop_cli.events import histogram_every  # noqa: E402


def _read(folder):
    ea = accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    return ea


def _history(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) if r[k] not in ("", "nan") else np.nan for r in rows]) for k in rows[0]}


def _only(folder):
    found = [p for p in folder.iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
def test_a_run_writes_every_history_value_the_rate_and_histograms(cli, write_config, tmp_path):
    config = write_config(
        XOR_YAML.replace("epochs: 200", "epochs: 250\n  lr_schedule: cosine\n  lr_min: 0.01").replace(
            "  targets: [[0], [1], [1], [0]]", "  targets: [[0], [1], [1], [0]]\n  validation: 0.0"
        )
    )
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "--tensorboard", tmp_path / "tb", "-q")
    assert result.exit_code == 0, result.output
    run = _only(tmp_path / "runs")
    board = _read(_only(tmp_path / "tb"))
    assert _only(tmp_path / "tb").name == run.name
    history = _history(run / "history.csv")
    assert sorted(board.Tags()["scalars"]) == ["accuracy", "learning_rate", "loss"]
    for column in ("loss", "accuracy"):
        events = board.Scalars(column)
        assert [e.step for e in events] == history["epoch"].astype(int).tolist()
        # simple_value is a 32-bit float: every value equals the history's, rounded to it
        assert np.array_equal(np.float32([e.value for e in events]), history[column].astype(np.float32))
    rates = np.array([e.value for e in board.Scalars("learning_rate")])
    epochs = np.arange(1, 251)
    cosine = 0.01 + (0.1 - 0.01) * 0.5 * (1 + np.cos(np.pi * (epochs - 1) / 249))  # epoch 1 at 0.1, 250 at lr_min
    np.testing.assert_allclose(rates, cosine, rtol=1e-6)
    every = histogram_every(250)
    weights = board.Histograms("layer1/weights")
    assert [h.step for h in weights] == list(range(every, 251, every))
    final = json.loads((run / "weights.json").read_text())["layers"]
    last = weights[-1].histogram_value
    w1 = np.array(final[0]["weights"])
    assert (last.num, last.min, last.max) == (4, pytest.approx(w1.min()), pytest.approx(w1.max()))
    assert np.isclose(last.sum, w1.sum())
    tags = set(board.Tags()["histograms"])
    assert tags == {f"layer{l}/{k}" for l in (1, 2) for k in ("weights", "weights_grad", "biases", "biases_grad")}


@pytest.mark.slow
def test_a_run_that_stops_early_writes_its_epochs_only(cli, write_config, tmp_path):
    config = write_config(
        XOR_YAML.replace("epochs: 200", "epochs: 5000\n  stop_at_loss: 0.3").replace(
            "learning_rate: 0.1", "learning_rate: 2.0"
        )
    )
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "--tensorboard", tmp_path / "tb", "-q")
    assert result.exit_code == 0, result.output
    history = _history(_only(tmp_path / "runs") / "history.csv")
    assert len(history["loss"]) < 5000
    events = _read(_only(tmp_path / "tb")).Scalars("loss")
    assert np.array_equal(np.float32([e.value for e in events]), history["loss"].astype(np.float32))


def _hparams(board):
    content = board.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    found = {}
    for key, value in start.session_start_info.hparams.items():
        found[key] = value.string_value or value.number_value
    return found


@pytest.mark.slow
def test_a_sweep_writes_one_run_per_rate_with_hparams(cli, write_config, tmp_path):
    config = write_config(XOR_YAML)
    result = cli(
        "sweep-lr", config, "--lrs", "0.1,0.5", "--runs-dir", tmp_path / "runs", "--tensorboard", tmp_path / "tb", "-q"
    )
    assert result.exit_code == 0, result.output
    study = _only(tmp_path / "runs")
    boards = _only(tmp_path / "tb")
    assert sorted(p.name for p in boards.iterdir()) == ["lr_0.1", "lr_0.5"]
    for rate in ("0.1", "0.5"):
        board = _read(boards / f"lr_{rate}")
        history = _history(study / f"lr_{rate}" / "history.csv")
        events = board.Scalars("loss")
        assert np.array_equal(np.float32([e.value for e in events]), history["loss"].astype(np.float32))
        assert _hparams(board) == {"learning_rate": float(rate)}
        assert board.Scalars("final_loss")[0].value == pytest.approx(history["loss"][-1], rel=1e-6)


@pytest.mark.slow
def test_a_grid_writes_its_cells_with_their_values(cli, write_config, tmp_path):
    config = write_config(XOR_YAML)
    result = cli(
        "sweep", config, "--grid", "model.activation=sigmoid,tanh", "--seeds", "0:2", "--runs-dir", tmp_path / "runs",
        "--tensorboard", tmp_path / "tb", "--epochs", "50",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "TensorBoard: 4 cells under" in result.stderr
    study = _only(tmp_path / "runs")
    boards = _only(tmp_path / "tb")
    with open(study / "grid.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(p.name for p in boards.iterdir()) == sorted(r["run"] for r in rows)
    for row in rows:
        board = _read(boards / row["run"])
        assert _hparams(board) == {"model.activation": row["model.activation"], "seed": float(row["seed"])}
        history = _history(study / row["run"] / "history.csv")
        events = board.Scalars("loss")
        assert np.array_equal(np.float32([e.value for e in events]), history["loss"].astype(np.float32))


def test_without_the_extra_it_says_which(cli, write_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    result = cli("train", write_config(XOR_YAML), "--runs-dir", tmp_path / "runs", "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 2
    assert result.stderr == "Error: --tensorboard needs tensorboardX: pip install 'backprop[tensorboard]'\n"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "tb").exists()


def test_the_loop_hands_rows_over_while_it_trains(write_config, tmp_path):
    # without the final hand-over (close with no result) the file still holds every epoch up
    # to the last histogram epoch: the rows went to the worker during training
    from backprop_cli.config import load_config
    from backprop_cli.events import Board
    from backprop_cli.experiment import dataset, fit, network

    cfg = load_config(write_config(XOR_YAML.replace("epochs: 200", "epochs: 1005")))
    net, data = network(cfg), dataset(cfg, "test")
    board = Board(tmp_path / "tb", cfg.training, net)
    result = fit(cfg, data, net, callback=board)
    board.close()
    events = _read(tmp_path / "tb").Scalars("loss")
    assert [e.step for e in events] == list(range(1, 1001))  # every 10 epochs, up to 1000
    assert np.array_equal(np.float32([e.value for e in events]), result.history["loss"][:1000, 0].astype(np.float32))


def _board(write_config, tmp_path, epochs=1005):
    from backprop_cli.config import load_config
    from backprop_cli.events import Board
    from backprop_cli.experiment import dataset, fit, network

    cfg = load_config(write_config(XOR_YAML.replace("epochs: 200", f"epochs: {epochs}")))
    net, data = network(cfg), dataset(cfg, "test")
    board = Board(tmp_path / "tb", cfg.training, net)
    return board, fit(cfg, data, net, callback=board)


def test_a_worker_that_dies_is_one_warning(write_config, tmp_path):
    import os
    import signal

    board, result = _board(write_config, tmp_path)
    os.kill(board.worker.pid, signal.SIGKILL)
    board.worker.wait()
    assert board.close(result) == [
        f"TensorBoard: the event writer failed (exit status -9): {tmp_path / 'tb'} may be incomplete"
    ]


def test_a_stuck_worker_is_stopped_after_the_wait(write_config, tmp_path):
    import os
    import signal

    board, result = _board(write_config, tmp_path)
    os.kill(board.worker.pid, signal.SIGSTOP)  # it reads nothing more: the pipe fills, the wait ends
    board.pending += b"\0" * (1 << 20)  # more than the pipe holds
    heard = []
    warnings = board.close(result, wait=1.0, notice=heard.append)
    assert warnings == [
        f"TensorBoard: the event writer did not finish within 1 s and was stopped: {tmp_path / 'tb'} may lack the last epochs"
    ]
    assert heard == [f"TensorBoard: writing the last epochs to {tmp_path / 'tb'}..."]
    assert board.worker is None


def test_a_folder_that_cannot_be_written_is_refused_before_training(cli, write_config, tmp_path):
    (tmp_path / "afile").write_text("")
    runs = tmp_path / "runs"
    result = cli("train", write_config(XOR_YAML), "--runs-dir", runs, "--tensorboard", tmp_path / "afile" / "tb")
    assert result.exit_code == 2
    assert (
        result.stderr == f"Error: --tensorboard {tmp_path / 'afile' / 'tb'}: cannot make the folder: Not a directory\n"
    )
    assert not runs.exists()
    result = cli("sweep-lr", write_config(XOR_YAML), "--runs-dir", runs, "--set", "training.tensorboard=''")
    assert result.exit_code == 2
    assert result.stderr == "Error: --tensorboard: give a folder (an empty name is the current folder's files)\n"


@pytest.mark.slow
def test_a_long_study_cell_keeps_a_thousand_points_and_the_last(cli, write_config, tmp_path):
    config = write_config(XOR_YAML.replace("epochs: 200", "epochs: 2500"))
    result = cli(
        "sweep-lr", config, "--lrs", "0.5", "--runs-dir", tmp_path / "runs", "--tensorboard", tmp_path / "tb", "-q"
    )
    assert result.exit_code == 0, result.output
    board = _read(_only(tmp_path / "tb") / "lr_0.5")
    history = _history(_only(tmp_path / "runs") / "lr_0.5" / "history.csv")
    events = board.Scalars("loss")
    steps = [e.step for e in events]
    assert steps == list(range(1, 2501, 3)) and steps[-1] == 2500  # every 3rd epoch, the last among them
    assert np.array_equal(
        np.float32([e.value for e in events]), history["loss"][np.array(steps) - 1].astype(np.float32)
    )
    assert sorted(board.Tags()["histograms"]) == ["layer1/biases", "layer1/weights", "layer2/biases", "layer2/weights"]


@pytest.mark.slow
def test_recorded_diagnostics_are_scalars_too(cli, tmp_path):
    from conftest import CONFIGS

    runs, tb = tmp_path / "runs", tmp_path / "tb"
    result = cli("train", CONFIGS / "dead_relu.yaml", "--epochs", "30", "--runs-dir", runs, "--tensorboard", tb, "-q")
    assert result.exit_code == 0, result.output
    board = _read(_only(tb))
    with open(_only(runs) / "diagnostics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 20
    for r in rows:
        events = {e.step: e.value for e in board.Scalars(f"diagnostics/layer{r['layer']}/{r['quantity']}")}
        assert events[int(r["epoch"])] == np.float32(float(r["value"]))


@pytest.mark.slow
def test_train_says_where_the_event_files_go(cli, write_config, tmp_path):
    result = cli("train", write_config(XOR_YAML), "--runs-dir", tmp_path / "runs", "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 0
    assert f"TensorBoard: {tmp_path / 'tb' / _only(tmp_path / 'runs').name}\n" in result.stderr
