"""gradcheck, numerical-gradient training and explain."""

import csv
import io
import math

import numpy as np
import pytest
from conftest import CONFIGS
from test_engine import VALID_PAIRS

from backprop_cli.config import load_config
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.explain import explain_step
from backprop_cli.gradcheck import check_gradients, gradcheck

PAIR_YAML = """
seed: 4
model:
  layers: [3, 4, 3]
  activation: {hidden}
  output_activation: {out}
  init: xavier
training:
  loss: {loss}
  learning_rate: 0.02
  epochs: 30
data:
  inputs: [[0.1, -0.4, 0.9], [0.5, 0.2, -0.3], [-0.7, 0.8, 0.05], [0.3, 0.3, 0.3]]
  targets: {targets}
"""


def _pair_config(write_config, hidden, out, loss):
    targets = "[[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]]"
    if loss in ("mse", "sse") and out in ("tanh", "identity", "leaky_relu"):
        targets = "[[0.5, -0.2, 0.1], [-0.4, 0.3, 0.9], [0.2, 0.2, -0.6], [0.0, 0.7, 0.4]]"
    elif loss in ("mse", "sse"):
        targets = "[[0.5, 0.2, 0.1], [0.4, 0.3, 0.9], [0.2, 0.2, 0.6], [0.0, 0.7, 0.4]]"
    path = write_config(PAIR_YAML.format(hidden=hidden, out=out, loss=loss, targets=targets))
    cfg = load_config(path)
    return cfg, dataset(cfg, str(path))


@pytest.mark.parametrize("out,loss", VALID_PAIRS)
@pytest.mark.parametrize("hidden", ["sigmoid", "tanh", "relu", "leaky_relu", "identity"])
def test_gradcheck_passes_for_every_activation_and_loss_pair(write_config, hidden, out, loss):
    cfg, data = _pair_config(write_config, hidden, out, loss)
    reports = gradcheck(cfg, data, epochs=20)
    assert [r.epoch for r in reports] == [0, 20]
    for r in reports:
        assert r.passed, (hidden, out, loss, [(l.max_abs, l.max_rel) for l in r.layers])
        assert max(l.max_rel for l in r.layers) < 1e-6


def test_gradcheck_fails_on_a_wrong_gradient(write_config):
    cfg, data = _pair_config(write_config, "tanh", "sigmoid", "mse")
    net = network(cfg)
    net.loss_and_grad(
        data.X, data.Y, __import__("backprop_cli.losses", fromlist=["LOSSES"]).LOSSES["mse"], net.workspace(len(data.X))
    )
    wrong = net.grad[0].copy()
    wrong[5] *= 1.001  # a 0.1% error in one weight of the first layer
    report = check_gradients(net, data, cfg.training.loss, 0, 1e-4, 1e-6, analytic=wrong)
    assert not report.passed
    assert [l.passed for l in report.layers] == [False, True]
    assert report.layers[0].worst == "w6"


def test_gradcheck_cli_exit_codes(cli):
    result = cli("gradcheck", CONFIGS / "xor.yaml", "--epochs", "50")
    assert result.exit_code == 0, result.output
    assert "gradient check passed" in result.stdout
    result = cli("gradcheck", CONFIGS / "xor.yaml", "--epochs", "-1")
    assert result.exit_code == 2
    assert result.stderr.endswith("Error: Invalid value for '--epochs': Input should be greater than or equal to 0\n")
    result = cli("gradcheck", CONFIGS / "xor.yaml", "--method", "three-point")
    assert result.exit_code == 2 and "'three-point' is not one of 'five-point', 'central'" in result.stderr


@pytest.mark.parametrize("method", ["central", "forward"])
def test_numerical_training_agrees_with_analytic(method):
    cfg = load_config(CONFIGS / "xor.yaml", {"training.epochs": (300, "--epochs")})
    data = dataset(cfg, "x")
    analytic = fit(cfg, data, network(cfg))
    cfg.training.gradient = "numerical"
    cfg.training.gradient_method = method
    cfg.training.gradient_epsilon = 1e-6 if method == "central" else 1e-7
    numerical = fit(cfg, data, network(cfg))
    tolerance = 1e-8 if method == "central" else 1e-5
    np.testing.assert_allclose(numerical.net.theta, analytic.net.theta, rtol=0, atol=tolerance)
    np.testing.assert_allclose(numerical.history["loss"], analytic.history["loss"], rtol=0, atol=tolerance)


def test_explain_matches_a_hand_computation():
    cfg = load_config(CONFIGS / "worked_example.yaml")
    data = dataset(cfg, "x")
    sections, _ = explain_step(cfg, data, epoch=1)
    by_title = {s.title.split(" (")[0].split(":")[0]: s for s in sections}
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    h1, h2 = sig(0.15 * 0.05 + 0.20 * 0.1), sig(0.25 * 0.05 + 0.30 * 0.1)
    o1, o2 = sig(0.40 * h1 + 0.45 * h2), sig(0.50 * h1 + 0.55 * h2)
    forward = {row[1]: row for row in by_title["forward pass"].rows}
    assert float(forward["h1"][2]) == pytest.approx(0.0275, abs=1e-9)
    assert float(forward["h1"][3]) == pytest.approx(h1, abs=1e-9)
    assert float(forward["o2"][3]) == pytest.approx(o2, abs=1e-9)
    d_o1 = (o1 - 0.5) * o1 * (1 - o1)
    d_o2 = (o2 - 0.5) * o2 * (1 - o2)
    d_h1 = (d_o1 * 0.40 + d_o2 * 0.50) * h1 * (1 - h1)
    deltas = {row[1]: float(row[2]) for row in by_title["backward pass"].rows}
    assert deltas["o1"] == pytest.approx(d_o1, rel=1e-8)
    assert deltas["h1"] == pytest.approx(d_h1, rel=1e-8)
    update = {row[0]: row for row in by_title["gradients and update"].rows}
    assert update["w5"][1] == "h1 -> o1"
    assert float(update["w5"][3]) == pytest.approx(d_o1 * h1, rel=1e-8)
    assert float(update["w5"][4]) == pytest.approx(0.40 - 0.5 * d_o1 * h1, abs=1e-9)
    assert float(update["w1"][4]) == pytest.approx(0.15 - 0.5 * d_h1 * 0.05, abs=1e-9)
    # at least 6 significant digits
    assert len(forward["h1"][3].replace("0.", "", 1)) >= 6


def test_explain_later_epoch_uses_trained_weights():
    cfg = load_config(CONFIGS / "worked_example.yaml")
    data = dataset(cfg, "x")
    cfg.training.epochs = 2
    net = network(cfg)
    fit(cfg, data, net)
    sections, _ = explain_step(cfg, data, epoch=3)
    update = {row[0]: row for row in sections[-1].rows}
    assert float(update["w1"][2]) == pytest.approx(net.theta[0, 0], abs=1e-9)


def test_explain_cli_markdown_csv_and_diagram(cli, tmp_path):
    md = tmp_path / "step.md"
    result = cli("explain", CONFIGS / "worked_example.yaml", "--format", "markdown", "--output", md)
    assert result.exit_code == 0, result.output
    text = md.read_text()
    assert "### forward pass" in text and "| w5 | h1 -> o1 | 0.4 |" in text
    result = cli("explain", CONFIGS / "worked_example.yaml", "--format", "csv")
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["section", "layer", "neuron", "z (net input)", "a (activation)"]
    png = tmp_path / "net.png"
    result = cli("explain", CONFIGS / "worked_example.yaml", "--diagram", png)
    assert result.exit_code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = cli("explain", CONFIGS / "worked_example.yaml", "--sample", "2")
    assert result.exit_code == 2
    assert result.stderr == "Error: --sample 2: must be between 1 and 1 (the training samples)\n"


def test_explain_past_a_divergence_exits_1(cli):
    # an identity output with learning rate 1e300: the first update overflows, so step 5 is never reached
    over = ["--set", "model.output_activation=identity", "--set", "training.learning_rate=1e300"]
    result = cli("explain", CONFIGS / "xor.yaml", "--epoch", "5", *over)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: training diverged at epoch ")
    assert result.stderr.endswith(", before step 5 could be explained\n")
