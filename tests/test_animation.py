"""training.gif (issue 19): snapshots taken inside the loop are the weights each chosen epoch
starts from; the GIF has the frames asked for and shows the boundary forming."""

from pathlib import Path

import numpy as np
import pytest
from conftest import CONFIGS, XOR_YAML
from PIL import Image, ImageSequence

from backprop_cli.animation import Snapshots, chain
from backprop_cli.config import load_config
from backprop_cli.experiment import dataset, fit, network


def _frames(path):
    with Image.open(path) as im:
        return [np.asarray(frame.convert("RGB"), dtype=float) for frame in ImageSequence.Iterator(im)]


def test_a_snapshot_is_the_weights_its_epoch_starts_from(write_config):
    cfg = load_config(write_config(XOR_YAML))
    data = dataset(cfg, "xor")
    net = network(cfg)
    shots = Snapshots(net.theta, cfg.training.epochs, 0, frames=20)
    fit(cfg, data, net, callback=shots)
    assert sorted(shots.taken) == shots.wanted and shots.wanted[0] == 1 and shots.wanted[-1] == 200
    for k in (1, 2, 50, 200):
        if k not in shots.taken:
            continue
        short = cfg.model_copy(deep=True)
        short.training.epochs = k - 1 if k > 1 else 1
        alone = network(short)
        if k > 1:
            fit(short, data, alone)
        assert np.array_equal(shots.taken[k], alone.theta), k  # bit for bit


def test_frames_follow_the_learning():
    # XOR's curve: flat, a drop from about epoch 3,300 to 5,300, flat again
    shots = Snapshots(np.zeros((1, 3)), 10000, 0, frames=60)
    shots.taken = {k: None for k in shots.wanted}
    epochs = np.arange(1, 10001)
    loss = (0.5 - 0.49 / (1 + np.exp(-(epochs - 4300) / 300)))[:, None]
    by_loss = shots.choose(loss)
    assert len(by_loss) == 60 and by_loss[0] == 1 and by_loss[-1] == 10000
    assert sum(3300 <= k <= 5300 for k in by_loss) >= 30  # half the frames where the loss moves
    assert np.diff(by_loss).max() <= 2 * 10000 / (60 // 4)  # a quarter evenly spaced: no stretch unseen
    evenly = Snapshots(np.zeros((1, 3)), 10000, 0, frames=60, by="epoch")
    evenly.taken = {k: None for k in evenly.wanted}
    assert evenly.choose(loss)[:3] == [1, 170, 340] and len(evenly.choose(loss)) == 60
    # a loss over decades is followed on a log scale: a fall by 1/(1 + epoch/10), most of it
    # in the first few hundred epochs, gets most of its frames there
    early = shots.choose((1 / (1 + epochs / 10))[:, None])
    assert len(early) == 60 and sum(k <= 500 for k in early) >= 20


def test_chain_calls_every_callback_in_order():
    seen = []
    both = chain(lambda e, loss, s: seen.append(("a", e)), None, lambda e, loss, s: seen.append(("b", e)))
    both(3, np.zeros(1), None)
    assert seen == [("a", 3), ("b", 3)]


@pytest.mark.slow
def test_train_moons_animate_writes_a_gif_of_the_boundary_forming(cli, tmp_path):
    root = tmp_path / "runs"
    result = cli("train", CONFIGS / "moons.yaml", "--animate", "--runs-dir", root, "-q")
    assert result.exit_code == 0, result.output
    run = next(root.iterdir())
    frames = _frames(run / "training.gif")
    assert len(frames) >= 30
    assert frames[0].shape[1] > frames[0].shape[0] * 2  # panels side by side
    # the left panel (the class regions) changes as training goes; the first frames differ most
    left = [f[:, : f.shape[1] // 3] for f in frames]
    assert np.abs(left[-1] - left[0]).mean() > 5 * np.abs(left[-1] - left[-2]).mean()
    assert "animate: true" in (run / "config.yaml").read_text()


@pytest.mark.slow
def test_frames_option_and_its_errors(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    root = tmp_path / "runs"
    result = cli("train", path, "--frames", "10", "--runs-dir", root)
    assert result.exit_code == 2
    assert result.stderr == "Error: --frames goes with --animate (or training.animate: true)\n"
    assert cli("train", path, "--animate", "--frames", "12", "--runs-dir", root, "-q").exit_code == 0
    assert len(_frames(next(root.iterdir()) / "training.gif")) == 13  # 12 and the final weights'


@pytest.mark.slow
def test_a_sweep_animates_one_panel_per_rate_up_to_a_limit(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    root = tmp_path / "runs"
    assert (
        cli("sweep-lr", path, "--lrs", "0.5,1,2", "--animate", "--frames", "10", "--runs-dir", root, "-q").exit_code
        == 0
    )
    assert len(_frames(next(root.iterdir()) / "training.gif")) == 10
    result = cli("sweep-lr", path, "--log-range", "0.1:10:10", "--animate", "--runs-dir", root)
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: --animate draws one panel per model, at most 9; this study has 10 learning rates: "
        "animate fewer, or train one of them with --animate\n"
    )


@pytest.mark.slow
def test_the_wait_for_the_animation_says_what_it_is(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    shown = cli("train", path, "--animate", "--frames", "8", "--runs-dir", tmp_path / "a")
    assert shown.exit_code == 0 and "drawing training.gif (8 frames)...\n" in shown.stderr
    quiet = cli("train", path, "--animate", "--frames", "8", "--runs-dir", tmp_path / "b", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_the_last_frame_marks_the_weights_kept(write_config):
    from backprop_cli.animation import gif_job

    text = XOR_YAML.replace(
        "epochs: 200", "epochs: 400\n  learning_rate: 8.0\n  early_stopping: {monitor: loss, patience: 5}"
    )
    cfg = load_config(write_config(text.replace("  learning_rate: 0.1\n", "")))
    data, net = dataset(cfg, "xor"), network(cfg)
    shots = Snapshots(net.theta, cfg.training.epochs, 0, frames=10)
    result = fit(cfg, data, net, callback=shots)
    restored = result.restored_epoch[0]
    assert restored is not None
    saved = float(result.history["loss"][restored - 1, 0])
    _, _, args = gif_job(Path("x.gif"), "xor", result, data, shots, saved_loss=saved)
    shown = args[0]
    assert shown["labels"][-1] == f"restored weights of epoch {restored} (restore_best)"
    assert shown["epochs"][-1] == restored and float(shown["losses"][-1][0]) == saved  # on the curve, at its epoch
    plain = load_config(write_config(XOR_YAML))
    net = network(plain)
    shots = Snapshots(net.theta, 200, 0, frames=10)
    result = fit(plain, data, net, callback=shots)
    _, _, args = gif_job(Path("x.gif"), "xor", result, data, shots, saved_loss=0.1)
    assert args[0]["labels"][-1] == "final weights (after epoch 200)" and args[0]["epochs"][-1] == 201


def test_pictures_label_what_they_mean(monkeypatch):
    from backprop_cli import pictures, plots

    monkeypatch.setattr(plots, "png_bytes", lambda fig: fig)
    monkeypatch.setattr(pictures, "png_bytes", lambda fig: fig)
    epochs = np.arange(1, 101)
    fig = plots.metric_plot(epochs, {"training": np.linspace(0.5, 0.97, 100)}, "accuracy")
    ax = fig.axes[0]
    assert ax.get_ylim()[1] >= 1.0 and 1.0 in ax.get_yticks()  # a score's best is on the axis
    assert [t for t in ax.get_xticks() if 0 <= t <= 100] == [0, 20, 40, 60, 80, 100]  # round steps
    extent, points = pictures.boundary_grid(np.array([[0.0, 0.0], [1.0, 1.0]]))
    outputs = np.tile([[0.2, 0.8]], (len(points), 1))
    X, Y = np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [0.0, 1.0]])
    fig = pictures.decision_boundary(extent, outputs, X, Y, ["a", "b"], "t", ["x1", "x2"], X, Y)
    legend = fig.axes[0].get_legend()
    handles = dict(zip([t.get_text() for t in legend.get_texts()], legend.legend_handles))
    edge = handles["validation"].get_edgecolor()[0][:3]
    assert np.allclose(edge, [0.3, 0.3, 0.3])  # neutral, not the first class's colour


def test_a_run_that_stops_early_shows_every_snapshot_and_a_continuation_its_own_epochs():
    shots = Snapshots(np.zeros((1, 3)), 1500, 0, frames=60)
    shots.taken = {k: None for k in shots.wanted if k <= 102}
    chosen = shots.choose(np.linspace(1, 0.5, 102)[:, None])  # early stopping ended it at epoch 102
    assert chosen == [k for k in shots.wanted if k <= 102] and len(chosen) > 20
    later = Snapshots(np.zeros((1, 2)), 100, start=400, frames=5)  # a 1-1 net: a weight and a bias
    later.taken = {k: np.zeros((1, 2)) for k in later.wanted}
    from backprop_cli.animation import frames as frames_of
    from backprop_cli.network import Network

    net = Network([1, 1], ["identity"])
    shown = frames_of(net, later, np.linspace(1, 0.5, 100)[:, None], None, None, np.zeros((3, 1)), _Same(), False)
    assert shown["labels"][0] == "epoch 401" and shown["first"] == 400


class _Same:
    def apply(self, X):
        return X


def test_noise_on_a_plateau_takes_few_frames():
    rng = np.random.default_rng(0)
    epochs = np.arange(1, 10001)
    noisy = (0.5 * np.exp(-epochs / 30) + 0.003) * np.exp(rng.normal(0, 0.3, len(epochs)))  # a minibatch run
    shots = Snapshots(np.zeros((1, 3)), 10000, 0, frames=60)
    shots.taken = {k: None for k in shots.wanted}
    assert sum(k <= 200 for k in shots.choose(noisy[:, None])) >= 15  # the fall, not the noise, gets the frames


def test_frames_by_is_an_animation_option(cli, tmp_path):
    result = cli("train", CONFIGS / "xor.yaml", "--frames-by", "epoch", "--runs-dir", tmp_path)
    assert (
        result.exit_code == 2
        and result.stderr == "Error: --frames-by goes with --animate (or training.animate: true)\n"
    )
    result = cli("train", CONFIGS / "xor.yaml", "--animate", "--frames-by", "epoch", "--print-config")
    assert result.exit_code == 0 and "frames_by: epoch" in result.stdout


def test_studies_say_they_are_drawing_their_animation(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    result = cli("sweep-lr", path, "--lrs", "0.5,1", "--animate", "--frames", "4", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert "drawing training.gif (4 frames, 2 panels)..." in result.output
    result = cli("train", path, "--seeds", "0:3", "--animate", "--frames", "4", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert "drawing training.gif (4 frames, 3 panels)..." in result.output
