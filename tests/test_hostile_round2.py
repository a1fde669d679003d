"""Issue 26: hostile input and faults in the newer code (run folders and studies as input,
reports, injections, evaluate and the API, resource bombs, the full disk)."""

import shutil

import pytest
from conftest import XOR_YAML
from typer.testing import CliRunner

from backprop_cli.cli import app


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory):
    """A trained XOR run folder; tests copy it before spoiling it."""
    root = tmp_path_factory.mktemp("round2")
    config = root / "xor.yaml"
    config.write_text(XOR_YAML)
    assert _invoke("train", config, "--runs-dir", root / "runs", "-q").exit_code == 0
    return next((root / "runs").iterdir())


@pytest.fixture(scope="module")
def xor_grid(tmp_path_factory):
    """A finished two-cell grid over the learning rate."""
    root = tmp_path_factory.mktemp("round2grid")
    config = root / "xor.yaml"
    config.write_text(XOR_YAML)
    args = ["sweep", config, "--grid", "training.learning_rate=0.1,0.5", "--workers", "1", "-q"]
    assert _invoke(*args, "--runs-dir", root / "runs").exit_code == 0
    return next((root / "runs").iterdir())


@pytest.fixture
def spoiled(tmp_path):
    """copy(folder) -> a copy of a run or study folder under tmp_path/runs, to spoil."""

    def copy(folder):
        target = tmp_path / "runs" / folder.name
        shutil.copytree(folder, target)
        return target

    return copy


# -- run folders and studies as input -------------------------------------------------------

DEEP_JSON = "[" * 100_000 + "]" * 100_000


def test_a_json_nesting_bomb_in_a_run_folder_is_a_corrupt_file(cli, xor_run, spoiled):
    run = spoiled(xor_run)
    (run / "summary.json").write_text(DEEP_JSON)
    for args in (["runs", "show", run], ["predict", run, "--input", "-"], ["report", run]):
        result = cli(*args)
        assert result.exit_code == 1, args
        assert result.stderr == f"Error: {run / 'summary.json'}: corrupt: nested deeper than 100 levels\n", args


def test_a_json_nesting_bomb_in_grid_json_is_a_corrupt_file(cli, xor_grid, spoiled):
    study = spoiled(xor_grid)
    (study / "grid.json").write_text('{"grid": ' + DEEP_JSON + "}")
    result = cli("report", study)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {study / 'grid.json'}: corrupt: nested deeper than 100 levels\n"


def test_json_depth_skips_brackets_inside_strings():
    from backprop_cli.files import json_depth

    assert json_depth('{"a": [1, {"b": "[[[[[\\"]]"}], "c": []}') == 3
    assert json_depth("[" * 101 + "]" * 101) == 101


@pytest.mark.parametrize("levels", [3_000, 400_000])
def test_a_config_nested_past_the_recursion_limit_is_refused(cli, write_config, levels):
    path = write_config(XOR_YAML + "x-deep: " + "[" * levels + "]" * levels + "\n")
    assert path.stat().st_size < 2**20
    result = cli("validate", path)
    line = XOR_YAML.count("\n") + 1
    assert result.exit_code == 2 and result.stderr == f"Error: {path}:{line}: nested deeper than 100 levels\n"


@pytest.mark.parametrize("value", ["[" * 3000 + "]" * 3000, "- " * 3000 + "1"])
def test_set_values_nested_past_the_recursion_limit_are_refused(cli, write_config, tmp_path, value):
    result = cli("train", write_config(XOR_YAML), "--set", f"model.layers={value}", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and result.stderr == "Error: --set model.layers:1: nested deeper than 100 levels\n"


def test_grid_values_nested_past_the_recursion_limit_are_refused(cli, write_config, tmp_path):
    value = "[" * 3000 + "]" * 3000
    result = cli("sweep", write_config(XOR_YAML), "--grid", f"model.layers={value}", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and result.stderr == "Error: --grid model.layers:1: nested deeper than 100 levels\n"


def _edit_json(path, change):
    import json

    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "file,change,message",
    [
        (
            "summary.json",
            lambda d: d.update(versions="abc"),
            "versions: input should be a valid dictionary (got 'abc')",
        ),
        (
            "summary.json",
            lambda d: d.update(saved_weights={"loss": "low"}),
            "saved_weights.loss: input should be a valid number (got 'low')",
        ),
        (
            "summary.json",
            lambda d: d.update(kind="../../x"),
            "kind: input should be 'sweep', 'seeds', 'grid' or 'search' (got '../../x')",
        ),
    ],
)
def test_wrong_types_in_a_run_summary_name_the_field(cli, xor_run, spoiled, file, change, message):
    run = spoiled(xor_run)
    _edit_json(run / file, change)
    for args in (["runs", "show", run], ["report", run]):
        result = cli(*args)
        assert result.exit_code == 1 and result.stderr == f"Error: {run / file}: {message}\n", args


def test_wrong_types_in_a_cell_summary_and_a_study_summary_name_the_field(cli, xor_grid, spoiled):
    study = spoiled(xor_grid)
    cell = study / "cell_001" / "summary.json"
    _edit_json(cell, lambda d: d.update(versions="abc"))
    result = cli("report", study / "cell_001")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {cell}: versions: input should be a valid dictionary (got 'abc')\n"
    _edit_json(study / "summary.json", lambda d: d["models"][0].update(final_loss="abc"))
    for args in (["runs", "show", study], ["report", study]):
        result = cli(*args)
        assert result.exit_code == 1, args
        message = "models.0.final_loss: input should be a valid number (got 'abc')"
        assert result.stderr == f"Error: {study / 'summary.json'}: {message}\n"


def test_wrong_types_in_evaluation_json_name_the_field(cli, xor_run, spoiled):
    run = spoiled(xor_run)
    assert cli("evaluate", run, "--json").exit_code == 0  # the training data: XOR has no validation split
    _edit_json(run / "evaluation.json", lambda d: d.update(classes=3))
    result = cli("report", run)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {run / 'evaluation.json'}: classes: input should be a valid list (got 3)\n"
    _edit_json(run / "evaluation.json", lambda d: d.update(classes=[{"class": "0"}]))
    result = cli("report", run)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {run / 'evaluation.json'}: classes.0.precision: field required\n"


@pytest.mark.parametrize(
    "tail,message",
    [
        (b"\xff\xfe,1\n", "grid.csv: not a text file (UTF-8 expected)"),
        (b"x" * 200_000 + b",1\n", "grid.csv:4: corrupt CSV: field larger than field limit (131072)"),
        (b"1\n", "grid.csv:4: corrupt CSV: 1 values for 9 columns"),
    ],
)
def test_a_spoilt_grid_csv_is_one_line_naming_the_file(cli, xor_grid, spoiled, tail, message):
    study = spoiled(xor_grid)
    with open(study / "grid.csv", "ab") as f:
        f.write(tail)
    for args in (["runs", "show", study], ["report", study]):
        result = cli(*args)
        assert result.exit_code == 1 and result.stderr == f"Error: {study}/{message}\n", args


# -- reports --------------------------------------------------------------------------------


def test_a_report_embeds_no_file_a_symlink_points_to(cli, xor_run, spoiled, tmp_path):
    run = spoiled(xor_run)
    outside = tmp_path / "private.png"
    outside.write_bytes(b"\x89PNG private bytes")
    for name in ("fit.png", "zz.png", "training.gif"):
        (run / name).symlink_to(outside)
    result = cli("report", run)
    assert result.exit_code == 0, result.output
    page = (run / "report.html").read_text()
    import base64

    assert base64.b64encode(outside.read_bytes()).decode()[:16] not in page
    assert "zz.png" not in page  # not a plot backprop draws: not even named
    assert "left out: fit.png (a symbolic link, not a regular file), training.gif (a symbolic link" in page


def test_a_report_of_a_folder_whose_summary_is_a_symlink_is_refused(cli, xor_run, spoiled):
    run = spoiled(xor_run)
    (run / "summary.json").rename(run / "elsewhere.json")
    (run / "summary.json").symlink_to("elsewhere.json")
    result = cli("report", run)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {run / 'summary.json'}: a symbolic link, not a regular file; a report reads only the folder's own files\n"
    )


@pytest.mark.slow
def test_a_report_neither_hangs_on_a_fifo_nor_reads_dev_zero(xor_run, spoiled, tmp_path):
    import os
    import subprocess
    import sys

    run = spoiled(xor_run)
    os.mkfifo(run / "fit.png")
    (run / "loss.png").unlink()
    (run / "loss.png").symlink_to("/dev/zero")
    os.mkfifo(run / "evaluation.json")

    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    done = subprocess.run(
        [sys.executable, "-m", "backprop_cli", "report", str(run)],
        capture_output=True, text=True, timeout=60, preexec_fn=_limited, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = (run / "report.html").read_text()
    assert "fit.png (a FIFO, not a regular file)" in page and "loss.png (a symbolic link" in page
    assert "evaluation.json (a FIFO" in page


# -- terminal and markup injection ----------------------------------------------------------

ESC, CSI = "\x1b", "\x9b"


@pytest.fixture(scope="module")
def hostile_names_run(tmp_path_factory):
    """A run trained on a CSV whose header and class labels hold terminal escape sequences."""
    root = tmp_path_factory.mktemp("names")
    rows = [f"a{ESC}]0;PWNED\x07,b{ESC}[2J,label"]
    rows += [f"{i % 2},{i // 2 % 2},{f'cat{ESC}[31m' if i % 2 else f'dog{CSI}1m'}" for i in range(8)]
    (root / "evil.csv").write_text("\n".join(rows) + "\n")
    (root / "evil.yaml").write_text(
        "model: {layers: [2, 3, 2], activation: tanh, output_activation: softmax}\n"
        "training: {loss: cross_entropy, learning_rate: 0.1, epochs: 20}\ndata: {csv: evil.csv}\n"
    )
    assert _invoke("train", root / "evil.yaml", "--runs-dir", root / "runs", "-q").exit_code == 0
    return root, next((root / "runs").iterdir())


@pytest.mark.parametrize(
    "args",
    [["predict", "{run}", "--input", "0,1"], ["predict", "{run}"], ["evaluate", "{run}", "{root}/evil.csv"]],
    ids=["rows", "prompt", "evaluate"],
)
def test_names_from_a_csv_are_shown_not_obeyed(cli, hostile_names_run, args):
    root, run = hostile_names_run
    result = cli(*[a.format(run=run, root=root) for a in args], input="")
    assert result.exit_code == 0, result.output
    assert ESC not in result.output and CSI not in result.output and "\x07" not in result.output
    if args[0] == "evaluate":
        assert "cat\\x1b[31m" in result.stdout and "dog\\x9b1m" in result.stdout
    else:
        assert "a\\x1b]0;PWNED\\x07" in result.stdout


def test_an_error_naming_a_column_shows_its_control_characters(cli, hostile_names_run, tmp_path):
    root, _ = hostile_names_run
    config = tmp_path / "c.yaml"
    config.write_text((root / "evil.yaml").read_text().replace("csv: evil.csv", f"csv: {root}/evil.csv, target: q"))
    result = cli("validate", config)
    assert result.exit_code == 2 and ESC not in result.stderr and "b\\x1b[2J" in result.stderr


def test_a_run_named_like_mathtext_keeps_its_plots(cli, tmp_path):
    config = tmp_path / "m.yaml"
    config.write_text(XOR_YAML.replace("name: xor", "name: 'a$\\\\foo$b $x^{2}$'"))
    result = cli("train", config, "--runs-dir", tmp_path / "runs", "--diagnose", "-q")
    assert result.exit_code == 0 and result.stderr == "", result.output
    run = next((tmp_path / "runs").iterdir())
    assert {"loss.png", "accuracy.png", "network.png", "decision_boundary.png", "gradients.png"} <= {
        p.name for p in run.iterdir()
    }


def test_a_plot_that_cannot_be_drawn_is_a_one_line_warning(tmp_path, monkeypatch):
    from backprop_cli import plots
    from backprop_cli.painter import draw

    def fails():  # as matplotlib's mathtext parser words its errors
        raise ValueError("\n\\foo\n^\nParseFatalException: Unknown symbol: \\foo")

    monkeypatch.setattr(plots, "fails", fails, raising=False)
    warning = draw((tmp_path / "x.png", "plots.fails", ()))
    assert warning == f"{tmp_path / 'x.png'}: plot not written: \\foo ^ ParseFatalException: Unknown symbol: \\foo"


# -- evaluate and the API -------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows,message",
    [
        ("0,0,5\n1,1,-3\n", "target 1: 5 is not a class of the run (a classifier with sigmoid outputs: 0 or 1)"),
        ("0,0,cat\n1,1,dog\n", "class 'cat': the run was trained on numbered classes, not on class names"),
    ],
)
def test_evaluate_refuses_targets_that_are_no_class_of_the_run(cli, xor_run, tmp_path, rows, message):
    data = tmp_path / "test.csv"
    data.write_text("x1,x2,y\n" + rows)
    result = cli("evaluate", xor_run, data, "--no-save")
    assert result.exit_code == 2 and result.stderr == f"Error: {data}: {message}\n"


def test_evaluate_refuses_class_labels_for_a_regression(cli, tmp_path):
    config = tmp_path / "fit.yaml"
    config.write_text(
        "model: {layers: [1, 2, 1], output_activation: identity}\ntraining: {loss: mse, epochs: 5}\n"
        "data: {inputs: [[0], [1]], targets: [[0.5], [2.5]]}\n"
    )
    assert cli("train", config, "--runs-dir", tmp_path / "runs", "-q").exit_code == 0
    data = tmp_path / "labels.csv"
    data.write_text("x1,y\n0,low\n1,high\n")
    result = cli("evaluate", next((tmp_path / "runs").iterdir()), data, "--no-save")
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"Error: {data}: class 'high': the run was trained on numbers (a regression), not on class names\n"
    )


def test_evaluate_refuses_targets_the_loss_cannot_take(cli, tmp_path):
    config = tmp_path / "bce.yaml"
    config.write_text(XOR_YAML.replace("loss: sse", "loss: bce"))
    assert cli("train", config, "--runs-dir", tmp_path / "runs", "-q").exit_code == 0
    data = tmp_path / "t.csv"
    data.write_text("x1,x2,y\n0,0,0.5\n1,1,7\n")
    result = cli("evaluate", next((tmp_path / "runs").iterdir()), data, "--no-save")
    assert result.exit_code == 2 and result.stderr == f"Error: {data}: loss bce needs targets between 0 and 1\n"


@pytest.mark.parametrize(
    "X,message",
    [
        (None, "inputs: expected rows of 2 values (n, 2), got an array of shape ()"),
        ([[0, 1, 2]], "inputs: expected 2 values, got 3"),
        ([0], "inputs: expected 2 values, got 1"),
        ([[[0, 1], [1, 0]]], "inputs: expected rows of 2 values (n, 2), got an array of shape (1, 2, 2)"),
        ([["a", "b"]], "inputs: expected numbers, got list [['a', 'b']]"),
        ([[0, float("inf")]], "inputs: row 1: [0.0, inf] holds a value that is not finite"),
    ],
)
def test_run_predict_refuses_what_is_no_input_rows(xor_run, X, message):
    import backprop_cli as bp
    from backprop_cli.errors import DataError

    with pytest.raises(DataError) as caught:
        bp.load(xor_run).predict(X)
    assert str(caught.value) == message


def test_run_predict_takes_one_flat_row_and_empty_rows(xor_run):
    import numpy as np

    import backprop_cli as bp

    run = bp.load(xor_run)
    assert run.predict([0, 1]).shape == (1, 1) and run.predict(np.zeros((0, 2))).shape == (0, 1)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"sample": 99}, "--sample 99: must be between 1 and 4 (the training samples)"),
        ({"sample": 0}, "--sample 0: must be between 1 and 4 (the training samples)"),
        ({"epoch": 0}, "--epoch 0: must be >= 1 (1 = the first step)"),
        ({"format": "html"}, "--format html: one of markdown, csv"),
    ],
)
def test_run_explain_refuses_what_the_command_refuses(xor_run, kwargs, message):
    import backprop_cli as bp
    from backprop_cli.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        bp.load(xor_run).explain(**kwargs)
    assert str(caught.value) == message


def test_the_explain_command_says_the_same_of_a_sample_out_of_range(cli):
    from conftest import CONFIGS

    result = cli("explain", CONFIGS / "xor.yaml", "--sample", "5")
    assert result.exit_code == 2
    assert result.stderr == "Error: --sample 5: must be between 1 and 4 (the training samples)\n"


def test_run_animate_and_plot_check_what_they_are_given(xor_run, spoiled, tmp_path):
    import backprop_cli as bp
    from backprop_cli.errors import ConfigError

    run = bp.load(spoiled(xor_run))
    with pytest.raises(ConfigError, match=r"training\.frames .*must be >= 2 \(got 0\)"):
        run.animate(frames=0)
    assert not (run.path / "training.gif").exists()
    (tmp_path / "elsewhere.png").write_bytes(b"\x89PNG")
    with pytest.raises(ConfigError, match="no such plot"):
        run.plot("../../elsewhere")


@pytest.mark.parametrize(
    "rates,message",
    [([], "no learning rates given"), ([-1.0], "every learning rate must be finite and > 0 (got -1)")],
)
def test_sweep_lr_refuses_rates_before_training(tmp_path, rates, message):
    import backprop_cli as bp
    from backprop_cli.errors import ConfigError

    config = tmp_path / "xor.yaml"
    config.write_text(XOR_YAML)
    with pytest.raises(ConfigError) as caught:
        bp.sweep_lr(config, rates=rates, runs_dir=tmp_path / "runs")
    assert str(caught.value) == message and not (tmp_path / "runs").exists()


def test_train_refuses_an_animation_of_no_frames(tmp_path):
    import backprop_cli as bp
    from backprop_cli.errors import ConfigError

    config = tmp_path / "xor.yaml"
    config.write_text(XOR_YAML)
    with pytest.raises(ConfigError) as caught:
        bp.train(config, animate=True, frames=0, runs_dir=tmp_path / "runs")
    assert str(caught.value) == f"{config}: training.frames (from frames=0): must be >= 2 (got 0)"
    assert not (tmp_path / "runs").exists()


# -- resource bombs -------------------------------------------------------------------------


@pytest.mark.parametrize("model", [0, None], ids=["one model", "every model"])
def test_predicting_many_rows_through_a_wide_layer_needs_megabytes(model):
    import tracemalloc

    import numpy as np

    from backprop_cli.network import Network

    net = Network([2, 600, 1], ["tanh", "sigmoid"], n_models=2)
    net.theta[:] = np.random.default_rng(0).normal(size=net.theta.shape)
    X = np.random.default_rng(1).normal(size=(40_000, 2))  # a decision boundary's 200 x 200 grid
    tracemalloc.start()
    try:
        outputs = net.predict(X, model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 120 * 2**20  # in one piece: 40,000 x 600 floats per layer array, 190 MiB each
    expected = np.concatenate([net.trace(X[i : i + 1000], model or 0)[1][-1] for i in range(0, len(X), 1000)])
    assert np.allclose(outputs if model is not None else outputs[0], expected, rtol=1e-12, atol=1e-15)


def test_an_animation_of_more_epochs_than_int64_holds_chooses_its_frames():
    import numpy as np

    from backprop_cli.animation import Snapshots

    shots = Snapshots(np.zeros((1, 9)), 10**20, 0, 60)
    assert shots.wanted[0] == 1 and shots.wanted[-1] == 10**20 and len(shots.linear) == 60


def _limited():  # a regression reads until this limit, not until the machine's memory is gone
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))


@pytest.mark.slow
def test_predict_reading_dev_zero_stops_at_a_bounded_line(xor_run, tmp_path):
    import os
    import subprocess
    import sys

    with open("/dev/zero", "rb") as zero:
        done = subprocess.run(
            [sys.executable, "-m", "backprop_cli", "predict", str(xor_run)],
            stdin=zero, capture_output=True, text=True, timeout=60, preexec_fn=_limited,
            env={**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")},
        )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.endswith(
        "Error: standard input: a line longer than 1,048,576 characters (not rows of input values)\n"
    )


def test_predict_estimates_an_edited_huge_layer_before_allocating_it(cli, xor_run, spoiled):
    run = spoiled(xor_run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("layers: [2, 2, 1]", "layers: [2, 2000000000, 1]"))
    result = cli("predict", run, "--input", "0,1")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"Error: {config}: model.layers [2, 2000000000, 1] on 4 samples needs about 715.3 GiB of memory; "
    )


# -- the full disk --------------------------------------------------------------------------


def _train_on_a_disk_of(monkeypatch, tmp_path, budget):
    """Train XOR into tmp_path/runs on a disk that holds `budget` bytes (every write is checked
    against what the folder already holds, as a full disk would refuse it); returns the error."""
    import errno
    import os

    from backprop_cli import api, files
    from backprop_cli.errors import RunError
    from backprop_cli.painter import Painter
    from backprop_cli.run_folders import write

    root = tmp_path / "runs"
    real = files.atomic_write

    def atomic_write(path, content):
        used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        size = len(content.encode() if isinstance(content, str) else content)
        if used - (path.stat().st_size if path.exists() else 0) + size > budget:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, content)

    monkeypatch.setattr(files, "atomic_write", atomic_write)
    monkeypatch.setattr(write, "atomic_write", atomic_write)
    config = tmp_path / "xor.yaml"
    config.write_text(XOR_YAML)
    cfg = api.config(config)
    with pytest.raises(RunError) as caught:
        api.train_run(cfg, api.dataset(cfg, str(config)), root, painter=Painter(background=False))
    return str(caught.value)


@pytest.fixture(scope="module")
def sizes(xor_run):
    return {p.name: p.stat().st_size for p in xor_run.iterdir()}


def test_a_run_that_can_write_only_its_config_leaves_nothing(monkeypatch, tmp_path, sizes):
    error = _train_on_a_disk_of(monkeypatch, tmp_path, sizes["config.yaml"] + 20)
    assert error.endswith(": cannot write: No space left on device (nothing was kept)")
    assert list((tmp_path / "runs").iterdir()) == []


@pytest.mark.parametrize("room", ["summary.json", "history.csv"], ids=["no file fits", "history.csv fits"])
def test_a_run_that_cannot_write_its_files_is_marked_failed_with_the_reason(monkeypatch, tmp_path, sizes, room):
    # with room for history.csv but not weights.json, the failed summary fits once history.csv goes
    error = _train_on_a_disk_of(monkeypatch, tmp_path, sizes["config.yaml"] + sizes[room] + 300)
    assert error.endswith(": cannot write the run files: No space left on device")
    (run,) = (tmp_path / "runs").iterdir()
    import json

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "cannot write: No space left on device"
    assert {p.name for p in run.iterdir()} == {"config.yaml", "summary.json"}  # the partial files made room


def test_a_run_whose_failure_cannot_be_recorded_leaves_nothing(monkeypatch, tmp_path, sizes):
    error = _train_on_a_disk_of(monkeypatch, tmp_path, sizes["config.yaml"] + 200)  # a running summary, no more
    assert error.endswith(": cannot write the run files: No space left on device (nothing was kept)")
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_sweep_whose_store_does_not_fit_names_the_file_and_leaves_nothing(cli, write_config, tmp_path, monkeypatch):
    import errno

    import numpy as np

    def full(*args, **kwargs):  # what NumPy raises on a full disk: no file name
        raise OSError(errno.ENOSPC, "No space left on device")

    from backprop_cli import files
    from backprop_cli.run_folders import write

    monkeypatch.setattr(np.lib.format, "open_memmap", full)
    for module in (files, write):  # and no summary fits either
        monkeypatch.setattr(module, "atomic_write", full)
    root = tmp_path / "runs"
    result = cli("sweep-lr", write_config(XOR_YAML), "--lrs", "0.5,1", "--runs-dir", root, "-q")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {root}/xor-sweep-") and result.stderr.endswith(
        ": cannot write the study's store: No space left on device\n"
    )
    assert list(root.iterdir()) == []  # a folder without a summary is no study anybody can list


def test_a_large_csv_takes_a_few_times_its_size_to_read(tmp_path):
    import random
    import tracemalloc

    from backprop_cli.data import _from_csv

    path = tmp_path / "big.csv"
    r = random.Random(0)
    rows = [
        f"{r.random():.4f},{r.random():.4f},{r.random():.4f},{r.random():.4f},{'abc'[i % 3]}" for i in range(100_000)
    ]
    path.write_text("a,b,c,d,species\n" + "\n".join(rows) + "\n")
    tracemalloc.start()
    try:
        raw = _from_csv(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert raw.X.shape == (100_000, 4) and raw.class_names == ["a", "b", "c"]
    assert peak < 4 * path.stat().st_size  # a list of strings a row took 11 times the file


def test_a_column_of_numbers_then_words_keeps_its_labels_as_written(tmp_path):
    from backprop_cli.data import _from_csv

    path = tmp_path / "mixed.csv"
    path.write_text("x,y\n0.5,1\n\n0.25,2\n0.75,two\n")
    raw = _from_csv(path)
    assert raw.class_names == ["1", "2", "two"] and raw.labels.tolist() == [0, 1, 2]


def test_a_bad_cell_after_a_blank_line_is_named_by_its_own_row(tmp_path):
    from backprop_cli.data import _from_csv
    from backprop_cli.errors import DataError

    path = tmp_path / "gap.csv"
    path.write_text("a,b,y\n1,2,0\n\n3,x,1\n4,nan,1\n")
    with pytest.raises(DataError) as caught:
        _from_csv(path)
    assert str(caught.value) == f"{path}: row 4, column 2 ('b'): 'x' is not a number"


def test_scoring_many_rows_keeps_no_hidden_layer_whole():
    import tracemalloc

    import numpy as np

    from backprop_cli.evaluation import evaluate
    from backprop_cli.network import Network

    net = Network([2, 600, 1], ["tanh", "sigmoid"])
    net.theta[:] = np.random.default_rng(0).normal(size=net.theta.shape) * 0.1
    X = np.random.default_rng(1).normal(size=(40_000, 2))
    Y = (X[:, :1] > 0).astype(float)
    tracemalloc.start()
    try:
        scores = evaluate(net, X, Y, "bce", True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 120 * 2**20 and scores["samples"] == 40_000  # the whole trace: 3 x 190 MiB
    zs, a = net.trace(X)
    from backprop_cli.losses import LOSSES

    assert scores["loss"] == pytest.approx(float(LOSSES["bce"].value(a[-1][None], Y, zs[-1][None])[0]), rel=1e-12)


# -- Dask -----------------------------------------------------------------------------------

GRID_ARGS = ["--grid", "training.learning_rate=0.5,1", "--epochs", "20", "--executor", "dask"]
SEARCH_ARGS = ["--space", "training.learning_rate=log:0.1:1", "--trials", "4", "--epochs", "20", "--executor", "dask"]


@pytest.mark.parametrize(
    "address,message",
    [
        ("foo://x:1", "unknown scheme 'foo'; one of tcp, tls, ws, wss, ucx, inproc"),
        ("tcp://127.0.0.1:abc", "port 'abc' is not a number from 1 to 65535"),
        ("tcp://127.0.0.1:99999", "port '99999' is not a number from 1 to 65535"),
        ("tcp://somehost", "expected HOST:PORT (e.g. tcp://10.0.0.5:8786)"),
    ],
)
def test_a_scheduler_address_that_cannot_be_one_is_refused_before_training(
    cli, write_config, tmp_path, address, message
):
    result = cli("sweep", write_config(XOR_YAML), *GRID_ARGS, "--scheduler", address, "--runs-dir", tmp_path / "r")
    assert result.exit_code == 2 and result.stderr == f"Error: --scheduler {address}: {message}\n"
    assert not (tmp_path / "r").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, args",
    [
        ("sweep", GRID_ARGS),
        ("search", ["--sampler", "tpe", *SEARCH_ARGS]),  # Optuna's trials go to Dask on their own path
        ("search", ["--halving", "--min-epochs", "5", *SEARCH_ARGS]),  # as do the rungs of halving
    ],
)
def test_a_scheduler_with_nothing_listening_is_said_at_once(cli, write_config, tmp_path, command, args):
    pytest.importorskip("dask.distributed")
    import time

    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    result = cli(command, write_config(XOR_YAML), *args, "--scheduler", address, "--runs-dir", tmp_path / "r")
    assert result.exit_code == 1 and time.monotonic() - start < 10  # distributed alone: 30 s
    assert result.stderr.endswith(f"Error: --scheduler {address}: cannot connect: Connection refused\n")
    assert f"connecting to the Dask scheduler at {address} (--timeout 10 s)..." in result.stderr


@pytest.mark.slow
def test_a_scheduler_that_accepts_and_never_answers_fails_after_the_timeout(cli, write_config, tmp_path):
    pytest.importorskip("dask.distributed")
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)  # accepted by the kernel, never answered
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        args = ["--scheduler", address, "--timeout", "1", "--runs-dir", tmp_path / "r", "-q"]
        result = cli("sweep", write_config(XOR_YAML), *GRID_ARGS, *args)
        took = time.monotonic() - start
    assert result.exit_code == 1 and took < 10  # distributed alone: until the server goes
    assert result.stderr == f"Error: --scheduler {address}: the scheduler did not answer within 1 s (--timeout)\n"


# -- the worker pool ------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pids) -> list[int]:
    import os

    left = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        left.append(pid)
    return left


@pytest.fixture
def long_grid(tmp_path):
    """start() -> (the `backprop sweep` process, its pool workers): six groups of XOR long enough
    (about a minute each) that only a stop on a signal ends them, started once it says so."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    config = tmp_path / "xor.yaml"
    config.write_text(XOR_YAML)
    started = []

    def start():
        args = [
            sys.executable,
            "-m",
            "backprop_cli",
            "sweep",
            str(config),
            "--grid",
            "model.activation=sigmoid,tanh,relu",
        ]
        args += ["--grid", "model.layers=[2,2,1],[2,4,1]", "--epochs", "3000000", "--workers", "2", "--name", "k"]
        env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
        process = subprocess.Popen(
            [*args, "--runs-dir", str(tmp_path / "runs")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env, start_new_session=True,
        )  # fmt: skip
        started.append([process.pid])
        assert "cells in 6 batched groups" in process.stdout.readline()  # ready: the pool is started
        for _ in range(100):  # the two workers, forked when the first chunks are submitted
            command = Path(f"/proc/{process.pid}/cmdline").read_bytes()  # forks share it; the painter's differs
            workers = [p for p in _children(process.pid) if Path(f"/proc/{p}/cmdline").read_bytes() == command]
            if len(workers) == 2:
                started.append(workers)
                return process, workers
            time.sleep(0.05)
        raise AssertionError("no pool workers")

    yield start
    import signal

    for pids in started:  # the command and its workers, even orphaned ones (which hold its pipes)
        for pid in _alive([*pids, *(c for p in pids for c in _children(p))]):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_killed_pool_worker_is_one_line_and_stops_the_others(long_grid):
    import os
    import signal
    import time

    process, workers = long_grid()
    os.kill(workers[0], signal.SIGKILL)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert err.endswith(
        "Error: a worker process ended abruptly (killed, or out of memory?) while training a chunk; "
        "the chunks finished before it are kept in the store\n"
    )
    time.sleep(0.2)
    assert _alive(workers) == []


@pytest.mark.slow
def test_sigterm_stops_a_pooled_grid_within_seconds(long_grid):
    import os
    import signal
    import time

    process, workers = long_grid()
    start = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130 and time.monotonic() - start < 5  # not the running groups' minute
    assert "Interrupted; 0 of 6 cells finished." in err
    assert _alive(workers) == []


@pytest.mark.slow
def test_a_killed_command_leaves_no_worker_and_its_study_stale(long_grid, cli, tmp_path):
    import os
    import signal
    import time

    process, workers = long_grid()
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    for _ in range(100):
        if not _alive(workers):
            break
        time.sleep(0.05)
    assert _alive(workers) == []  # they would train for nobody, for minutes
    result = cli("runs", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0 and "stale" in result.stdout
    (study,) = (tmp_path / "runs").iterdir()
    result = cli("runs", "show", study)
    assert result.exit_code == 0 and f"stale (the summary says running; process {process.pid} is gone)" in result.stdout


def test_more_epochs_than_memory_holds_history_for_are_refused_before_training(cli, tmp_path):
    # 1e20 epochs trained until Ctrl-C and then built a history past 3 GB
    from conftest import CONFIGS

    result = cli(
        "train", CONFIGS / "xor.yaml", "--set", "training.epochs=100000000000000000000", "--runs-dir", tmp_path
    )
    assert result.exit_code == 2
    assert "training.epochs 100,000,000,000,000,000,000: the history of that many epochs needs about" in result.output
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("when", ["while the cluster starts", "while it trains"])
def test_ctrl_c_in_a_dask_grid_is_one_line(tmp_path, write_config, when):
    import os
    import signal
    import subprocess
    import sys

    pytest.importorskip("dask.distributed")
    from conftest import XOR_YAML

    path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 3000000"))
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    args = [sys.executable, "-m", "backprop_cli", "sweep", str(path), "--grid", "training.learning_rate=0.1,0.2"]
    args += ["--grid", "model.activation=sigmoid,tanh", "--executor", "dask", "--runs-dir", str(tmp_path / "r")]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert "4 cells in 2 batched groups" in child.stdout.readline()  # the study's folder is made
    if when == "while it trains":
        import time

        time.sleep(3)  # what is tested: a signal once the workers are busy
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr and "distributed." not in stderr, stderr
    assert stderr.count("Interrupted") == 1


def _scheduler_and_worker(port):
    """A real Dask scheduler and one worker, started as a user would; returns both processes
    once the worker has joined (the scheduler's log says so)."""
    import subprocess
    import sys

    bin_dir = __import__("pathlib").Path(sys.executable).parent
    scheduler = subprocess.Popen(
        [str(bin_dir / "dask"), "scheduler", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in scheduler.stderr:
        if "Scheduler at" in line:
            break
    worker = subprocess.Popen(
        [str(bin_dir / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--no-dashboard"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for line in scheduler.stderr:
        if "Register worker" in line:
            break
    return scheduler, worker


@pytest.mark.slow
@pytest.mark.parametrize("lost", ["scheduler", "worker"])
def test_a_lost_scheduler_or_every_worker_gone_is_one_line(tmp_path, write_config, lost):
    import os
    import socket
    import subprocess
    import sys

    pytest.importorskip("dask.distributed")
    from conftest import XOR_YAML

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scheduler, worker = _scheduler_and_worker(port)
    try:
        path = write_config(XOR_YAML.replace("epochs: 200", "epochs: 3000000"))
        env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
        args = [sys.executable, "-m", "backprop_cli", "sweep", str(path), "--grid", "training.learning_rate=0.1,0.2"]
        args += ["--executor", "dask", "--scheduler", f"tcp://127.0.0.1:{port}", "--timeout", "2"]
        child = subprocess.Popen(
            args + ["--runs-dir", str(tmp_path / "r")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert "batched group" in child.stdout.readline()
        import time

        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=30) as watcher:  # until the worker trains a chunk
            while not any(watcher.processing().values()):
                time.sleep(0.05)
        (scheduler if lost == "scheduler" else worker).kill()
        _, stderr = child.communicate(timeout=90)
    finally:
        scheduler.kill()
        worker.kill()
    assert child.returncode == 1, stderr
    assert "Traceback" not in stderr and "distributed." not in stderr, stderr
    said = (
        "the connection to it was lost" if lost == "scheduler" else "no worker has been connected for 2 s (--timeout)"
    )
    assert f"Error: the Dask scheduler at tcp://127.0.0.1:{port}: {said}; the chunks finished before" in stderr
