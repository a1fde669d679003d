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
    net = network(cfg)
    fit(cfg, data, net, stop_after=2)
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
    assert rows[0] == ["stage", "layer", "name", "connects", "quantity", "value"]  # one tidy table
    assert all(len(row) == 6 for row in rows)
    tidy = {(r[0], r[2], r[4]): r[5] for r in rows[1:]}
    assert tidy["forward", "h1", "z (net input)"] == "0.0275"
    assert tidy["backward", "o1", "delta"] == "0.025412241"
    assert tidy["update", "w5", "new"] == "0.393559591"
    assert ["update", "", "w5", "h1 -> o1", "old", "0.4"] in rows
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


# -- finite differences on the model axis, kinks, sampling, likely causes ---------------------------


def _one_at_a_time(net, X, Y, loss, method, eps):
    """The difference formulas of differences.py, one parameter and one model at a time."""
    ws = net.workspace(len(X))
    base = net.loss_only(X, Y, loss, ws).copy()
    grad = np.zeros_like(net.theta)
    steps = {"central": (eps, -eps), "forward": (eps,), "five_point": (2 * eps, eps, -eps, -2 * eps)}[method]
    for k in range(net.K):
        for p in range(net.n_params):
            saved = net.theta[k, p]
            L = []
            for step in steps:
                net.theta[k, p] = saved + step
                L.append(net.loss_only(X, Y, loss, ws)[k])
            net.theta[k, p] = saved
            if method == "central":
                grad[k, p] = (L[0] - L[1]) / (2 * eps)
            elif method == "five_point":
                grad[k, p] = (-L[0] + 8 * L[1] - 8 * L[2] + L[3]) / (12 * eps)
            else:
                grad[k, p] = (L[0] - base[k]) / eps
    return grad, base


@pytest.mark.parametrize("method", ["central", "forward", "five_point"])
def test_differences_on_the_model_axis_equal_one_at_a_time(write_config, method):
    from backprop_cli.differences import FiniteDifferences
    from backprop_cli.losses import LOSSES

    cfg, data = _pair_config(write_config, "tanh", "softmax", "cross_entropy")
    net = network(cfg, seeds=[1, 2, 3])  # three models with different weights
    loss = LOSSES["cross_entropy"]
    want, base = _one_at_a_time(net, data.X, data.Y, loss, method, 1e-5)
    # a tiny memory budget forces many chunks, the last one partly filled
    fd = FiniteDifferences(net, len(data.X), method, 1e-5, budget=1)
    assert fd.chunk == len(fd.steps)
    got, kinks = fd.gradient(data.X, data.Y, loss, base)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert not kinks.any()


def test_a_step_across_a_relu_kink_is_counted_not_failed(write_config):
    # one relu unit with net input 1e-5 = w1 * x: a five-point step of 2e-4 in w1 or b1 crosses 0
    cfg = load_config(
        write_config("""
            model: {layers: [1, 1, 1], activation: relu, output_activation: identity,
                    weights: [[[1.0e-5]], [[2.0]]], biases: [[0.0], [0.5]]}
            training: {loss: mse}
            data: {inputs: [[1.0]], targets: [[3.0]]}
        """)
    )
    data = dataset(cfg, "x")
    report = gradcheck(cfg, data)[0]
    assert [(layer.checked, layer.kinks) for layer in report.layers] == [(2, 2), (2, 0)]
    assert report.passed and report.layers[0].worst == "-"
    # judged without the kink check, the same stencil fails: the difference quotient is wrong there
    net = network(cfg)
    from backprop_cli.differences import FiniteDifferences
    from backprop_cli.losses import LOSSES

    X, Y = data.X, data.Y
    base = net.loss_and_grad(X, Y, LOSSES["mse"], net.workspace(1))
    numeric, _ = FiniteDifferences(net, 1, "five_point", 1e-4).gradient(X, Y, LOSSES["mse"], base)
    assert abs(numeric[0, 0] - net.grad[0, 0]) > 1e-3 * abs(net.grad[0, 0])


def test_a_broken_derivative_fails_and_names_its_layer(write_config, monkeypatch):
    from backprop_cli import activations
    from backprop_cli.activations import ACTIVATIONS, Activation
    from backprop_cli.gradcheck import likely_cause

    def wrong_tanh_grad(a, out):  # 1 - a^2, off by 1%
        np.square(a, out=out)
        np.subtract(1.0, out, out=out)
        return np.multiply(out, 1.01, out=out)

    tanh = ACTIVATIONS["tanh"]
    monkeypatch.setitem(activations.ACTIVATIONS, "tanh", Activation("tanh", tanh.forward, wrong_tanh_grad))
    cfg, data = _pair_config(write_config, "tanh", "sigmoid", "mse")
    report = gradcheck(cfg, data)[0]
    assert [layer.passed for layer in report.layers] == [False, True]
    cause = likely_cause(report, cfg.model.activations, cfg.training.loss)
    assert cause.startswith(f"layer 1 at {report.layers[0].worst} (relative error ")
    assert cause.endswith("; likely cause: the derivative of tanh in hidden layer 1")


def test_a_broken_output_delta_names_the_loss(write_config, monkeypatch):
    from backprop_cli import losses
    from backprop_cli.gradcheck import likely_cause
    from backprop_cli.losses import LOSSES, Loss

    mse = LOSSES["mse"]

    def wrong_delta(a, y, z, act, out, scratch):
        value = mse.delta(a, y, z, act, out, scratch)
        out *= 0.99
        return value

    monkeypatch.setitem(losses.LOSSES, "mse", Loss("mse", mse.value, wrong_delta))
    cfg, data = _pair_config(write_config, "tanh", "sigmoid", "mse")
    report = gradcheck(cfg, data)[0]
    assert not report.layers[-1].passed
    assert likely_cause(report, cfg.model.activations, "mse").endswith(
        "likely cause: the output delta: the derivative of mse through the sigmoid output"
    )


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_gradcheck_passes_on_every_shipped_config(config):
    cfg = load_config(CONFIGS / config)
    reports = gradcheck(cfg, dataset(cfg, config))
    assert all(r.passed for r in reports), [(l.layer, l.max_rel, l.worst) for r in reports for l in r.layers]


def test_gradcheck_samples_each_layer_unless_asked_for_all():
    cfg = load_config(CONFIGS / "digits.yaml")
    data = dataset(cfg, "digits.yaml")
    report = gradcheck(cfg, data, sample=10)[0]
    assert report.sampled and [(l.checked, l.n_params) for l in report.layers] == [(10, 4160), (10, 650)]
    again = gradcheck(cfg, data, sample=10)[0]
    assert [l.worst for l in again.layers] == [l.worst for l in report.layers]  # the sample is seeded
    small = gradcheck(load_config(CONFIGS / "xor.yaml"), dataset(load_config(CONFIGS / "xor.yaml"), "x"), sample=10)[0]
    assert not small.sampled and [l.checked for l in small.layers] == [6, 3]


@pytest.mark.slow
def test_gradcheck_cli_says_it_sampled_and_why_it_failed(cli, monkeypatch):
    result = cli("gradcheck", CONFIGS / "digits.yaml")
    assert result.exit_code == 0, result.output
    assert "64 of 4160" in result.stdout
    assert "checked a sample of 64 parameters per layer (seed 0); --all checks every one" in result.stdout
    from backprop_cli import activations
    from backprop_cli.activations import ACTIVATIONS, Activation

    sigmoid = ACTIVATIONS["sigmoid"]
    monkeypatch.setitem(
        activations.ACTIVATIONS,
        "sigmoid",
        Activation("sigmoid", sigmoid.forward, lambda a, out: np.multiply(a, 1.0, out=out)),
    )
    result = cli("gradcheck", CONFIGS / "xor.yaml")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: gradient check failed: analytic and numerical gradients disagree in layer")
    # xor's output is sigmoid too: the output delta is the deepest wrong layer
    assert "likely cause: the output delta: the derivative of sse through the sigmoid output" in result.stderr


@pytest.mark.parametrize("optimizer", ["momentum", "rmsprop", "adam"])
def test_explain_shows_the_optimizer_state_that_makes_new_checkable(optimizer):
    cfg = load_config(
        CONFIGS / "xor.yaml", {"training.optimizer": (optimizer, "x"), "training.learning_rate": (0.05, "x")}
    )
    sections, _ = explain_step(cfg, dataset(cfg, "x"), epoch=3)
    update = sections[-1]
    columns = {"momentum": ["v"], "rmsprop": ["s"], "adam": ["m", "v", "m_hat", "v_hat"]}[optimizer]
    assert update.headers == ["parameter", "connects", "old", "dL/dparam", *columns, "new"]
    t = cfg.training
    for row in update.rows:
        cell = dict(zip(update.headers, row))
        old, new = float(cell["old"]), float(cell["new"])
        if optimizer == "momentum":
            step = 0.05 * float(cell["v"])
        elif optimizer == "rmsprop":
            step = 0.05 * float(cell["dL/dparam"]) / (math.sqrt(float(cell["s"])) + t.eps)
        else:
            step = 0.05 * float(cell["m_hat"]) / (math.sqrt(float(cell["v_hat"])) + t.eps)
            assert float(cell["m_hat"]) == pytest.approx(float(cell["m"]) / (1 - t.beta1**3), rel=1e-8)
        assert new == pytest.approx(old - step, rel=1e-7, abs=1e-12)
    assert "g = dL/dparam; " in update.note


def test_explain_marks_frozen_parameters():
    cfg = load_config(CONFIGS / "worked_example.yaml", {"training.freeze": (["layer1"], "x")})
    sections, _ = explain_step(cfg, dataset(cfg, "x"), epoch=1)
    rows = {row[0]: row for row in sections[-1].rows}
    assert rows["w1 (frozen)"][2] == rows["w1 (frozen)"][-1]  # old == new
    assert "w5" in rows and rows["w5"][2] != rows["w5"][-1]
    assert sections[-1].note.endswith("; frozen parameters keep their values (training.freeze)")


@pytest.mark.parametrize(
    "model,loss,targets",
    [
        (
            "{layers: [1, 2], output_activation: softmax, weights: [[[100.0], [-100.0]]]}",
            "cross_entropy",
            "[[0, 1], [0, 1]]",
        ),
        ("{layers: [1, 1], output_activation: sigmoid, weights: [[[20.0]]]}", "bce", "[[0], [0]]"),
    ],
    ids=["cross_entropy margin 200 and 400", "bce logits 20 and 40"],
)
def test_gradcheck_passes_where_outputs_saturate(write_config, model, loss, targets):
    # the true class is the unlikely one: the loss is large and grows linearly with the logits
    cfg = load_config(
        write_config(f"""
        model: {model}
        training: {{loss: {loss}}}
        data: {{inputs: [[1.0], [2.0]], targets: {targets}}}
    """)
    )
    report = gradcheck(cfg, dataset(cfg, "x"))[0]
    assert report.loss > 15 and report.passed, [(l.max_rel, l.worst) for l in report.layers]


@pytest.mark.slow
def test_gradcheck_all_checks_every_parameter(cli):
    result = cli("gradcheck", CONFIGS / "spirals.yaml", "--all")
    assert result.exit_code == 0, result.output
    assert "4160 of" not in result.stdout and " 4160 " in result.stdout
    assert "checked a sample" not in result.stdout


@pytest.mark.slow
def test_explain_writes_its_diagram_whatever_happens_to_standard_output(tmp_path):
    # `backprop explain ... --diagram d.png | head -1`: the reader goes away after one line
    import subprocess
    import sys

    diagram = tmp_path / "d.png"
    proc = subprocess.Popen(
        [sys.executable, "-m", "backprop_cli", "explain", str(CONFIGS / "xor.yaml"), "--diagram", str(diagram)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    proc.wait(timeout=60)
    assert diagram.read_bytes()[:4] == b"\x89PNG"
