"""`--live` (train and sweep-lr: a page that watches and steers the run) and `backprop serve`
(every run and study under a runs root, read-only)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors, err

if TYPE_CHECKING:
    from backprop_cli.config import Config
    from backprop_cli.data import Dataset
    from backprop_cli.live import Live
    from backprop_cli.server import Server

LiveOption = Annotated[
    bool, typer.Option("--live", help="Watch and steer training in the browser: prints a local address.")
]
Port = Annotated[int, typer.Option("--port", metavar="N", min=0, max=65535, help="The server's port (0: a free one).")]
Host = Annotated[
    str, typer.Option("--host", metavar="HOST", help="The address to listen on; other than 127.0.0.1, with a warning.")
]
OpenBrowser = Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")]
Paused = Annotated[bool, typer.Option("--paused", help="With --live: wait for Run or Step before the first epoch.")]


def _local(host: str) -> bool:
    """Whether only this machine can reach `host`: localhost, or a loopback address."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: only localhost is known to be this machine alone
        return False


def check_live(live: bool, port: int, host: str, open_browser: bool, paused: bool) -> None:
    """The server's options go with --live."""
    if not live:
        for given, flag in (
            (port != 0, "--port"),
            (host != "127.0.0.1", "--host"),
            (open_browser, "--open"),
            (paused, "--paused"),
        ):
            if given:
                raise UsageError(f"{flag} goes with --live")


def _start(live: Optional[Live], root: Optional[Path], host: str, port: int, open_browser: bool, what: str) -> Server:
    from backprop_cli.server import Server

    server = Server(host, port, live=live, root=root).start()
    if not _local(host):  # said once it listens there
        err.print(
            f"Warning: --host {host}: the page is reachable from other machines; anyone with its address "
            f"(token included) can {what}",
            soft_wrap=True,
        )
    if open_browser:
        import webbrowser

        # a browser that cannot be started says so on its own; the address is printed anyway
        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    return server


@contextmanager
def live_page(
    cfg: Config,
    data: Dataset,
    host: str,
    port: int,
    open_browser: bool,
    paused: bool,
    rates: Optional[Sequence[float]] = None,
    labels: Optional[Sequence[str]] = None,
) -> Iterator[Live]:
    """A live page for the training inside the block: the address is printed, training waits
    for the page; the server stops when the block ends (the page keeps what it drew)."""
    from backprop_cli.live import Live

    live = Live(cfg, data, rates, labels, paused)
    server = _start(live, None, host, port, open_browser, "steer the run")
    live.address = server.url
    live.notice = err.print
    # the address on a line of its own, whole, to copy; what happens next on the line after
    err.print(f"live: {server.url}", soft_wrap=True)
    err.print("waiting for the page to open it (Ctrl-C to stop)")
    try:
        yield live
    finally:
        server.close()


@app.command()
@cli_errors
def serve(
    runs_dir: Annotated[Path, typer.Argument(metavar="[RUNS_DIR]", help="The runs root to serve.")] = Path("runs"),
    port: Port = 0,
    host: Host = "127.0.0.1",
    open_browser: OpenBrowser = False,
) -> None:
    """Serve every run and study under RUNS_DIR as web pages (read-only), until Ctrl-C.

    Each run's page is its report (plots, animation, summary, config, the first step by
    hand); a run training with --live links to its live page.

    Example: backprop serve runs --open
    """
    if not runs_dir.is_dir():
        raise UsageError(f"{runs_dir}: no such folder (train a run first: backprop train CONFIG)")
    server = _start(None, runs_dir, host, port, open_browser, "read every run under it")
    err.print(f"serving {runs_dir} (Ctrl-C to stop):", soft_wrap=True)
    err.print(server.url, soft_wrap=True)
    try:
        threading.Event().wait()
    finally:
        server.close()
