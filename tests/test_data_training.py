"""Real data and training options: CSV, built-ins, splits, scaling, minibatches, optimizers,
schedules, early stopping, float32, and the shipped configs' figures."""

import csv
import json
import math

import numpy as np
import pytest
from conftest import CONFIGS

from backprop_cli.config import load_config
from backprop_cli.errors import DataError
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.initializers import random_streams
from backprop_cli.optimizers import OPTIMIZERS
from backprop_cli.training import make_schedule


def _load(path, **over):
    cfg = load_config(path, {k: (v, k) for k, v in over.items()})
    return cfg, dataset(cfg, str(path))


# -- optimizers against hand-computed steps ----------------------------------------------------


def _two_steps(name, **kw):
    theta = np.array([[1.0, -2.0]])
    opt = OPTIMIZERS[name](theta.shape, np.float64, **kw)
    lr = np.array([[0.1]])
    for g in ([0.5, -1.0], [0.25, 2.0]):
        opt.step(theta, np.array([g]), lr)
    return theta[0]


def test_sgd_step():
    # 1 - 0.1*0.5 - 0.1*0.25 = 0.925 ; -2 + 0.1 - 0.2 = -2.1
    np.testing.assert_allclose(_two_steps("sgd"), [0.925, -2.1], atol=1e-15)


def test_sgd_weight_decay():
    # step 1: g = 0.5 + 0.1*1 = 0.6 -> 0.94 ; step 2: g = 0.25 + 0.1*0.94 = 0.344 -> 0.9056
    assert _two_steps("sgd", weight_decay=0.1)[0] == pytest.approx(0.9056, abs=1e-15)


def test_momentum_step():
    # v1 = 0.5 -> w = 1 - 0.05 = 0.95 ; v2 = 0.9*0.5 + 0.25 = 0.7 -> w = 0.95 - 0.07 = 0.88
    assert _two_steps("momentum", momentum=0.9)[0] == pytest.approx(0.88, abs=1e-15)


def test_nesterov_step():
    # v1 = 0.5, step g + mu v = 0.5 + 0.45 = 0.95 -> 0.905 ; v2 = 0.7, step 0.25 + 0.63 = 0.88 -> 0.817
    assert _two_steps("momentum", momentum=0.9, nesterov=True)[0] == pytest.approx(0.817, abs=1e-15)


def test_rmsprop_step():
    # s1 = 0.1*0.25 = 0.025 -> w = 1 - 0.1*0.5/(sqrt(0.025)+1e-8)
    s1 = 0.1 * 0.25
    w1 = 1 - 0.1 * 0.5 / (math.sqrt(s1) + 1e-8)
    s2 = 0.9 * s1 + 0.1 * 0.0625
    w2 = w1 - 0.1 * 0.25 / (math.sqrt(s2) + 1e-8)
    assert _two_steps("rmsprop", rho=0.9, eps=1e-8)[0] == pytest.approx(w2, abs=1e-14)


def test_adam_step():
    b1, b2, eps, w = 0.9, 0.999, 1e-8, 1.0
    m = v = 0.0
    for t, g in enumerate([0.5, 0.25], start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w -= 0.1 * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
    assert _two_steps("adam", beta1=b1, beta2=b2, eps=eps)[0] == pytest.approx(w, abs=1e-14)


@pytest.mark.parametrize(
    "schedule,epoch,factor",
    [
        ("constant", 50, 1.0),
        ("step", 100, 1.0),
        ("step", 101, 0.5),
        ("step", 201, 0.25),
        ("exponential", 3, 0.25),
        ("cosine", 1, 1.0),
        ("cosine", 1000, 0.1),
        ("cosine", 500.5, 0.55),
    ],
)
def test_learning_rate_schedules(write_config, schedule, epoch, factor):
    cfg = load_config(
        write_config(f"""
        model: {{layers: [2, 2, 1]}}
        training: {{epochs: 1000, learning_rate: 1.0, lr_schedule: {schedule}, lr_step_size: 100, lr_gamma: 0.5, lr_min: 0.1}}
        data: {{builtin: xor}}
    """)
    )
    assert make_schedule(cfg.training).factor(epoch, cfg.training.epochs) == pytest.approx(factor)


# -- data -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_csv_with_class_names_round_trips_through_predict(cli, write_config, tmp_path):
    rows = ["a,b,kind"] + [f"{x},{1 - x},{'cat' if x > 0.5 else 'dog'}" for x in np.linspace(0, 1, 20)]
    (tmp_path / "pets.csv").write_text("\n".join(rows) + "\n")
    path = write_config("""
        seed: 0
        model: {layers: [2, 8, 2], activation: tanh, output_activation: softmax, init: xavier}
        training: {loss: cross_entropy, optimizer: adam, learning_rate: 0.05, epochs: 300}
        data: {csv: pets.csv, target: kind, scale: standard}
    """)
    root = tmp_path / "runs"
    assert cli("train", path, "--runs-dir", root, "--quiet").exit_code == 0
    run = next(root.iterdir())
    meta = json.loads((run / "data.json").read_text())
    assert meta["class_names"] == ["cat", "dog"] and meta["feature_names"] == ["a", "b"]
    assert meta["scaling"]["kind"] == "standard"
    result = cli("predict", run, "--input", "0.95,0.05", "--input", "0.05,0.95", "--json")
    assert [r["class"] for r in json.loads(result.stdout)] == ["cat", "dog"]


def test_integer_class_column_becomes_one_hot_for_softmax(write_config, tmp_path):
    (tmp_path / "d.csv").write_text("x,y\n0,0\n1,1\n2,2\n0.5,0\n")
    cfg, data = _load(
        write_config("""
        model: {layers: [1, 3], output_activation: softmax}
        training: {loss: cross_entropy}
        data: {csv: d.csv}
    """)
    )
    assert data.Y.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]


@pytest.mark.parametrize(
    "content,message",
    [
        ("a,b,y\n1,2,0\n3,x,1\n", "row 3, column 2 ('b'): 'x' is not a number"),
        ("a,b,y\n1,2,0\n3,nan,1\n", "row 3, column 2 ('b'): 'nan' is not a finite number"),
        ("a,b,y\n1,2,0\n3,4\n", "row 3 has 2 values, expected 3 (ragged rows)"),
        ("", "the file is empty"),
        ("a,b,y\n", "no data rows (only a header)"),
    ],
    ids=["non-numeric", "nan", "ragged", "empty", "header only"],
)
def test_csv_errors_name_file_row_and_column(cli, write_config, tmp_path, content, message):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(content)
    path = write_config("model: {layers: [2, 2, 1]}\ndata: {csv: bad.csv}\n")
    result = cli("train", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert result.stderr == f"Error: {csv_path}: {message}\n"
    assert not (tmp_path / "runs").exists()


def test_missing_csv_and_unknown_target_column(cli, write_config, tmp_path):
    path = write_config("model: {layers: [2, 2, 1]}\ndata: {csv: nope.csv}\n")
    result = cli("train", path)
    assert result.exit_code == 2 and result.stderr == f"Error: {tmp_path / 'nope.csv'}: data file not found\n"
    (tmp_path / "ok.csv").write_text("a,b,y\n1,2,0\n")
    path = write_config("model: {layers: [2, 2, 1]}\ndata: {csv: ok.csv, target: z}\n")
    result = cli("train", path)
    assert result.stderr == f"Error: {tmp_path / 'ok.csv'}: data.target: no column named 'z' (columns: a, b, y)\n"


def test_class_index_out_of_range(cli, write_config):
    path = write_config("""
        model: {layers: [2, 2, 2], output_activation: softmax}
        training: {loss: cross_entropy}
        data: {inputs: [[0, 0], [1, 1]], targets: [0, 2]}
    """)
    result = cli("train", path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: data.targets: target 2: class index 2 out of range for 2 classes\n"


def test_split_is_seeded_and_stratified():
    cfg, a = _load(CONFIGS / "iris.yaml")
    _, b = _load(CONFIGS / "iris.yaml")
    assert np.array_equal(a.X_val, b.X_val)
    assert a.Y_val.sum(axis=0).tolist() == [10, 10, 10]
    _, c = _load(CONFIGS / "iris.yaml", seed=7)
    assert not np.array_equal(a.X_val, c.X_val)


def test_scaling_is_fitted_on_the_training_split():
    _, data = _load(CONFIGS / "iris.yaml")
    np.testing.assert_allclose(data.X.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(data.X.std(axis=0), 1, atol=1e-12)
    assert not np.allclose(data.X_val.mean(axis=0), 0, atol=1e-3)


def test_builtin_generators_follow_the_seed():
    for name in ("circles", "moons", "spirals", "blobs", "sine"):
        path = CONFIGS / "moons.yaml"
        cfg = load_config(
            path,
            {
                "data.builtin": (name, "x"),
                "model.layers": (
                    [2, 8, 3 if name in ("spirals", "blobs") else 2] if name != "sine" else [1, 8, 1],
                    "x",
                ),
                "model.output_activation": ("identity" if name == "sine" else "softmax", "x"),
                "training.loss": ("mse" if name == "sine" else "cross_entropy", "x"),
            },
        )
        a = dataset(cfg, "x")
        b = dataset(cfg, "x")
        assert np.array_equal(a.X, b.X) and np.all(np.isfinite(a.X)), name


# -- training options ------------------------------------------------------------------------------


def test_minibatch_epoch_loss_is_the_mean_over_batches(write_config):
    cfg, data = _load(CONFIGS / "sine.yaml", **{"training.epochs": 1, "training.optimizer": "sgd"})
    net = network(cfg)
    start = net.theta.copy()
    result = fit(cfg, data, net)
    # replay: same shuffle stream, batch by batch
    from backprop_cli.losses import LOSSES

    replay = network(cfg)
    replay.theta[:] = start
    order = random_streams(cfg.seed)[2].permutation(len(data.X))
    X, Y = data.X[order], data.Y[order]
    losses = []
    for s in range(0, len(X), 32):
        losses.append(
            replay.loss_and_grad(X[s : s + 32], Y[s : s + 32], LOSSES["mse"], replay.workspace(len(X[s : s + 32])))[0]
        )
        replay.theta -= cfg.training.learning_rate * replay.grad
    assert result.history["loss"][0, 0] == pytest.approx(np.mean(losses), rel=1e-12)
    np.testing.assert_allclose(net.theta, replay.theta, rtol=0, atol=1e-14)


def test_early_stopping_restores_the_best_weights(write_config):
    cfg, data = _load(
        CONFIGS / "iris.yaml",
        **{"training.epochs": 2000, "training.early_stopping": {"monitor": "val_loss", "patience": 10}},
    )
    result = fit(cfg, data, network(cfg))
    assert result.stop_reason == ["early_stopping"] and result.status == ["completed"]
    best = result.best_epoch[0]
    assert result.epochs_run[0] == best + 10
    assert result.restored_epoch == [best]
    val = result.history["val_loss"][:, 0]
    assert val[best - 1] == np.nanmin(val)
    # the kept weights give the best epoch's validation loss
    from backprop_cli.losses import LOSSES

    net = result.net
    kept = net.loss_only(data.X_val, data.Y_val, LOSSES["cross_entropy"], net.workspace(len(data.X_val)))[0]
    assert kept == pytest.approx(val[best - 1], rel=1e-12)


def test_stop_at_loss(write_config):
    cfg, data = _load(CONFIGS / "xor.yaml", **{"training.stop_at_loss": 0.1})
    result = fit(cfg, data, network(cfg))
    assert result.stop_reason == ["stop_at_loss"]
    losses = result.history["loss"][:, 0]
    assert losses[-1] <= 0.1 < losses[-2]


def test_float32_trains_in_float32():
    cfg, data = _load(CONFIGS / "moons.yaml", **{"training.dtype": "float32", "training.epochs": 50})
    net = network(cfg)
    result = fit(cfg, data, net)
    assert net.theta.dtype == np.float32 and data.X.dtype == np.float32
    assert result.status == ["completed"] and result.final("val_accuracy") > 0.8


@pytest.mark.slow
@pytest.mark.parametrize(
    "config,metric,minimum",
    [
        ("iris", "val_accuracy", 0.95),
        ("digits", "val_accuracy", 0.95),
        ("moons", "val_accuracy", 0.95),
        ("spirals", "val_accuracy", 0.95),
        ("sine", "val_r2", 0.98),
        ("xor_adam_bce", "accuracy", 1.0),
    ],
)
def test_shipped_configs_reach_their_figures(config, metric, minimum):
    cfg, data = _load(CONFIGS / f"{config}.yaml")
    result = fit(cfg, data, network(cfg))
    assert result.status == ["completed"]
    assert result.final(metric) >= minimum


@pytest.mark.slow
def test_overfit_memorises_and_regularization_generalises():
    # the README's lesson: the figures of configs/overfit.yaml without and with dropout and l1
    cfg, data = _load(CONFIGS / "overfit.yaml")
    plain = fit(cfg, data, network(cfg))
    assert plain.final("loss") < 1e-4 and plain.final("accuracy") == 1.0
    assert plain.final("val_loss") > 2.5 and plain.final("val_accuracy") == pytest.approx(0.875)
    cfg.model.dropout, cfg.training.l1 = 0.3, 0.003
    regular = fit(cfg, data, network(cfg))
    assert regular.final("val_loss") < 0.35 and regular.final("val_accuracy") == pytest.approx(0.925)


def test_validation_csv_and_several_target_columns(write_config, tmp_path):
    rows = lambda xs: "a,b,y1,y2\n" + "".join(f"{x},{2 * x},{x + 1},{-x}\n" for x in xs)  # noqa: E731
    (tmp_path / "train.csv").write_text(rows([0.0, 0.5, 1.0, 1.5]))
    (tmp_path / "val.csv").write_text(rows([0.25, 0.75]))
    cfg, data = _load(
        write_config("""
        model: {layers: [2, 4, 2], activation: tanh, output_activation: identity}
        training: {loss: mse, epochs: 5}
        data: {csv: train.csv, target: [y1, y2], validation_csv: val.csv}
    """)
    )
    assert data.Y.tolist() == [[1.0, 0.0], [1.5, -0.5], [2.0, -1.0], [2.5, -1.5]]
    assert data.X_val.tolist() == [[0.25, 0.5], [0.75, 1.5]]
    result = fit(cfg, data, network(cfg))
    assert list(result.history) == ["loss", "mae", "r2", "val_loss", "val_mae", "val_r2"]


def test_validation_csv_classes_follow_the_training_data(write_config, tmp_path):
    # integer class indices feeding a softmax, as in digits
    (tmp_path / "t.csv").write_text("x,y\n0,0\n1,1\n2,2\n0.1,0\n")
    (tmp_path / "v.csv").write_text("x,y\n0.2,0\n1.9,2\n")
    _, data = _load(
        write_config("""
        model: {layers: [1, 4, 3], output_activation: softmax}
        training: {loss: cross_entropy}
        data: {csv: t.csv, validation_csv: v.csv}
    """)
    )
    assert data.Y_val.tolist() == [[1, 0, 0], [0, 0, 1]]
    # class names: the validation file's own order maps onto the training data's
    (tmp_path / "t2.csv").write_text("x,k\n0,ant\n1,bee\n2,cat\n")
    (tmp_path / "v2.csv").write_text("x,k\n2,cat\n0,ant\n")
    _, data = _load(
        write_config(
            """
        model: {layers: [1, 4, 3], output_activation: softmax}
        training: {loss: cross_entropy}
        data: {csv: t2.csv, validation_csv: v2.csv}
    """,
            "names.yaml",
        )
    )
    assert data.class_names == ["ant", "bee", "cat"]
    assert data.Y_val.tolist() == [[0, 0, 1], [1, 0, 0]]
    (tmp_path / "v3.csv").write_text("x,k\n2,dog\n")
    path = write_config(
        """
        model: {layers: [1, 4, 3], output_activation: softmax}
        training: {loss: cross_entropy}
        data: {csv: t2.csv, validation_csv: v3.csv}
    """,
        "unknown.yaml",
    )
    with pytest.raises(DataError) as info:
        _load(path)
    assert str(info.value) == f"{tmp_path / 'v3.csv'}: class 'dog' does not occur in the training data"


# -- frozen parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "rmsprop", "adam"])
@pytest.mark.parametrize(
    "groups,frozen",
    [(["biases"], "b"), (["layer1"], "1"), (["layer2.weights"], "w2"), (["weights"], "w")],
    ids=["biases", "layer1", "layer2.weights", "weights"],
)
def test_frozen_parameters_keep_their_initial_values(optimizer, groups, frozen):
    from backprop_cli.network import param_names

    over = {
        "training.freeze": groups,
        "training.optimizer": optimizer,
        "training.weight_decay": 0.01,
        "training.epochs": 50,
    }
    cfg, data = _load(CONFIGS / "xor.yaml", **over)
    start = network(cfg).theta[0].copy()
    end = fit(cfg, data, network(cfg)).net.theta[0]
    for p, name in enumerate(param_names([2, 2, 1])):
        is_frozen = {
            "b": name.kind == "bias",
            "w": name.kind == "weight",
            "1": name.layer == 0,
            "w2": name.layer == 1 and name.kind == "weight",
        }[frozen]
        if is_frozen:
            assert end[p] == start[p], name.name  # no update, no weight decay
        else:
            assert end[p] != start[p], name.name


@pytest.mark.parametrize(
    "groups,message",
    [
        ("[layer3]", ":7: training.freeze[0]: 'layer3': the network has layers 1 to 2"),
        (
            "[weights, bias]",
            ":7: training.freeze[1]: 'bias' is not a parameter group (weights, biases, layerN, "
            "layerN.weights or layerN.biases (N from 1))",
        ),
        ("[layer1.biases]\n  # no biases\n", None),
    ],
    ids=["no such layer", "not a group", "biases without bias"],
)
def test_bad_freeze_groups_exit_2(cli, write_config, tmp_path, groups, message):
    bias = "\n  bias: false" if message is None else ""
    path = write_config(f"""\
model:
  layers: [2, 2, 1]{bias}
data:
  builtin: xor
training:
  epochs: 5
  freeze: {groups}""")
    result = cli("train", path, "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2
    expected = message or ":8: training.freeze[0]: 'layer1.biases': the network has no biases (model.bias is false)"
    assert result.stderr == f"Error: {path}{expected}\n"


# -- the numbers of the saved weights ------------------------------------------------------------------


@pytest.mark.slow
def test_summary_reports_the_restored_weights_own_numbers(cli, tmp_path):
    root = tmp_path / "runs"
    result = cli("train", CONFIGS / "digits.yaml", "--runs-dir", root)
    assert result.exit_code == 0, result.output
    run = next(root.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    saved = summary["saved_weights"]
    assert saved["weights"] == "restored" and saved["epoch"] == summary["best_epoch"]
    rows = list(csv.DictReader((run / "history.csv").open()))
    best = rows[saved["epoch"] - 1]
    # the weights restored are those the best epoch started from: its validation numbers are theirs
    assert saved["val_loss"] == pytest.approx(float(best["val_loss"]), rel=1e-12)
    assert saved["val_accuracy"] == pytest.approx(float(best["val_accuracy"]), rel=1e-12)
    # its training loss is not: with minibatches it is the mean over weights that moved in the epoch
    assert saved["loss"] != pytest.approx(float(best["loss"]), rel=1e-6)
    assert saved["val_loss"] != summary["val_loss"]  # the last epoch's, reported beside it
    line = next(l for l in result.stdout.splitlines() if l.startswith("restored the weights of epoch"))
    assert line.startswith(f"restored the weights of epoch {saved['epoch']} (restore_best): loss ")


@pytest.mark.slow
def test_summary_reports_the_final_weights_own_numbers(cli, write_config, tmp_path):
    from backprop_cli.losses import LOSSES

    root = tmp_path / "runs"
    assert cli("train", CONFIGS / "xor.yaml", "--runs-dir", root, "--epochs", "300", "--quiet").exit_code == 0
    run = next(root.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    saved = summary["saved_weights"]
    assert saved["weights"] == "final" and saved["epoch"] == 300
    # final_loss is measured before epoch 300's update; the saved weights are after it
    cfg, data = _load(CONFIGS / "xor.yaml", **{"training.epochs": 300})
    net = fit(cfg, data, network(cfg)).net
    after = net.loss_only(data.X, data.Y, LOSSES["sse"], net.workspace(len(data.X)))[0]
    assert saved["loss"] == pytest.approx(after, rel=1e-12) and saved["loss"] < summary["final_loss"]
