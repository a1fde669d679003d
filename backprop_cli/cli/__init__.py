"""The command line: a thin Typer/Rich edge over the UI-free core.

The only package that imports typer and rich. `app` holds the error mapping; each command
group has a module of its own, registered here in workflow order (the order `--help` lists).
Heavy modules (numpy, pydantic, matplotlib) are imported inside the commands so that
`backprop --help` starts fast.
"""

from backprop_cli.cli import (  # noqa: F401  (registers the commands)
    checks,
    configs,
    diagnose,
    export,
    predict,
    report,
    runs,
    search,
    serve,
    sweep,
    sweep_lr,
    train,
)
from backprop_cli.cli.app import app


def hoist_debug(args: list[str]) -> list[str]:
    """`--debug` is the root command's option, and works wherever a user types it: after the
    subcommand (`backprop train x.yaml --debug`) it is moved to the front. Not after `--`."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[1:end]:
        return args
    return ["--debug"] + [a for i, a in enumerate(args) if not (a == "--debug" and i < end)]


def main() -> None:
    import sys

    app(args=hoist_debug(sys.argv[1:]), prog_name="backprop")


__all__ = ["app", "main"]
