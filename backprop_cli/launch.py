"""The `backprop` command: starts the plot-drawing worker first, then the command line.

Importing Typer, Rich, pydantic and NumPy comes before a command runs (README, Performance).
For the commands that draw plots, the worker that imports matplotlib (see `painter`) starts
before all of that, so its import is done on the other core by the time training ends.
"""

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] and "--help" not in argv:
        from backprop_cli.painter import COMMANDS, Painter

        if argv[0] in COMMANDS:
            Painter.start_early()
    from backprop_cli.cli import main as cli_main

    cli_main()
