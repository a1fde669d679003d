"""Diagnostics: every recorded quantity against a hand computation, the findings of the
shipped lessons (and none for their cures), diagnosis afterwards equal to recording, the
command and its errors."""

import csv
import json
import textwrap

import numpy as np
import pytest
from conftest import CONFIGS

from backprop_cli.config import load_config
from backprop_cli.diagnostics import QUANTITIES, SAMPLE, Q, findings, planned, sample_rows
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.run_folders import finish_run, start_run
from backprop_cli.run_folders.diagnosed import diagnose

TINY = """
name: tiny
seed: 0
model:
  layers: [2, 3, 2]
  activation: {act}
  output_activation: sigmoid
  weights: [[[0.5, -1.0], [2.0, 0.25], [-3.0, -2.5]], [[0.4, -0.6, 1.1], [-0.3, 0.8, 0.2]]]
  biases: [[0.1, -0.2, -4.0], [0.05, -0.05]]
training:
  loss: mse
  learning_rate: 0.5
  epochs: 3
  diagnostics: true
data:
  inputs: [[0.0, 1.0], [1.0, 0.5], [2.0, -1.0], [-1.0, 3.0]]
  targets: [[0, 1], [1, 0], [1, 1], [0, 0]]
"""


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _hand(W1, b1, W2, b2, X, Y, act):
    """The forward and backward pass of the 2-3-2 net written out: mse = mean over samples and
    outputs of (a - y)^2, as the maths conventions define it."""
    z1 = X @ W1.T + b1
    a1 = {"sigmoid": _sigmoid, "tanh": np.tanh, "relu": lambda z: np.maximum(z, 0)}[act](z1)
    a2 = _sigmoid(a1 @ W2.T + b2)
    d2 = 2 * (a2 - Y) / Y.size * a2 * (1 - a2)
    slope = {"sigmoid": a1 * (1 - a1), "tanh": 1 - a1**2, "relu": (z1 > 0) * 1.0}[act]
    d1 = (d2 @ W2) * slope
    return a1, a2, (d1.T @ X, d1.sum(0)), (d2.T @ a1, d2.sum(0))


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu"])
def test_every_quantity_equals_a_hand_computation(write_config, act):
    cfg = load_config(write_config(TINY.format(act=act)))
    data, net = dataset(cfg, "tiny"), network(cfg)
    before = [(w.copy(), b.copy()) for w, b in net.get_params(0)]
    thetas = []
    result = fit(cfg, data, net, callback=lambda e, loss, seen: thetas.append(seen.theta[0].copy()))
    epochs, values = result.diagnostics.table(0)
    assert epochs.tolist() == [0, 1, 2, 3]  # the initial weights, then after each epoch's update
    X, Y = data.X, data.Y
    probe = network(cfg)
    initial = probe.theta[0].copy()
    weights = [initial] + thetas
    for r, theta in enumerate(weights):
        probe.theta[0] = theta
        (W1, b1), (W2, b2) = probe.get_params(0)
        a1, a2, (gW1, gb1), (gW2, gb2) = _hand(W1, b1, W2, b2, X, Y, act)
        v = values[r]
        np.testing.assert_allclose(v[:, Q["grad_norm_weights"]], [np.linalg.norm(gW1), np.linalg.norm(gW2)], rtol=1e-12)
        np.testing.assert_allclose(v[:, Q["grad_norm_biases"]], [np.linalg.norm(gb1), np.linalg.norm(gb2)], rtol=1e-12)
        np.testing.assert_allclose(v[:, Q["activation_mean"]], [a1.mean(), a2.mean()], rtol=1e-12)
        np.testing.assert_allclose(v[:, Q["activation_std"]], [a1.std(), a2.std()], rtol=1e-12)
        if r == 0:  # the initial weights: no update yet
            assert np.isnan(v[:, Q["update_ratio"]]).all()
            np.testing.assert_array_equal(W1, np.asarray(before[0][0]))
        else:
            probe.theta[0] = weights[r - 1]
            (V1, _), (V2, _) = probe.get_params(0)
            ratios = [np.linalg.norm(W1 - V1) / np.linalg.norm(V1), np.linalg.norm(W2 - V2) / np.linalg.norm(V2)]
            np.testing.assert_allclose(v[:, Q["update_ratio"]], ratios, rtol=1e-12)
        if act == "sigmoid":
            sat = lambda a: (((a < 0.01) | (a > 0.99)).mean(0) > 0.5).mean()  # noqa: E731
        else:
            sat = lambda a: ((np.abs(a) > 0.99).mean(0) > 0.5).mean()  # noqa: E731
        assert v[1, Q["saturated_fraction"]] == (((a2 < 0.01) | (a2 > 0.99)).mean(0) > 0.5).mean()
        if act == "relu":
            assert v[0, Q["dead_fraction"]] == np.all(a1 <= 0, axis=0).mean()
            assert np.isnan(v[0, Q["saturated_fraction"]])
        else:
            assert v[0, Q["saturated_fraction"]] == sat(a1)
            assert np.isnan(v[0, Q["dead_fraction"]])


def test_the_relu_net_has_a_dead_unit():
    # hidden unit 3 (weights -3, -2.5, bias -4) is below zero on every sample
    W1 = np.array([[0.5, -1.0], [2.0, 0.25], [-3.0, -2.5]])
    z = np.array([[0.0, 1.0], [1.0, 0.5], [2.0, -1.0], [-1.0, 3.0]]) @ W1.T + [0.1, -0.2, -4.0]
    assert (z[:, 2] <= 0).all() and not (z[:, :2] <= 0).all(axis=0).any()


def test_off_records_nothing(write_config, tmp_path):
    cfg = load_config(write_config(TINY.format(act="relu").replace("  diagnostics: true\n", "")))
    data, net = dataset(cfg, "tiny"), network(cfg)
    result = fit(cfg, data, net)
    assert result.diagnostics is None
    folder = start_run(tmp_path, cfg, {})
    finish_run(folder, cfg, data, result, plots=False)
    assert not (folder / "diagnostics.csv").exists()


def test_planned_epochs_and_the_sample():
    assert planned(10, 35) == [0, 10, 20, 30, 35]
    assert planned(1, 3) == [0, 1, 2, 3]
    assert planned(5, 10, start_epoch=100) == [100, 105, 110]
    assert sample_rows(10).tolist() == list(range(10))
    rows = sample_rows(20000)
    assert len(rows) == SAMPLE and rows[0] == 0 and rows[-1] == 19999 and np.all(np.diff(rows) > 0)


def _run(cfg, root, plots=False):
    data, net = dataset(cfg, "lesson"), network(cfg)
    result = fit(cfg, data, net)
    folder = start_run(root, cfg, {})
    summary, _ = finish_run(folder, cfg, data, result, plots=plots)
    return folder, summary


@pytest.mark.slow
@pytest.mark.parametrize(
    "config,kind,cure,losses",
    [  # the saved weights' losses the README quotes, sick and cured
        ("deep_sigmoid.yaml", "vanishing", {"model.activation": "relu", "model.init": "he"}, (0.692947, 0.000429854)),
        ("dead_relu.yaml", "dead", {"training.learning_rate": 0.5}, (0.69441, 0.00277359)),
        ("lr_too_high.yaml", "rising", {"training.learning_rate": 0.1}, (7.45476e194, 0.0242876)),
    ],
)
def test_each_lesson_finds_its_failure_and_its_cure_does_not(tmp_path, config, kind, cure, losses):
    folder, summary = _run(load_config(CONFIGS / config), tmp_path / "sick")
    assert summary["saved_weights"]["loss"] == pytest.approx(losses[0], rel=1e-5)
    d = diagnose(folder)
    assert d.findings and d.findings[0].kind == kind, [f.text for f in d.findings]
    assert summary["diagnostics"]["findings"][0] == d.findings[0].text
    cured = load_config(CONFIGS / config, {k: (v, k) for k, v in cure.items()})
    folder, summary = _run(cured, tmp_path / "cured")
    assert diagnose(folder).findings == [] and summary["diagnostics"]["findings"] == []
    assert summary["saved_weights"]["loss"] == pytest.approx(losses[1], rel=1e-5)


@pytest.mark.slow
def test_a_run_diagnosed_afterwards_equals_its_recording_at_the_end(tmp_path):
    cfg = load_config(CONFIGS / "dead_relu.yaml", {"training.epochs": (60, "--epochs")})
    folder, _ = _run(cfg, tmp_path)
    recorded = diagnose(folder)
    (folder / "diagnostics.csv").unlink()
    after = diagnose(folder)
    assert after.recorded is False and after.notes[0].startswith("no diagnostics were recorded")
    assert after.epochs.tolist() == [60] == recorded.epochs[-1:].tolist()
    shared = [i for i, q in enumerate(QUANTITIES) if q != "update_ratio"]
    np.testing.assert_array_equal(after.values[0][:, shared], recorded.values[-1][:, shared])


def test_a_restored_run_is_diagnosed_at_the_weights_it_keeps(write_config, tmp_path):
    text = (
        textwrap.dedent(TINY.format(act="tanh"))
        .replace(
            "  epochs: 3\n", "  epochs: 40\n  early_stopping: {monitor: loss, patience: 3}\n  learning_rate: 5.0\n"
        )
        .replace("  learning_rate: 0.5\n", "")
    )
    cfg = load_config(write_config(text))
    folder, summary = _run(cfg, tmp_path)
    recorded = diagnose(folder)
    (folder / "diagnostics.csv").unlink()
    after = diagnose(folder)
    np.testing.assert_array_equal(
        after.values[0][:, Q["grad_norm_weights"]], recorded.values[-1][:, Q["grad_norm_weights"]]
    )


def test_the_findings_rules():
    acts = ["relu", "sigmoid"]
    values = np.full((3, 2, len(QUANTITIES)), np.nan)
    values[:, :, Q["grad_norm_weights"]] = 1.0
    values[:, 0, Q["dead_fraction"]] = [0.1, 0.3, 0.5]
    epochs = np.array([0, 50, 100])
    stuck = np.linspace(1, 0.5, 100)  # the loss halves: not learned (a tenth of where it began)
    found = findings(epochs, values, acts, np.arange(1, 101), stuck, 2.0)
    assert [f.text for f in found] == [
        "hidden 1 (relu): 50% of units dead at the end (epoch 100) (over 25% since epoch 50) (learning rate 2). "
        "Try a smaller learning rate, leaky_relu or he init."
    ]
    # a run that learned (to a tenth of its first loss) has no dead or saturated finding
    assert findings(epochs, values, acts, np.arange(1, 101), np.linspace(1, 0.05, 100), 2.0) == []
    # vanishing: layer 1's gradient below 1/100 of the output's in the initial weights
    values[0, 0, Q["grad_norm_weights"]] = 1e-4
    found = findings(epochs, values, acts, np.arange(1, 101), stuck, 2.0)
    assert found[0].kind == "vanishing" and "1/10,000 of the output layer's at the start" in found[0].text
    # ... and only there: a run diagnosed afterwards has no record of its initial weights
    assert "vanishing" not in [
        f.kind for f in findings(epochs[-1:], values[-1:], acts, np.arange(1, 101), stuck, 2.0, start=None)
    ]
    # a loss rising in 60% of the last 50 epochs
    rising = np.concatenate([np.linspace(1, 0.5, 50), 0.5 + 0.01 * np.arange(60) * (np.arange(60) % 5 != 0)])
    kinds = [f.kind for f in findings(epochs, values, acts, np.arange(1, 111), rising, 2.0)]
    assert kinds[0] == "rising"
    # a plateau: epochs 50 to 351 at 0.6 (the ends of both ramps included), over a tenth of the first loss
    flat = np.concatenate([np.linspace(1.0, 0.6, 50), np.full(300, 0.6), np.linspace(0.6, 0.01, 50)])
    found = findings(np.zeros(0, int), np.zeros((0, 2, len(QUANTITIES))), acts, np.arange(1, 401), flat, 0.1)
    assert [f.kind for f in found] == ["plateau"] and "loss flat for 302 epochs (epochs 50 to 351" in found[0].text
    losses = np.linspace(1, 0.01, 100)
    assert findings(np.zeros(0, int), np.zeros((0, 2, len(QUANTITIES))), acts, np.arange(1, 101), losses, 0.1) == []
    # init zeros: the symmetry finding, whatever the numbers
    assert findings(epochs, values, acts, np.arange(1, 101), losses, 0.1, init="zeros")[0].kind == "symmetric"


@pytest.mark.slow
def test_the_command(cli, tmp_path):
    runs = tmp_path / "runs"
    result = cli("train", CONFIGS / "dead_relu.yaml", "--runs-dir", runs, "--epochs", "40")
    assert result.exit_code == 0, result.output
    line = next(l for l in result.stdout.splitlines() if l.startswith("diagnose: "))
    assert line.startswith("diagnose: hidden 1 (relu): ") and line.endswith(
        f"See: backprop diagnose {next(runs.iterdir())}"
    )
    result = cli("diagnose", "latest", "--runs-dir", runs)
    assert result.exit_code == 0 and "findings:" in result.stdout and "dead" in result.stdout
    data = json.loads(cli("diagnose", "latest", "--runs-dir", runs, "--json").stdout)
    assert data["recorded"] is True and data["findings"][0]["kind"] == "dead"
    assert [row["epoch"] for row in data["table"]] == [0, 0, 0, 20, 20, 20, 40, 40, 40]
    with open(next(runs.iterdir()) / "diagnostics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["quantity"] for r in rows} == set(QUANTITIES) - {"saturated_fraction"}  # relu and softmax layers
    result = cli("diagnose", tmp_path / "nothing")
    assert result.exit_code == 2 and result.stderr == f"Error: {tmp_path / 'nothing'}: no such run folder\n"
    result = cli("train", CONFIGS / "xor.yaml", "--runs-dir", runs, "--diagnose-every", "5")
    assert result.exit_code == 2 and result.stderr == "Error: --diagnose-every goes with --diagnose\n"
    result = cli("search", CONFIGS / "xor.yaml", "--space", "training.learning_rate=log:0.1:1", "--trials", "4",
                 "--halving", "--runs-dir", runs, "--diagnose")  # fmt: skip
    assert result.exit_code == 2 and result.stderr.startswith("Error: --halving: rungs continue every trial;")


def test_explain_shows_each_layers_gradient_norm(write_config):
    from backprop_cli.explain import explain_step

    cfg = load_config(write_config(TINY.format(act="tanh")))
    sections, _ = explain_step(cfg, dataset(cfg, "tiny"), 1, 1)
    norms, update = sections[-2], sections[-1]
    assert norms.title == "gradient norm by layer"
    grads = np.array([float(r[3]) for r in update.rows])
    weights = [i for i, r in enumerate(update.rows) if "->" in r[1]]
    first = [i for i in weights if i < 6]
    assert float(norms.rows[0][1]) == pytest.approx(np.linalg.norm(grads[first]), rel=1e-8)
    assert norms.rows[0][0] == "hidden 1 (tanh)" and norms.rows[1][0] == "output (sigmoid)"


def test_saturated_means_on_more_than_half_of_the_samples():
    from backprop_cli.diagnostics import measure
    from backprop_cli.losses import LOSSES
    from backprop_cli.network import Network

    net = Network([1, 3, 1], ["sigmoid", "sigmoid"])
    # unit 1 saturated on 3 of 4 samples (z = 0, 10, 20, 30), unit 2 on 2 of 4 (z = 0, 3, 6, 9), unit 3 on none
    net.set_params([(np.array([[10.0], [3.0], [0.1]]), np.zeros(3)), (np.ones((1, 3)), np.zeros(1))])
    X, Y = np.array([[0.0], [1.0], [2.0], [3.0]]), np.zeros((4, 1))
    values = measure(net, X, Y, LOSSES["mse"])
    assert values[0, 0, Q["saturated_fraction"]] == pytest.approx(1 / 3)


def test_vanishing_is_a_hundredfold_gap():
    acts = ["sigmoid", "sigmoid"]
    values = np.full((1, 2, len(QUANTITIES)), np.nan)
    values[0, :, Q["grad_norm_weights"]] = [1.0 / 150, 1.0]
    losses = np.linspace(1, 0.01, 100)
    assert [f.kind for f in findings(np.array([0]), values, acts, np.arange(1, 101), losses, 0.1)] == ["vanishing"]
    values[0, 0, Q["grad_norm_weights"]] = 1.0 / 50
    assert findings(np.array([0]), values, acts, np.arange(1, 101), losses, 0.1) == []


def _csv_values(path):
    with open(path) as f:
        return {(r["epoch"], r["layer"], r["quantity"]): float(r["value"]) for r in csv.DictReader(f)}


@pytest.mark.slow
def test_a_grid_cell_records_what_a_plain_run_of_it_records(cli, tmp_path):
    runs = tmp_path / "runs"
    result = cli("sweep", CONFIGS / "dead_relu.yaml", "--grid", "training.learning_rate=0.5,2", "--diagnose",
                 "--diagnose-every", "10", "--epochs", "40", "--runs-dir", runs / "grid", "--sort", "dead_fraction")  # fmt: skip
    assert result.exit_code == 0, result.output
    study = next((runs / "grid").iterdir())
    with open(study / "grid.csv") as f:
        rows = {r["run"]: r for r in csv.DictReader(f)}
    result = cli("train", CONFIGS / "dead_relu.yaml", "--lr", "2", "--diagnose", "--diagnose-every", "10", "--epochs",
                 "40", "--runs-dir", runs / "plain", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    plain = _csv_values(next((runs / "plain").iterdir()) / "diagnostics.csv")
    cell = _csv_values(study / "cell_002" / "diagnostics.csv")
    assert cell.keys() == plain.keys()
    for key, value in plain.items():
        assert cell[key] == pytest.approx(value, rel=1e-10, abs=1e-300), key
    # grid.csv has each cell's largest dead fraction at the end, and sorts by it
    ends = [v for (e, _, q), v in plain.items() if e == "40" and q == "dead_fraction"]
    assert float(rows["cell_002"]["dead_fraction"]) == max(ends)


@pytest.mark.slow
def test_a_corrupt_diagnostics_file_is_one_line_naming_the_line(cli, tmp_path):
    runs = tmp_path / "runs"
    assert cli("train", CONFIGS / "dead_relu.yaml", "--epochs", "20", "--runs-dir", runs, "-q").exit_code == 0
    folder = next(runs.iterdir())
    path = folder / "diagnostics.csv"
    good = path.read_text()
    header = "epoch,layer,quantity,value\n"
    for body, why in [
        (
            "999999999999999999999999,1,dead_fraction,0.5\n",
            "line 2: epoch '999999999999999999999999', layer '1': expected whole numbers",
        ),
        ("5,1,dead_fraction,7\n", "line 2: dead_fraction 7: out of range"),
        ("25,1,dead_fraction,0.5\n", "line 2: epoch 25, after the run's last (20)"),
        ("5,9,dead_fraction,0.5\n", "line 2: layer 9; the network has layers 1 to 3"),
        ("5,1,dead_fraction,0.5\n5,1,dead_fraction,0.5\n", "line 3: epoch 5, layer 1, dead_fraction given twice"),
        ("5,1,speed,0.5\n", "line 2: unknown quantity 'speed'"),
        ("", "no records"),
    ]:
        path.write_text(header + body)
        result = cli("diagnose", folder)
        assert result.exit_code == 1 and result.stderr == f"Error: {path}: corrupt diagnostics: {why}\n", body
    path.write_text("\ufeff" + good)  # a byte-order mark, as a spreadsheet saves it
    assert cli("diagnose", folder).exit_code == 0


def test_seeds_with_diagnose_and_bad_diagnostics_keys_are_refused(cli, write_config, tmp_path):
    from conftest import XOR_YAML

    config = write_config(XOR_YAML)
    result = cli("train", config, "--seeds", "0:3", "--diagnose", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and result.stderr.startswith(
        "Error: --diagnose with --seeds: a seed study keeps no run"
    )
    result = cli("validate", config, "--set", "training.diagnostics={evry: 3}")
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {config}: training.diagnostics.evry (from --set training.diagnostics): unknown key 'evry' "
        "(did you mean 'every'?)\n"
    )


def test_an_animated_run_with_diagnostics_gets_a_gradient_panel(write_config):
    from backprop_cli.animation import Snapshots, gif_job
    from backprop_cli.gif import training_gif

    cfg = load_config(write_config(TINY.format(act="tanh").replace("epochs: 3", "epochs: 30")))
    data, net = dataset(cfg, "tiny"), network(cfg)
    shots = Snapshots(net.theta, 30, 0, 5)
    result = fit(cfg, data, net, callback=shots)
    path, name, args = gif_job(__import__("pathlib").Path("x.gif"), "tiny", result, data, shots)
    epochs, norms, names = args[0]["gradients"]
    assert epochs.tolist() == list(range(31)) and names == ["hidden 1 (tanh)", "output (sigmoid)"]
    np.testing.assert_array_equal(norms, result.diagnostics.table(0)[1][:, :, Q["grad_norm_weights"]])
    import io

    from PIL import Image

    with_panel = Image.open(io.BytesIO(training_gif(*args)))
    args[0].pop("gradients")
    without = Image.open(io.BytesIO(training_gif(*args)))
    assert with_panel.size[0] > without.size[0]  # one panel more, side by side


def test_the_notebook_api(write_config, tmp_path):
    import backprop_cli as bp

    cfg = load_config(write_config(TINY.format(act="relu")))
    folder, _ = _run(cfg, tmp_path)
    run = bp.load(folder)
    table = run.diagnostics
    rows = table.to_dict("records") if hasattr(table, "to_dict") else table
    assert {r["quantity"] for r in rows} >= {"grad_norm_weights", "dead_fraction"}
    assert {r["epoch"] for r in rows} == {0, 1, 2, 3}
    assert run.diagnose() == diagnose(folder).to_json()
