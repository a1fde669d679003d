"""Dropout, L1 and gradient clipping: the engine against a plain NumPy loop written out here
(what PyTorch's nn.Dropout with the same masks, an explicit L1 term, clip_grad_value_ and
clip_grad_norm_ compute), per model in batched passes, exact continuation, and bad input."""

import json

import numpy as np
import pytest
from conftest import CONFIGS

from backprop_cli import grid as g
from backprop_cli.api import config
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.initializers import random_streams
from backprop_cli.run_folders.cells import Cells


def net_config(**overrides):
    rng = np.random.default_rng(7)
    base = {
        "seed": 3,
        "model": {"layers": [3, 6, 5, 2], "activation": "tanh", "output_activation": "sigmoid", "init": "xavier"},
        "training": {"loss": "mse", "learning_rate": 0.3, "epochs": 40},
        "data": {"inputs": rng.normal(size=(10, 3)).tolist(), "targets": rng.random((10, 2)).round(0).tolist()},
    }
    cfg = config(base)
    return config(cfg, **overrides) if overrides else cfg


def reference(cfg, epochs):
    """The same training written out: tanh hidden layers with inverted dropout (masks from the
    seed's fourth stream, one uniform draw per hidden layer and batch, kept where u >= P,
    scaled by 1 / (1 - P)), sigmoid outputs, mse, then g + l1 sign(w), clip to [-V, V], scale to norm
    C, and plain SGD. Parameters are [(W (out x in), b)], as weights.json holds them."""
    net = network(cfg)
    params = [(w.copy(), b.copy()) for w, b in net.get_params(0)]
    t, m = cfg.training, cfg.model
    data = dataset(cfg, "x")
    X, Y = data.X, data.Y
    masks_rng = random_streams(cfg.seed)[3]
    order_rng = random_streams(cfg.seed)[2]
    p = m.dropout_rates
    n = len(X)
    batch = t.batch_size or n
    for _ in range(epochs):
        if batch < n:
            order = order_rng.permutation(n)
            batches = [(X[order][s : s + batch], Y[order][s : s + batch]) for s in range(0, n, batch)]
        else:
            batches = [(X, Y)]
        for Xb, Yb in batches:
            acts, inputs, masks = [], [Xb], []
            a = Xb
            for l, (W, b) in enumerate(params):
                z = a @ W.T + b
                if l < len(params) - 1:
                    h = np.tanh(z)
                    u = masks_rng.random(h.shape) if any(p) else None
                    mask = (u >= p[l]) / (1 - p[l]) if u is not None else np.ones_like(h)
                    acts.append(h)
                    masks.append(mask)
                    a = h * mask
                    inputs.append(a)
                else:
                    a = 1 / (1 + np.exp(-z))
            delta = 2 * (a - Yb) / a.size * a * (1 - a)
            grads = [None] * len(params)
            for l in range(len(params) - 1, -1, -1):
                grads[l] = (delta.T @ inputs[l], delta.sum(0))
                if l:
                    delta = (delta @ params[l][0]) * masks[l - 1] * (1 - acts[l - 1] ** 2)
            flat = [np.concatenate([gw.ravel(), gb]) for gw, gb in grads]
            theta = [np.concatenate([W.ravel(), b]) for W, b in params]
            g_all = np.concatenate(flat) + t.l1 * np.sign(np.concatenate(theta))
            if t.clip_grad_value is not None:
                g_all = np.clip(g_all, -t.clip_grad_value, t.clip_grad_value)
            if t.clip_grad_norm is not None:
                g_all = g_all * min(1.0, t.clip_grad_norm / (np.sqrt(np.sum(g_all**2)) + 1e-6))
            at = 0
            for l, (W, b) in enumerate(params):
                gw = g_all[at : at + W.size].reshape(W.shape)
                at += W.size
                gb = g_all[at : at + b.size]
                at += b.size
                params[l] = (W - t.learning_rate * gw, b - t.learning_rate * gb)
    return params


SETTINGS = {
    "dropout": {"model__dropout": 0.3},
    "dropout per layer": {"model__dropout": [0.5, 0.1]},
    "l1": {"training__l1": 0.02},
    "clip value": {"training__clip_grad_value": 0.01},
    "clip norm": {"training__clip_grad_norm": 0.05},
    "all, minibatch": {
        "model__dropout": 0.25,
        "training__l1": 0.01,
        "training__clip_grad_value": 0.05,
        "training__clip_grad_norm": 0.08,
        "training__batch_size": 4,
    },
}


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS)
def test_training_equals_the_loop_written_out(settings):
    cfg = net_config(**settings)
    net = network(cfg)
    fit(cfg, dataset(cfg, "x"), net)
    for (w, b), (rw, rb) in zip(net.get_params(0), reference(cfg, cfg.training.epochs)):
        np.testing.assert_allclose(w, rw, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(b, rb, rtol=1e-12, atol=1e-15)


def test_clipping_binds_in_that_example():
    # the clip thresholds above are small enough to change the result (else the test proves little)
    plain = network(net_config())
    fit(net_config(), dataset(net_config(), "x"), plain)
    for over in ({"training__clip_grad_value": 0.01}, {"training__clip_grad_norm": 0.05}):
        cfg = net_config(**over)
        clipped = network(cfg)
        fit(cfg, dataset(cfg, "x"), clipped)
        assert np.abs(clipped.theta - plain.theta).max() > 1e-3


def test_prediction_and_validation_use_no_masks():
    cfg = net_config(model__dropout=0.5)
    net = network(cfg)
    fit(cfg, dataset(cfg, "x"), net)
    X = dataset(cfg, "x").X
    first, second = net.predict(X, 0), net.predict(X, 0)
    assert np.array_equal(first, second)
    a = X
    for l, (w, b) in enumerate(net.get_params(0)):
        z = a @ w.T + b
        a = np.tanh(z) if l < 2 else 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(first, a, rtol=1e-13)


def test_dropout_changes_no_other_randomness():
    # the same initial weights and batch order with and without dropout: the masks have a stream of their own
    runs = []
    for p in (0.0, 0.5):
        cfg = net_config(model__dropout=p, training__batch_size=3, training__epochs=5)
        net = network(cfg)
        initial = net.theta.copy()
        result = fit(cfg, dataset(cfg, "x"), net)
        runs.append((initial, result.checkpoint(0).batch_order))
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


@pytest.mark.parametrize("batch_size", [None, 4])
def test_a_checkpoint_with_dropout_continues_bit_for_bit(batch_size):
    cfg = net_config(model__dropout=[0.4, 0.2], training__l1=0.01, training__batch_size=batch_size, training__epochs=60)
    data = dataset(cfg, "x")
    straight = network(cfg)
    fit(cfg, data, straight)
    first = network(cfg)
    saved = fit(cfg, data, first, stop_after=30).checkpoint(0)
    assert saved.dropout_order is not None
    rest = cfg.model_copy(deep=True)
    rest.training.epochs = 30
    then = network(cfg)
    fit(rest, data, then, start_epoch=30, resume=[saved])
    assert np.array_equal(then.theta, straight.theta)


def test_per_model_settings_in_one_pass_equal_plain_runs():
    cfg = net_config(training__epochs=30)
    values = {
        "dropout": [0.0, 0.3, [0.5, 0.0], 0.2],
        "l1": [0.0, 0.01, 0.0, 0.05],
        "clip_grad_norm": [None, 0.05, 1.0, None],
        "clip_grad_value": [0.02, None, None, 0.01],
    }
    net = network(cfg, n_models=4)
    fit(cfg, dataset(cfg, "x"), net, per_model=values)
    for k in range(4):
        one = net_config(
            training__epochs=30,
            model__dropout=values["dropout"][k],
            training__l1=values["l1"][k],
            training__clip_grad_norm=values["clip_grad_norm"][k],
            training__clip_grad_value=values["clip_grad_value"][k],
        )
        alone = network(one)
        fit(one, dataset(one, "x"), alone)
        assert np.array_equal(net.theta[k], alone.theta[0]), k


def test_a_grid_over_dropout_and_l1_trains_per_model_and_equals_plain_runs(tmp_path):
    # one pass for the values of one seed; seeds apart (the masks come from each cell's seed)
    grid = {"model.dropout": [0.0, 0.4], "training.l1": [0.0, 0.01]}
    cells = Cells(CONFIGS / "moons.yaml", grid, [0, 1], {"training.epochs": (20, "--epochs")}, [])
    jobs = g.plan(cells, range(len(cells)), str(CONFIGS / "moons.yaml"), 0.01, 1, 2**30)
    assert sorted(len(j.cells) for j in jobs) == [4, 4]  # per seed: 2 x 2 values in one pass
    assert all(set(j.per_model) == {"dropout", "l1"} for j in jobs)
    for job in jobs:
        chunk = g.train_job(job)
        for row, i in enumerate(job.cells):
            cfg = cells.cfg(i)
            net = network(cfg)
            fit(cfg, dataset(cfg, "x"), net)
            np.testing.assert_array_equal(chunk.weights[row], net.theta[0])


@pytest.mark.parametrize(
    "sets, message",
    [
        (["model.dropout=1"], "model.dropout (from --set model.dropout): must be < 1 (got 1)"),
        (["model.dropout=-0.1"], "model.dropout (from --set model.dropout): must be >= 0 (got -0.1)"),
        (
            ["model.dropout=[0.2, 0.1, 0.3]"],
            "model.dropout (from --set model.dropout): needs one probability per hidden layer: 2 (got 3) "
            "(no dropout on the output layer)",
        ),
        (["training.l1=-0.5"], "training.l1 (from --set training.l1): must be >= 0 (got -0.5)"),
        (
            ["training.clip_grad_norm=0"],
            "training.clip_grad_norm (from --set training.clip_grad_norm): must be > 0 (got 0)",
        ),
        (
            ["training.clip_grad_value=-1"],
            "training.clip_grad_value (from --set training.clip_grad_value): must be > 0 (got -1)",
        ),
        (
            ["model.dropout=0.5", "training.gradient=numerical"],
            "model.dropout (from --set model.dropout): needs training.gradient: analytic "
            "(finite differences of a random mask)",
        ),
    ],
)
def test_bad_settings_are_one_line_config_errors(cli, write_config, sets, message):
    path = write_config((CONFIGS / "moons.yaml").read_text())
    result = cli("train", path, *[a for s in sets for a in ("--set", s)])
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: {message}\n"


def test_dropout_on_a_network_without_hidden_layers_is_refused(cli, write_config):
    path = write_config(
        """
        model: {layers: [2, 1], dropout: 0.5}
        data: {inputs: [[0, 0], [1, 1]], targets: [0, 1]}
        """
    )
    result = cli("train", path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}:2: model.dropout: the network has no hidden layer to drop units from\n"


@pytest.mark.slow
def test_a_run_with_dropout_records_its_settings_and_trains_from_its_own_config(cli, write_config, tmp_path):
    path = write_config((CONFIGS / "moons.yaml").read_text())
    args = ["--set", "model.dropout=0.3", "--set", "training.l1=0.001", "--set", "training.clip_grad_norm=1"]
    first = cli("train", path, *args, "--epochs", "30", "--runs-dir", tmp_path / "runs", "--quiet")
    assert first.exit_code == 0, first.output
    run = tmp_path / "runs" / first.output.strip().split("/")[-1]
    again = cli("train", run / "config.yaml", "--runs-dir", tmp_path / "again", "--quiet")
    assert again.exit_code == 0, again.output
    rerun = tmp_path / "again" / again.output.strip().split("/")[-1]
    assert json.loads((run / "weights.json").read_text()) == json.loads((rerun / "weights.json").read_text())


# -- explain and gradcheck ------------------------------------------------------------------------


@pytest.mark.parametrize("epoch", [1, 12])
def test_explain_shows_the_runs_own_step_with_its_masks_penalty_and_clipping(epoch):
    from backprop_cli.explain import explain_step

    cfg = net_config(model__dropout=0.5, training__l1=0.01, training__clip_grad_norm=0.05, training__weight_decay=0.001)
    data = dataset(cfg, "x")
    net, kept = network(cfg), {}

    def keep(e, loss, seen):
        kept[e] = seen.theta[0].copy()

    fit(cfg, data, net, callback=keep)
    sections, (_, old, new) = explain_step(cfg, data, epoch=epoch, sample=2)
    assert np.array_equal(new[0], kept[epoch])  # the step shown is the run's own, masks and all
    fwd, upd = sections[0], sections[-1]
    rows = [dict(zip(fwd.headers, r)) for r in fwd.rows]
    masks = {float(r["dropout mask"]) for r in rows if r["layer"].startswith("hidden")}
    assert masks == {0.0, 2.0}  # kept units are scaled by 1 / (1 - 0.5)
    # layer 2's z is computed from layer 1's a x mask
    params = network(cfg)
    params.theta[0] = old[0]
    (W2, b2) = params.get_params(0)[1]
    dropped = np.array([float(r["a x mask"]) for r in rows if r["layer"].startswith("hidden 1")])
    z2 = np.array([float(r["z (net input)"]) for r in rows if r["layer"].startswith("hidden 2")])
    np.testing.assert_allclose(W2 @ dropped + b2, z2, rtol=1e-7, atol=1e-9)
    # sgd: new = old - lr * (g (clipped) + weight_decay * old)
    table = [dict(zip(upd.headers, r)) for r in upd.rows]
    assert "l1 * sign(old)" in upd.headers and "g (clipped)" in upd.headers
    for r in table[:5]:
        o, gc, n = float(r["old"]), float(r["g (clipped)"]), float(r["new"])
        assert n == pytest.approx(o - 0.3 * (gc + 0.001 * o), rel=1e-7, abs=1e-9)
    assert "scaled by min(1, 0.05 / (norm + 1e-6))" in upd.note


def test_gradcheck_checks_the_penalised_gradient_through_fixed_masks():
    from backprop_cli.gradcheck import check_gradients, gradcheck

    cfg = net_config(model__dropout=[0.5, 0.3], training__l1=0.01, training__weight_decay=0.02)
    data = dataset(cfg, "x")
    reports = gradcheck(cfg, data, epochs=10, sample=None)
    assert all(r.passed for r in reports), reports
    # the same check fails a gradient that leaves out the masks or the penalty
    net = network(cfg)
    from backprop_cli.losses import LOSSES
    from backprop_cli.regularization import Dropout

    masks = Dropout(np.array([[0.5, 0.3]]), [6, 5], net.dtype, random_streams(cfg.seed)[3]).masks(len(data.X))
    ws = net.workspace(len(data.X))
    net.loss_and_grad(data.X, data.Y, LOSSES["mse"], ws)  # no masks
    no_masks = net.grad[0] + 0.01 * np.sign(net.theta[0]) + 0.02 * net.theta[0]
    net.loss_and_grad_dropped(data.X, data.Y, LOSSES["mse"], ws, masks)
    no_penalty = net.grad[0].copy()
    for wrong in (no_masks, no_penalty):
        report = check_gradients(net, data, "mse", 0, 1e-4, 1e-6, analytic=wrong, dropout=masks, l1=0.01, l2=0.02)
        assert not report.passed


def test_explain_names_the_norm_clip_grad_norm_scaled_by():
    import re

    from backprop_cli.explain import explain_step

    cfg = net_config(training__l1=0.01, training__clip_grad_value=0.05, training__clip_grad_norm=0.1)
    sections, _ = explain_step(cfg, dataset(cfg, "x"), epoch=3)
    upd = sections[-1]
    norm = float(re.search(r"its norm after clipping each value: ([0-9.e+-]+)\)", upd.note).group(1))
    scale = min(1.0, 0.1 / (norm + 1e-6))
    for row in upd.rows[:6]:
        r = dict(zip(upd.headers, row))
        raw = float(r["dL/dparam"]) + float(r["l1 * sign(old)"])
        assert float(r["g (clipped)"]) == pytest.approx(np.clip(raw, -0.05, 0.05) * scale, rel=1e-7, abs=1e-12)
