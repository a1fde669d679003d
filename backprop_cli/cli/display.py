"""What the commands show: number formats, the loss chart, the progress display, tables."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from rich.table import Table

from backprop_cli.cli.app import err, out

if TYPE_CHECKING:
    import numpy as np

    from backprop_cli.sweep import Entry


def fmt(x: Any, digits: int = 6) -> str:
    """A number in at most `digits` significant digits (a list: each, comma-separated, as
    per-layer learning rates are); '-' for None."""
    if x is None:
        return "-"
    if isinstance(x, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in x)
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}"


def metric(column: str, value: Optional[float]) -> str:
    """A loss or metric as `metrics.metric_text` writes it; '-' for None."""
    if value is None:
        return "-"
    from backprop_cli.metrics import metric_text

    return metric_text(column, value)


def sparkline(values: Any, width: int = 48) -> str:
    """A one-line chart of a curve (log scale when it spans decades)."""
    import numpy as np

    from backprop_cli.plots import spans_decades

    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return ""
    if v.size > width:
        edges = np.linspace(0, v.size, width + 1).astype(int)
        v = np.array([v[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    if spans_decades(v):
        v = np.log10(v)
    lo, hi = v.min(), v.max()
    blocks = "▁▂▃▄▅▆▇█"
    if hi == lo:
        return blocks[3] * v.size
    return "".join(blocks[int(round((x - lo) / (hi - lo) * 7))] for x in v)


def loss_text(loss: np.ndarray) -> str:
    """One model's loss, or the smallest finite loss of several."""
    values = [float(v) for v in loss]
    finite = [v for v in values if math.isfinite(v)]
    if len(values) == 1:
        return fmt(values[0], 6)
    return f"min {fmt(min(finite), 4)}" if finite else "nan"


SHORT = {"accuracy": "acc", "val_accuracy": "val_acc"}


def epoch_text(loss: np.ndarray, seen: Any) -> str:
    """The numbers a progress line shows: the loss, and for one model its metrics and
    validation numbers as Keras shows them (`loss 0.0123 acc 1 val_loss 0.02 val_acc 0.95`)."""
    parts = [f"loss {loss_text(loss)}"]
    if len(loss) == 1 and seen is not None:
        for column in seen.columns[1:]:
            parts.append(f"{SHORT.get(column, column)} {metric(column, float(seen.value(column)[0]))}")
    return " ".join(parts)


def _two_lines() -> type:
    """A Rich progress display with the numbers on a line of their own under the bar, so a
    narrow terminal shows all of them instead of cutting them."""
    from rich.progress import Progress
    from rich.text import Text

    class TwoLines(Progress):
        def get_renderables(self) -> Any:
            yield self.make_tasks_table(self.tasks)
            for task in self.tasks:
                yield Text("  " + task.fields.get("numbers", ""), overflow="fold")

    return TwoLines


class Reporter:
    """Progress for a training loop: a Rich bar on a terminal, plain lines otherwise.

    The loop calls it every epoch; it redraws at most every 0.1 s (plain lines: every 10%),
    with the percentage, the epoch, the loss and (one model) metrics and validation numbers,
    and the speed in epochs per second.
    """

    def __init__(self, total: int, start: int = 0, quiet: bool = False, label: str = "training") -> None:
        self.total, self.start, self.quiet, self.label = total, start, quiet, label
        self.live = not quiet and out.is_terminal
        self.next_line = 0
        self.last = 0.0
        self.began = time.perf_counter()
        self.progress: Any = None
        self.held_since: Optional[float] = None  # paused from a live page since then
        self.shown = "loss -"  # the numbers last drawn

    def hold(self, paused: bool) -> None:
        """A live page paused (or resumed) training: the bar says so, and the speed leaves the
        pause out."""
        now = time.perf_counter()
        if paused and self.held_since is None:
            self.held_since = now
        elif not paused and self.held_since is not None:
            self.began += now - self.held_since
            self.held_since = None
        if self.progress is not None:  # said on the numbers' line: the bar's line has no room at 80 columns
            self.progress.update(self.task, numbers=self._numbers(self.shown))

    def __enter__(self) -> "Reporter":
        self.began = time.perf_counter()
        if self.live:
            from rich.progress import (
                BarColumn,
                TaskProgressColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = _two_lines()(
                TextColumn("{task.description}"),
                BarColumn(bar_width=None if out.width >= 100 else 16),
                TaskProgressColumn(),
                TextColumn("epoch {task.fields[epoch]}/{task.fields[last]}"),
                TextColumn("{task.fields[speed]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=out,
                transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task(
                self.label, total=self.total, epoch=self.start, last=self.start + self.total, numbers="loss -", speed=""
            )
        return self

    def _numbers(self, text: str) -> str:
        self.shown = text
        return f"paused from the live page; {text}" if self.held_since is not None else text

    def speed(self, epoch: int) -> str:
        elapsed = time.perf_counter() - self.began
        done = epoch - self.start
        return f"{done / elapsed:,.0f} ep/s" if elapsed > 0 and done > 0 else ""

    def __call__(self, epoch: int, loss: np.ndarray, seen: Any = None) -> None:
        if self.quiet:
            return
        if self.live:
            now = time.perf_counter()
            if now - self.last >= 0.1 or epoch == self.start + self.total:
                self.last = now
                self.progress.update(
                    self.task,
                    completed=epoch - self.start,
                    epoch=epoch,
                    numbers=self._numbers(epoch_text(loss, seen)),
                    speed=self.speed(epoch),
                )
        elif epoch - self.start >= self.next_line:
            percent = 100 * (epoch - self.start) / self.total if self.total else 100
            out.print(
                f"epoch {epoch}/{self.start + self.total} ({percent:.0f}%)  {epoch_text(loss, seen)}  {self.speed(epoch)}",
                soft_wrap=True,
            )
            self.next_line += max(self.total // 10, 1)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


class Steps:
    """Progress over a count of things (parameters checked, run folders written): a Rich bar on
    a terminal, redrawn at most every 0.1 s; nothing when piped, where only results matter."""

    def __init__(self, label: str, quiet: bool = False) -> None:
        self.label, self.live = label, not quiet and out.is_terminal
        self.progress: Any = None
        self.last = 0.0

    def __enter__(self) -> "Steps":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=out,
                transient=True,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label, total=None)
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            return
        now = time.perf_counter()
        if now - self.last >= 0.1 or done >= total:
            self.last = now
            self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


class Counter:
    """Progress over a known count of things that take time (models trained, run folders
    written): a Rich bar with the count, elapsed time and an ETA on a terminal, redrawn at most
    every 0.1 s; when piped, a plain line on standard error each time another tenth is done
    (standard output keeps only the results); nothing when quiet."""

    def __init__(self, label: str, total: int, quiet: bool = False) -> None:
        self.label, self.total, self.live = label, total, not quiet and out.is_terminal and total > 0
        self.lines = not quiet and not out.is_terminal and total > 0
        self.progress: Any = None
        self.last = 0.0
        self.shown = 0  # tenths printed (plain lines)
        self.started = time.perf_counter()

    def __enter__(self) -> "Counter":
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=out,
                transient=True,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task(self.label, total=self.total)
        return self

    def __call__(self, done: int) -> None:
        if self.lines and done * 10 // self.total > self.shown:
            self.shown = done * 10 // self.total
            elapsed = time.perf_counter() - self.started
            err.print(f"{self.label}: {done:,} of {self.total:,} ({100 * done // self.total}%) in {elapsed:.1f} s")
        if self.progress is None:
            return
        now = time.perf_counter()
        if now - self.last >= 0.1 or done >= self.total:
            self.last = now
            self.progress.update(self.task, completed=done)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


def output(value: float) -> str:
    """A network output: 4 decimals, or 4 significant digits when it is huge or not finite."""
    return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"


def warn(warnings: list[str]) -> None:
    for w in warnings:
        err.print(f"Warning: {w}", soft_wrap=True)


def emit(text: str, output: Optional[Path], what: str) -> None:
    """Write text to stdout, or atomically to `output` and say so."""
    if output is None:
        sys.stdout.write(text)
        return
    from backprop_cli.files import atomic_write
    from backprop_cli.run_folders import check_output

    check_output(output)
    atomic_write(output, text)
    out.print(f"wrote {what} to {output}", soft_wrap=True)


@dataclass
class Column:
    """A table column: `keep` columns (the row's key) are never dropped and are repeated in
    every part of a wrapped table; a column with `drop` > 0 may be left out of a table that
    is too wide for the terminal, highest `drop` first."""

    name: str
    justify: str = "right"
    keep: bool = False
    drop: int = 0


def _width(columns: Sequence[Column], rows: Sequence[Sequence[str]], picked: Sequence[int]) -> int:
    """Characters a Rich table of these columns needs: cells, one space of padding each side
    and a rule between and around them."""
    widths = [max([len(columns[i].name)] + [len(r[i]) for r in rows]) for i in picked]
    return sum(widths) + 3 * len(widths) + 1


def print_table(
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    styles: Optional[Sequence[Optional[str]]] = None,
    wrap: bool = True,
) -> None:
    """Print a table without cutting an identifier or a number at the terminal's width.

    Too wide, it leaves out the columns that may be dropped (saying which), then, if `wrap`,
    prints the rest in parts of as many columns as fit, each repeating the key columns; a
    single cell wider than the terminal is folded onto further lines, never cut.
    """
    width = out.width
    picked = list(range(len(columns)))
    hidden: list[str] = []
    for i in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: -columns[i].drop):
        if _width(columns, rows, picked) <= width:
            break
        picked.remove(i)
        hidden.append(columns[i].name)
    parts = [picked]
    if wrap and _width(columns, rows, picked) > width:
        keys = [i for i in picked if columns[i].keep]
        parts, part = [], list(keys)
        for i in picked:
            if i in keys:
                continue
            if len(part) > len(keys) and _width(columns, rows, part + [i]) > width:
                parts.append(part)
                part = list(keys)
            part.append(i)
        parts.append(part)
    for n, part in enumerate(parts):
        heading = title if len(parts) == 1 else f"{title} (part {n + 1} of {len(parts)})"
        table = Table(title=heading, caption=f"not shown at this width: {', '.join(hidden)}" if hidden else None)
        for i in part:
            table.add_column(columns[i].name, justify=columns[i].justify, overflow="fold")  # type: ignore[arg-type]
        for r, row in enumerate(rows):
            table.add_row(*[row[i] for i in part], style=styles[r] if styles else None)
        out.print(table)


def predictions_table(
    input_names: Sequence[str],
    output_names: Sequence[str],
    rows: list[list[str]],
    with_class: bool,
    title: str = "predictions",
) -> None:
    """Print inputs, outputs (and class): one row per sample, cells already formatted."""
    columns = [Column(name, keep=i == 0) for i, name in enumerate(list(input_names) + list(output_names))]
    if with_class:
        columns.append(Column("class", justify="left", keep=True))
    print_table(title, columns, rows)


def study_table(entries: list[Entry], label: str, target: float) -> None:
    """Print one row per model: value, final and best loss, first epoch at the target, status."""
    completed = [e for e in entries if e.status == "completed" and e.final_loss() is not None]
    best = min(completed, key=lambda e: e.final_loss() or 0.0) if completed else None
    columns = [
        Column(label, keep=True),
        Column("final loss"),
        Column("best loss", drop=2),
        Column("epochs to target"),
        Column("status", justify="left", drop=1),
    ]
    rows = [
        [
            shown,
            metric("loss", e.final_loss()),
            metric("loss", e.best_loss()),
            str(e.epochs_to(target) or "-"),
            e.status,
        ]
        for shown, e in zip(value_texts([e.value for e in entries]), entries)
    ]
    styles = ["bold green" if e is best else None for e in entries]
    print_table(f"by {label} (target loss {target:g}; best final loss in green)", columns, rows, styles)


def value_texts(values: Sequence[float]) -> list[str]:
    """Swept values (rates, seeds) as a table shows them: 6 significant digits, as every rate
    is printed (a --log-range rate is 0.0316228, not 0.03162277660168379), and all the digits
    only where 6 would show two different values alike."""
    short = [fmt(float(v), 6) for v in values]
    if len(set(short)) == len(set(float(v) for v in values)):
        return short
    return [f"{v:g}" if float(f"{v:g}") == v else repr(float(v)) for v in values]
