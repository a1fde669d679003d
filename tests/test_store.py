"""Studies at scale: every cell's numbers in one store, run folders on demand and byte for byte,
resumable after SIGKILL at chunk granularity, sized and refused before anything trains."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, XOR_YAML

from backprop_cli import grid as g
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.run_folders.cells import Cells, export_cell, folder_name
from backprop_cli.store import Store


def _rows(folder):
    return list(csv.DictReader((folder / "grid.csv").open()))


def _study(root):
    (folder,) = [p for p in root.iterdir() if "-grid-" in p.name]
    return folder


def _rates(n, low=0.05, high=5.0):
    return ",".join(f"{r:.6g}" for r in np.geomspace(low, high, n))


@pytest.mark.slow
def test_the_store_holds_what_plain_runs_give(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    args = ["--grid", "model.activation=sigmoid,tanh", "--grid", "training.learning_rate=0.5,2", "--seeds", "3:5"]
    assert cli("sweep", path, *args, "--runs-dir", tmp_path, "-q").exit_code == 0
    folder = _study(tmp_path)
    store = Store.open(folder)
    cells = Cells.from_spec(json.loads((folder / "grid.json").read_text()))
    assert store.done().all() and len(cells) == 8
    for i in range(len(cells)):
        cfg = cells.cfg(i)
        net = network(cfg)
        alone = fit(cfg, dataset(cfg, "x"), net)
        epochs, history = store.history(i)
        assert np.array_equal(epochs, alone.epochs)
        np.testing.assert_allclose(history["loss"], alone.history["loss"][:, 0], rtol=1e-12, atol=0)
        np.testing.assert_allclose(store.arrays["weights"][i], net.theta[0], rtol=1e-12, atol=1e-15)


@pytest.mark.slow
def test_the_folder_is_the_size_of_its_arrays(cli, write_config, tmp_path):
    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 1000"))
    args = ["--grid", f"training.learning_rate={_rates(64)}", "--seeds", "0:4", "--runs-dir", tmp_path, "-q"]
    assert cli("sweep", path, *args).exit_code == 0
    folder = _study(tmp_path)
    store = Store.open(folder)
    blocks = sum(os.stat(p).st_blocks * 512 for p in folder.rglob("*") if p.is_file())
    assert store.layout.nbytes() > 4_000_000 and blocks <= 1.2 * store.layout.nbytes()


@pytest.mark.slow
def test_a_cell_exported_is_byte_for_byte_the_folder_the_study_wrote(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    assert cli("sweep", path, "--grid", "training.learning_rate=0.5,1,2", "--runs-dir", tmp_path, "-q").exit_code == 0
    folder = _study(tmp_path)
    written = {p.name: p.read_bytes() for p in (folder / "cell_002").iterdir()}
    assert {"config.yaml", "history.csv", "weights.json", "summary.json", "checkpoint.npz"} <= set(written)
    again = export_cell(folder, 1, tmp_path / "again", plots=False)
    assert {p.name: p.read_bytes() for p in again.iterdir()} == written
    result = cli("runs", "export", folder, "cell_002", "--output", tmp_path / "cli", "--no-plots")
    assert result.exit_code == 0 and result.stdout.strip() == str(tmp_path / "cli")
    assert {p.name: p.read_bytes() for p in (tmp_path / "cli").iterdir()} == written


@pytest.mark.slow
def test_a_large_study_keeps_cells_in_the_store_and_commands_take_a_cell(cli, write_config, tmp_path):
    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 50"))
    result = cli("sweep", path, "--grid", f"training.learning_rate={_rates(65)}", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    folder = _study(tmp_path)
    assert not any(p.name.startswith("cell_") for p in folder.iterdir())  # 65 cells: no run folders
    assert "the best 20 of 65 cells by final_loss" in result.stdout
    assert len([line for line in result.stdout.splitlines() if "cell_0" in line]) == 20
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["cells"] == 65 and "models" not in summary and summary["run_folders"] == "none"
    # a cell is a run wherever a command takes one: its folder is written from the store
    predicted = cli("predict", folder / "cell_017", "--input", "0,1")
    assert predicted.exit_code == 0, predicted.output
    assert (folder / "cell_017" / "summary.json").exists()
    assert cli("explain", folder / "cell_017" / "config.yaml", "--epoch", "2").exit_code == 0
    assert not (folder / "cell_018").exists()
    assert cli("explain", folder / "cell_018", "--epoch", "2").exit_code == 0  # a cell, as a run
    assert cli("runs", "show", folder / "cell_017").exit_code == 0
    import backprop_cli as bp

    assert bp.load(folder / "cell_033").summary["status"] == "completed"
    continued = cli("train", path, "--from", folder / "cell_020", "--epochs", "5", "--runs-dir", tmp_path, "-q")
    assert continued.exit_code == 0, continued.output
    missing = cli("predict", folder / "cell_099", "--input", "0,1")
    assert missing.exit_code == 2
    assert missing.stderr == f"Error: {folder}: has cells cell_001 to cell_065; no cell 99\n"


@pytest.mark.slow
def test_run_folders_best_n_and_none(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    args = ["--grid", "training.learning_rate=0.1,0.5,2", "-q"]
    assert cli("sweep", path, *args, "--run-folders", "best:1", "--runs-dir", tmp_path / "a").exit_code == 0
    folder = _study(tmp_path / "a")
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("cell_")) == ["cell_003"]
    assert cli("sweep", path, *args, "--run-folders", "none", "--runs-dir", tmp_path / "b").exit_code == 0
    assert not any(p.name.startswith("cell_") for p in _study(tmp_path / "b").iterdir())
    bad = cli("sweep", path, *args, "--run-folders", "best", "--runs-dir", tmp_path / "c")
    assert (
        bad.exit_code == 2 and bad.stderr == "Error: --run-folders best: expected all, none or best:N (e.g. best:10)\n"
    )


@pytest.mark.slow
def test_history_every_n_keeps_every_nth_epoch_and_the_final_values(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    args = ["--grid", "training.learning_rate=0.5,2", "--history", "every:10", "--run-folders", "none", "-q"]
    assert cli("sweep", path, *args, "--runs-dir", tmp_path / "a").exit_code == 0
    assert (
        cli("sweep", path, "--grid", "training.learning_rate=0.5,2", "-q", "--runs-dir", tmp_path / "b").exit_code == 0
    )
    thin, full = Store.open(_study(tmp_path / "a")), Store.open(_study(tmp_path / "b"))
    assert thin.arrays["history.loss"].shape == (2, 20) and full.arrays["history.loss"].shape == (2, 200)
    assert np.array_equal(thin.arrays["history.loss"], full.arrays["history.loss"][:, ::10])
    assert _rows(_study(tmp_path / "a")) == [
        {**r, "run": r["run"]} for r in _rows(_study(tmp_path / "b"))
    ]  # the table's final values are the last epoch's
    bad = cli("sweep", path, "--grid", "training.learning_rate=1", "--history", "10", "--runs-dir", tmp_path / "c")
    assert bad.exit_code == 2 and bad.stderr == "Error: --history 10: expected all or every:N (e.g. every:10)\n"


def test_a_store_that_would_not_fit_the_disk_is_refused_before_training(cli, write_config, tmp_path, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(g.shutil, "disk_usage", lambda path: usage(10 * 2**30, 8 * 2**30, int(2.1 * 2**30)))
    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 50000"))
    root = tmp_path / "runs"
    root.mkdir()
    result = cli("sweep", path, "--grid", "training.learning_rate=0.5", "--seeds", "0:10000", "--runs-dir", root)
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: 10,000 cells x 50,000 epochs of history need 7.5 GiB on disk; 2.1 GiB free at {root}\n"
    )
    assert not any(root.iterdir())  # nothing trained, no study folder left


@pytest.mark.slow
def test_grid_parquet_has_the_table_with_types(cli, write_config, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    path = write_config(XOR_YAML)
    assert cli("sweep", path, "--grid", "training.learning_rate=0.5,2", "--runs-dir", tmp_path, "-q").exit_code == 0
    folder = _study(tmp_path)
    table = pq.read_table(folder / "grid.parquet").to_pylist()
    rows = _rows(folder)
    assert [r["run"] for r in table] == [r["run"] for r in rows]
    assert [repr(r["final_loss"]) for r in table] == [r["final_loss"] for r in rows]
    assert isinstance(table[0]["epochs_run"], int)


@pytest.mark.slow
def test_a_study_killed_with_sigkill_resumes_from_its_last_chunk(write_config, tmp_path):
    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 3000"))
    root = tmp_path / "runs"
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    args = [sys.executable, "-m", "backprop_cli", "sweep", str(path), "--grid", f"training.learning_rate={_rates(16)}"]
    args += ["--seeds", "0:4", "--chunk", "4", "--workers", "1", "--name", "k", "--runs-dir", str(root)]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in child.stderr:  # the child says when a tenth of the models have trained
        if line.startswith("models trained: "):
            break
    child.kill()
    child.wait(timeout=60)
    folder = _study(root)
    done = Store.open(folder).done()
    assert 0 < done.sum() < 64 and done.sum() % 4 == 0  # whole chunks only
    resumed = subprocess.run(args + ["-q"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run(
        args[:-4] + ["--runs-dir", str(tmp_path / "straight"), "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr
    assert _rows(folder) == _rows(_study(tmp_path / "straight"))
    assert Store.open(folder).done().all()


@pytest.mark.slow
def test_two_resumes_of_one_study_at_once_are_refused(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    args = ["sweep", path, "--grid", "training.learning_rate=0.5", "--name", "same", "--runs-dir", tmp_path, "-q"]
    assert cli(*args).exit_code == 0
    folder = _study(tmp_path)
    with g.locked(folder):
        result = cli(*args)
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: {folder}: pid {os.getpid()} is writing this study; wait for it, or give another --name\n"
    )


def test_cells_are_counted_before_they_are_built(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    values = ",".join(str(v) for v in range(1, 2001))
    result = cli("sweep", path, "--grid", f"training.epochs={values}", "--grid", f"training.batch_size={values}",
                 "--grid", "model.layers=[2,2,1],[2,3,1]", "--runs-dir", tmp_path, "--memory", "0.01")  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr == "Error: the grid has 8,000,000 cells; at most 5,242 fit this machine (see --memory)\n"


def test_folder_names_widen_with_the_study():
    assert folder_name(0, 60) == "cell_001" and folder_name(416, 1024) == "cell_0417"


@pytest.mark.slow
@pytest.mark.parametrize(
    "workers, said",
    [
        ("1", "stopping: the chunk in progress is kept where it finished..."),
        ("2", "stopping: chunks in progress are dropped (--name resumes them)..."),
    ],
)
def test_interrupting_a_sweep_says_what_happens_to_its_chunks(write_config, tmp_path, workers, said):
    """In this process the chunk in progress is kept; in worker processes it is dropped."""
    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 3000000"))
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    args = [sys.executable, "-m", "backprop_cli", "sweep", str(path), "--grid", "training.learning_rate=0.1,0.2"]
    args += ["--grid", "model.activation=sigmoid,tanh", "--workers", workers, "--runs-dir", str(tmp_path / "r")]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert "4 cells in 2 batched groups" in child.stdout.readline()
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert said in stderr and "Traceback" not in stderr
    assert "Interrupted; 0 of 4 cells finished." in stderr


_FORKING: list = []  # armed: the next fork's parent gets Ctrl-C inside an at-fork hook, as logging's


def _ctrl_c_in_the_hook() -> None:
    if _FORKING:
        _FORKING.clear()
        os.kill(os.getpid(), signal.SIGINT)
        len(_FORKING)  # a call: Python runs the signal's handler here, inside the hook


os.register_at_fork(after_in_parent=_ctrl_c_in_the_hook)


def test_a_ctrl_c_while_the_pool_forks_its_workers_stops_the_grid(write_config):
    """Ctrl-C right after a sweep's first line landed in the pool's forks, where Python runs
    the at-fork hooks (logging's among them) and drops what they raise: the grid trained on."""
    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 2000"))
    cells = Cells(path, {"model.activation": ["sigmoid", "tanh"]}, None, {}, [])
    jobs = g.plan(cells, range(2), str(path), 0.01, 1, g.memory_budget())
    assert len(jobs) == 2
    _FORKING.append(True)
    try:
        with pytest.raises(KeyboardInterrupt):
            list(g.execute(jobs, workers=2))
    finally:
        _FORKING.clear()


@pytest.mark.slow
def test_a_dask_worker_killed_mid_study_loses_nothing_and_counts_nothing_twice(write_config, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 30000"))
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    grid = ["--grid", f"training.learning_rate={_rates(8)}", "--chunk", "2", "-q"]
    local = subprocess.run(
        [sys.executable, "-m", "backprop_cli", "sweep", str(path), *grid, "--runs-dir", str(tmp_path / "local")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            args = [sys.executable, "-m", "backprop_cli", "sweep", str(path), *grid[:-1], "--executor", "dask"]
            args += ["--scheduler", cluster.scheduler_address, "--runs-dir", str(tmp_path / "dask")]
            child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for line in child.stderr:  # the first chunk came back: the worker is on the next one
                if line.startswith("models trained: "):
                    break
            for pid in client.run(os.getpid).values():
                os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker; the chunk runs again there
            _, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, stderr
    folder = _study(tmp_path / "dask")
    assert _rows(folder) == _rows(_study(tmp_path / "local"))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["trained"] == 8 and summary["statuses"] == {"completed": 8}


@pytest.mark.slow
def test_per_layer_learning_rates_batched_equal_plain_runs_and_explain_shows_each_rows_rate(cli, tmp_path):
    from backprop_cli.api import config
    from backprop_cli.explain import explain_step

    path = CONFIGS / "xor.yaml"
    sets = ["training.epochs=300"]
    cells = Cells(
        path, {"training.learning_rate.0": [0.2, 2.0], "training.learning_rate.1": [0.5, 4.0]}, None, {}, sets
    )
    (job,) = g.plan(cells, range(4), str(path), 0.01, 1, g.memory_budget())  # per-layer rates share one pass
    chunk = g.train_job(job)
    for k, i in enumerate(chunk.cells):
        cfg = cells.cfg(int(i))
        assert cfg.training.learning_rate == [cells.values(int(i))[f"training.learning_rate.{n}"] for n in (0, 1)]
        net = network(cfg)
        fit(cfg, dataset(cfg, "x"), net)
        np.testing.assert_allclose(chunk.weights[k], net.theta[0], rtol=1e-12, atol=1e-15)
    # --set training.learning_rate.1=3 turns the one rate into one per layer
    cfg = config(path, training__epochs=5, training__learning_rate=0.5)
    assert cfg.training.learning_rate == 0.5
    result = cli("train", path, "--set", "training.learning_rate.1=3", "--epochs", "5", "--runs-dir", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    summary = json.loads(next(tmp_path.iterdir()).joinpath("summary.json").read_text())
    assert summary["learning_rate"] == [0.1, 3]
    cfg = config(path, training__learning_rate=[0.5, 2.0], training__epochs=10)
    sections, (_, old, new) = explain_step(cfg, dataset(cfg, "x"), epoch=1)
    rows = {r[0]: r for r in sections[-1].rows}
    assert "learning rates by layer 0.5, 2," in sections[-1].title
    assert rows["w1"][4] == "0.5" and rows["w5"][4] == "2"
    w1 = float(rows["w1"][2]) - 0.5 * float(rows["w1"][3])
    assert float(rows["w1"][-1]) == pytest.approx(w1, rel=1e-8)
    bad = cli("train", path, "--set", "training.learning_rate=[0.5,2,3]", "--runs-dir", tmp_path)
    assert bad.exit_code == 2
    assert bad.stderr == (
        f"Error: {path}: training.learning_rate (from --set training.learning_rate): needs one rate per layer: "
        "2 (got 3)\n"
    )


@pytest.mark.slow
def test_the_trainability_map_colours_follow_the_cells_statuses(cli, tmp_path):
    from PIL import Image

    args = ["--grid", "training.learning_rate.0=log:0.01:100:16", "--grid", "training.learning_rate.1=log:0.01:100:16"]
    result = cli("sweep", CONFIGS / "trainability.yaml", *args, "--epochs", "200", "--runs-dir", tmp_path, "-q")
    assert result.exit_code == 0, result.output
    folder = _study(tmp_path)
    rows = _rows(folder)
    assert {r["status"] for r in rows} == {"completed", "diverged"}  # both sides of the boundary
    image = np.asarray(Image.open(folder / "landscape.png").convert("RGB"), float)
    # the map's pixels: find the axes' box as the region of saturated colour
    red = (image[..., 0] > image[..., 2] + 40) & (image[..., 1] < 200)
    blue = (image[..., 2] > image[..., 0] + 40) & (image[..., 1] < 230)
    ys, _ = np.nonzero(red | blue)
    columns = np.flatnonzero((red | blue).any(axis=0))
    gap = np.flatnonzero(np.diff(columns) > 1)  # the map, then the two colour bars to its right
    left, right = columns[0], columns[gap[0]] if gap.size else columns[-1]
    box = image[ys.min() : ys.max() + 1, left : right + 1]
    h, w = box.shape[:2]
    for r in rows:
        i = int(r["run"].split("_")[1]) - 1
        a, b = divmod(i, 16)  # learning_rate.0 up the y axis (origin at the bottom), .1 along x
        pixel = box[int((15 - a + 0.5) * h / 16), int((b + 0.5) * w / 16)]
        is_red = pixel[0] > pixel[2]
        assert is_red == (r["status"] == "diverged"), (r["run"], r["status"], pixel)


@pytest.mark.slow
def test_a_search_trains_its_trials_as_plain_runs_and_resumes(cli, tmp_path):
    from backprop_cli.search import parse_space, sample

    args = ["search", CONFIGS / "xor.yaml", "--space", "training.learning_rate=log:0.05:5"]
    args += ["--space", "model.activation=choice:sigmoid,tanh", "--trials", "12", "--epochs", "200"]
    args += ["--name", "s", "--runs-dir", tmp_path, "-q"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    folder = next(p for p in tmp_path.iterdir() if "-search-" in p.name)
    spec = json.loads((folder / "grid.json").read_text())
    points = sample(parse_space(spec["space"]), 12, "random", 0)
    assert spec["trials"] == points  # the trials are those the seeded sampler draws
    cells = Cells.from_spec(spec)
    store = Store.open(folder)
    assert len(cells.groups()) == 2  # one batched pass per activation
    for i in range(len(cells)):
        assert cells.values(i) == points[i]
        cfg = cells.cfg(i)
        net = network(cfg)
        fit(cfg, dataset(cfg, "x"), net)
        np.testing.assert_allclose(store.arrays["weights"][i], net.theta[0], rtol=1e-12, atol=1e-15)
    assert (folder / "search.png").exists()
    assert json.loads((folder / "summary.json").read_text())["kind"] == "search"
    again = cli(*args[:-1])
    assert "12 finished before, skipped" in again.stdout
    assert len([p for p in tmp_path.iterdir() if "-search-" in p.name]) == 1


@pytest.mark.slow
def test_sobol_trials_cover_the_space_evenly():
    from backprop_cli.search import parse_space, sample

    space = parse_space(["training.momentum=uniform:0:1"])
    points = [p["training.momentum"] for p in sample(space, 64, "sobol", 0)]
    # a scrambled Sobol sequence of 64 points puts exactly one in each sixty-fourth of [0, 1)
    assert sorted(int(v * 64) for v in points) == list(range(64))
    randoms = [p["training.momentum"] for p in sample(space, 64, "random", 0)]
    assert len({int(v * 64) for v in randoms}) < 64


@pytest.mark.slow
def test_tpe_asks_a_generation_at_a_time_and_tells_it_back(tmp_path):
    pytest.importorskip("optuna")
    import optuna

    from backprop_cli.search import adaptive, parse_space

    space = parse_space(["training.learning_rate=log:0.01:1", "model.activation=choice:sigmoid,tanh"])
    seen = []

    def train(points):
        seen.append(len(points))
        return [
            None if p["model.activation"] == "tanh" and i == 0 else p["training.learning_rate"]
            for i, p in enumerate(points)
        ]

    points, interrupted = adaptive(space, 10, 4, 0, tmp_path / "o.db", False, train)
    assert seen == [4, 4, 2] and len(points) == 10 and not interrupted
    study = optuna.load_study(study_name="backprop", storage=f"sqlite:///{tmp_path / 'o.db'}")
    assert [t.params for t in study.trials] == points  # told back in the order asked
    for t, p in zip(study.trials, points):
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value == p["training.learning_rate"]
        else:
            assert t.state == optuna.trial.TrialState.FAIL
    # a later generation is drawn from what was told: TPE, not random (seeded: the same again)
    again, _ = adaptive(space, 10, 4, 0, tmp_path / "p.db", False, train)
    assert again == points

    def stop(points):
        raise KeyboardInterrupt

    points, interrupted = adaptive(space, 10, 4, 0, tmp_path / "q.db", False, stop)
    assert interrupted and len(points) == 4


@pytest.mark.slow
def test_a_tpe_search_trains_generations_into_one_store_beside_its_optuna_study(cli, tmp_path):
    pytest.importorskip("optuna")
    import optuna

    args = ["search", CONFIGS / "xor.yaml", "--space", "training.learning_rate=log:0.05:5", "--sampler", "tpe"]
    args += ["--trials", "12", "--generation", "5", "--epochs", "200", "--seeds", "0:2", "--runs-dir", tmp_path, "-q"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    folder = next(p for p in tmp_path.iterdir() if "-search-" in p.name)
    spec = json.loads((folder / "grid.json").read_text())
    assert len(spec["trials"]) == 12 and spec["sampler"] == "tpe" and spec["generation"] == 5
    study = optuna.load_study(study_name="backprop", storage=f"sqlite:///{folder / 'optuna.db'}")
    assert [t.params for t in study.trials] == spec["trials"]
    cells = Cells.from_spec(spec)
    store = Store.open(folder)
    assert store.done().all() and len(cells) == 24
    final = store.arrays["final.loss"]
    for t, trial in enumerate(study.trials):  # told: the mean final loss over the trial's seeds
        assert trial.value == pytest.approx(float(np.mean(final[2 * t : 2 * t + 2])), rel=1e-12)
    for i in (0, 13, 23):  # every cell as a plain run of its config
        cfg = cells.cfg(i)
        net = network(cfg)
        fit(cfg, dataset(cfg, "x"), net)
        np.testing.assert_allclose(store.arrays["weights"][i], net.theta[0], rtol=1e-12, atol=1e-15)
    assert json.loads((folder / "summary.json").read_text())["status"] == "completed"


def test_tpe_without_optuna_names_the_extra(cli, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "optuna", None)
    args = ["--space", "training.learning_rate=log:0.1:1", "--sampler", "tpe", "--runs-dir", tmp_path / "r"]
    result = cli("search", CONFIGS / "xor.yaml", *args)
    assert result.exit_code == 2
    assert result.stderr == "Error: --sampler tpe needs Optuna: pip install 'backprop[optuna]'\n"
    assert not (tmp_path / "r").exists()
    result = cli("search", CONFIGS / "xor.yaml", *args, "--halving")
    assert result.stderr == "Error: --halving goes with the random and sobol samplers (tpe chooses its trials itself)\n"


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--space", "training.learning_rate=gauss:0:1"],
            "Error: --space training.learning_rate=gauss:0:1: unknown distribution 'gauss'; one of log, uniform, int, choice\n",
        ),
        (
            ["--space", "training.learning_rate=log:1:0.1"],
            "Error: --space training.learning_rate=log:1:0.1: an empty range; needs 0 < LOW <= HIGH\n",
        ),
        (["--space", "training.learning_rate=log:0.1:1", "--trials", "0"], "Error: --trials 0: must be >= 1\n"),
        (
            ["--space", "training.learning_rate=log:0.1:1", "--sampler", "grid"],
            "Error: --sampler grid: one of random, sobol, tpe\n",
        ),
        ([], "Error: give at least one --space KEY=DIST\n"),
        (["--space", "training.learning_rate=log:0.1:1", "--sort", "speed"], None),
    ],
)
def test_bad_search_input_is_one_line_exit_2(cli, tmp_path, args, message):
    result = cli("search", CONFIGS / "xor.yaml", *args, "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2, result.output
    if message is not None:
        assert result.stderr == message
    assert not (tmp_path / "r").exists()


def test_a_space_key_that_is_not_a_config_key_is_refused(cli, tmp_path):
    result = cli("search", CONFIGS / "xor.yaml", "--space", "training.learnig_rate=log:0.1:1", "--runs-dir", tmp_path)
    assert result.exit_code == 2
    assert "learnig_rate" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- what a hostile round found in the new code -------------------------------------------------


@pytest.mark.slow
def test_a_truncated_store_is_refused_on_resume_not_zero_filled(cli, write_config, tmp_path):
    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 10"))
    args = ["sweep", path, "--grid", "training.learning_rate=log:0.1:1:70", "--name", "t", "--runs-dir", tmp_path, "-q"]
    assert cli(*args).exit_code == 0
    folder = _study(tmp_path)
    with open(folder / "store" / "weights.npy", "r+b") as f:
        f.truncate(200)
    result = cli(*args)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {folder / 'store' / 'weights.npy'}: truncated (200 bytes, at least ")
    assert (folder / "store" / "weights.npy").stat().st_size == 200  # left as it was found


@pytest.mark.slow
@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda m: m.update(step=-1), "step: -1 is not a count (a whole number from 0)"),
        (lambda m: m.update(epoch="30"), "epoch: '30' is not a count (a whole number from 0)"),
        (lambda m: m.update(epoch=True), "epoch: True is not a count (a whole number from 0)"),
        (lambda m: m["batch_order"].update(bit_generator="MT19937"), "batch_order: not the state of a PCG64 generator"),
        (lambda m: m["batch_order"]["state"].update(state="abc"), "batch_order.state.state: 'abc' is not a count"),
    ],
)
def test_a_corrupt_checkpoint_value_is_one_line_exit_1(cli, tmp_path, edit, message):
    sets = ["--set", "training.optimizer=adam", "--set", "training.batch_size=2"]
    first = cli("train", CONFIGS / "xor.yaml", "--epochs", "30", *sets, "--runs-dir", tmp_path / "a", "-q")
    run = Path(first.stdout.strip())
    meta = json.loads((run / "checkpoint.json").read_text())
    edit(meta)
    (run / "checkpoint.json").write_text(json.dumps(meta))
    result = cli("train", CONFIGS / "xor.yaml", "--epochs", "5", *sets, "--from", run, "--runs-dir", tmp_path / "b")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {run / 'checkpoint.json'}: corrupt checkpoint: {message}")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_continuing_with_another_optimizer_says_what_is_dropped(cli, tmp_path):
    first = cli(
        "train",
        CONFIGS / "xor.yaml",
        "--epochs",
        "20",
        "--set",
        "training.optimizer=adam",
        "--runs-dir",
        tmp_path,
        "-q",
    )
    run = Path(first.stdout.strip())
    result = cli("train", CONFIGS / "xor.yaml", "--epochs", "5", "--from", run, "--runs-dir", tmp_path / "b")
    assert result.exit_code == 0
    assert " ".join(result.stderr.split()) == (
        f"Warning: {run}: trained otherwise: continuing with the optimizer (adam before, sgd now; adam's state "
        "dropped) starting afresh"
    )


def test_hostile_study_options_are_refused_before_training(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    root = tmp_path / "r"
    cases = [
        (["sweep", path, "--grid", "model.activation=tanh,\udcff"], "Error: --grid 'model.activation=tanh,\\udcff': not printable UTF-8 text\n"),
        (["search", path, "--space", "training.learning_rate=log:1e-3:1", "--trials", "100000000000"], None),
        (["sweep", path, "--grid", "training.learning_rate=0.1", "--memory", "100000"], None),
        (["sweep", path, "--grid", "training.learning_rate=0.1", "--history", "every:10", "--run-folders", "all"],
         "Error: --run-folders all: a run folder needs every epoch's history; not with --history every:10\n"),
        (["sweep", path, "--grid", "training.learning_rate=0.1", "--name", "n" * 300], None),
    ]  # fmt: skip
    for args, message in cases:
        result = cli(*args, "--runs-dir", root)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        if message is not None:
            assert result.stderr == message
    assert not root.exists() or not any(root.iterdir())


@pytest.mark.slow
def test_names_that_make_one_folder_name_never_share_a_study(cli, write_config, tmp_path):
    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 10"))
    grid = ["--grid", "training.learning_rate=0.1"]
    for name in ("a b", "a/b", "."):
        assert cli("sweep", path, *grid, "--name", name, "--runs-dir", tmp_path / "r", "-q").exit_code == 0
    names = sorted(p.name.split("-grid-")[0] for p in (tmp_path / "r").iterdir())
    assert names == ["_", "a_b", "a_b"]  # two studies, not one resumed; no hidden folder


@pytest.mark.slow
def test_a_damaged_grid_json_is_named_exit_1(cli, write_config, tmp_path):
    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 10"))
    assert (
        cli(
            "sweep",
            path,
            "--grid",
            "training.learning_rate=0.1,0.2,0.3,0.4",
            "--run-folders",
            "none",
            "--runs-dir",
            tmp_path,
            "-q",
        ).exit_code
        == 0
    )
    folder = _study(tmp_path)
    spec = json.loads((folder / "grid.json").read_text())
    spec["grid"]["training.learning_rate"] = [0.1, 0.2]
    (folder / "grid.json").write_text(json.dumps(spec))
    result = cli("runs", "export", folder, "3")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {folder / 'grid.json'}: asks for 2 cells; the study's store holds 4\n"
    spec["grid"]["training.learning_rate"] = [0.1, "abc", 0.3, 0.4]
    (folder / "grid.json").write_text(json.dumps(spec))
    result = cli("runs", "export", folder, "3")
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {folder / 'grid.json'}: corrupt: grid cell ")


@pytest.mark.slow
def test_successive_halving_continues_trials_exactly_and_keeps_the_best(cli, tmp_path):
    args = ["search", CONFIGS / "moons.yaml", "--space", "training.learning_rate=log:0.001:0.5", "--trials", "9"]
    result = cli(*args, "--halving", "--eta", "3", "--min-epochs", "10", "--epochs", "90", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert "rung 1 of 3: 9 trials trained to epoch 10" in result.stderr
    assert "rung 2 of 3: 3 trials trained to epoch 30" in result.stderr
    assert "rung 3 of 3: 1 trials trained to epoch 90" in result.stderr
    folder = next(p for p in tmp_path.iterdir() if "-search-" in p.name)
    cells, store = Cells.from_spec(json.loads((folder / "grid.json").read_text())), Store.open(folder)
    ran = store.field("epochs_run")
    assert sorted(ran.tolist()) == [10] * 6 + [30] * 2 + [90]
    # the survivors of each rung were the best by val_loss at its end
    at_10 = {i: store.history(i)[1]["val_loss"][9] for i in range(9)}
    assert set(np.flatnonzero(ran >= 30)) == set(sorted(at_10, key=at_10.get)[:3])
    for i in range(9):  # a trial continued over rungs is a plain run of the same epochs
        cfg = cells.cfg(i)
        net = network(cfg)
        plain = fit(cfg, dataset(cfg, "x"), net, stop_after=int(ran[i]))
        epochs, history = store.history(i)
        assert np.array_equal(epochs, plain.epochs)
        np.testing.assert_allclose(history["loss"], plain.history["loss"][:, 0], rtol=1e-12)
        np.testing.assert_allclose(store.arrays["last"][i, : net.n_params], net.theta[0], rtol=1e-12, atol=1e-15)


def test_halving_options_are_checked(cli, tmp_path):
    base = ["search", CONFIGS / "xor.yaml", "--space", "training.learning_rate=log:0.1:1", "--runs-dir", tmp_path]
    cases = [
        (["--halving", "--metric", "accuracy2"], "Error: --metric accuracy2: the trials record loss, accuracy\n"),
        (["--min-epochs", "5"], "Error: --min-epochs goes with --halving\n"),
        (["--metric", "loss"], "Error: --metric goes with --halving or --sampler tpe\n"),
        (["--generation", "8"], "Error: --generation goes with --sampler tpe\n"),
        (["--halving", "--name", "x"], "Error: --halving: a halving search is not resumed; run it without --name\n"),
    ]
    for args, message in cases:
        result = cli(*base, *args)
        assert result.exit_code == 2 and result.stderr == message, result.output


def test_tpe_tells_diverged_trials_failed_and_leaves_nothing_for_a_refused_one(cli, tmp_path):
    pytest.importorskip("optuna")
    import optuna

    args = ["search", CONFIGS / "sine.yaml", "--set", "training.optimizer=sgd", "--sampler", "tpe"]
    args += ["--space", "training.learning_rate=log:1e3:1e4", "--trials", "4", "--generation", "2", "--epochs", "50"]
    result = cli(*args, "--runs-dir", tmp_path / "a", "-q")
    assert result.exit_code == 1 and "diverged" in result.stderr
    (folder,) = (tmp_path / "a").iterdir()
    study = optuna.load_study(study_name="backprop", storage=f"sqlite:///{folder / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 4
    bad = ["search", CONFIGS / "moons.yaml", "--space", "model.dropout=uniform:0.9:1.5", "--sampler", "tpe"]
    refused = cli(*bad, "--trials", "4", "--generation", "2", "--runs-dir", tmp_path / "b")
    assert refused.exit_code == 2 and "model.dropout" in refused.stderr
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
