"""`backprop sweep-lr`: batched and chained protocols against a plain NumPy loop in this file."""

import csv
import json

import numpy as np
import pytest
from conftest import CONFIGS, XOR_YAML

from backprop_cli.config import load_config
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.sweep import sweep_learning_rates

RATES = [0.1, 0.2, 0.5, 0.8, 1.0, 2.0]
W0 = [np.array([[0.15, 0.20], [0.25, 0.30]]), np.array([[0.40, 0.45], [0.50, 0.55]])]


def plain_numpy_worked_example(lr, epochs, w1, w2):
    """The 2-2-2 worked example by hand: sigmoid, no biases, E = 1/2 sum (o - t)^2."""
    x = np.array([0.05, 0.1])
    t = np.array([0.5, 0.5])
    w1, w2 = w1.copy(), w2.copy()
    errors = []
    for _ in range(epochs):
        h = 1 / (1 + np.exp(-(w1 @ x)))
        o = 1 / (1 + np.exp(-(w2 @ h)))
        errors.append(0.5 * np.sum((o - t) ** 2))
        d_o = (o - t) * o * (1 - o)
        d_h = (w2.T @ d_o) * h * (1 - h)
        w2 -= lr * np.outer(d_o, h)
        w1 -= lr * np.outer(d_h, x)
    return w1, w2, np.array(errors)


def _worked(epochs=100):
    cfg = load_config(CONFIGS / "worked_example.yaml", {"training.epochs": (epochs, "--epochs")})
    return cfg, dataset(cfg, "worked_example.yaml")


def test_batched_sweep_reproduces_the_textbook_table():
    cfg, data = _worked()
    entries = sweep_learning_rates(cfg, data, RATES)
    for e in entries:
        w1, w2, errors = plain_numpy_worked_example(e.value, 100, *W0)
        np.testing.assert_allclose(e.params(), np.r_[w1.ravel(), w2.ravel()], rtol=0, atol=1e-12)
        np.testing.assert_allclose(e.losses, errors, rtol=0, atol=1e-12)


def test_chained_sweep_reproduces_the_published_protocol():
    cfg, data = _worked()
    entries = sweep_learning_rates(cfg, data, RATES, chain=True)
    w1, w2 = W0
    for e in entries:
        w1, w2, errors = plain_numpy_worked_example(e.value, 100, w1, w2)  # never reset between rates
        np.testing.assert_allclose(e.params(), np.r_[w1.ravel(), w2.ravel()], rtol=0, atol=1e-12)
        np.testing.assert_allclose(e.losses, errors, rtol=0, atol=1e-12)
    # the protocols agree on the first rate only
    batched = sweep_learning_rates(cfg, data, RATES)
    assert np.array_equal(batched[0].params(), entries[0].params())
    assert not np.allclose(batched[1].params(), entries[1].params())


@pytest.mark.parametrize("config", ["xor.yaml", "worked_example.yaml"])
def test_each_rate_equals_a_plain_train_run(config):
    cfg = load_config(CONFIGS / config, {"training.epochs": (2000, "--epochs")})
    data = dataset(cfg, config)
    entries = sweep_learning_rates(cfg, data, RATES)
    for e in entries:
        cfg.training.learning_rate = e.value
        single = fit(cfg, data, network(cfg))
        np.testing.assert_allclose(e.params(), single.net.theta[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(e.losses, single.history["loss"][:, 0], rtol=0, atol=1e-12)


def test_a_diverging_rate_is_frozen_while_the_others_go_on(write_config):
    text = XOR_YAML.replace("output_activation: sigmoid", "output_activation: identity").replace(
        "loss: sse", "loss: mse"
    )
    cfg = load_config(write_config(text))
    data = dataset(cfg, "x")
    entries = sweep_learning_rates(cfg, data, [0.1, 1e300])
    assert [e.status for e in entries] == ["completed", "diverged"]
    assert len(entries[0].losses) == 200
    diverged = entries[1]
    assert len(diverged.losses) == diverged.result.diverged_at[1] - 1
    assert np.all(np.isfinite(diverged.params()))


@pytest.mark.slow
def test_sweep_cli_writes_the_sweep_folder(cli, tmp_path):
    root = tmp_path / "runs"
    result = cli("sweep-lr", CONFIGS / "worked_example.yaml", "--runs-dir", root, "--lrs", "0.1,0.5,2")
    assert result.exit_code == 0, result.output
    folder = next(root.iterdir())
    assert {"sweep.csv", "history.csv", "loss_curves.png", "loss_grid.png", "summary.json"} <= {
        p.name for p in folder.iterdir()
    }
    rows = list(csv.DictReader((folder / "sweep.csv").open()))
    assert [float(r["learning_rate"]) for r in rows] == [0.1, 0.5, 2.0]
    assert list(rows[0])[:5] == ["learning_rate", "final_loss", "best_loss", "epochs_to_target", "status"]
    assert list(rows[0])[5:] == [f"w{i}" for i in range(1, 9)]
    w1, w2, errors = plain_numpy_worked_example(2.0, 100, *W0)
    assert float(rows[2]["w5"]) == pytest.approx(w2[0, 0], abs=1e-12)
    assert float(rows[2]["final_loss"]) == pytest.approx(errors[-1], abs=1e-15)
    history = list(csv.reader((folder / "history.csv").open()))
    assert history[0] == ["epoch", "learning_rate=0.1", "learning_rate=0.5", "learning_rate=2"]
    run = folder / "lr_2"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["learning_rate"] == 2.0 and summary["status"] == "completed"
    predicted = cli("predict", run, "--input", "0.05,0.1", "--json")
    assert predicted.exit_code == 0
    assert "final weights and outputs" in result.stdout


@pytest.mark.slow
def test_all_rates_diverging_exits_1(cli, write_config, tmp_path):
    text = XOR_YAML.replace("output_activation: sigmoid", "output_activation: identity").replace(
        "loss: sse", "loss: mse"
    )
    result = cli("sweep-lr", write_config(text), "--runs-dir", tmp_path / "r", "--lrs", "1e300,1e301")
    assert result.exit_code == 1
    assert result.stderr == "Error: every learning rate diverged\n"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--lrs", ""], "Error: --lrs: the list of learning rates is empty\n"),
        (["--lrs", "0.1,-1"], "Error: --lrs 0.1,-1: every learning rate must be finite and > 0 (got -1)\n"),
        (["--lrs", "0.1,abc"], "Error: --lrs 0.1,abc: expected numbers separated by commas, e.g. 0.1,0.5,1\n"),
        (["--log-range", "1:0.1:3"], "Error: --log-range 1:0.1:3: needs 0 < MIN <= MAX and N >= 1\n"),
    ],
)
def test_bad_rate_lists_exit_2(cli, args, message, tmp_path):
    result = cli("sweep-lr", CONFIGS / "worked_example.yaml", "--runs-dir", tmp_path / "r", *args)
    assert result.exit_code == 2
    assert result.stderr == message
    assert not (tmp_path / "r").exists()


def test_log_range():
    from backprop_cli.cli.sweep_lr import parse_rates as _parse_rates

    cfg, _ = _worked()
    assert _parse_rates(None, "0.01:1:3", cfg) == pytest.approx([0.01, 0.1, 1.0])
    assert _parse_rates(None, None, cfg) == RATES


@pytest.mark.slow
def test_seed_study(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    result = cli("train", CONFIGS / "xor.yaml", "--seeds", "0:6", "--runs-dir", root, "--target", "0.05")
    assert result.exit_code == 0, result.output
    folder = next(root.iterdir())
    rows = list(csv.DictReader((folder / "seeds.csv").open()))
    assert [int(float(r["seed"])) for r in rows] == list(range(6))
    assert all(None not in r for r in rows)  # every cell has a header: the final weights w1..w9
    assert list(rows[0])[5:] == ["w1", "w2", "w3", "w4", "b1", "b2", "w5", "w6", "b3"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["reached_target"] == sum(1 for r in rows if r["epochs_to_target"])
    assert f"{summary['reached_target']} of 6 seeds reached loss 0.05" in result.stdout
    # a seed's curve equals a plain run with that seed
    cfg = load_config(CONFIGS / "xor.yaml", {"seed": (3, "--seed")})
    single = fit(cfg, dataset(cfg, "x"), network(cfg))
    assert float(rows[3]["final_loss"]) == pytest.approx(single.final("loss"), abs=1e-12)


def test_chained_progress_counts_epochs_across_the_rates():
    cfg, data = _worked(epochs=10)
    seen = []
    sweep_learning_rates(cfg, data, [0.1, 0.5, 1.0], chain=True, callback=lambda epoch, loss, _: seen.append(epoch))
    assert seen == list(range(1, 31))


@pytest.mark.parametrize("command", [["sweep-lr"], ["train", "--seeds", "0:3"]], ids=["sweep-lr", "seeds"])
def test_a_non_positive_target_is_refused(cli, tmp_path, command):
    result = cli(*command[:1], CONFIGS / "xor.yaml", *command[1:], "--target", "-1", "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2
    assert result.stderr == "Error: --target -1: must be finite and > 0\n"
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.parametrize("plots,pngs", [(None, []), ("all", ["loss.png", "network.png"])], ids=["summary", "all"])
def test_per_rate_plots_are_drawn_only_with_plots_all(cli, tmp_path, plots, pngs):
    root = tmp_path / "r"
    extra = ["--plots", plots] if plots else []
    args = ["sweep-lr", CONFIGS / "worked_example.yaml", "--lrs", "0.5,1", "--epochs", "20", "--runs-dir", root, "-q"]
    assert cli(*args, *extra).exit_code == 0
    sweep = next(root.iterdir())
    assert (sweep / "loss_curves.png").exists() and (sweep / "loss_grid.png").exists()
    for rate in ("lr_0.5", "lr_1"):
        assert sorted(p.name for p in (sweep / rate).glob("*.png")) == pngs
        assert (sweep / rate / "weights.json").exists() and (sweep / rate / "summary.json").exists()
