"""`backprop runs`: list run folders, show one, compare several."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors, err, out
from backprop_cli.cli.display import Column, fmt, metric, print_table
from backprop_cli.cli.options import RunsDir

runs_app = typer.Typer(help="List, show and compare run folders.", no_args_is_help=False, rich_markup_mode=None)
app.add_typer(runs_app, name="runs")


def _date(summary: dict) -> str:
    return str(summary.get("started_at") or "")[:19].replace("T", " ")


@runs_app.callback(invoke_without_command=True)
@cli_errors
def runs_list(
    ctx: typer.Context,
    runs_dir: RunsDir = Path("runs"),
    status: Status = None,
    name: Name = None,
) -> None:
    """List runs, newest first (name, date, status, epochs, final loss, accuracy, learning rate).

    Example: backprop runs --status failed,interrupted
    """
    if ctx.invoked_subcommand is not None:
        return
    from backprop_cli.run_folders import status_of
    from backprop_cli.run_folders.manage import matching

    statuses = _statuses(status)
    found = matching(runs_dir, statuses, name)
    if not found:
        what = " matching" if statuses or name else ""
        out.print(f"no{what} runs under {runs_dir}")
        return
    columns = [
        Column("run", justify="left", keep=True),
        Column("date", justify="left", drop=3),
        Column("status", justify="left"),
        Column("epochs", drop=2),
        Column("final loss"),
        Column("accuracy", drop=1),
        Column("learning rate", drop=4),
    ]
    rows = []
    for path, s in found:
        if "kind" in s:  # a sweep or seed study
            losses = [m.get("final_loss") for m in s.get("models", []) if m.get("final_loss") is not None]
            best: dict = s["best"] if isinstance(s.get("best"), dict) else {}
            if not losses and isinstance(best.get("final_loss"), (int, float)):  # a large grid lists no cells
                losses = [best["final_loss"]]
            rates = s.get("learning_rates")
            rows.append(
                [
                    f"{path.name} ({s['kind']})",
                    _date(s),
                    status_of(s),
                    "",
                    f"best {fmt(min(losses), 6)}" if losses else "-",
                    "",
                    f"{len(rates)} rate{'s' if len(rates) != 1 else ''}" if rates else "",
                ]
            )
            continue
        rows.append(
            [
                path.name,
                _date(s),
                status_of(s),
                str(s.get("last_epoch", s.get("epochs_run", ""))),
                fmt(s.get("final_loss"), 6),
                metric("accuracy", s.get("accuracy")),
                fmt(s.get("learning_rate"), 6),
            ]
        )
    print_table(f"runs in {runs_dir}", columns, rows)  # too wide even so: in parts, names whole


Status = Annotated[
    Optional[str],
    typer.Option(
        "--status",
        metavar="S1,S2",
        help="Only these statuses: completed, diverged, interrupted, failed, running, stale, corrupt.",
    ),
]
Name = Annotated[
    Optional[str],
    typer.Option(
        "--name", metavar="TEXT", help="Only runs whose folder name contains TEXT (or matches it as a glob: 'xor-*')."
    ),
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before removing.")]


def _statuses(text: Optional[str]) -> list[str]:
    from backprop_cli.run_folders.manage import STATUSES

    found = [part.strip() for part in (text or "").split(",") if part.strip()]
    for status in found:
        if status not in STATUSES:
            raise UsageError(f"--status {status}: one of {', '.join(STATUSES)}")
    return found


def _confirm(paths: list[Path], yes: bool) -> bool:
    """Whether to remove `paths`: --yes, or a y at the prompt; without a terminal to ask at,
    --yes is required."""
    import sys

    listed = ", ".join(p.name for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"would remove {len(paths)} folder(s) ({listed}): add --yes to remove without asking")
    try:
        answer = input(f"Remove {len(paths)} folder(s): {listed}? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _remove(paths: list[Path], yes: bool) -> None:
    from backprop_cli.run_folders.manage import check_removable, remove

    real = list(dict.fromkeys(check_removable(path) for path in paths))  # every one before any goes
    if not real or not _confirm(real, yes):
        out.print("nothing removed")
        return
    for path in real:
        remove(path)
        out.print(f"removed {path}", soft_wrap=True)


@runs_app.command("rm")
@cli_errors
def runs_rm(
    runs: Annotated[List[Path], typer.Argument(help="Run or study folders (paths or names under --runs-dir).")],
    runs_dir: RunsDir = Path("runs"),
    yes: Yes = False,
) -> None:
    """Remove run or study folders (only folders backprop wrote, never one still training).

    Example: backprop runs rm xor-20261123-200239 --yes
    """
    from backprop_cli.run_folders import resolve_run

    _remove(list(dict.fromkeys(resolve_run(r, runs_dir) for r in runs)), yes)


@runs_app.command("clean")
@cli_errors
def runs_clean(
    status: Annotated[
        str, typer.Option("--status", metavar="S1,S2", help="The statuses to remove, e.g. failed,interrupted,stale.")
    ],
    runs_dir: RunsDir = Path("runs"),
    name: Name = None,
    yes: Yes = False,
) -> None:
    """Remove every run and study folder with one of the statuses (and --name), asking first.

    Example: backprop runs clean --status failed,interrupted,stale
    """
    from backprop_cli.run_folders.manage import matching

    statuses = _statuses(status)
    if not statuses:
        raise UsageError("--status: give the statuses to remove, e.g. failed,interrupted")
    if "running" in statuses:
        raise UsageError("--status running: a run still training is never removed (stale ones are: --status stale)")
    _remove([path for path, _ in matching(runs_dir, statuses, name)], yes)


def _number(key: str, value: Any) -> str:
    if isinstance(value, float):
        return metric(key, value) if key not in ("learning_rate", "duration_s") else fmt(value, 6)
    return "-" if value is None else str(value)


def _pairs(d: dict, prefix: str = "") -> Iterator[str]:
    """Nested dicts (versions.blas) as dotted keys: "blas.name scipy-openblas"."""
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _pairs(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k} {'-' if v is None else _cell(v, k)}"


def _cell(value: Any, key: str = "") -> str:
    """A summary value in the one format of every table: a metric as `metric_text` writes it
    (scores 4 decimals, losses 6 significant digits), a rate or time in 6 significant digits."""
    if isinstance(value, dict):
        return ", ".join(_pairs(value))
    if isinstance(value, list):
        return (
            f"{len(value)} entries" if value and isinstance(value[0], dict) else ", ".join(_cell(v, key) for v in value)
        )
    return _number(key, value) if isinstance(value, float) else str(value)


@runs_app.command("show")
@cli_errors
def runs_show(
    run: Annotated[Path, typer.Argument(help="Run folder, its name under --runs-dir, or latest.")],
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Print a run's summary and config.

    Example: backprop runs show latest
    """
    from backprop_cli.run_folders import config_text, read_summary, resolve_run, status_of

    path = resolve_run(run, runs_dir)
    summary = read_summary(path)
    table = Table(title=str(path), show_header=False)
    table.add_column("key")
    table.add_column("value")
    for key, value in summary.items():
        shown = _cell(value, key)
        if key == "status" and status_of(summary) == "stale":  # as the listing says it
            shown = f"stale (the summary says {value}; process {summary.get('pid')} is gone)"
        table.add_row(key, shown)
    out.print(table)
    if "kind" in summary:  # a study: its table, best first
        _study_table(path, summary)
    text = config_text(path)
    if text is not None:
        out.print("config.yaml:")
        out.print(text, end="")


def _study_table(path: Path, summary: dict) -> None:
    """A study's cells (grid.csv, sweep.csv or seeds.csv) as a table: the best 20 by its sort."""
    from backprop_cli.results import sort_rows
    from backprop_cli.run_folders import read_rows

    table = next(
        (path / f"{kind}.csv" for kind in ("grid", "sweep", "seeds", "chain") if (path / f"{kind}.csv").exists()), None
    )
    if table is None:
        return
    header, body = read_rows(table)
    rows: list[dict[str, Any]] = [dict(zip(header, row)) for row in body]
    if not rows:
        return
    sort = str(summary.get("sort") or "final_loss")

    def number(text: str) -> Any:
        try:
            return float(text)
        except ValueError:
            return text

    if sort in header:
        rows = sort_rows([{**r, sort: number(r[sort])} for r in rows], sort)
    shown = rows[:20]
    text = {"status", "run", "model.activation", "model.output_activation", "training.optimizer", "training.loss"}
    columns = [
        Column(h, justify="left" if h in text else "right", keep=i == 0 or h == "run") for i, h in enumerate(header)
    ]

    def shown_value(key: str, raw: Any) -> str:  # the one number format: scores 4 decimals, the rest 6 digits
        value = number(str(raw))
        return "-" if raw in ("", None) else _number(key, value) if isinstance(value, float) else str(raw)

    cells = [[shown_value(h, r.get(h)) for h in header] for r in shown]
    more = f" (the best {len(shown)} of {len(rows)} by {sort})" if len(rows) > len(shown) else ""
    print_table(f"{table.name}{more}", columns, cells)


@runs_app.command("export")
@cli_errors
def runs_export(
    study: Annotated[Path, typer.Argument(help="A grid study's folder, or its name under --runs-dir.")],
    cell: Annotated[str, typer.Argument(help="The cell: cell_0417, or its number 417.")],
    output: Annotated[
        Optional[Path], typer.Option("--output", metavar="DIR", help="Write the run folder here (default: STUDY/CELL).")
    ] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw the run folder's plots too.")] = True,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Write a study's cell as a complete run folder, from the study's store.

    Example: backprop runs export runs/xor-grid-20261203-141407 cell_0417
    """
    from backprop_cli.run_folders import resolve_run
    from backprop_cli.run_folders.cells import cell_index, export_cell

    index = cell_index(cell) if not cell.isdigit() else int(cell) - 1
    if index is None or index < 0:
        raise UsageError(f"{cell}: expected a cell such as cell_0417 or 417")
    folder = export_cell(resolve_run(study, runs_dir), index, output, plots=plots)
    out.print(str(folder), soft_wrap=True)


@runs_app.command("compare")
@cli_errors
def runs_compare(
    runs: Annotated[List[Path], typer.Argument(help="Two or more run folders (paths or names under --runs-dir).")],
    runs_dir: RunsDir = Path("runs"),
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output", metavar="PNG", help="Where to write the plot (default: <runs-dir>/compare-<time>.png)."
        ),
    ] = None,
) -> None:
    """Put runs' summaries side by side and plot their loss curves on one axis.

    Example: backprop runs compare xor-20261123-200239 xor_3hidden-20261123-200301
    """
    from datetime import datetime

    from backprop_cli.run_folders import compare_runs, resolve_run, write_compare_plot

    if len(runs) < 2:
        raise UsageError("runs compare: give at least two run folders")
    paths = [resolve_run(r, runs_dir) for r in runs]
    summaries, curves = compare_runs(paths)
    keys = [
        "loss",
        "architecture",
        "activation",
        "optimizer",
        "regularization",
        "status",
        "stop_reason",
        "last_epoch",
        "final_loss",
        "best_loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
        "learning_rate",
        "seed",
        "duration_s",
    ]
    columns = [Column("", justify="left", keep=True)] + [Column(path.name) for path in paths]
    rows = []
    for key in keys:
        values = [s.get(key) for s in summaries]
        if all(v is None for v in values):
            continue
        rows.append([key] + [_number(key, v) for v in values])
    print_table("run comparison", columns, rows)
    if len(curves) > 1:
        out.print(f"the runs use {len(curves)} loss functions ({', '.join(curves)}): one plot panel for each")
    if curves:
        output = output or Path(runs_dir) / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}.png"
        try:
            write_compare_plot(curves, output)
            out.print(f"plot: {output}", soft_wrap=True)
        except OSError as e:
            err.print(f"Warning: {output}: plot not written: {e.strerror}")
