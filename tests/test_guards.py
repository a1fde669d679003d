"""Tests for promises that survived a deliberate bug (a mutation) before: each one fails when
the behaviour it names breaks."""

import json
from concurrent.futures import Future

import numpy as np
import pytest
from conftest import CONFIGS, XOR_YAML

from backprop_cli import api
from backprop_cli import grid as g
from backprop_cli.animation import Snapshots
from backprop_cli.api import config
from backprop_cli.errors import ConfigError
from backprop_cli.evaluation import classification_scores
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.report import build_report
from backprop_cli.run_folders.cells import Cells
from backprop_cli.store import STATUSES, Store


def _plain(cfg):
    net = network(cfg)
    fit(cfg, dataset(cfg, "x"), net)
    return net.theta[0]


def test_seeds_never_share_a_pass_with_minibatches():
    # each seed has its own batch order: batched together they would all take the first's
    path = CONFIGS / "xor.yaml"
    sets = ["training.batch_size=2", "training.epochs=50"]
    cells = Cells(path, {"training.learning_rate": [0.5]}, [0, 1, 2], {}, sets)
    assert cells.groups() == [[0], [1], [2]]
    for job in g.plan(cells, range(3), str(path), 0.01, 1, g.memory_budget()):
        chunk = g.train_job(job)
        assert np.array_equal(chunk.weights[0], _plain(cells.cfg(int(chunk.cells[0]))))


def test_resume_retrains_interrupted_cells_only(write_config, tmp_path):
    path = write_config(XOR_YAML)
    cells = Cells(path, {"training.learning_rate": [0.1, 0.2, 1.0e6]}, None, {}, ["model.output_activation=identity"])
    (job,) = g.plan(cells, range(3), str(path), 0.01, 1, g.memory_budget())
    chunk = g.train_job(job)
    assert [STATUSES[s] for s in chunk.fields["status"]] == ["completed", "completed", "diverged"]
    chunk.fields["status"][1] = STATUSES.index("interrupted")
    store = Store.create(tmp_path, g.layout(cells, 1))
    store.write(chunk)
    assert store.done().tolist() == [True, False, True]  # a resume trains the interrupted cell again
    assert [len(j.cells) for j in g.plan(cells, np.flatnonzero(~store.done()), str(path), 0.01, 1, 2**30)] == [1]


@pytest.mark.slow
def test_a_grid_whose_every_cell_diverged_is_marked_diverged(cli, write_config, tmp_path):
    path = write_config(XOR_YAML.replace("learning_rate: 0.1", "learning_rate: 1.0e+6"))
    args = ["--grid", "model.activation=relu,tanh", "--set", "model.output_activation=identity"]
    result = cli("sweep", path, *args, "--runs-dir", tmp_path / "r", "-q")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: every cell diverged: ")
    (folder,) = (tmp_path / "r").iterdir()  # a runs folder of its own: the config sits in tmp_path
    assert json.loads((folder / "summary.json").read_text())["status"] == "diverged"


class _Pool:
    """A stand-in for ProcessPoolExecutor: the first job done at once, the others pending."""

    made: list = []

    def __init__(self, max_workers, initializer=None):
        self.futures = []
        _Pool.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, job):
        future = Future()
        if not self.futures:
            future.set_result([{"run": "cell_001"}])
        self.futures.append(future)
        return future


def test_the_pool_cancels_queued_groups_when_the_grid_stops(monkeypatch, tmp_path):
    monkeypatch.setattr(g, "ProcessPoolExecutor", _Pool)
    jobs = [object() for _ in range(4)]
    rows = g.execute(jobs, workers=2)
    assert next(rows) == [{"run": "cell_001"}]
    rows.close()  # the consumer stops (Ctrl-C, an error): the queued groups must not run
    (pool,) = _Pool.made
    assert [f.cancelled() for f in pool.futures] == [False, True, True, True]


@pytest.mark.slow
def test_the_local_dask_cluster_is_closed(monkeypatch, write_config, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    made = []

    class Recorded(distributed.LocalCluster):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(distributed, "LocalCluster", Recorded)
    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 5"))
    cells = Cells(path, {"model.activation": ["sigmoid"]}, None, {}, [])
    jobs = g.plan(cells, [0], str(path), 0.01, 1, g.memory_budget())
    assert len(list(g.execute(jobs, workers=1, executor="dask"))) == 1
    (cluster,) = made
    assert cluster.status.name == "closed"


def test_snapshots_count_epochs_from_a_continued_runs_start():
    cfg = config(CONFIGS / "xor.yaml", training__epochs=100)
    data, net = dataset(cfg, "x"), network(cfg)
    seen = {}

    def keep(epoch, loss, s):
        seen[epoch] = s.theta.copy()

    shots = Snapshots(net.theta, 100, start=300, frames=20)
    fit(cfg, data, net, start_epoch=300, callback=lambda e, loss, s: (keep(e, loss, s), shots(e, loss, s)))
    assert len(shots.taken) == len(shots.wanted)  # every frame found, counted from epoch 301
    for k, theta in shots.taken.items():
        if k > 1:
            assert np.array_equal(theta, seen[300 + k - 1])


HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "q\"uo'te"]


@pytest.mark.slow
def test_report_escapes_names_classes_and_config(tmp_path):
    text = f"""
        name: '{HOSTILE[0]}'
        model: {{layers: [2, 2, 2], output_activation: softmax}}
        training: {{loss: cross_entropy, epochs: 20}}
        data:
          inputs: [[0, 0], [0, 1], [1, 0], [1, 1]]
          targets: ['{HOSTILE[1]}', '{HOSTILE[2].replace("'", "''")}', '{HOSTILE[2].replace("'", "''")}', '{HOSTILE[1]}']
    """
    path = tmp_path / "hostile.yaml"
    import textwrap

    path.write_text(textwrap.dedent(text))
    run = api.train(path, runs_dir=tmp_path / "runs")
    page = build_report(run.path)
    for raw in HOSTILE[:2]:
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower() and "onerror=alert" not in page.replace("onerror=alert(2)&gt;", "")


def test_macro_averages_skip_classes_absent_from_the_data():
    # true classes 0 and 1 only; class 2 never occurs (and is never predicted)
    actual = np.array([0, 0, 1, 1])
    predicted = np.array([0, 1, 1, 1])
    scores = classification_scores(predicted, actual, ["a", "b", "c"])
    # recall: a 1/2, b 2/2 -> macro 0.75 over the two classes that occur (not 0.5 over three)
    assert scores["macro_recall"] == pytest.approx(0.75)
    # precision: a 1/1, b 2/3 -> 5/6
    assert scores["macro_precision"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("monitor", ["loss", "accuracy"])
def test_early_stopping_counts_only_improvements_larger_than_min_delta(monitor):
    # XOR's loss and accuracy never move by 0.9 in an epoch: only the first epoch counts, and
    # training stops `patience` epochs later
    es = {"monitor": monitor, "patience": 7, "min_delta": 0.9, "restore_best": False}
    cfg = config(CONFIGS / "xor.yaml", training__epochs=500, training__early_stopping=es)
    result = fit(cfg, dataset(cfg, "x"), network(cfg))
    assert result.stop_reason == ["early_stopping"] and result.epochs_run == [8] and result.best_epoch == [1]
    es.update(min_delta=0.0, monitor="loss")  # any improvement counts: XOR's loss keeps falling
    cfg = config(CONFIGS / "xor.yaml", training__epochs=500, training__early_stopping=es)
    assert fit(cfg, dataset(cfg, "x"), network(cfg)).epochs_run[0] > 8


def test_an_ambiguous_keyword_is_refused_not_guessed():
    with pytest.raises(ConfigError) as e:
        config(CONFIGS / "xor.yaml", target=0.5)
    assert str(e.value) == "target: a config field in data, sweep; write it as section__target"


def test_each_values_summary_is_the_median_epoch_of_the_cells_that_reached_the_target():
    from backprop_cli.results import by_value

    rows = [{"k": "a", "epochs_to_target": e} for e in (10, 20, 90)] + [{"k": "a", "epochs_to_target": None}]
    rows += [{"k": "b", "epochs_to_target": None}]
    # a: three of four reached it, median 20 (the mean would be 40); b: none
    assert by_value(rows, {"k": ["a", "b"]}) == [("k", "a", 3, 4, 20.0), ("k", "b", 0, 1, None)]
