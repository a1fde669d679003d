"""Behaviours the suite did not pin before (issue 15's list), each with a test that fails when
the behaviour breaks: predict's input scaling, minmax scaling, the initializers' scales, a
schedule applied through train(), Ctrl-C mid-epoch, a crashed run, the default predict run,
non-finite weights at load."""

import json
import math

import numpy as np
import pytest
from conftest import CONFIGS, XOR_YAML

from backprop_cli.config import load_config
from backprop_cli.data import Scaler
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.initializers import INITIALIZERS
from backprop_cli.losses import LOSSES
from backprop_cli.network import Network


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    """One standard-scaled iris run for the module (training it once is the expensive part)."""
    from typer.testing import CliRunner

    from backprop_cli.cli import app

    root = tmp_path_factory.mktemp("iris") / "runs"
    result = CliRunner().invoke(app, ["train", str(CONFIGS / "iris.yaml"), "--runs-dir", str(root), "--quiet"])
    assert result.exit_code == 0, result.output
    return root, next(root.iterdir())


@pytest.mark.slow
def test_predict_applies_the_saved_input_scaling(cli, iris_run):
    root, run = iris_run
    meta = json.loads((run / "data.json").read_text())
    assert meta["scaling"]["kind"] == "standard"
    shift, factor = np.array(meta["scaling"]["shift"]), np.array(meta["scaling"]["factor"])
    raw = np.array([6.3, 2.9, 5.6, 1.8])
    layers = json.loads((run / "weights.json").read_text())["layers"]
    a = (raw - shift) / factor  # by hand: the scaling fitted on the training split, then the net
    a = np.tanh(np.array(layers[0]["weights"]) @ a + layers[0]["biases"])
    z = np.array(layers[1]["weights"]) @ a + layers[1]["biases"]
    expected = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    result = cli("predict", run, "--input", ",".join(map(str, raw)), "--json")
    assert result.exit_code == 0
    np.testing.assert_allclose(json.loads(result.stdout)[0]["output"], expected, rtol=1e-12)


def test_minmax_scaling_maps_the_training_range_to_0_1():
    X = np.array([[1.0, -2.0, 5.0], [3.0, 2.0, 5.0], [2.0, 0.0, 5.0]])
    scaler = Scaler.fit("minmax", X)
    np.testing.assert_array_equal(scaler.apply(X), [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    again = Scaler.from_json(json.loads(json.dumps(scaler.to_json())))
    np.testing.assert_array_equal(again.apply(np.array([[4.0, 4.0, 6.0]])), [[1.5, 1.5, 1.0]])


@pytest.mark.parametrize("name,n_in,n_out", [("xavier", 400, 100), ("he", 400, 100)])
def test_initializer_scales(name, n_in, n_out):
    w, b = INITIALIZERS[name](np.random.default_rng(0), n_out, n_in)
    assert w.shape == (n_out, n_in) and not b.any()
    if name == "xavier":  # U(-r, r), r = sqrt(6 / (in + out)): std r / sqrt(3)
        r = math.sqrt(6 / (n_in + n_out))
        assert np.abs(w).max() <= r and np.abs(w).max() > 0.99 * r
        assert w.std() == pytest.approx(r / math.sqrt(3), rel=0.02)
    else:  # N(0, 2 / in)
        assert w.std() == pytest.approx(math.sqrt(2 / n_in), rel=0.02)
        assert abs(w.mean()) < 0.01


def test_a_schedule_is_applied_by_train():
    # epoch 2 of an exponential schedule steps with lr * gamma: check the update against it
    cfg = load_config(
        CONFIGS / "worked_example.yaml",
        {
            "training.lr_schedule": ("exponential", "x"),
            "training.lr_gamma": (0.25, "x"),
            "training.epochs": (1, "x"),
        },
    )
    data = dataset(cfg, "x")
    one = fit(cfg, data, network(cfg)).net
    cfg.training.epochs = 2
    two = fit(cfg, data, network(cfg)).net
    probe = network(cfg)
    probe.theta[:] = one.theta
    probe.loss_and_grad(data.X, data.Y, LOSSES["sse"], probe.workspace(1))
    expected = one.theta - cfg.training.learning_rate * 0.25 * probe.grad
    np.testing.assert_allclose(two.theta, expected, rtol=0, atol=1e-15)


def test_ctrl_c_mid_epoch_keeps_the_weights_the_epoch_started_from(monkeypatch):
    cfg = load_config(CONFIGS / "moons.yaml", {"training.epochs": (5, "x"), "training.batch_size": (50, "x")})
    data = dataset(cfg, "x")
    two_epochs = cfg.model_copy(deep=True)
    two_epochs.training.epochs = 2
    expected = fit(two_epochs, data, network(two_epochs)).net.theta.copy()
    real, calls = Network.loss_and_grad, []
    batches = math.ceil(len(data.X) / 50)

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2 * batches + 3:  # the third batch of epoch 3
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Network, "loss_and_grad", interrupted)
    result = fit(cfg, data, network(cfg))
    assert result.status == ["interrupted"] and result.epochs_run == [2]
    np.testing.assert_array_equal(result.net.theta, expected)


@pytest.mark.slow
def test_a_crashed_run_is_marked_failed(cli, write_config, tmp_path, monkeypatch):
    from backprop_cli.run_folders import write as runs_write

    def crash(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(runs_write, "weights_json", crash)
    root = tmp_path / "runs"
    result = cli("train", write_config(XOR_YAML), "--runs-dir", root, "--quiet")
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)
    summary = json.loads((next(root.iterdir()) / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "a bug"


@pytest.mark.slow
def test_predict_defaults_to_the_latest_completed_run(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    assert cli("train", write_config(XOR_YAML), "--runs-dir", root, "--quiet", "--name", "good").exit_code == 0
    diverging = XOR_YAML.replace("output_activation: sigmoid", "output_activation: identity").replace(
        "learning_rate: 0.1", "learning_rate: 1.0e+300"
    )
    assert (
        cli("train", write_config(diverging, "bad.yaml"), "--runs-dir", root, "--quiet", "--name", "bad").exit_code == 1
    )
    result = cli("predict", "--runs-dir", root, "--input", "0,1")
    assert result.exit_code == 0  # not the newer, diverged run: no warning, and the run named
    assert result.stderr.startswith(f"run: {root / 'good-'}") and result.stderr.endswith(" (latest)\n")
    assert len(result.stderr.splitlines()) == 1
    assert "good-" in cli("predict", "--runs-dir", root, input="q\n").stdout


@pytest.mark.slow
def test_non_finite_weights_are_refused_at_load(cli, iris_run, tmp_path):
    import shutil

    root, run = iris_run
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    weights = json.loads((copy / "weights.json").read_text())
    weights["layers"][0]["weights"][0][0] = float("nan")
    (copy / "weights.json").write_text(json.dumps(weights))  # json writes NaN, which json reads back
    result = cli("predict", copy, "--input", "1,2,3,4")
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"Error: {copy / 'weights.json'}: layers.0.weights.0.0: input should be a finite number (got nan)\n"
    )
