"""Small parts of issue 16 (a learner's first hour): outputs named by class, the resolved
config printed, plural samples, an accuracy plot fitted to its range."""

import csv
import io
import json

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
