"""Numbers you can trust everywhere: schedules per model in every batched path, explain's and
gradcheck's real steps, and `--from` as a true checkpoint (bit for bit)."""

import json
import os
import signal

import numpy as np
import pytest
from conftest import CONFIGS

import backprop_cli as bp
from backprop_cli import api
from backprop_cli import grid as g
from backprop_cli.api import config
from backprop_cli.errors import ConfigError
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.explain import explain_step
from backprop_cli.gradcheck import gradcheck
from backprop_cli.run_folders.cells import Cells
from backprop_cli.sweep import seed_study, sweep_learning_rates
from backprop_cli.training import make_schedule

SCHEDULES = ["constant", "step", "exponential", "cosine"]
OPTIMIZERS = ["sgd", "momentum", "rmsprop", "adam"]


def xor(**overrides):
    base = dict(
        training__epochs=120,
        training__learning_rate=0.5,
        training__lr_step_size=25,
        training__lr_gamma=0.9,
        training__lr_min=0.02,
    )
    return config(CONFIGS / "xor.yaml", **{**base, **overrides})


def plain(cfg, learning_rate=None, seed=None):
    """A plain run of one model: the config with its own rate (and seed)."""
    over = {}
    if learning_rate is not None:
        over["training__learning_rate"] = learning_rate
    if seed is not None:
        over["seed"] = seed
    cfg = config(cfg, **over)
    net = network(cfg)
    fit(cfg, dataset(cfg, "x"), net)
    return net.theta[0]


# -- 1. every schedule is per model, in every batched path ---------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_sweep_lr_models_equal_plain_runs_for_every_schedule(schedule):
    cfg = xor(training__lr_schedule=schedule)
    rates = [0.3, 1.0, 2.5]
    entries = sweep_learning_rates(cfg, dataset(cfg, "x"), rates)
    for e in entries:
        np.testing.assert_allclose(e.params(), plain(cfg, learning_rate=e.value), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_seed_study_models_equal_plain_runs_for_every_schedule(schedule):
    cfg = xor(training__lr_schedule=schedule)
    entries = seed_study(cfg, dataset(cfg, "x"), [3, 4, 5])
    for e in entries:
        np.testing.assert_allclose(e.params(), plain(cfg, seed=e.value), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_grid_cells_equal_plain_runs_for_every_schedule(schedule, tmp_path):
    path = CONFIGS / "xor.yaml"
    sets = [f"training.lr_schedule={schedule}", "training.epochs=120", "training.lr_min=0.02"]
    sets += ["training.lr_step_size=25", "training.lr_gamma=0.9"]
    cells = Cells(path, {"training.learning_rate": [0.3, 1.0, 2.5]}, [0, 1], {}, sets)
    (job,) = g.plan(cells, range(len(cells)), str(path), 0.01, 1, g.memory_budget())  # one pass
    chunk = g.train_job(job)
    for k, i in enumerate(chunk.cells):
        np.testing.assert_allclose(chunk.weights[k], plain(cells.cfg(int(i))), rtol=1e-12, atol=1e-14)


def test_cosine_floor_is_each_models_own():
    cfg = xor(training__lr_schedule="cosine", training__epochs=11)
    rates = np.array([[0.1], [1.0]])
    last = make_schedule(cfg.training, rates).factor(11, 11)
    np.testing.assert_allclose(rates * last, [[0.02], [0.02]], rtol=1e-15)


@pytest.mark.slow
def test_a_sweep_rate_folder_reproduces_from_its_own_config(cli, tmp_path):
    path = tmp_path / "cosine.yaml"
    path.write_text((CONFIGS / "xor.yaml").read_text().replace("epochs: 10000", "epochs: 300"))
    root = tmp_path / "runs"
    sets = ["--set", "training.lr_schedule=cosine", "--set", "training.lr_min=0.01"]
    result = cli("sweep-lr", path, "--lrs", "0.2,2", "--runs-dir", root, "--quiet", *sets)
    assert result.exit_code == 0, result.output
    folder = next(root.iterdir())
    rate_run = folder / "lr_2"
    again = cli("train", rate_run / "config.yaml", "--runs-dir", tmp_path / "again", "--quiet")
    assert again.exit_code == 0, again.output
    redo = next((tmp_path / "again").iterdir())
    mine = json.loads((rate_run / "weights.json").read_text())["layers"]
    theirs = json.loads((redo / "weights.json").read_text())["layers"]
    np.testing.assert_allclose(
        np.concatenate([np.ravel(layer["weights"]) for layer in mine]),
        np.concatenate([np.ravel(layer["weights"]) for layer in theirs]),
        rtol=1e-12,
    )


# -- 2. explain and gradcheck train the config as it is, stopped early -----------------------------


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("batch_size", [None, 2])
def test_explain_old_weights_are_the_runs_own(schedule, batch_size):
    cfg = xor(training__lr_schedule=schedule, training__epochs=300, training__batch_size=batch_size)
    cfg.training.learning_rate = 0.1
    data = dataset(cfg, "x")
    N = 100
    net, kept = network(cfg), {}

    def keep(epoch, loss, seen):
        if epoch in (N - 1, N):
            kept[epoch] = seen.theta[0].copy()

    fit(cfg, data, net, callback=keep)
    sections, (_, old, new) = explain_step(cfg, data, epoch=N)
    assert np.array_equal(old[0], kept[N - 1])
    if batch_size is None:  # the step shown is the run's own epoch N
        assert np.array_equal(new[0], kept[N])
    factor = make_schedule(cfg.training).factor(N, 300)
    assert f"learning rate {float(0.1 * factor):.9g}," in sections[-1].title
    assert cfg.training.epochs == 300  # the config explained is never changed


def test_explain_cosine_rate_is_the_runs_rate():
    # a 300-epoch cosine run from 0.1 to 0.05: epoch 100's rate is 0.0877..., not the floor
    cfg = xor(training__lr_schedule="cosine", training__epochs=300, training__lr_min=0.05)
    cfg.training.learning_rate = 0.1
    sections, _ = explain_step(cfg, dataset(cfg, "x"), epoch=100)
    assert "learning rate 0.0876513476," in sections[-1].title


def test_explain_and_gradcheck_refuse_steps_past_the_run():
    cfg = xor(training__epochs=50)
    data = dataset(cfg, "x")
    with pytest.raises(ConfigError) as e:
        explain_step(cfg, data, epoch=51)
    assert str(e.value) == (
        "--epoch 51: the run trains 50 epochs (training.epochs); set training.epochs to 51 or more to explain that step"
    )
    with pytest.raises(ConfigError):
        gradcheck(cfg, data, epochs=51)


def test_gradcheck_checks_the_runs_weights_after_n_epochs():
    cfg = xor(training__lr_schedule="cosine", training__epochs=300)
    data = dataset(cfg, "x")
    reports = gradcheck(cfg, data, epochs=40)
    assert [r.epoch for r in reports] == [0, 40] and all(r.passed for r in reports)
    assert cfg.training.epochs == 300


# -- 3. a checkpoint continues exactly ----------------------------------------------------------


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("batch_size", [None, 2])
@pytest.mark.parametrize("early", [None, {"monitor": "loss", "patience": 500, "min_delta": 1e-9}])
def test_checkpoint_continues_bit_for_bit(optimizer, schedule, batch_size, early):
    cfg = xor(
        training__optimizer=optimizer,
        training__lr_schedule=schedule,
        training__batch_size=batch_size,
        training__early_stopping=early,
        training__epochs=200,
        training__learning_rate=0.05 if optimizer in ("rmsprop", "adam") else 0.5,
    )
    data = dataset(cfg, "x")
    straight = network(cfg)
    whole = fit(cfg, data, straight)
    first = network(cfg)
    half = fit(cfg, data, first, stop_after=100)
    saved = half.checkpoint(0)
    assert saved is not None and saved.epoch == 100
    rest = cfg.model_copy(deep=True)
    rest.training.epochs = 100
    then = network(cfg)
    more = fit(rest, data, then, start_epoch=100, resume=[saved])
    assert np.array_equal(then.theta, straight.theta)
    assert np.array_equal(more.history["loss"][:, 0], whole.history["loss"][100:, 0])
    assert more.restored_epoch == whole.restored_epoch


def test_early_stopping_state_carries_over():
    # patience runs out in the second half only if the first half's waiting is remembered
    cfg = xor(training__early_stopping={"monitor": "loss", "patience": 60, "min_delta": 0.5}, training__epochs=200)
    data = dataset(cfg, "x")
    whole = fit(cfg, data, network(cfg))
    assert whole.stop_reason == ["early_stopping"] and 100 < whole.epochs_run[0] < 200 or whole.epochs_run[0] < 100
    half = fit(cfg, data, network(cfg), stop_after=40)
    rest = cfg.model_copy(deep=True)
    rest.training.epochs = 160
    then = network(cfg)
    more = fit(rest, data, then, start_epoch=40, resume=[half.checkpoint(0)])
    assert 40 + more.epochs_run[0] == whole.epochs_run[0]
    assert more.best_epoch == whole.best_epoch


def _train_cli(cli, path, root, *args):
    result = cli("train", path, "--runs-dir", root, "--quiet", *args)
    assert result.exit_code == 0, result.output
    return max(root.iterdir(), key=lambda p: p.stat().st_mtime_ns)


ADAM_MINIBATCH = [
    "--set", "training.optimizer=adam", "--set", "training.learning_rate=0.05", "--set", "training.batch_size=2",
    "--set", "training.lr_schedule=step", "--set", "training.lr_step_size=30",
    "--set", "training.early_stopping={monitor: loss, patience: 1000}",
]  # fmt: skip


@pytest.mark.slow
def test_from_a_run_folder_continues_exactly(cli, tmp_path):
    path = CONFIGS / "xor.yaml"
    first = _train_cli(cli, path, tmp_path / "a", "--epochs", "100", *ADAM_MINIBATCH)
    assert {"checkpoint.json", "checkpoint.npz"} <= {p.name for p in first.iterdir()}
    with np.load(first / "checkpoint.npz", allow_pickle=False) as npz:
        assert sorted(npz.files) == ["early_stopping.best_theta", "optimizer.m", "optimizer.v", "theta"]
    meta = json.loads((first / "checkpoint.json").read_text())
    assert meta["epoch"] == 100 and meta["step"] == 200 and meta["batch_order"]["bit_generator"] == "PCG64"
    second = _train_cli(cli, path, tmp_path / "b", "--epochs", "100", "--from", first, *ADAM_MINIBATCH)
    straight = _train_cli(cli, path, tmp_path / "c", "--epochs", "200", *ADAM_MINIBATCH)
    assert (second / "weights.json").read_text() == (straight / "weights.json").read_text()
    tail = (straight / "history.csv").read_text().splitlines()[101:]
    assert (second / "history.csv").read_text().splitlines()[1:] == tail
    assert json.loads((second / "summary.json").read_text())["continued"] == "exactly"


@pytest.mark.slow
def test_an_older_run_folder_continues_from_weights_with_a_warning(cli, tmp_path):
    path = CONFIGS / "xor.yaml"
    first = _train_cli(cli, path, tmp_path / "a", "--epochs", "50", *ADAM_MINIBATCH)
    (first / "checkpoint.json").unlink()
    (first / "checkpoint.npz").unlink()
    result = cli("train", path, "--runs-dir", tmp_path / "b", "--epochs", "5", "--from", first, *ADAM_MINIBATCH)
    assert result.exit_code == 0, result.output
    assert " ".join(result.stderr.split()) == (
        f"Warning: {first}: has no checkpoint (an older run folder, or one cut short mid-epoch): continuing from "
        "weights.json (the best epoch's weights, restored), with the adam optimizer's state, the minibatch order "
        "and early stopping's patience and best value starting afresh"
    )


@pytest.mark.slow
def test_a_damaged_checkpoint_is_a_one_line_error(cli, tmp_path):
    path = CONFIGS / "xor.yaml"
    first = _train_cli(cli, path, tmp_path / "a", "--epochs", "20")
    (first / "checkpoint.npz").write_bytes(b"PK\x03\x04 not a zip")
    result = cli("train", path, "--runs-dir", tmp_path / "b", "--from", first)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {first / 'checkpoint.npz'}: corrupt checkpoint: ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_interrupted_cosine_run_continues_the_same_curve(tmp_path):
    """Ctrl-C at epoch 100 of 200, then 100 more from the run: the cosine curve of 200 epochs."""
    sets = dict(training__lr_schedule="cosine", training__lr_min=0.05, training__epochs=200, training__batch_size=3)
    sets.update(training__optimizer="momentum")

    def ctrl_c_at(epoch):
        from contextlib import contextmanager

        @contextmanager
        def progress(epochs, start, label):
            def report(e, loss, seen):
                if e == epoch:
                    os.kill(os.getpid(), signal.SIGINT)  # a real signal: training ends after this epoch

            yield report

        return progress

    with pytest.raises(KeyboardInterrupt):  # bp.train raises it: the run is kept, marked interrupted
        api.train(CONFIGS / "xor.yaml", runs_dir=tmp_path / "a", progress=ctrl_c_at(100), **sets)
    cut = next((tmp_path / "a").iterdir())
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["last_epoch"] == 100
    rest = api.train(CONFIGS / "xor.yaml", runs_dir=tmp_path / "b", from_run=cut, **{**sets, "training__epochs": 100})
    whole = api.train(CONFIGS / "xor.yaml", runs_dir=tmp_path / "c", **sets)
    assert (rest.path / "weights.json").read_text() == (whole.path / "weights.json").read_text()


# -- 4. one validation path: the API checks what the command line checks ----------------------------


@pytest.mark.parametrize(
    "rates,message",
    [
        ([0.1, 0.1], "learning rate 0.1 is given twice: each rate trains once"),
        ([-0.5, 0], "every learning rate must be finite and > 0 (got -0.5)"),
        ([], "no learning rates given"),
        ([float("nan")], "every learning rate must be finite and > 0 (got nan)"),
    ],
)
def test_api_sweep_lr_refuses_what_the_cli_refuses(tmp_path, rates, message):
    with pytest.raises(ConfigError) as e:
        bp.sweep_lr(CONFIGS / "xor.yaml", rates=rates, runs_dir=tmp_path, epochs=5)
    assert str(e.value) == message
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing written, no failed study


def test_api_frames_are_checked_as_the_config_checks_them(tmp_path):
    with pytest.raises(ConfigError) as e:
        bp.train(CONFIGS / "xor.yaml", runs_dir=tmp_path, animate=True, frames=0, epochs=5)
    assert str(e.value) == f"{CONFIGS / 'xor.yaml'}: training.frames (from frames=0): must be >= 2 (got 0)"
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# -- 5. nothing silently off ------------------------------------------------------------------------


def test_early_stopping_on_a_metric_the_run_does_not_record_is_refused(cli, tmp_path):
    result = cli(
        "train", CONFIGS / "sine.yaml", "--runs-dir", tmp_path, "--epochs", "5",
        "--set", "training.early_stopping={monitor: accuracy}",
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {CONFIGS / 'sine.yaml'}: training.early_stopping.monitor: 'accuracy' is not recorded by this run "
        "(regression); it records loss, mae, r2, val_loss, val_mae, val_r2\n"
    )


def test_many_models_take_the_contiguous_path_and_still_equal_plain_runs():
    # from 16 models on, the forward pass multiplies by contiguous copies of W^T and the bias
    # gradient is a product with a row of ones: the same numbers as a plain run, to 1e-12
    from backprop_cli.network import CONTIGUOUS_FROM

    cfg = xor(training__epochs=200, training__optimizer="momentum", training__learning_rate=0.3)
    rates = list(np.geomspace(0.05, 2.0, CONTIGUOUS_FROM + 4))
    entries = sweep_learning_rates(cfg, dataset(cfg, "x"), rates)
    for e in entries[::5]:
        np.testing.assert_allclose(e.params(), plain(cfg, learning_rate=e.value), rtol=1e-12, atol=1e-14)


def test_a_seed_means_the_configs_seed_in_train_seeds_too():
    # moons draws its data and split from the seed: each seed trains in its own pass, exactly
    # as `train --seed N` does
    cfg = config(CONFIGS / "moons.yaml", training__epochs=20)
    entries = seed_study(cfg, dataset(cfg, "x"), [3, 4])
    for e in entries:
        assert np.array_equal(e.params(), plain(cfg, seed=e.value))
    assert entries[0].result is not entries[1].result
