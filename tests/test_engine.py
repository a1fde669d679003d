"""The engine against finite differences, a hand calculation, and its own determinism."""

import math
import warnings

import numpy as np
import pytest
from conftest import CONFIGS

from backprop_cli.activations import ACTIVATIONS, HIDDEN_ACTIVATIONS, apply
from backprop_cli.config import load_config
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.losses import LOSSES
from backprop_cli.network import Network

VALID_PAIRS = [(out, loss) for out in HIDDEN_ACTIVATIONS for loss in ("mse", "sse")] + [
    ("sigmoid", "bce"),
    ("softmax", "cross_entropy"),
]


def _targets(rng, out_act, loss, n, m):
    if loss == "cross_entropy":
        return np.eye(m)[rng.integers(0, m, n)]
    if loss == "bce":
        return rng.integers(0, 2, (n, m)).astype(float)
    return rng.uniform(-1, 1, (n, m)) if out_act in ("tanh", "identity", "leaky_relu") else rng.uniform(0, 1, (n, m))


def _central_differences(net, X, Y, loss, eps=1e-6):
    """Central differences of the loss for every parameter, written out independently."""
    ws = net.workspace(len(X))
    grad = np.zeros(net.n_params)
    for p in range(net.n_params):
        saved = net.theta[0, p]
        net.theta[0, p] = saved + eps
        plus = loss.value(net.forward_into(X, ws), Y, ws.Z)[0]
        net.theta[0, p] = saved - eps
        minus = loss.value(net.forward_into(X, ws), Y, ws.Z)[0]
        net.theta[0, p] = saved
        grad[p] = (plus - minus) / (2 * eps)
    return grad


def _random_net(rng, hidden, out_act, m, bias=True):
    net = Network([3, 4, 4, m], [hidden, hidden, out_act], bias=bias)
    net.theta[:] = rng.normal(0, 0.8, net.theta.shape)
    return net


@pytest.mark.parametrize("hidden", HIDDEN_ACTIVATIONS)
def test_every_hidden_activation_matches_finite_differences(hidden):
    rng = np.random.default_rng(3)
    net = _random_net(rng, hidden, "identity", 2)
    X, Y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    loss = LOSSES["mse"]
    net.loss_and_grad(X, Y, loss, net.workspace(5))
    numeric = _central_differences(net, X, Y, loss)
    np.testing.assert_allclose(net.grad[0], numeric, rtol=1e-6, atol=1e-9, err_msg=f"hidden {hidden}")


@pytest.mark.parametrize("out_act,loss_name", VALID_PAIRS)
def test_every_output_activation_and_loss_pair_matches_finite_differences(out_act, loss_name):
    rng = np.random.default_rng(11)
    m = 3
    net = _random_net(rng, "tanh", out_act, m)
    X = rng.normal(size=(6, 3))
    Y = _targets(rng, out_act, loss_name, 6, m)
    loss = LOSSES[loss_name]
    value = net.loss_and_grad(X, Y, loss, net.workspace(6))
    assert value.shape == (1,)
    numeric = _central_differences(net, X, Y, loss)
    np.testing.assert_allclose(net.grad[0], numeric, rtol=1e-6, atol=1e-9, err_msg=f"{out_act} + {loss_name}")


def test_gradients_without_biases_match_finite_differences():
    rng = np.random.default_rng(5)
    net = _random_net(rng, "sigmoid", "sigmoid", 2, bias=False)
    X, Y = rng.normal(size=(4, 3)), rng.uniform(size=(4, 2))
    net.loss_and_grad(X, Y, LOSSES["sse"], net.workspace(4))
    np.testing.assert_allclose(net.grad[0], _central_differences(net, X, Y, LOSSES["sse"]), rtol=1e-6, atol=1e-10)


def test_relu_derivative_at_zero_is_zero():
    assert ACTIVATIONS["relu"].grad(np.array([0.0, 1.0]), np.empty(2)).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_relu_gives_the_same_bits_as_maximum_with_zero_in_place_and_not(dtype):
    # relu runs np.maximum against a shared array of zeros (faster than against the scalar 0):
    # the results, signed zeros, NaN and infinities included, must not change
    z = np.array([[-0.0, 0.0, -1.5, 2.5, np.nan, -np.inf, np.inf, 1e-300]] * 3, dtype)
    expected = np.maximum(z, 0.0)
    out = ACTIVATIONS["relu"].forward(z, np.empty_like(z))
    assert out.tobytes() == expected.tobytes()
    in_place = z.copy()
    ACTIVATIONS["relu"].forward(in_place, in_place)
    assert in_place.tobytes() == expected.tobytes()
    # the shared zeros are still zeros for the next caller
    assert ACTIVATIONS["relu"].forward(np.full_like(z, -1.0), np.empty_like(z)).tobytes() == np.zeros_like(z).tobytes()


def test_leaky_relu_values_and_slope():
    z = np.array([-2.0, 0.0, 3.0])
    assert apply("leaky_relu", z).tolist() == [-0.02, 0.0, 3.0]
    a = apply("leaky_relu", z)
    assert ACTIVATIONS["leaky_relu"].grad(a, np.empty(3)).tolist() == [0.01, 0.01, 1.0]


def test_sigmoid_and_softmax_are_stable_without_warnings():
    z = np.array([[-1000.0, 0.0, 1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = apply("sigmoid", z)
        sm = apply("softmax", z)
        t = apply("tanh", z)
    assert s.tolist() == [[0.0, 0.5, 1.0]]
    assert np.all(np.isfinite(sm)) and sm[0, 2] == 1.0
    assert t.tolist() == [[-1.0, 0.0, 1.0]]


def _softplus(z: float) -> float:
    """log(1 + e^z) in plain floats, exact for any z: max(z, 0) + log1p(e^-|z|)."""
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


@pytest.mark.parametrize("scale", [1.0, 20.0, 40.0, 100.0, 200.0, 800.0, 1000.0])
def test_bce_and_cross_entropy_from_logits_stay_exact_when_saturated(scale):
    # logits up to +-1000: sigmoid and softmax round to 0 and 1, the losses must not
    z = scale * np.array([[[1.0, -1.0, 0.5], [-0.25, 0.75, -1.0]]])
    y = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    onehot = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # the true classes are the unlikely ones
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bce = LOSSES["bce"].value(apply("sigmoid", z), y, z)[0]
        ce = LOSSES["cross_entropy"].value(apply("softmax", z), onehot, z)[0]
    # -[y log s(z) + (1 - y) log(1 - s(z))] = softplus(z) - y z
    want_bce = sum(_softplus(zi) - yi * zi for zi, yi in zip(z.ravel(), y.ravel())) / 6
    want_ce = 0.0
    for row, t in zip(z[0], onehot):
        top = max(row)
        lse = top + math.log(sum(math.exp(v - top) for v in row))
        want_ce += lse - float(row @ t)
    want_ce /= 2
    assert bce == pytest.approx(want_bce, rel=1e-12)
    assert ce == pytest.approx(want_ce, rel=1e-12)


def test_loss_definitions():
    a = np.array([[[0.2, 0.9], [0.6, 0.3]]])
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    sq = 0.2**2 + 0.1**2 + 0.4**2 + 0.3**2  # = 0.30
    assert LOSSES["mse"].value(a, y, a)[0] == pytest.approx(sq / 4)
    assert LOSSES["sse"].value(a, y, a)[0] == pytest.approx(sq / 2)
    logits = np.log(a / (1 - a))  # sigmoid(logits) = a
    bce = -(math.log(0.8) + math.log(0.9) + math.log(0.6) + math.log(0.7)) / 4
    assert LOSSES["bce"].value(a, y, logits)[0] == pytest.approx(bce, rel=1e-14)
    p = np.array([[[0.1, 0.9], [0.6, 0.4]]])  # softmax rows, from logits log(p)
    ce = -(math.log(0.9) + math.log(0.6)) / 2
    assert LOSSES["cross_entropy"].value(p, y, np.log(p))[0] == pytest.approx(ce, rel=1e-14)


def _worked():
    cfg = load_config(CONFIGS / "worked_example.yaml", {"training.epochs": (1, "--epochs")})
    data = dataset(cfg, "worked_example.yaml")
    return cfg, data


def test_worked_example_one_step_by_hand():
    cfg, data = _worked()
    net = network(cfg)
    result = fit(cfg, data, net)
    # forward: net_h1 = 0.15*0.05 + 0.20*0.1 = 0.0275   -> h1 = sigmoid(0.0275) = 0.50687457
    #          net_h2 = 0.25*0.05 + 0.30*0.1 = 0.0425   -> h2 = sigmoid(0.0425) = 0.51062340
    h1, h2 = 1 / (1 + math.exp(-0.0275)), 1 / (1 + math.exp(-0.0425))
    #          net_o1 = 0.40*h1 + 0.45*h2 = 0.43253036  -> o1 = 0.60647773
    #          net_o2 = 0.50*h1 + 0.55*h2 = 0.53428015  -> o2 = 0.63048084
    o1 = 1 / (1 + math.exp(-(0.40 * h1 + 0.45 * h2)))
    o2 = 1 / (1 + math.exp(-(0.50 * h1 + 0.55 * h2)))
    # loss: E = 1/2 [(0.5 - o1)^2 + (0.5 - o2)^2] = 0.01418138
    E = 0.5 * ((0.5 - o1) ** 2 + (0.5 - o2) ** 2)
    assert result.history["loss"][0, 0] == pytest.approx(E, rel=1e-14)
    assert E == pytest.approx(0.01418138, abs=1e-8)
    # output deltas: d_o = (o - t) * o (1 - o): d_o1 = 0.02541224, d_o2 = 0.03039874
    d1, d2 = (o1 - 0.5) * o1 * (1 - o1), (o2 - 0.5) * o2 * (1 - o2)
    # hidden deltas: d_h1 = (d_o1 w5 + d_o2 w7) h1 (1 - h1) = 0.00633987
    #                d_h2 = (d_o1 w6 + d_o2 w8) h2 (1 - h2) = 0.00703553
    dh1 = (d1 * 0.40 + d2 * 0.50) * h1 * (1 - h1)
    dh2 = (d1 * 0.45 + d2 * 0.55) * h2 * (1 - h2)
    # gradients: dE/dw1 = d_h1 x1, ..., dE/dw5 = d_o1 h1 = 0.01288082, ...
    grads = [dh1 * 0.05, dh1 * 0.1, dh2 * 0.05, dh2 * 0.1, d1 * h1, d1 * h2, d2 * h1, d2 * h2]
    # update with learning rate 0.5: w5 = 0.40 - 0.5 * 0.01288082 = 0.39355959
    w0 = [0.15, 0.20, 0.25, 0.30, 0.40, 0.45, 0.50, 0.55]
    expected = [w - 0.5 * g for w, g in zip(w0, grads)]
    np.testing.assert_allclose(net.theta[0], expected, rtol=0, atol=1e-15)
    assert net.theta[0, 4] == pytest.approx(0.39355959, abs=1e-8)
    assert net.theta[0, 0] == pytest.approx(0.14984150, abs=1e-8)


def test_weights_are_out_by_in_and_flatten_to_textbook_order():
    cfg, _ = _worked()
    net = network(cfg)
    (w_hidden, _), (w_out, _) = net.get_params()
    assert w_hidden.tolist() == [[0.15, 0.20], [0.25, 0.30]]
    assert np.concatenate([w_hidden.ravel(), w_out.ravel()]).tolist() == [0.15, 0.2, 0.25, 0.3, 0.4, 0.45, 0.5, 0.55]
    assert [p[0] for p in net.param_names()] == [f"w{i}" for i in range(1, 9)]


def _train_xor(**overrides):
    extra = {k: (v, k) for k, v in overrides.items()}
    cfg = load_config(CONFIGS / "xor.yaml", extra)
    data = dataset(cfg, "xor.yaml")
    net = network(cfg)
    return fit(cfg, data, net), data


def test_xor_converges():
    result, data = _train_xor()
    outputs = result.net.predict(data.X)[0, :, 0]
    assert np.round(outputs).tolist() == [0, 1, 1, 0]
    assert result.final("loss") < 0.01
    assert result.final("accuracy") == 1.0
    assert result.status == ["completed"]


def test_same_config_and_seed_give_bit_identical_weights_and_history():
    a, _ = _train_xor(**{"training.epochs": 500})
    b, _ = _train_xor(**{"training.epochs": 500})
    assert np.array_equal(a.net.theta, b.net.theta)
    assert np.array_equal(a.history["loss"], b.history["loss"])
    c, _ = _train_xor(**{"training.epochs": 500, "seed": 2})
    assert not np.array_equal(a.net.theta, c.net.theta)


def test_recorded_loss_is_before_the_update():
    cfg, data = _worked()
    cfg.training.epochs = 2
    net = network(cfg)
    result = fit(cfg, data, net)
    # epoch 2's loss is the loss at the weights after one update
    one = network(cfg)
    cfg.training.epochs = 1
    fit(cfg, data, one)
    after_one = one.loss_only(data.X, data.Y, LOSSES["sse"], one.workspace(len(data.X)))[0]
    assert result.history["loss"][1, 0] == after_one


def test_divergence_stops_with_last_finite_weights():
    result, _ = _train_xor(
        **{
            "training.learning_rate": 1e308,
            "training.epochs": 50,
            "model.output_activation": "identity",
            "training.loss": "mse",
        }
    )
    assert result.status == ["diverged"]
    k = result.epochs_run[0]
    assert result.diverged_at[0] == k + 1
    assert np.all(np.isfinite(result.history["loss"][:k]))
    assert np.all(np.isfinite(result.net.theta))


def test_one_models_prediction_equals_its_slice_of_the_batched_one():
    rng = np.random.default_rng(0)
    net = Network([2, 3, 2], ["tanh", "softmax"], True, n_models=5)
    net.theta[:] = rng.normal(size=net.theta.shape)
    X = rng.normal(size=(7, 2))
    batched = net.predict(X)
    for k in range(5):
        assert np.array_equal(net.predict(X, k), batched[k])


def test_history_finishes_only_the_rows_written():
    # the buffers are np.empty: rows past the epochs run hold whatever memory held (here the
    # worst case, a signalling NaN, which makes any arithmetic on it warn "invalid value"), and
    # finishing the metrics must neither read them nor warn
    from backprop_cli.metrics import Metrics
    from backprop_cli.policies import History

    Y = np.array([[0.0], [1.0], [3.0]])
    history = History(2, 10, Metrics(Y, classification=False))
    signalling = np.frombuffer(np.array([0x7FF0000000000001], np.uint64).tobytes(), np.float64)[0]
    for column in history.data.values():
        column[...] = signalling
    for e in range(3):
        history.record(e, np.array([1.0, 2.0]), [np.array([0.3, 0.6]), np.array([0.1, 0.2])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        done = history.finish([3, 3])
    assert done["loss"].shape == (3, 2) and np.all(np.isfinite(done["r2"]))
