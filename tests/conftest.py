import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backprop_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

XOR_YAML = """
name: xor
seed: 1
model:
  layers: [2, 2, 1]
  activation: sigmoid
  output_activation: sigmoid
training:
  loss: sse
  learning_rate: 0.1
  epochs: 200
data:
  inputs: [[0, 0], [0, 1], [1, 0], [1, 1]]
  targets: [[0], [1], [1], [0]]
"""


@pytest.fixture
def write_config(tmp_path):
    """Write YAML text (dedented) to a file in tmp_path and return its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def cli(tmp_path):
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def run(*args, input=None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return run
