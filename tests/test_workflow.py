"""Everyday workflow: runs list/show/compare, validate, schema, init, --from, the terminal chart."""

import csv
import json

import numpy as np
import pytest
from conftest import CONFIGS, XOR_YAML

from backprop_cli.cli.display import sparkline


@pytest.fixture
def two_runs(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    path = write_config(XOR_YAML)
    for lr in ("0.1", "0.5"):
        assert cli("train", path, "--runs-dir", root, "--lr", lr, "--quiet").exit_code == 0
    runs = sorted(p for p in root.iterdir() if p.is_dir())
    return root, runs


@pytest.mark.slow
def test_runs_lists_newest_first(cli, two_runs):
    root, runs = two_runs
    result = cli("runs", "--runs-dir", root)
    assert result.exit_code == 0
    lines = [l for l in result.stdout.splitlines() if "xor-" in l]
    assert len(lines) == 2
    assert runs[1].name in lines[0] and "0.5" in lines[0] and "completed" in lines[0]
    assert runs[0].name in lines[1]


@pytest.mark.slow
def test_runs_show(cli, two_runs):
    root, runs = two_runs
    result = cli("runs", "show", runs[0].name, "--runs-dir", root)
    assert result.exit_code == 0
    assert "final_loss" in result.stdout and "config.yaml:" in result.stdout and "learning_rate: 0.1" in result.stdout
    # nested summary values print as dotted keys, not as a Python dict
    assert "blas.name " in result.stdout and "{'" not in result.stdout
    result = cli("runs", "show", root / "nope")
    assert result.exit_code == 2 and result.stderr == f"Error: {root / 'nope'}: no such run folder\n"


@pytest.mark.slow
def test_runs_compare_writes_one_plot(cli, two_runs, tmp_path):
    root, runs = two_runs
    plot = tmp_path / "cmp.png"
    result = cli("runs", "compare", *runs, "--output", plot)
    assert result.exit_code == 0, result.output
    assert "run comparison" in result.stdout and "learning_rate" in result.stdout
    assert plot.read_bytes()[:4] == b"\x89PNG"
    result = cli("runs", "compare", runs[0])
    assert result.exit_code == 2 and result.stderr == "Error: runs compare: give at least two run folders\n"


def test_validate_and_schema(cli, write_config):
    result = cli("validate", CONFIGS / "xor.yaml")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"{CONFIGS / 'xor.yaml'}: OK: 2-2-1 network (sigmoid), 9 parameters")
    bad = write_config(XOR_YAML.replace("epochs: 200", "epochs: -1"))
    result = cli("validate", bad)
    assert result.exit_code == 2 and "training.epochs: must be >= 1 (got -1)" in result.stderr
    schema = json.loads(cli("schema").stdout)
    assert {"model", "training", "data"} <= set(schema["properties"])
    assert schema["$defs"]["TrainingConfig"]["additionalProperties"] is False


@pytest.mark.parametrize("template", ["xor", "classification", "regression"])
def test_init_templates_are_valid_configs(cli, tmp_path, template):
    path = tmp_path / f"{template}.yaml"
    result = cli("init", "--template", template, path)
    assert result.exit_code == 0
    assert path.read_text().startswith("# backprop config")
    assert cli("validate", path).exit_code == 0
    again = cli("init", "--template", template, path)
    assert again.exit_code == 2 and again.stderr == f"Error: {path}: already exists (use --force to overwrite)\n"


@pytest.mark.slow
def test_train_from_a_run_continues_the_epoch_count(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    path = write_config(XOR_YAML)
    assert cli("train", path, "--runs-dir", root, "--epochs", "100", "--quiet").exit_code == 0
    first = next(root.iterdir())
    result = cli("train", path, "--runs-dir", root, "--epochs", "100", "--from", first, "--quiet")
    assert result.exit_code == 0, result.output
    second = next(p for p in root.iterdir() if p != first)
    rows = list(csv.reader((second / "history.csv").open()))
    assert rows[1][0] == "101" and rows[-1][0] == "200"
    summary = json.loads((second / "summary.json").read_text())
    assert summary["started_from"] == str(first) and summary["start_epoch"] == 100 and summary["last_epoch"] == 200
    # 100 + 100 epochs from a run equal 200 epochs straight through
    assert cli("train", path, "--runs-dir", tmp_path / "straight", "--epochs", "200", "--quiet").exit_code == 0
    straight = next((tmp_path / "straight").iterdir())
    assert json.loads((second / "weights.json").read_text()) == json.loads((straight / "weights.json").read_text())


@pytest.mark.slow
def test_from_a_run_of_another_shape_is_refused(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    assert cli("train", write_config(XOR_YAML), "--runs-dir", root, "--quiet").exit_code == 0
    run = next(root.iterdir())
    other = write_config(XOR_YAML.replace("[2, 2, 1]", "[2, 3, 1]"), "other.yaml")
    result = cli("train", other, "--from", run, "--runs-dir", root)
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"Error: {run}: cannot continue from this run: its network [2, 2, 1] does not match the config's [2, 3, 1]\n"
    )


@pytest.mark.slow
def test_summary_shows_the_loss_curve_as_a_chart(cli, write_config, tmp_path):
    result = cli("train", write_config(XOR_YAML), "--runs-dir", tmp_path / "r")
    assert "loss curve: " in result.stdout or "loss curve (log scale): " in result.stdout


def test_sparkline_shape():
    assert sparkline([4, 3, 2, 1]) == "█▆▃▁"
    assert sparkline(np.logspace(0, -4, 5)) == "█▆▅▃▁"  # log scale when it spans decades
    assert len(sparkline(np.arange(1000.0), width=48)) == 48


# -- README promises, one test each -------------------------------------------------------------


@pytest.mark.slow
def test_runs_lists_sweeps_and_seed_studies(cli, tmp_path):
    root = tmp_path / "runs"
    assert (
        cli("sweep-lr", CONFIGS / "worked_example.yaml", "--lrs", "0.5,1", "--runs-dir", root, "--quiet").exit_code == 0
    )
    assert (
        cli(
            "train", CONFIGS / "xor.yaml", "--seeds", "1,2,3", "--epochs", "50", "--runs-dir", root, "--quiet"
        ).exit_code
        == 0
    )
    listing = cli("runs", "--runs-dir", root).stdout
    assert "(sweep)" in listing and "2 rates" in listing and "(seeds)" in listing


@pytest.mark.slow
def test_seed_list_form(cli, tmp_path):
    root = tmp_path / "runs"
    result = cli("train", CONFIGS / "xor.yaml", "--seeds", "4,7", "--epochs", "20", "--runs-dir", root)
    assert result.exit_code == 0
    summary = json.loads((next(root.iterdir()) / "summary.json").read_text())
    assert summary["seeds"] == [4, 7]
    result = cli("train", CONFIGS / "xor.yaml", "--seeds", "a:b")
    assert result.exit_code == 2
    assert result.stderr == "Error: --seeds a:b: expected START:STOP (e.g. 0:30) or a list like 1,2,3\n"


def test_gradcheck_classic_central_method(cli):
    result = cli("gradcheck", CONFIGS / "worked_example.yaml", "--method", "central")
    assert result.exit_code == 0 and "central" in result.stdout and "gradient check passed" in result.stdout


@pytest.mark.slow
def test_sweep_quiet_and_chain_folder(cli, tmp_path):
    root = tmp_path / "runs"
    result = cli(
        "sweep-lr", CONFIGS / "worked_example.yaml", "--lrs", "0.5,1", "--chain", "--quiet", "--runs-dir", root
    )
    assert result.exit_code == 0
    folder = next(root.iterdir())
    assert folder.name.startswith("worked_example-chain-")
    assert result.stdout == f"{folder}\n"
    assert json.loads((folder / "summary.json").read_text())["protocol"] == "chain"


@pytest.mark.slow
def test_predict_csv_to_stdout(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    assert cli("train", write_config(XOR_YAML), "--runs-dir", root, "--quiet").exit_code == 0
    src = tmp_path / "rows.csv"
    src.write_text("x1,x2\n1,1\n")
    result = cli("predict", next(root.iterdir()), "--csv", src)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "x1,x2,output,class" and lines[1].startswith("1.0,1.0,")


def test_init_default_path(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("init", "--template", "regression")
    assert result.exit_code == 0
    assert (tmp_path / "regression.yaml").exists()
    assert result.stdout == "wrote regression.yaml; train it with: backprop train regression.yaml\n"


@pytest.mark.slow
def test_name_override_names_the_run_folder(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    assert cli("train", write_config(XOR_YAML), "--name", "my net", "--runs-dir", root, "--quiet").exit_code == 0
    run = next(root.iterdir())
    assert run.name.startswith("my_net-")
    assert json.loads((run / "summary.json").read_text())["name"] == "my net"


def test_validate_line_as_the_readme_shows_it(cli):
    result = cli("validate", CONFIGS / "iris.yaml")
    assert result.stdout == (
        f"{CONFIGS / 'iris.yaml'}: OK: 4-8-3 network (tanh/softmax), 67 parameters, "
        "loss cross_entropy, 120 training samples, 30 validation\n"
    )


@pytest.mark.slow
def test_compare_draws_a_continued_run_at_its_own_epochs(cli, write_config, tmp_path):
    from backprop_cli.run_folders import compare_runs

    root = tmp_path / "runs"
    path = write_config(XOR_YAML)
    assert cli("train", path, "--runs-dir", root, "--epochs", "100", "--quiet").exit_code == 0
    first = next(root.iterdir())
    assert cli("train", path, "--runs-dir", root, "--epochs", "50", "--from", first.name, "--quiet").exit_code == 0
    second = next(p for p in root.iterdir() if p != first)
    _, curves = compare_runs([first, second])
    assert list(curves) == ["sse"]  # grouped by loss function
    curves = curves["sse"]
    assert curves[first.name][0].tolist() == list(range(1, 101))
    assert curves[second.name][0].tolist() == list(range(101, 151))  # not drawn over epochs 1-50


@pytest.mark.slow
def test_runs_are_found_by_name_and_as_latest(cli, two_runs):
    root, runs = two_runs
    newest = max(runs, key=lambda p: json.loads((p / "summary.json").read_text())["started_at"] + p.name)
    shown = cli("runs", "show", "latest", "--runs-dir", root)
    assert shown.exit_code == 0 and str(newest) in shown.stdout
    by_name = cli("predict", runs[0].name, "--runs-dir", root, "--input", "0,1", "--json")
    by_path = cli("predict", runs[0], "--input", "0,1", "--json")
    assert by_name.exit_code == 0 and by_name.stdout == by_path.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["--seeds", "0:3", "--from", "latest"], "Error: --from goes with a single run, not with --seeds\n"),
        (
            ["--target", "0.1"],
            "Error: --target goes with --seeds (a single run stops at a loss with training.stop_at_loss)\n",
        ),
    ],
    ids=["from with seeds", "target without seeds"],
)
def test_options_that_do_not_go_together_exit_2(cli, tmp_path, args, message):
    result = cli("train", CONFIGS / "xor.yaml", "--runs-dir", tmp_path / "r", *args)
    assert result.exit_code == 2 and result.stderr == message
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_runs_compare_names_activations_and_regularization_and_plots_validation(tmp_path):
    from backprop_cli.api import config
    from backprop_cli.run_folders import compare_runs
    from backprop_cli.run_folders.read import describe

    iris = describe(config(CONFIGS / "iris.yaml"))
    assert iris["activation"] == "tanh/softmax" and iris["regularization"] == "weight_decay 0.005"
    assert describe(config(CONFIGS / "xor.yaml"))["regularization"] == "none"
    cfg = config(CONFIGS / "overfit.yaml", model__dropout=[0.3, 0.1], training__l1=0.003, training__clip_grad_norm=1.0)
    assert describe(cfg)["regularization"] == "dropout 0.3/0.1, l1 0.003, clip_grad_norm 1"
    runs = []
    for p in (0.0, 0.3):
        run = bp_train(config(CONFIGS / "overfit.yaml", model__dropout=p, training__epochs=5), tmp_path)
        runs.append(run)
    _, curves = compare_runs(runs)
    assert sorted(curves["cross_entropy"]) == sorted([r.name for r in runs] + [f"{r.name} (validation)" for r in runs])


def bp_train(cfg, tmp_path):
    import backprop_cli as bp

    return bp.train(cfg, runs_dir=tmp_path / "runs").path
