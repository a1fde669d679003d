"""backprop sweep (issue 18): grids over any config key, batched where the maths allows,
resumable, and the same numbers whatever runs the groups."""

import csv
import json

import numpy as np
import pytest
from conftest import CONFIGS, XOR_YAML

from backprop_cli import grid as g
from backprop_cli import results
from backprop_cli.config import load_config
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.run_folders.cells import Cells
from backprop_cli.store import Store


def _rows(folder):
    return list(csv.DictReader((folder / "grid.csv").open()))


def _cells(path, grid, seeds=None):
    return Cells(path, g.parse_grid(grid), seeds, {}, [])


def test_rates_and_seeds_share_one_pass_other_keys_do_not(write_config):
    path = write_config(XOR_YAML)
    rates = ",".join(str(r) for r in np.geomspace(0.05, 5, 16).round(4))
    assert len(_cells(path, [f"training.learning_rate={rates}"], list(range(4))).groups()) == 1  # 64 cells
    cells = _cells(path, ["model.activation=sigmoid,tanh,relu", "model.layers=[2,2,1],[2,3,1],[2,8,1]"])
    assert len(cells.groups()) == 9
    assert len(_cells(path, ["training.momentum=0.5,0.9", "training.optimizer=sgd,momentum"]).groups()) == 2
    assert len(_cells(path, ["training.nesterov=false,true", "training.optimizer=momentum"]).groups()) == 2
    # generated data and minibatches depend on the seed: seeds cannot share a pass there
    moons = _cells(CONFIGS / "moons.yaml", ["training.learning_rate=0.01,0.02"], [0, 1])
    assert [len(group) for group in moons.groups()] == [2, 2]


@pytest.mark.slow
def test_every_cell_equals_a_plain_run_of_it(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    root = tmp_path / "runs"
    args = ["--grid", "model.activation=sigmoid,tanh", "--grid", "training.learning_rate=0.5,2", "--seeds", "3:5"]
    result = cli("sweep", path, *args, "--runs-dir", root, "--workers", "1")
    assert result.exit_code == 0, result.output
    folder = next(root.iterdir())
    rows = _rows(folder)
    assert len(rows) == 8 and {r["status"] for r in rows} == {"completed"}
    for r in rows:
        cfg = load_config(path, {"model.activation": (r["model.activation"], "x"),
                                 "training.learning_rate": (float(r["training.learning_rate"]), "x"),
                                 "seed": (int(r["seed"]), "x")})  # fmt: skip
        alone = fit(cfg, dataset(cfg, "x"), network(cfg))
        assert float(r["final_loss"]) == pytest.approx(alone.final("loss"), rel=1e-12, abs=0)
        weights = json.loads((folder / r["run"] / "weights.json").read_text())["layers"]
        assert np.allclose(weights[0]["weights"], alone.net.get_params(0)[0][0], rtol=1e-12, atol=1e-15)
    # a cell alone in its group is bit for bit a plain run
    result = cli("sweep", path, "--grid", "model.activation=tanh", "--runs-dir", tmp_path / "one", "-q")
    (row,) = _rows(next((tmp_path / "one").iterdir()))
    cfg = load_config(path, {"model.activation": ("tanh", "x")})
    assert float(row["final_loss"]) == fit(cfg, dataset(cfg, "x"), network(cfg)).final("loss")
    # every cell's folder is a complete run that predict loads
    assert cli("predict", folder / "cell_001", "--input", "0,1").exit_code == 0
    assert (folder / "heatmap.png").exists() and (folder / "box.png").exists()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["kind"] == "grid" and summary["cells"] == 8 and summary["groups"] == 2


@pytest.mark.parametrize(
    "grid",
    [
        ["training.optimizer=momentum", "training.momentum=0.3,0.9", "training.weight_decay=0,0.01"],
        ["training.optimizer=adam", "training.beta1=0.8,0.9", "training.beta2=0.99,0.999", "training.eps=1e-8,1e-3"],
        ["training.optimizer=rmsprop", "training.rho=0.5,0.9"],
    ],
)
def test_optimizer_scalars_share_a_pass_and_equal_plain_runs(write_config, tmp_path, grid):
    path = write_config(XOR_YAML)
    cells = _cells(path, grid)
    assert len(cells.groups()) == 1 and len(cells) > 1
    (job,) = g.plan(cells, range(len(cells)), "x", 0.01, 1, g.memory_budget())
    chunk = g.train_job(job)
    for k, i in enumerate(chunk.cells):
        cfg = cells.cfg(int(i))
        alone = fit(cfg, dataset(cfg, "x"), network(cfg))
        assert chunk.finals["loss"][k] == pytest.approx(alone.final("loss"), rel=1e-12, abs=0), cells.label(int(i))
        assert np.allclose(chunk.weights[k], alone.net.theta[0], rtol=1e-12, atol=1e-15)


@pytest.mark.slow
def test_workers_and_executors_change_no_bit(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    args = ["--grid", "model.activation=sigmoid,tanh,relu", "--grid", "model.layers=[2,2,1],[2,4,1]", "-q"]
    tables = []
    runs = [("1", "local"), ("2", "local")]
    try:
        import dask.distributed  # noqa: F401

        runs.append(("2", "dask"))
    except ImportError:
        pass
    for workers, executor in runs:
        root = tmp_path / f"{executor}{workers}"
        result = cli("sweep", path, *args, "--workers", workers, "--executor", executor, "--runs-dir", root)
        assert result.exit_code == 0, result.output
        folder = next(root.iterdir())
        tables.append([{k: v for k, v in r.items()} for r in _rows(folder)])
        tables[-1].append((folder / "cell_006" / "weights.json").read_text())
    assert all(t == tables[0] for t in tables[1:])
    assert len(runs) == 3, "dask.distributed is in the test extra: the LocalCluster run must not be skipped"


@pytest.mark.slow
def test_a_grid_resumes_where_it_stopped(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    root = tmp_path / "runs"
    args = [
        "sweep",
        path,
        "--grid",
        "model.activation=sigmoid,tanh",
        "--seeds",
        "0:2",
        "--name",
        "s",
        "--runs-dir",
        root,
    ]
    assert cli(*args, "-q").exit_code == 0
    folder = next(root.iterdir())
    first = _rows(folder)
    store = Store.open(folder, writable=True)
    store.arrays["cell.done"][2] = False  # as if it had been cut short
    store.arrays["cell.done"].flush()
    del store
    result = cli(*args)
    assert result.exit_code == 0
    assert "4 cells in 2 batched groups; 3 finished before, skipped; 1 chunk to train" in result.stdout
    assert list(root.iterdir()) == [folder] and _rows(folder) == first
    other = cli("sweep", path, "--grid", "model.activation=tanh", "--name", "s", "--runs-dir", root, "-q")
    assert other.exit_code == 0 and len(list(root.iterdir())) == 2  # another grid: another folder


def test_a_bad_cell_is_named_before_anything_trains(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    root = tmp_path / "runs"
    result = cli("sweep", path, "--grid", "model.activation=tanh,softmax", "--runs-dir", root)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: grid cell model.activation=softmax: ")
    assert not root.exists()
    result = cli("sweep", path, "--grid", "model.activation", "--runs-dir", root)
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: --grid model.activation: expected KEY=V1,V2,... (e.g. model.activation=sigmoid,tanh)\n"
    )


@pytest.mark.slow
def test_the_table_is_sorted_by_the_chosen_column(cli, tmp_path):
    args = ["--grid", "training.learning_rate=0.005,0.02", "--epochs", "30", "--sort", "val_accuracy"]
    result = cli("sweep", CONFIGS / "iris.yaml", *args, "--runs-dir", tmp_path, "--workers", "1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = [c.strip() for c in next(line for line in lines if "┃ " in line).split("┃")]
    rows = [line for line in lines if "cell_" in line]
    accuracies = [float(line.split("│")[header.index("val_accuracy")]) for line in rows]
    assert accuracies == sorted(accuracies, reverse=True) and len(rows) == 2


@pytest.mark.slow
def test_ctrl_c_keeps_finished_cells_and_exits_130(write_config, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 3000000"))
    cmd = [sys.executable, "-m", "backprop_cli", "sweep", str(path), "--grid", "model.activation=sigmoid,tanh",
           "--workers", "1", "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    first = child.stdout.readline()  # printed once every cell validated, before training starts
    assert "2 cells in 2 batched groups" in first
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "Interrupted; 0 of 2 cells finished. Run with --name NAME to make a grid resumable." in stderr
    assert "Traceback" not in stderr
    folder = next((tmp_path / "runs").iterdir())
    assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
def test_cell_plots_only_when_asked(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    for flags, root in (
        ([], tmp_path / "bare"),
        (["--plots", "summary"], tmp_path / "also"),
        (["--plots", "all"], tmp_path / "drawn"),
    ):
        assert (
            cli("sweep", path, "--grid", "training.learning_rate=0.5,1", *flags, "--runs-dir", root, "-q").exit_code
            == 0
        )
        pngs = sorted(p.name for p in (next(root.iterdir()) / "cell_001").glob("*.png"))
        assert pngs == (
            [] if "all" not in flags else ["accuracy.png", "decision_boundary.png", "loss.png", "network.png"]
        )


def test_sort_by_epochs_to_target_puts_the_fastest_first_and_an_unknown_column_is_refused(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    args = ["--grid", "training.learning_rate=0.5,2,1", "--runs-dir", tmp_path / "runs", "--workers", "1"]
    rows = results.sort_rows(
        [
            {"epochs_to_target": 30, "run": "a"},
            {"epochs_to_target": None, "run": "b"},
            {"epochs_to_target": 10, "run": "c"},
        ],
        "epochs_to_target",
    )
    assert [r["run"] for r in rows] == ["c", "a", "b"]
    assert [
        r["run"] for r in results.sort_rows([{"accuracy": 0.5, "run": "a"}, {"accuracy": 1.0, "run": "b"}], "accuracy")
    ] == ["b", "a"]
    result = cli("sweep", path, *args, "--sort", "speed")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: --sort speed: not a column of grid.csv; one of final_loss, best_loss,")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_running_dask_scheduler_gets_the_groups(cli, write_config, tmp_path):
    distributed = pytest.importorskip("dask.distributed", reason="the [dask] extra is not installed")
    path = write_config(XOR_YAML)
    args = ["--grid", "model.activation=sigmoid,tanh", "-q"]
    assert cli("sweep", path, *args, "--runs-dir", tmp_path / "local").exit_code == 0
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        result = cli("sweep", path, *args, "--executor", "dask", "--scheduler", address, "--runs-dir", tmp_path / "d")
    assert result.exit_code == 0, result.output
    assert _rows(next((tmp_path / "d").iterdir())) == _rows(next((tmp_path / "local").iterdir()))
    result = cli("sweep", path, *args, "--scheduler", address, "--runs-dir", tmp_path / "x")
    assert result.exit_code == 2 and result.stderr == "Error: --scheduler goes with --executor dask\n"


@pytest.mark.slow
def test_sweep_takes_lr_seed_and_target_as_train_and_sweep_lr_do(cli, write_config, tmp_path):
    import json

    from conftest import XOR_YAML

    runs = tmp_path / "runs"
    result = cli("sweep", write_config(XOR_YAML), "--grid", "model.activation=sigmoid,tanh", "--lr", "0.5", "--seed",
                 "3", "--target", "0.3", "--runs-dir", runs)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cells reached loss 0.3" in result.stdout
    study = next(runs.iterdir())
    cell = (study / "cell_001" / "config.yaml").read_text()
    assert "seed: 3" in cell and "learning_rate: 0.5" in cell
    plain = cli("train", write_config(XOR_YAML), "--lr", "0.5", "--seed", "3", "--runs-dir", tmp_path / "plain", "-q")
    assert plain.exit_code == 0
    grid_loss = json.loads((study / "cell_001" / "summary.json").read_text())["final_loss"]
    assert grid_loss == json.loads((next((tmp_path / "plain").iterdir()) / "summary.json").read_text())["final_loss"]
    both = cli("sweep", write_config(XOR_YAML), "--grid", "model.activation=tanh", "--seed", "3", "--seeds", "0:2")
    assert both.exit_code == 2 and both.stderr.startswith("Error: --seed goes with a grid of one seed")
