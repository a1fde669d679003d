"""The Python API (issue 19): the README's notebook session runs as written, and the API's
numbers are the command line's."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import CONFIGS, ROOT, XOR_YAML

import backprop_cli as bp


def _readme_session() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python and notebooks") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_session_runs_as_written(tmp_path):
    (tmp_path / "configs").symlink_to(CONFIGS)
    done = subprocess.run(
        [sys.executable, "-c", _readme_session()], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"xor-\d{8}-\d{6} completed 0\.\d+", lines[0])
    outputs = json.loads(lines[1])
    assert outputs[0] > 0.9 and outputs[1] < 0.1  # XOR learned: (0, 1) -> 1, (1, 1) -> 0
    assert "decision_boundary" in lines[2] and "loss" in lines[2]
    assert json.loads(lines[3])[0][0] > 0.9  # the dict config's tanh net learned XOR too: (0, 1) -> 1
    # the classic six-rate table (README, worked example), to the digits printed
    assert lines[-1] == "[0.00789511, 0.0042822, 0.00063449, 8.986e-05, 2.409e-05, 3e-08]"
    assert (tmp_path / "runs").is_dir() and len(list((tmp_path / "runs").glob("xor-*/training.gif"))) == 1


@pytest.mark.slow
def test_api_train_equals_the_command_line(cli, write_config, tmp_path):
    path = write_config(XOR_YAML)
    run = bp.train(path, runs_dir=tmp_path / "api", progress=False, epochs=150, learning_rate=0.7)
    assert cli("train", path, "--runs-dir", tmp_path / "cli", "--epochs", "150", "--lr", "0.7", "-q").exit_code == 0
    other = bp.load(tmp_path / "cli")
    assert run.summary["final_loss"] == other.summary["final_loss"]  # bit for bit
    for a, b in zip(run.weights, other.weights):
        assert np.array_equal(a["weights"], b["weights"]) and np.array_equal(a["biases"], b["biases"])
    history = run.history
    losses = history["loss"] if isinstance(history, dict) else history["loss"].to_numpy()
    assert len(losses) == 150 and losses[-1] == run.summary["final_loss"]
    assert run.config.training.learning_rate == 0.7


def test_overrides_name_their_section_or_are_refused(write_config, tmp_path):
    from backprop_cli.api import config
    from backprop_cli.errors import ConfigError

    path = write_config(XOR_YAML)
    cfg = config(path, activation="tanh", model__layers=[2, 3, 1], seed=4)
    assert (cfg.model.activation, cfg.model.layers, cfg.seed) == ("tanh", [2, 3, 1], 4)
    with pytest.raises(ConfigError, match="nonsense: a config field in no section"):
        config(path, nonsense=1)
    with pytest.raises(ConfigError, match="training.epochs"):
        config(path, epochs="many")


def test_importing_the_package_loads_nothing_heavy():
    code = "import sys, backprop_cli; print(sorted(m for m in ('numpy', 'typer', 'matplotlib') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_a_study_shows_as_a_table_and_a_gif_embeds(tmp_path):
    study = bp.sweep_lr(CONFIGS / "xor.yaml", rates=[0.1, 0.5], runs_dir=tmp_path, progress=False, epochs=50)
    html = study._repr_html_()
    assert html.startswith(f"<b>{study.path.name}</b><table><tr><th>learning_rate</th>")
    assert html.count("<tr>") == 3 and "<td>0.1</td>" in html and "<td>-</td>" in html  # never reached: -
    pytest.importorskip("IPython")
    from backprop_cli.api import _show

    gif = tmp_path / "x.gif"
    gif.write_bytes(b"GIF89a")
    assert _show(gif).data == '<img src="data:image/gif;base64,R0lGODlh" alt="x.gif">'
