"""`backprop predict`: prompt driven by piped input, one-shot modes, and corrupt run folders."""

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import CONFIGS, XOR_YAML


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory):
    """One trained XOR run for the module; tests that damage a run copy it first."""
    from typer.testing import CliRunner

    from backprop_cli.cli import app

    folder = tmp_path_factory.mktemp("xor")
    (folder / "xor.yaml").write_text(XOR_YAML)
    root = folder / "runs"
    args = ["train", str(folder / "xor.yaml"), "--runs-dir", str(root), "--epochs", "10000", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root, next(p for p in root.iterdir() if p.is_dir())


def _expected(run, x):
    from backprop_cli.run_folders import load_run

    return load_run(run).predict([x])[0]


@pytest.mark.slow
def test_prompt_asks_each_input_by_name(cli, xor_run):
    root, run = xor_run
    result = cli("predict", run, input="0\n1\n")
    assert result.exit_code == 0
    y = _expected(run, [0, 1])[0]
    assert "x1: x2: " in result.stdout
    assert f"output: {y:.4f}  class: {int(y > 0.5)}" in result.stdout


def test_prompt_defaults_to_latest_completed_run(cli, xor_run):
    root, run = xor_run
    result = cli("predict", "--runs-dir", root, input="1 1\n")
    assert result.exit_code == 0
    assert f"output: {_expected(run, [1, 1])[0]:.4f}" in result.stdout


def test_prompt_rejects_bad_values_and_asks_again(cli, xor_run):
    _, run = xor_run
    result = cli("predict", run, input="abc\ninf\n0\n1\n1,2,3\nq\n")
    assert result.exit_code == 0
    assert "x1: 'abc' is not a number (try again, or q to quit)" in result.stderr
    assert "x1: 'inf' is not a finite number (try again, or q to quit)" in result.stderr
    assert "input: expected 2 values, got 3 (try again, or q to quit)" in result.stderr
    assert result.stdout.count("output: ") == 1


def test_prompt_ends_cleanly_at_end_of_input(cli, xor_run):
    _, run = xor_run
    result = cli("predict", run, input="0\n")
    assert result.exit_code == 0
    assert "output" not in result.stdout


def test_input_rows_as_json(cli, xor_run):
    _, run = xor_run
    result = cli("predict", run, "--input", "0,1", "--input", "1 1", "--json")
    assert result.exit_code == 0
    records = json.loads(result.stdout)
    assert [r["input"] for r in records] == [[0.0, 1.0], [1.0, 1.0]]
    assert records[0]["output"] == pytest.approx(list(_expected(run, [0, 1])), abs=0)
    assert records[0]["class"] in (0, 1)


def test_wrong_number_of_values_exits_2(cli, xor_run):
    _, run = xor_run
    result = cli("predict", run, "--input", "0,1,1")
    assert result.exit_code == 2
    assert result.stderr == "Error: --input 0,1,1: expected 2 values, got 3\n"


def test_truth_table(cli, xor_run):
    _, run = xor_run
    result = cli("predict", run, "--truth-table", "--json")
    assert result.exit_code == 0
    records = json.loads(result.stdout)
    assert [r["input"] for r in records] == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert [r["class"] for r in records] == [0, 1, 1, 0]


def test_csv_in_and_out(cli, xor_run, tmp_path):
    _, run = xor_run
    src = tmp_path / "in.csv"
    src.write_text("x1,x2\n0,1\n1,0\n")
    dest = tmp_path / "out.csv"
    result = cli("predict", run, "--csv", src, "--output", dest)
    assert result.exit_code == 0
    lines = dest.read_text().splitlines()
    assert lines[0] == "x1,x2,output,class"
    assert float(lines[1].split(",")[2]) == _expected(run, [0, 1])[0]


def test_not_a_run_folder_exits_2(cli, tmp_path):
    result = cli("predict", tmp_path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path}: not a run folder (no config.yaml)\n"


def test_no_runs_yet(cli, tmp_path):
    result = cli("predict", "--runs-dir", tmp_path / "none")
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"Error: {tmp_path / 'none'}: no completed run found (train one first: backprop train CONFIG)\n"
    )


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "missing (run status: completed)"),
        ("", "empty file"),
        (
            '{"layers": [{"weights": [[1, 2], [3',
            "corrupt JSON (truncated?): Expecting ',' delimiter: line 1 column 36 (char 35)",
        ),
        (
            '{"layers": [{"weights": [[1, 2, 3], [3, 4, 5]], "biases": [0, 0]}, {"weights": [[1, 2]], "biases": [0]}]}',
            "layer 1: weights are 2x3, expected 2x2",
        ),
        ('{"layers": []}', "expected 2 layers for [2, 2, 1]"),
    ],
    ids=["missing", "empty", "truncated", "wrong shape", "no layers"],
)
def test_corrupt_weights_exit_1(cli, xor_run, content, message, tmp_path):
    import shutil

    run = tmp_path / xor_run[1].name
    shutil.copytree(xor_run[1], run)
    weights = run / "weights.json"
    if content is None:
        weights.unlink()
    else:
        weights.write_text(content)
    result = cli("predict", run, "--input", "0,1")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {weights}: {message}\n"


@pytest.mark.slow
def test_csv_output_quotes_class_names_with_commas(cli, write_config, tmp_path):
    # class names with a comma must stay one CSV cell
    path = write_config(
        """
        seed: 0
        model: {layers: [2, 4, 2], activation: tanh, output_activation: softmax, init: xavier}
        training: {loss: cross_entropy, learning_rate: 0.5, epochs: 200}
        data:
          inputs: [[0, 0], [1, 1], [0, 0.1], [1, 0.9]]
          targets: ["small, round", "big, square", "small, round", "big, square"]
        """
    )
    root = tmp_path / "runs"
    assert cli("train", path, "--runs-dir", root, "--quiet").exit_code == 0
    (tmp_path / "in.csv").write_text("x1,x2\n0,0\n1,1\n")
    result = cli("predict", "--runs-dir", root, "--csv", tmp_path / "in.csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["x1", "x2", "big, square", "small, round", "class"]  # outputs named by class
    assert [r[-1] for r in rows[1:]] == ["small, round", "big, square"]


@pytest.mark.slow
def test_predict_says_which_run_latest_is_and_warns_beyond_the_training_inputs(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    trained = cli("train", path, "--runs-dir", tmp_path, "--quiet")
    assert trained.exit_code == 0
    run = Path(trained.stdout.strip())
    assert json.loads((run / "data.json").read_text())["input_range"] == [[0.0, 1.0], [0.0, 1.0]]
    inside = cli("predict", "latest", "--runs-dir", tmp_path, "--input", "0,1")
    assert inside.exit_code == 0 and inside.stderr == f"run: {run} (latest)\n"
    named = cli("predict", run, "--input", "0,1")
    assert named.exit_code == 0 and named.stderr == ""
    beyond = cli("predict", run, "--input", "5,1", "--input", "-2,0.5", "--input", "5,0")
    assert beyond.exit_code == 0
    assert beyond.stderr == (
        "Warning: x1 -2, 5: outside the values it was trained on (0 to 1); the network extrapolates\n"
    )


@pytest.mark.slow
def test_a_truth_table_of_a_run_not_trained_on_0_1_inputs_warns(cli, tmp_path):
    result = cli("train", CONFIGS / "iris.yaml", "--epochs", "5", "--runs-dir", tmp_path, "--quiet")
    assert result.exit_code == 0
    table = cli("predict", result.stdout.strip(), "--truth-table")
    assert table.exit_code == 0
    lines = table.stderr.splitlines()
    assert len(lines) == 4 and lines[0].startswith("Warning: sepal_length 0, 1: outside the values it was trained on (")


@pytest.mark.slow
def test_each_data_set_keeps_its_own_evaluation_and_a_nameless_header_is_said(cli, tmp_path):
    import csv

    from conftest import CONFIGS, ROOT

    runs = tmp_path / "runs"
    assert cli("train", CONFIGS / "iris.yaml", "--runs-dir", runs, "-q", "--epochs", "20").exit_code == 0
    run = next(runs.iterdir())
    with open(ROOT / "backprop_cli" / "datasets" / "iris.csv") as f:
        rows = list(csv.reader(f))
    (tmp_path / "named.csv").write_text("\n".join(",".join(r) for r in rows[:30]) + "\n")
    (tmp_path / "bare.csv").write_text(
        "\n".join(",".join(r) for r in [["a", "b", "c", "d", "species"]] + rows[1:30]) + "\n"
    )
    assert cli("evaluate", run, "--runs-dir", runs).exit_code == 0
    assert cli("evaluate", run, tmp_path / "named.csv").stderr.count("Warning") == 0
    result = cli("evaluate", run, tmp_path / "bare.csv")
    assert result.exit_code == 0
    assert (
        f"Warning: {tmp_path / 'bare.csv'}: its header (a, b, c, d, ...) names none of the run's inputs "
        "(sepal_length, sepal_width, petal_length, petal_width): its columns are read by position"
    ) in result.stderr
    from backprop_cli.run_folders.evaluate import evaluation_names

    (tmp_path / "half.csv").write_text(
        "\n".join(",".join(r) for r in [["petal_width", "b", "c", "d", "species"]] + rows[1:30]) + "\n"
    )
    result = cli("evaluate", run, tmp_path / "half.csv", "--no-save")
    assert (
        f"Warning: {tmp_path / 'half.csv'}: its header lacks sepal_length, sepal_width, petal_length of the run's inputs: its columns are read by position"
        in result.stderr
    )
    kept = sorted(p.name for p in run.iterdir() if p.name.startswith(("evaluation", "confusion")))
    names = [n for csv in (None, tmp_path / "bare.csv", tmp_path / "named.csv") for n in evaluation_names(csv)]
    assert kept == sorted(names) and len(set(names)) == 6
    assert evaluation_names(tmp_path / "a" / "x.csv") != evaluation_names(tmp_path / "b" / "x.csv")
    assert cli("report", run).exit_code == 0
    assert (run / "report.html").read_text().count("<h2>Evaluation on") == 3


def test_the_confusion_matrix_is_titled_by_the_files_name_not_its_path(tmp_path):
    from backprop_cli.run_folders import write_evaluation

    drawn = []

    class Recorder:  # stands in for the drawing worker: keeps the jobs it is given
        def draw(self, jobs):
            drawn.extend(jobs)
            return []

    deep = tmp_path / ("very-long-folder-name/" * 6) / "holdout.csv"
    scores = {"run": "iris-1", "data": str(deep), "confusion_matrix": [[1, 0], [0, 1]]}
    scores["classes"] = [{"class": "a"}, {"class": "b"}]
    write_evaluation(tmp_path, scores, Recorder(), deep)
    ((_, _, (_, _, title)),) = drawn
    assert title == "iris-1: holdout.csv"
