"""The `backprop` command: signals first, then the plot-drawing worker, then the command line.

Ctrl-C or SIGTERM at any moment, even while the first imports run, ends with "Interrupted."
and exit 130, never a traceback or a silent kill. Importing Typer, Rich, pydantic and NumPy
comes before a command runs (README, Performance); for the commands that draw plots, the worker
that imports matplotlib (see `painter`) starts before all of that, so its import is done on the
other core by the time training ends.
"""

import os
import signal
import sys

# The first thing the command does, before any other import: until `main` takes over, Ctrl-C
# or SIGTERM ends it with the same words and code as later (nothing has started to clean up).
# Only where the signals are as Python set them up: a process that ignores them keeps that.


def _early(signum: int, frame: object) -> None:
    os.write(2, b"Interrupted.\n")
    os._exit(130)


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _early)
if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _early)

import atexit  # noqa: E402
import threading  # noqa: E402
from typing import NoReturn, Union  # noqa: E402


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    try:
        if signal.getsignal(signal.SIGINT) is _early:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        argv = sys.argv[1:]
        if argv[:1] and "--help" not in argv:
            from backprop_cli.painter import COMMANDS, WARM_FOR, Painter

            if argv[0] in COMMANDS:
                Painter.start_early(WARM_FOR.get(argv[0], ()))
        from backprop_cli.cli import main as cli_main

        cli_main()
    except SystemExit as e:  # how Typer ends every command
        leave(e.code)
    except KeyboardInterrupt:  # before (or after) the command's own handling
        sys.stderr.write("Interrupted.\n")
        leave(130)
    leave(0)


def leave(code: Union[int, str, None]) -> NoReturn:
    """Exit with `code` as sys.exit would. When nothing is left to do at exit (no handler
    registered, no other thread), skip the interpreter's teardown of the ~500 modules a command
    imports: about 50 ms, a tenth of what `train configs/xor.yaml` waits for."""
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    idle = getattr(atexit, "_ncallbacks", lambda: 1)() == 0 and threading.active_count() == 1
    if not idle:
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe: what Python's own exit would report
        sys.exit(code)
    os._exit(code or 0)
