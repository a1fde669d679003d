"""The command line: a thin Typer/Rich edge over the UI-free core.

The only package that imports typer and rich. `app` holds the error mapping; each command
group has a module of its own, registered here in workflow order (the order `--help` lists).
Heavy modules (numpy, pydantic, matplotlib) are imported inside the commands so that
`backprop --help` starts fast.
"""

from backprop_cli.cli import checks, configs, predict, runs, sweep, train  # noqa: F401  (registers the commands)
from backprop_cli.cli.app import app


def main() -> None:
    app(prog_name="backprop")


__all__ = ["app", "main"]
