"""`backprop report`: one self-contained HTML page about a run, sweep or seed study."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import app, cli_errors, err, out
from backprop_cli.cli.options import RunsDir


@app.command()
@cli_errors
def report(
    run: Annotated[
        Path, typer.Argument(help="Run, sweep or seed-study folder, its name under --runs-dir, or latest.")
    ] = Path("latest"),
    runs_dir: RunsDir = Path("runs"),
    output: Annotated[
        Optional[Path],
        typer.Option("--output", metavar="FILE", help="Where to write the page (default: <folder>/report.html)."),
    ] = None,
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in the web browser.")] = False,
) -> None:
    """Write report.html: config, summary, every plot and the animation, the first training
    step by hand, the final weights (a study: its table), with every image embedded.

    Example: backprop report latest --open
    """
    from backprop_cli.files import atomic_write
    from backprop_cli.report import build_report, report_path
    from backprop_cli.run_folders import check_output, resolve_run

    folder = resolve_run(run, runs_dir)
    path = report_path(folder, output)
    check_output(path)
    atomic_write(path, build_report(folder))
    out.print(f"report: {path}", soft_wrap=True)
    if open_page:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            err.print(f"Warning: no web browser found; open {path} yourself", soft_wrap=True)
