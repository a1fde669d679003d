"""Options shared by several commands, their choices, and the parsers for list-valued options."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, TypeVar

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError

if TYPE_CHECKING:
    from backprop_cli.config import Config
    from backprop_cli.data import Dataset

ConfigFile = Annotated[Path, typer.Argument(metavar="CONFIG", help="YAML config file.")]
RunsDir = Annotated[Path, typer.Option("--runs-dir", metavar="DIR", help="Root folder for run folders.")]
RunArgument = Annotated[
    Path, typer.Argument(help="Run folder, its name under --runs-dir, latest, or a study's cell (STUDY/cell_N).")
]
Epochs = Annotated[Optional[int], typer.Option("--epochs", metavar="N", help="Override training.epochs.")]
LR = Annotated[Optional[float], typer.Option("--lr", metavar="RATE", help="Override training.learning_rate.")]
Seed = Annotated[Optional[int], typer.Option("--seed", metavar="N", help="Override seed.")]
Sets = Annotated[
    Optional[List[str]],
    typer.Option("--set", metavar="KEY=VALUE", help="Override any key: dotted.key=value (YAML value); repeatable."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the run folder's path (and errors).")]
Frames = Annotated[
    Optional[int],
    typer.Option("--frames", metavar="N", min=2, max=1000, help="With --animate: frames (training.frames, 60)."),
]


class FramesBy(str, Enum):
    """How --animate picks its frames."""

    loss = "loss"
    epoch = "epoch"


FramesByOption = Annotated[
    Optional[FramesBy],
    typer.Option(
        "--frames-by",
        help="With --animate: frames at equal steps of the loss's change (loss, the default) or evenly by epoch.",
    ),
]


class Method(str, Enum):
    """Finite-difference formulas for gradcheck."""

    five_point = "five-point"
    central = "central"


class PlotSet(str, Enum):
    """Which plots a sweep draws."""

    summary = "summary"
    all = "all"


class TableFormat(str, Enum):
    markdown = "markdown"
    csv = "csv"


class Executor(str, Enum):
    """Where `backprop sweep` runs its groups."""

    local = "local"
    dask = "dask"


class Template(str, Enum):
    xor = "xor"
    classification = "classification"
    regression = "regression"


T = TypeVar("T")


def parse_list(text: str, convert: Callable[[str], T], flag: str, example: str, what: str) -> list[T]:
    """Comma-separated values, each converted; an empty list or a bad item is a UsageError."""
    try:
        values = [convert(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise UsageError(f"{flag} {text}: expected {example}") from None
    if not values:
        raise UsageError(f"{flag}: the list of {what} is empty")
    return values


def parse_seeds(text: str) -> Sequence[int]:
    """START:STOP (the seeds START..STOP-1, as a range: nothing allocated before the memory
    check) or a list like 1,2,3; all >= 0."""
    example = "START:STOP (e.g. 0:30) or a list like 1,2,3"
    seeds: Sequence[int]
    if ":" in text:
        start, _, stop = text.partition(":")
        try:
            seeds = range(int(start), int(stop))
        except ValueError:
            raise UsageError(f"--seeds {text}: expected {example}") from None
        lowest = seeds.start
    else:
        seeds = parse_list(text, int, "--seeds", example, "seeds")
        lowest = min(seeds)
    if not seeds or lowest < 0:
        raise UsageError(f"--seeds {text}: needs at least one seed, all >= 0")
    return seeds


def positive(value: Optional[float], flag: str) -> Optional[float]:
    """None, or a finite number > 0; anything else is a UsageError naming the flag."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{flag} {value:g}: must be finite and > 0")
    return value


def load(
    config: Path,
    epochs: Optional[int] = None,
    lr: Optional[float] = None,
    seed: Optional[int] = None,
    name: Optional[str] = None,
    sets: Optional[List[str]] = None,
    initial: bool = True,
) -> Config:
    """The config with the command's overrides applied, each named by its flag in errors
    (`initial=False`: a run folder's config, see `load_config`)."""
    from backprop_cli.config import load_config

    overrides = {
        "training.epochs": (epochs, "--epochs"),
        "training.learning_rate": (lr, "--lr"),
        "seed": (seed, "--seed"),
        "name": (name, "--name"),
    }
    return load_config(config, overrides, tuple(sets or ()), initial)


def load_data(cfg: Config, config: Path) -> Dataset:
    from backprop_cli.experiment import dataset

    return dataset(cfg, str(config))


TensorBoard = Annotated[
    Optional[Path],
    typer.Option(
        "--tensorboard",
        metavar="DIR",
        help="Also write TensorBoard event files under DIR (training.tensorboard); pip install 'backprop[tensorboard]'.",
    ),
]


def tensorboard_option(cfg: Config, folder: Optional[Path]) -> None:
    """--tensorboard into the config (training.tensorboard), refused at once without the extra."""
    if folder is not None:
        cfg.training.tensorboard = str(folder)
    if cfg.training.tensorboard is not None:
        from backprop_cli.events import prepare, require

        require()
        prepare(cfg.training.tensorboard)


Diagnose = Annotated[
    bool, typer.Option("--diagnose", help="Record per-layer diagnostics (training.diagnostics); see backprop diagnose.")
]
DiagnoseEvery = Annotated[
    Optional[int],
    typer.Option(
        "--diagnose-every",
        metavar="N",
        min=1,
        help="With --diagnose: record every N epochs (default: about 200 records over the run).",
    ),
]


def diagnose_options(cfg: Config, diagnose: bool, every: Optional[int]) -> None:
    """--diagnose and --diagnose-every into the config (training.diagnostics)."""
    from backprop_cli.config.schema import DiagnosticsConfig

    if every is not None and not diagnose:
        raise UsageError("--diagnose-every goes with --diagnose")
    if diagnose:
        cfg.training.diagnostics = DiagnosticsConfig(every=every)


def diagnose_overrides(diagnose: bool, every: Optional[int]) -> dict:
    """--diagnose and --diagnose-every of a grid or search as a config override of every cell."""
    if every is not None and not diagnose:
        raise UsageError("--diagnose-every goes with --diagnose")
    return {"training.diagnostics": ({"every": every}, "--diagnose")} if diagnose else {}


def board_option(folder: Optional[Path]) -> Optional[Path]:
    """--tensorboard of a grid or search (its cells' configs may name one too), refused at
    once without the extra."""
    if folder is not None:
        from backprop_cli.events import prepare, require

        require()
        prepare(folder)
    return folder


def animation_options(cfg: Config, animate: bool, frames: Optional[int], frames_by: Optional[FramesBy] = None) -> None:
    """--animate, --frames and --frames-by into the config (training.animate, frames, frames_by)."""
    if animate:
        cfg.training.animate = True
    for flag, given in (("--frames", frames), ("--frames-by", frames_by)):
        if given is not None and not cfg.training.animate:
            raise UsageError(f"{flag} goes with --animate (or training.animate: true)")
    if frames is not None:
        cfg.training.frames = frames
    if frames_by is not None:
        cfg.training.frames_by = frames_by.value
