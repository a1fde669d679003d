"""The Typer app, the consoles, and the one place core errors become exit codes.

Exit codes: 2 for usage, config or data errors (and a run that was named but is not there),
1 for runtime failures (divergence, I/O, a corrupt run), 130 for Ctrl-C or SIGTERM. Each error
is one line on stderr; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import functools
import re
import signal
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from typing_extensions import Annotated

from backprop_cli import __version__
from backprop_cli.errors import (
    BackpropError,
    ConfigError,
    DataError,
    DivergedError,
    OutputError,
    RunError,
    RunNotFoundError,
)

app = typer.Typer(
    name="backprop",
    help="Train small neural networks from YAML configs with a from-scratch NumPy backprop engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# control characters (C0 but newline and tab, DEL, C1) and the bidirectional overrides that
# reorder what a terminal shows
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """`text` with each control character written out (`\\x1b`, `\\u202e`): names from a CSV
    header, a class label or a config are shown, never obeyed as terminal escape sequences."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class _Terminal(Console):
    """A console that shows every string it prints or puts in a table with `visible`."""

    def render_str(self, text: str, **kwargs: Any) -> Any:
        return super().render_str(visible(text), **kwargs)


# Piped or captured output has no width of its own: use a wide one rather than cut tables at 80.
# No markup or emoji codes: messages and tables echo user text ("a:b:" must not become an emoji).
out = _Terminal(highlight=False, emoji=False, markup=False, width=None if sys.stdout.isatty() else 200)
err = _Terminal(stderr=True, highlight=False, emoji=False, markup=False, width=None if sys.stderr.isatty() else 200)
_debug = {"on": False}

if TYPE_CHECKING:
    from backprop_cli.painter import Painter


class UsageError(BackpropError):
    """A command-line argument is wrong (the command line's own error)."""


# The one mapping from error kinds to exit codes; the first matching base class wins.
EXIT_CODES: list[tuple[type[BackpropError], int]] = [
    (UsageError, 2),
    (ConfigError, 2),
    (DataError, 2),
    (RunNotFoundError, 2),
    (OutputError, 2),
    (DivergedError, 1),
    (RunError, 1),
    (BackpropError, 1),
]


def exit_code(error: BackpropError) -> int:
    return next(code for kind, code in EXIT_CODES if isinstance(error, kind))


def _version(value: bool) -> None:
    if value:
        out.print(f"backprop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for errors (also after the subcommand).")
    ] = False,
) -> None:
    """backprop: YAML-driven neural-network training with a NumPy engine you can check by hand."""
    _debug["on"] = debug
    from backprop_cli.painter import COMMANDS, Painter

    if ctx.invoked_subcommand in COMMANDS and not ctx.resilient_parsing:
        # the worker that imports matplotlib on the other core while this one trains: started
        # by the launcher before any heavy import, or here, before the command parses its options
        worker = Painter.take_early() or Painter()
        ctx.call_on_close(worker.close)
        ctx.obj = worker


def painter(ctx: typer.Context) -> Painter:
    """The drawing worker the root command started, or one that draws in this process."""
    from backprop_cli.painter import Painter

    obj = ctx.find_root().obj
    return obj if isinstance(obj, Painter) else Painter(background=False)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


F = TypeVar("F", bound=Callable[..., Any])


def _traceback() -> None:
    """With --debug, the traceback of the exception being handled, on stderr: it only adds to
    the one-line error, never changes the exit code."""
    if _debug["on"]:
        import traceback

        err.file.write(traceback.format_exc())


def cli_errors(fn: F) -> F:
    """Map core exceptions to `Error: ...` on stderr and an exit code; Ctrl-C/SIGTERM to 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous: Optional[Any]
        try:
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        except ValueError:
            previous = None
        try:
            return fn(*args, **kwargs)
        except BackpropError as e:
            _traceback()
            err.print(f"Error: {e}", soft_wrap=True)
            raise typer.Exit(exit_code(e)) from None
        except KeyboardInterrupt:
            err.print("Interrupted.")
            raise typer.Exit(130) from None
        except OSError as e:
            _traceback()
            where = f"{e.filename}: " if e.filename else ""
            err.print(f"Error: {where}{e.strerror or e}", soft_wrap=True)
            raise typer.Exit(1) from None
        except MemoryError:
            _traceback()
            err.print("Error: out of memory (a smaller study, --memory or --chunk needs less)", soft_wrap=True)
            raise typer.Exit(1) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]
