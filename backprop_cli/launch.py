"""The `backprop` command: signals first, then the plot-drawing worker, then the command line.

Ctrl-C or SIGTERM at any moment, even while the first imports run, ends with "Interrupted."
and exit 130, never a traceback or a silent kill. Importing Typer, Rich, pydantic and NumPy
comes before a command runs (README, Performance); for the commands that draw plots, the worker
that imports matplotlib (see `painter`) starts before all of that, so its import is done on the
other core by the time training ends.
"""

import signal
import sys


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        argv = sys.argv[1:]
        if argv[:1] and "--help" not in argv:
            from backprop_cli.painter import COMMANDS, WARM_FOR, Painter

            if argv[0] in COMMANDS:
                Painter.start_early(WARM_FOR.get(argv[0], ()))
        from backprop_cli.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:  # before (or after) the command's own handling
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
