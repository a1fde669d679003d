"""Small parts of issue 16 (a learner's first hour): outputs named by class, the resolved
config printed, plural samples, an accuracy plot fitted to its range."""

import csv
import io
import json

import numpy as np
import pytest
from conftest import CONFIGS, XOR_YAML


@pytest.fixture(scope="module")
def iris_run(tmp_path_factory):
    from typer.testing import CliRunner

    from backprop_cli.cli import app

    root = tmp_path_factory.mktemp("iris") / "runs"
    args = ["train", str(CONFIGS / "iris.yaml"), "--runs-dir", str(root), "--quiet", "--epochs", "50"]
    assert CliRunner().invoke(app, args).exit_code == 0
    return next(root.iterdir())


@pytest.mark.slow
def test_predict_names_outputs_by_class(cli, iris_run, tmp_path):
    row = "6.3,2.9,5.6,1.8"
    record = json.loads(cli("predict", iris_run, "--input", row, "--json").stdout)[0]
    assert list(record["probabilities"]) == ["setosa", "versicolor", "virginica"]
    assert list(record["probabilities"].values()) == record["output"]  # output stays, as before
    table = cli("predict", iris_run, "--input", row).stdout
    header = next(line for line in table.splitlines() if "sepal_length" in line)
    assert "setosa" in header and "output1" not in table
    (tmp_path / "in.csv").write_text(f"a,b,c,d\n{row}\n")
    rows = list(csv.reader(io.StringIO(cli("predict", iris_run, "--csv", tmp_path / "in.csv").stdout)))
    assert rows[0][4:] == ["setosa", "versicolor", "virginica", "class"]
    prompt = cli("predict", iris_run, input=row.replace(",", " ") + "\n").stdout
    assert f"setosa {record['output'][0]:.4f}, versicolor {record['output'][1]:.4f}" in prompt


@pytest.mark.slow
def test_one_output_keeps_its_name(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    assert cli("train", write_config(XOR_YAML), "--runs-dir", root, "--quiet").exit_code == 0
    record = json.loads(cli("predict", "--runs-dir", root, "--input", "0,1", "--json").stdout)[0]
    assert "probabilities" not in record and len(record["output"]) == 1


def test_print_config_shows_the_resolved_config_and_trains_nothing(cli, tmp_path):
    result = cli(
        "train",
        CONFIGS / "xor.yaml",
        "--lr",
        "0.3",
        "--set",
        "training.epochs=7",
        "--print-config",
        "--runs-dir",
        tmp_path / "r",
    )
    assert result.exit_code == 0 and not (tmp_path / "r").exists()
    import yaml

    printed = yaml.safe_load(result.stdout)
    assert printed["training"]["learning_rate"] == 0.3 and printed["training"]["epochs"] == 7
    assert printed["name"] == "xor" and printed["model"]["layers"] == [2, 2, 1]


def test_one_training_sample_is_singular(cli):
    result = cli("validate", CONFIGS / "worked_example.yaml")
    assert result.stdout.rstrip().endswith("loss sse, 1 training sample")


def test_the_accuracy_plot_fits_its_range():
    import numpy as np

    from backprop_cli import plots

    png = plots.metric_plot(np.arange(1, 11), {"training": np.linspace(0.9, 1.0, 10)}, "accuracy", "iris: accuracy")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


# -- evaluate ------------------------------------------------------------------------------------


def test_classification_scores_by_hand():
    from backprop_cli.evaluation import classification_scores

    # true 0,1,2,2 predicted 0,1,1,2: class 1 is predicted twice, right once
    s = classification_scores(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), ["a", "b", "c"])
    assert s["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert s["accuracy"] == 0.75
    b, c = s["classes"][1], s["classes"][2]
    assert (b["precision"], b["recall"], b["support"]) == (0.5, 1.0, 1)
    assert b["f1"] == pytest.approx(2 / 3)
    assert (c["precision"], c["recall"], c["f1"], c["support"]) == (1.0, 0.5, pytest.approx(2 / 3), 2)
    assert s["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # a class that is never predicted has no precision (not 0, not a division by zero)
    s = classification_scores(np.array([0, 0]), np.array([0, 1]), ["a", "b"])
    assert s["classes"][1]["precision"] is None and s["classes"][1]["recall"] == 0.0


def test_regression_scores_by_hand():
    from backprop_cli.evaluation import regression_scores

    s = regression_scores(np.array([[1.0], [2.0], [4.0]]), np.array([[1.0], [3.0], [5.0]]))
    assert s["mae"] == pytest.approx(2 / 3)
    assert s["rmse"] == pytest.approx(np.sqrt(2 / 3))
    assert s["r2"] == pytest.approx(1 - 2 / 8)  # mean 3: sst = 4 + 0 + 4


@pytest.mark.slow
def test_evaluate_a_run_on_its_validation_data(cli, iris_run):
    result = cli("evaluate", iris_run)
    assert result.exit_code == 0, result.output
    scores = json.loads((iris_run / "evaluation.json").read_text())
    summary = json.loads((iris_run / "summary.json").read_text())
    assert scores["data"] == "validation data" and scores["samples"] == 30
    matrix = np.array(scores["confusion_matrix"])
    assert matrix.sum() == 30 and [c["class"] for c in scores["classes"]] == ["setosa", "versicolor", "virginica"]
    # the saved weights' own validation numbers, computed by training, agree with evaluate's
    assert scores["accuracy"] == pytest.approx(summary["saved_weights"]["val_accuracy"])
    assert scores["accuracy"] == pytest.approx(np.trace(matrix) / 30)
    assert scores["loss"] == pytest.approx(summary["saved_weights"]["val_loss"], rel=1e-12)
    assert (iris_run / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "confusion matrix" in result.stdout and "macro average" in result.stdout
    assert json.loads(cli("evaluate", iris_run, "--json", "--no-save").stdout) == scores


def test_evaluate_reads_a_csv_by_column_names(cli, iris_run, tmp_path):
    from backprop_cli.datasets import SHIPPED

    rows = list(csv.reader(open(SHIPPED["iris"])))
    data = tmp_path / "test.csv"
    with open(data, "w", newline="") as f:  # columns in another order, target first
        csv.writer(f).writerows([[r[4], r[2], r[0], r[1], r[3]] for r in rows[:1] + rows[1::5]])
    scores = json.loads(cli("evaluate", iris_run, data, "--json", "--no-save").stdout)
    records = json.loads(cli("predict", iris_run, "--csv", data, "--json").stdout)
    truth = [r[4] for r in rows[1::5]]
    assert scores["samples"] == len(truth) == len(records)
    assert scores["accuracy"] == pytest.approx(np.mean([r["class"] == t for r, t in zip(records, truth)]))
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,species\n1,2,setosa\n")
    result = cli("evaluate", iris_run, bad)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {bad}: 2 input columns, but the network takes 4 inputs\n"


@pytest.mark.slow
def test_evaluate_regression(cli, tmp_path):
    root = tmp_path / "runs"
    assert cli("train", CONFIGS / "sine.yaml", "--epochs", "200", "--runs-dir", root, "-q").exit_code == 0
    run = next(root.iterdir())
    assert (run / "fit.png").read_bytes()[:4] == b"\x89PNG"  # 1-input regression: the learned curve
    scores = json.loads(cli("evaluate", "latest", "--runs-dir", root, "--json").stdout)
    assert set(scores) >= {"mae", "rmse", "r2"} and "confusion_matrix" not in scores
    assert scores["rmse"] == pytest.approx(np.sqrt(scores["loss"]), rel=1e-9)  # mse is rmse squared
    assert not (run / "confusion_matrix.png").exists()


# -- progress, options, tables -------------------------------------------------------------------


@pytest.mark.slow
def test_progress_lines_show_validation_numbers(cli, tmp_path):
    result = cli("train", CONFIGS / "iris.yaml", "--epochs", "20", "--runs-dir", tmp_path)
    first = result.stdout.splitlines()[0]
    assert first.startswith("epoch 1/20 (5%)  loss ") and " acc " in first and " val_loss " in first
    assert " val_acc " in first and first.endswith("ep/s")


def test_debug_works_after_the_subcommand():
    from backprop_cli.cli import hoist_debug

    assert hoist_debug(["train", "x.yaml", "--debug"]) == ["--debug", "train", "x.yaml"]
    assert hoist_debug(["--debug", "train"]) == ["--debug", "train"]
    assert hoist_debug(["train", "--", "--debug"]) == ["train", "--", "--debug"]


@pytest.mark.slow
def test_debug_after_the_subcommand_shows_the_traceback(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "backprop_cli", "validate", str(tmp_path / "missing.yaml")]
    plain = subprocess.run(cmd, capture_output=True, text=True)
    debug = subprocess.run(cmd + ["--debug"], capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr


@pytest.fixture
def narrow(monkeypatch):
    """The tables' console at 80 columns, recorded."""
    from rich.console import Console

    from backprop_cli.cli import display

    console = Console(width=80, file=io.StringIO(), highlight=False, emoji=False, markup=False)
    monkeypatch.setattr(display, "out", console)
    return console


def test_tables_drop_columns_rather_than_cut_names(narrow):
    from backprop_cli.cli.display import Column, print_table

    name = "xor_adam_bce_with_a_long_name-20261124-113055"
    columns = [Column("run", justify="left", keep=True), Column("date", drop=2), Column("loss"), Column("lr", drop=1)]
    print_table("runs", columns, [[name, "2026-11-24 11:30:55", "0.000123456", "0.0142857142857"]])
    text = narrow.file.getvalue()
    assert name in text and "0.000123456" in text and "…" not in text
    assert "not shown at this width: date, lr" in text  # the highest drop first
    assert max(map(len, text.splitlines())) <= 80


def test_wide_tables_print_in_parts_that_keep_the_key(narrow):
    from backprop_cli.cli.display import Column, print_table

    columns = [Column("learning_rate", keep=True)] + [Column(f"w{i}") for i in range(1, 13)]
    rows = [["0.0142857142857"] + [f"{-0.123456789 * i:.9g}" for i in range(1, 13)]]
    print_table("final weights", columns, rows)
    text = narrow.file.getvalue()
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    assert text.count("0.0142857142857") >= 2 and "(part 1 of" in text
    for i in range(1, 13):
        assert f" w{i} " in text and f"{-0.123456789 * i:.9g}" in text


@pytest.mark.slow
def test_runs_listing_at_80_columns_keeps_whole_names(cli, narrow, tmp_path):
    root = tmp_path / "runs"
    cfg = tmp_path / "a_rather_long_config_name_for_xor.yaml"
    cfg.write_text(XOR_YAML)
    assert cli("train", cfg, "--epochs", "5", "--runs-dir", root, "-q").exit_code == 0
    cli("runs", "--runs-dir", root)
    text = narrow.file.getvalue()
    assert next(root.iterdir()).name in text and "…" not in text


@pytest.mark.slow
def test_compare_labels_runs_by_loss(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    sse = write_config(XOR_YAML)
    assert cli("train", sse, "--epochs", "5", "--runs-dir", root, "-q", "--name", "a").exit_code == 0
    args = ["--set", "training.loss=bce", "--name", "b"]
    assert cli("train", sse, "--epochs", "5", "--runs-dir", root, "-q", *args).exit_code == 0
    a, b = sorted(p.name for p in root.iterdir())
    result = cli("runs", "compare", a, b, "--runs-dir", root, "--output", tmp_path / "c.png")
    lines = result.stdout.splitlines()
    assert [line.split() for line in lines if line.startswith("│ loss ")] == [
        ["│", "loss", "│", "sse", "│", "bce", "│"]
    ]
    assert any("architecture" in line and "2-2-1" in line for line in lines)
    assert "the runs use 2 loss functions (sse, bce): one plot panel for each" in result.stdout


def test_run_config_yaml_has_one_style(cli, iris_run):
    text = (iris_run / "config.yaml").read_text()
    assert "{" not in text  # no inline mappings
    assert "  layers: [4, 8, 3]\n" in text and "\n  builtin: iris\n" in text


@pytest.mark.slow
def test_evaluate_without_validation_data_uses_the_training_data_and_says_so(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    assert cli("train", write_config(XOR_YAML), "--runs-dir", root, "-q").exit_code == 0
    scores = json.loads(cli("evaluate", "--runs-dir", root, "--json", "--no-save").stdout)
    assert scores["data"] == "training data (the run held none out for validation)" and scores["samples"] == 4
    assert not (next(root.iterdir()) / "evaluation.json").exists()  # --no-save


@pytest.mark.parametrize(
    "settings",
    [
        {"training.optimizer": "adam"},
        {"model.dropout": 0.3, "training.l1": 0.001, "training.clip_grad_norm": 1.0, "training.optimizer": "momentum"},
    ],
    ids=["adam", "dropout, l1, clipping, momentum"],
)
def test_explain_never_cuts_a_number_at_80_columns(cli, narrow, monkeypatch, settings):
    # every value of every table appears whole on one line of an 80-column terminal
    from backprop_cli.api import config
    from backprop_cli.cli import checks
    from backprop_cli.experiment import dataset
    from backprop_cli.explain import explain_step

    monkeypatch.setattr(checks, "out", narrow)
    args = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    result = cli("explain", CONFIGS / "xor.yaml", "--epoch", "3", *args)
    assert result.exit_code == 0, result.output
    lines = narrow.file.getvalue().splitlines()
    assert max(map(len, lines)) <= 80
    cfg = config(CONFIGS / "xor.yaml", **{k.replace(".", "__"): v for k, v in settings.items()})
    sections, _ = explain_step(cfg, dataset(cfg, "x"), epoch=3)
    values = {v for s in sections for row in s.rows for v in row if v}
    missing = [v for v in values if not any(v in line for line in lines)]
    assert not missing, missing[:5]
