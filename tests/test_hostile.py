"""Messages and exit codes for inputs that used to mislead (part of issue 15): unterminated
quotes, semicolon CSVs, YAML merge keys and booleans, sweeps whose rates read alike, studies
that all diverge, Ctrl-C outside train."""

import json

import pytest
from conftest import CONFIGS

from backprop_cli.network import Network


def test_an_unterminated_quote_is_an_error_not_fewer_rows(cli, write_config, tmp_path):
    (tmp_path / "q.csv").write_text('a,b,y\n0,0,0\n"0,1,1\n1,0,1\n1,1,0\n0,0,0\n')
    result = cli("validate", write_config("model: {layers: [2, 2, 1]}\ndata: {csv: q.csv}\n"))
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"Error: {tmp_path / 'q.csv'}: cannot read as CSV: unexpected end of data (an unterminated quote?)\n"
    )


@pytest.mark.parametrize("sep,name", [(";", "';'"), ("\t", "tab")])
def test_other_separators_are_named(cli, write_config, tmp_path, sep, name):
    (tmp_path / "s.csv").write_text(f"a{sep}b{sep}y\n0{sep}0{sep}0\n0{sep}1{sep}1\n")
    result = cli("validate", write_config("model: {layers: [2, 2, 1]}\ndata: {csv: s.csv}\n"))
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"Error: {tmp_path / 's.csv'}: found {name} separators; backprop reads comma-separated values\n"
    )


def test_yaml_merge_keys_work_and_x_keys_hold_anchors(cli, write_config):
    path = write_config("""\
x-net: &net {layers: [2, 2, 1], activation: tanh}
model:
  <<: *net
  activation: sigmoid
data: {builtin: xor}
""")
    result = cli("validate", path)
    assert result.exit_code == 0, result.stderr
    assert "2-2-1 network (sigmoid)," in result.stdout  # merged layers; the explicit activation wins
    duplicate = write_config("model: {layers: [2, 1], layers: [2, 1]}\ndata: {builtin: xor}\n", "dup.yaml")
    assert (
        cli("validate", duplicate).stderr == f"Error: {duplicate}:1: duplicate key 'layers' (first given on line 1)\n"
    )


def test_yaml_booleans_get_a_hint(cli, write_config):
    path = write_config("model: {layers: [2, 2, 1], activation: no}\ndata: {builtin: xor}\n")
    result = cli("validate", path)
    assert result.exit_code == 2
    assert result.stderr.endswith(
        "(got False) (YAML reads yes, no, on, off, true and false as booleans: quote the word)\n"
    )


@pytest.mark.slow
def test_every_seed_diverging_exits_1(cli, tmp_path):
    over = ["--set", "model.output_activation=identity", "--lr", "1e300"]
    result = cli("train", CONFIGS / "xor.yaml", "--seeds", "0:3", *over, "--runs-dir", tmp_path / "r", "--quiet")
    assert result.exit_code == 1
    study = next((tmp_path / "r").iterdir())
    assert result.stderr == f"Error: every seed diverged; try a smaller --lr. The study: {study}\n"
    assert json.loads((study / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.slow
def test_rates_that_read_alike_get_their_own_folders(cli, tmp_path):
    root = tmp_path / "r"
    result = cli("sweep-lr", CONFIGS / "xor.yaml", "--lrs", "0.1,0.1000001", "--epochs", "10", "--runs-dir", root, "-q")
    assert result.exit_code == 0, result.output
    sweep = next(root.iterdir())
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["lr_0.1", "lr_0.1000001", "store"]
    header = (sweep / "history.csv").read_text().splitlines()[0]
    assert header == "epoch,learning_rate=0.1,learning_rate=0.1000001"


def test_a_rate_given_twice_is_refused_before_training(cli, tmp_path):
    result = cli("sweep-lr", CONFIGS / "xor.yaml", "--lrs", "0.5,0.1,0.5", "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2
    assert result.stderr == "Error: learning rate 0.5 is given twice: each rate trains once\n"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args", [["explain", "--epoch", "5"], ["gradcheck", "--epochs", "5"]], ids=["explain", "gradcheck"]
)
def test_ctrl_c_during_explain_or_gradcheck_exits_130(cli, monkeypatch, args):
    real = Network.loss_and_grad
    calls = []

    def interrupted_on_the_third_step(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Network, "loss_and_grad", interrupted_on_the_third_step)
    result = cli(args[0], CONFIGS / "xor.yaml", *args[1:])
    assert result.exit_code == 130 and result.stderr == "Interrupted.\n"


def _bomb(levels: int) -> str:
    """The billion-laughs shape: each anchor is a list of ten aliases of the one before."""
    lines = ["x-a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"x-a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nmodel: {{layers: [2, 1]}}\ndata: {{builtin: xor, features: *a{levels - 1}}}\n"


def test_an_alias_bomb_is_refused_before_it_expands(cli, write_config):
    path = write_config(_bomb(9))  # 10^9 values once expanded
    result = cli("validate", path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: the YAML expands to more than 2,000,000 values (aliases of aliases?)\n"


def test_deep_nesting_and_recursive_anchors_are_refused(cli, write_config):
    deep = write_config("model: {layers: [2, 1]}\ndata: {builtin: xor}\nx-deep: " + "[" * 600 + "]" * 600 + "\n")
    result = cli("validate", deep)
    assert result.exit_code == 2 and result.stderr == f"Error: {deep}:3: nested deeper than 100 levels\n"
    loop = write_config("x-loop: &loop [*loop]\nmodel: {layers: [2, 1]}\ndata: {builtin: xor}\n", "loop.yaml")
    result = cli("validate", loop)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {loop}:1: a recursive alias (an anchor used inside itself)\n"


@pytest.mark.slow
def test_a_large_inline_data_set_loads(write_config):
    from backprop_cli.config import load_config

    rows = "\n".join(f"    - [{i * 0.001}, {i * 0.002}]" for i in range(20000))
    targets = "\n".join(f"    - [{i % 2}]" for i in range(20000))
    cfg = load_config(write_config(f"model: {{layers: [2, 2, 1]}}\ndata:\n  inputs:\n{rows}\n  targets:\n{targets}\n"))
    assert len(cfg.data.inputs) == 20000 and cfg.data.inputs[-1] == [19.999, 39.998]


@pytest.mark.parametrize(
    "args,fragment",
    [
        (
            ["train", str(CONFIGS / "moons.yaml"), "--set", "model.layers=[2,1000000000,2]"],
            "model.layers [2, 1000000000, 2] on 500 samples needs about ",
        ),
        (
            ["train", str(CONFIGS / "moons.yaml"), "--set", "data.n_samples=1000000000"],
            "model.layers [2, 16, 16, 2] on 1,000,000,000 samples needs about ",
        ),
        (
            ["train", str(CONFIGS / "xor.yaml"), "--seeds", "0:100000000"],
            "model.layers [2, 2, 1] x 100,000,000 models on 4 samples needs about ",
        ),
    ],
    ids=["a billion hidden units", "a billion samples", "a hundred million seeds"],
)
def test_what_would_not_fit_in_memory_is_refused_with_the_estimate(cli, tmp_path, args, fragment):
    result = cli(*args, "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2
    assert fragment in result.stderr and " GiB of memory; this machine has " in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "r").exists()


def test_a_huge_log_range_is_refused(cli, tmp_path):
    result = cli("sweep-lr", CONFIGS / "xor.yaml", "--log-range", "0.1:1:100000000", "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2 and result.stderr == "Error: --log-range 0.1:1:100000000: at most 100,000 rates\n"


def test_plots_of_diverged_curves_draw_without_warnings():
    import warnings

    import numpy as np

    from backprop_cli import plots

    epochs = np.arange(1, 11)
    values = np.array([1, 2, np.inf, 1e300, 5, np.nan, 1, 1, 1, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = plots.loss_plot({"training": (epochs, values)}, "diverged")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
