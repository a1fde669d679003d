"""training.lr_changes: the learning rate a run changes to at given epochs (what a live run's
rate changes are saved as), against a hand-written loop, across a resume, in explain, and
in the run folder's files."""

import csv
import json

import numpy as np
import pytest

from backprop_cli.api import config as make_config
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.training import rate_in_effect

WORKED = """
model:
  layers: [2, 2, 2]
  activation: sigmoid
  output_activation: sigmoid
  bias: false
  weights: [[[0.15, 0.20], [0.25, 0.30]], [[0.40, 0.45], [0.50, 0.55]]]
training:
  loss: mse
  learning_rate: 0.5
  epochs: 6
  lr_changes: {3: 2.0, 5: 0.25}
data:
  inputs: [[0.05, 0.1]]
  targets: [[0.5, 0.5]]
"""


def _hand_loop(rates):
    """The worked example's 2-2-2 net by hand: E = 1/2 sum (t - o)^2, one rate per epoch."""
    W1 = np.array([[0.15, 0.20], [0.25, 0.30]])
    W2 = np.array([[0.40, 0.45], [0.50, 0.55]])
    x, t = np.array([0.05, 0.1]), np.array([0.5, 0.5])
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    for rate in rates:
        h = sig(W1 @ x)
        o = sig(W2 @ h)
        d2 = (o - t) * o * (1 - o)
        d1 = (W2.T @ d2) * h * (1 - h)
        W2 = W2 - rate * np.outer(d2, h)
        W1 = W1 - rate * np.outer(d1, x)
    return W1, W2


def test_the_rate_changes_at_the_given_epochs_as_a_hand_loop_does(write_config):
    cfg = make_config(write_config(WORKED))
    net = network(cfg)
    result = fit(cfg, dataset(cfg, "config"), net)
    W1, W2 = _hand_loop([0.5, 0.5, 2.0, 2.0, 0.25, 0.25])
    (w1, _), (w2, _) = net.get_params(0)
    np.testing.assert_allclose(w1, W1, rtol=1e-14, atol=0)
    np.testing.assert_allclose(w2, W2, rtol=1e-14, atol=0)
    assert result.rates[:, 0].tolist() == [0.5, 0.5, 2.0, 2.0, 0.25, 0.25]


def test_a_schedule_scales_the_changed_rate(write_config):
    text = WORKED.replace(
        "  lr_changes: {3: 2.0, 5: 0.25}",
        "  lr_changes: {3: 2.0}\n  lr_schedule: step\n  lr_step_size: 2\n  lr_gamma: 0.5",
    )
    cfg = make_config(write_config(text))
    result = fit(cfg, dataset(cfg, "config"), network(cfg))
    # step: factor 0.5 ** floor((epoch - 1) / 2); the base is 0.5, then 2.0 from epoch 3
    assert result.rates[:, 0].tolist() == [0.5, 0.5, 1.0, 1.0, 0.5, 0.5]


def test_a_resumed_run_goes_on_with_the_rate_in_effect(write_config):
    cfg = make_config(write_config(WORKED))
    data = dataset(cfg, "config")
    whole = network(cfg)
    fit(cfg, data, whole)
    part = network(cfg)
    first = fit(cfg, data, part, stop_after=3)
    rest = fit(cfg, data, part, start_epoch=3, resume=[first.checkpoint()], horizon=6, stop_after=3)
    assert rest.rates[:, 0].tolist() == [2.0, 0.25, 0.25]  # epoch 4 goes on at epoch 3's rate
    assert np.array_equal(part.theta, whole.theta)
    assert rate_in_effect(0.5, {3: 2.0, 5: 0.25}, 4) == 2.0
    assert rate_in_effect(0.5, {3: 2.0, 5: 0.25}, 2) == 0.5


def test_explain_uses_the_changed_rate(write_config, cli):
    path = write_config(WORKED)
    assert "learning rate 2," in cli("explain", path, "--epoch", "3", "--format", "markdown").output
    shown = cli("explain", path, "--epoch", "3", "--format", "csv")
    assert shown.exit_code == 0, shown.output
    # the step explain shows is the engine's own epoch 3
    cfg = make_config(path)
    net = network(cfg)
    fit(cfg, dataset(cfg, "config"), net, stop_after=3)
    w5 = net.get_params(0)[1][0][0, 0]
    rows = [r for r in csv.reader(shown.output.splitlines()) if r[2:3] == ["w5"] and r[4] == "new"]
    assert rows and float(rows[0][-1]) == pytest.approx(w5, rel=1e-8)


def test_the_run_folder_records_the_rates_and_the_changes(tmp_path, write_config, cli):
    result = cli("train", write_config(WORKED), "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "runs").iterdir())
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["learning_rate"]) for r in rows] == [0.5, 0.5, 2.0, 2.0, 0.25, 0.25]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["lr_changes"] == [{"epoch": 3, "learning_rate": 2.0}, {"epoch": 5, "learning_rate": 0.25}]
    assert summary["learning_rate"] == 0.5  # the configured base rate, as ever
    assert "lr_changes:\n    3: 2.0\n    5: 0.25\n" in (run / "config.yaml").read_text()
    again = cli("train", run / "config.yaml", "--runs-dir", tmp_path / "again", "-q")
    assert again.exit_code == 0, again.output
    other = next((tmp_path / "again").iterdir())
    assert (other / "weights.json").read_bytes() == (run / "weights.json").read_bytes()


def test_a_run_without_changes_keeps_its_history_columns(tmp_path, write_config, cli):
    cli(
        "train",
        write_config(WORKED.replace("  lr_changes: {3: 2.0, 5: 0.25}\n", "")),
        "--runs-dir",
        tmp_path / "runs",
        "-q",
    )
    header = next((tmp_path / "runs").iterdir()).joinpath("history.csv").read_text().splitlines()[0]
    assert header == "epoch,loss"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{0: 0.5}", "training.lr_changes[0]: must be >= 1 (got 0)"),
        ("{3: -1}", "training.lr_changes[3]: must be > 0 (got -1)"),
        ("{x: 1.0}", "training.lr_changes: input should be a valid integer (got 'x')"),
        ("[1, 2]", "training.lr_changes: input should be a valid dictionary"),
    ],
)
def test_bad_changes_are_config_errors(write_config, cli, value, message):
    path = write_config(WORKED.replace("{3: 2.0, 5: 0.25}", value))
    result = cli("validate", path)
    assert result.exit_code == 2
    assert message in result.output


def test_epochs_as_strings_of_digits_are_numbers(write_config):
    # JSON (a dumped config, grid.json) can only write them so
    cfg = make_config(write_config(WORKED.replace("{3: 2.0, 5: 0.25}", '{"3": 2.0}')))
    assert cfg.training.lr_changes == {3: 2.0}


def test_changes_need_one_rate_for_every_layer(write_config, cli):
    path = write_config(WORKED.replace("learning_rate: 0.5", "learning_rate: [0.5, 0.1]"))
    result = cli("validate", path)
    assert result.exit_code == 2
    assert "training.lr_changes: changes one rate for every layer: give learning_rate one rate too" in result.output


def test_sweep_lr_refuses_changes(tmp_path, write_config, cli):
    result = cli("sweep-lr", write_config(WORKED), "--lrs", "0.1,0.5", "--runs-dir", tmp_path)
    assert result.exit_code == 2
    assert "training.lr_changes sets one rate for every model; a sweep gives each model its own" in result.output
