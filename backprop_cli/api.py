"""The Python API: what a notebook imports (`import backprop_cli as bp`), and what the
command line's train and sweep-lr are thin layers over.

    run = bp.train("configs/xor.yaml", epochs=2000, learning_rate=0.5, runs_dir="runs")
    run.history["loss"][-1], run.summary["status"], run.predict([[0, 1]])
    run.plot("decision_boundary"); run.animate(); print(run.explain())
    bp.load("runs", "latest"); bp.sweep_lr("configs/worked_example.yaml"); bp.runs("runs")

Keyword overrides work as `--set` does, by a field's name where only one section has it
(`epochs`, `learning_rate`, `activation`, `seed`) or by its dotted key written with double
underscores (`model__layers=[2, 3, 1]`). A config may be a path or a dict.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from backprop_cli.animation import Snapshots, chain, check_models, gif_job, snapshots_for
from backprop_cli.config import Config, config_from_dict, load_config
from backprop_cli.config.schema import SECTIONS
from backprop_cli.data import Dataset
from backprop_cli.errors import ConfigError
from backprop_cli.events import WAIT, Board
from backprop_cli.experiment import dataset, fit, network
from backprop_cli.live import Live
from backprop_cli.painter import Painter
from backprop_cli.run_folders import (
    continue_from,
    finish_run,
    guarded,
    list_runs,
    load_run,
    mark_live,
    now_iso,
    read_history,
    read_summary,
    resolve_run,
    start_run,
    write_config,
)
from backprop_cli.run_folders.diagnosed import diagnose
from backprop_cli.training import TrainResult

ConfigSource = Union[str, Path, dict, Config]
Callback = Optional[Callable[..., None]]
# a progress display: called with (epochs, first epoch - 1, label), a context manager that
# gives the epoch callback
Progress = Optional[Callable[[int, int, str], ContextManager[Any]]]


def _dotted(key: str) -> str:
    """A keyword override's dotted key: `model__layers` -> model.layers; `epochs` -> the one
    section that has a field of that name."""
    if "__" in key:
        return key.replace("__", ".")
    owners = [section for section, model in SECTIONS.items() if key in model.model_fields]
    if len(owners) != 1:
        where = f"in {', '.join(o or 'the top level' for o in owners)}" if owners else "in no section"
        raise ConfigError(f"{key}: a config field {where}; write it as section__{key}")
    return f"{owners[0]}.{key}" if owners[0] else key


def config(source: ConfigSource, **overrides: Any) -> Config:
    """A validated config from a YAML path, a dict or a Config, with keyword overrides."""
    dotted = {_dotted(k): v for k, v in overrides.items()}
    if isinstance(source, Config):
        source = source.model_dump(mode="json")
    if isinstance(source, dict):
        return config_from_dict(source, dotted, source="config")
    # each override is named in messages as it was given: `frames=0`
    given = {_dotted(k): f"{k}={v!r}" for k, v in overrides.items()}
    return load_config(source, {k: (v, given[k]) for k, v in dotted.items()})


@dataclass
class Trained:
    """What training wrote: the run folder, the result, the summary and any plot warnings;
    `interrupted_while_saving` when a Ctrl-C came while the (complete) files were written."""

    run: Path
    result: TrainResult
    summary: dict
    warnings: list
    start_epoch: int = 0
    interrupted_while_saving: bool = False


def train_run(
    cfg: Config,
    data: Dataset,
    runs_dir: Union[str, Path] = "runs",
    progress: Progress = None,
    from_run: Optional[Union[str, Path]] = None,
    painter: Optional[Painter] = None,
    notice: Optional[Callable[[str], None]] = None,
    live: Optional[Live] = None,
) -> Trained:
    """Train one run of `cfg` and write its folder (with training.gif when it animates):
    the one code path of `backprop train` and `bp.train`. `notice` hears what a wait after
    training is for (drawing the animation's frames). With `live` (a page's `Live`, see
    `server`), the page sees the starting weights first, steers the loop, and the rate
    changes it made are saved as training.lr_changes."""
    net = network(cfg)
    start_epoch, extra, resume, notes = 0, dict[str, Any](), None, []
    if from_run is not None:
        origin = continue_from(resolve_run(Path(from_run), Path(runs_dir)), cfg, net)
        start_epoch, extra, resume = origin.start_epoch, origin.extra, [origin.checkpoint]
        notes = [origin.warning] if origin.warning else []
    if live is not None:  # before the folder: a stop before the first epoch leaves nothing
        live.begin(net, start_epoch)
    extra["started_at"] = now_iso()
    run = start_run(Path(runs_dir), cfg, extra)
    with guarded(run), _unmarked(run, live):
        t = cfg.training
        shots = Snapshots(net.theta, t.epochs, start_epoch, t.frames, t.frames_by) if t.animate else None
        board = Board(Path(t.tensorboard) / run.name, t, net, start_epoch) if t.tensorboard else None
        if board is not None and notice is not None:
            notice(f"TensorBoard: {board.folder}")
        try:
            with (progress or _silent)(t.epochs, start_epoch, "training") as report:
                callback = chain(report, shots, board, live)
                changes = live.changes if live is not None else None
                result = fit(
                    cfg, data, net, callback=callback, start_epoch=start_epoch, resume=resume, lr_changes=changes
                )
        except BaseException:
            if board is not None:
                board.abort()
            raise
        if live is not None:
            live.saving()
            result.duration_s = max(0.0, result.duration_s - live.held)  # the loop's own time, as without a page
            cfg = _with_changes(cfg, live.recorded_changes(start_epoch + result.epochs_run[0]))
            write_config(run, cfg)
        if shots is not None and notice is not None:
            notice(f"drawing training.gif ({shots.frames} frames)...")
        try:
            summary, warnings = finish_run(run, cfg, data, result, extra=extra, painter=painter, snapshots=shots)
            if live is not None:  # the page's last snapshot: the saved weights and how the run ended
                saved = summary["saved_weights"]
                kept = saved["weights"] == "restored"
                note = f"The weights shown are epoch {saved['epoch']}'s, which restore_best kept." if kept else None
                live.finish(summary["status"], result.history, result.net.theta, note)
        except KeyboardInterrupt:  # deferred until the files were written: they are complete
            if board is not None:
                board.abort()
            summary = read_summary(run)
            return Trained(run, result, summary, notes, start_epoch, interrupted_while_saving=True)
    if board is not None:  # the run is saved: a Ctrl-C now only cuts the event files short
        try:
            interrupted = result.status[0] == "interrupted"
            warnings += board.close(result, wait=2.0 if interrupted else WAIT, notice=notice)
        except KeyboardInterrupt:
            board.abort()
            return Trained(run, result, summary, notes + warnings, start_epoch, interrupted_while_saving=True)
    return Trained(run, result, summary, notes + warnings, start_epoch)


@contextmanager
def _unmarked(run: Path, live: Optional[Live]) -> Iterator[None]:
    """A live run's page address is removed from its folder however training ends, and the
    page hears the end (the run's status and its saved weights)."""
    if live is not None:
        mark_live(run, live.address)
    try:
        yield
    finally:
        if live is not None:
            mark_live(run, None)
            live.end("failed")  # unless `finish` told the page how the run ended


def _with_changes(cfg: Config, changes: dict) -> Config:
    """The config with training.lr_changes as a live run used them."""
    if changes == (cfg.training.lr_changes or {}):
        return cfg
    training = cfg.training.model_copy(update={"lr_changes": changes or None})
    return cfg.model_copy(update={"training": training})


def _table(rows: list[dict]) -> Any:
    """Rows as a pandas DataFrame when pandas is installed, else the list of dicts."""
    try:
        import pandas as pd
    except ImportError:
        return rows
    return pd.DataFrame(rows)


def _show(path: Path) -> Any:
    """An image file shown inline in Jupyter (IPython's Image; a GIF embedded as HTML, so it
    animates and survives a notebook's conversion to HTML), else its path."""
    try:
        from IPython.display import HTML, Image
    except ImportError:
        return path
    if path.suffix == ".gif":
        import base64

        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return HTML(f'<img src="data:image/gif;base64,{data}" alt="{path.name}">')
    return Image(filename=str(path))


@dataclass
class Run:
    """A run folder, loaded: what a notebook reads and asks of a trained network."""

    path: Path
    _loaded: Any = field(default=None, repr=False)

    @property
    def loaded(self) -> Any:
        if self._loaded is None:
            self._loaded = load_run(self.path)
        return self._loaded

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def summary(self) -> dict:
        return read_summary(self.path)

    @property
    def config(self) -> Config:
        return self.loaded.cfg

    @property
    def history(self) -> Any:
        """history.csv as {"epoch": ..., "loss": ..., ...} of NumPy arrays, or a pandas
        DataFrame indexed by epoch when pandas is installed."""
        epochs, columns = read_history(self.path)
        data = {"epoch": epochs, **columns}
        try:
            import pandas as pd
        except ImportError:
            return data
        return pd.DataFrame(data).set_index("epoch")

    @property
    def weights(self) -> list[dict[str, Optional[np.ndarray]]]:
        """The saved weights: per layer {"weights": (out, in), "biases": (out,) or None}."""
        return [{"weights": w, "biases": b} for w, b in self.loaded.net.get_params(0)]

    def predict(self, X: Any) -> np.ndarray:
        """Outputs (n, n_out) for raw inputs (n, n_in) (or one row), scaled as in training."""
        return self.loaded.predict(X)

    def explain(self, epoch: int = 1, sample: int = 1, format: str = "markdown") -> str:
        """Training step `epoch` of this run's config, by hand (as `backprop explain`)."""
        from backprop_cli.explain import explain_step, render

        cfg = self.config
        sections, _ = explain_step(cfg, dataset(cfg, str(self.path / "config.yaml")), epoch, sample)
        return render(sections, format)

    @property
    def diagnostics(self) -> Any:
        """The per-layer diagnostics (diagnostics.csv: epoch, layer, quantity, value; one row
        each) as a pandas DataFrame when pandas is installed, else a list of dicts; for a run
        trained without them, one record of its saved weights at the end."""
        from backprop_cli.diagnostics import rows

        d = diagnose(self.path)
        header, *body = rows(d.epochs, d.values)
        return _table([dict(zip(header, [int(e), int(l), q, float(v)])) for e, l, q, v in body])

    def diagnose(self) -> dict:
        """What `backprop diagnose --json` prints: the per-layer table at the start, middle and
        end, and the findings (or the healthy run's line)."""
        return diagnose(self.path).to_json()

    def plots(self) -> list[str]:
        """The names of the run's plots (loss, accuracy, decision_boundary, ...)."""
        return sorted(p.stem for p in self.path.glob("*.png"))

    def plot(self, name: str = "loss") -> Any:
        """One of the run's plots, shown inline in Jupyter (else its path)."""
        path = self.path / f"{name}.png"
        if name not in self.plots():  # a name of the folder's own plots, never a path elsewhere
            raise ConfigError(f"{path}: no such plot; this run has {', '.join(self.plots()) or 'none'}")
        return _show(path)

    def animate(self, frames: Optional[int] = None) -> Any:
        """training.gif, shown inline in Jupyter (else its path). A run trained without
        --animate is trained again from its config (deterministic: the same weights) to draw it."""
        path = self.path / "training.gif"
        if not path.exists() or frames is not None:
            _draw_animation(self.path, self.config, frames)
        return _show(path)

    def _repr_html_(self) -> str:
        from html import escape

        from backprop_cli.metrics import metric_text

        s = self.summary
        keys = ("status", "epochs_run", "final_loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")

        def shown(key: str, value: Any) -> str:  # the one number format of every table
            return metric_text(key, value) if isinstance(value, float) else str(value)

        rows = "".join(f"<tr><th>{k}</th><td>{escape(shown(k, s[k]))}</td></tr>" for k in keys if k in s)
        return f"<b>{escape(self.name)}</b><table>{rows}</table>"


def _draw_animation(folder: Path, cfg: Config, frames: Optional[int]) -> None:
    """training.gif for a finished run, by training its config again with snapshots."""
    cfg = config(cfg, animate=True, **({} if frames is None else {"frames": frames}))  # checked as in training
    data = dataset(cfg, str(folder / "config.yaml"))
    net = network(cfg)
    shots = Snapshots(net.theta, cfg.training.epochs, 0, cfg.training.frames, cfg.training.frames_by)
    result = fit(cfg, data, net, callback=shots)
    saved = read_summary(folder).get("saved_weights", {}).get("loss")
    warnings = Painter(background=False).draw(
        [gif_job(folder / "training.gif", folder.name, result, data, shots, saved)]
    )
    if warnings:
        raise ConfigError(warnings[0])


def train(
    source: ConfigSource,
    runs_dir: Union[str, Path] = "runs",
    progress: Progress = None,
    from_run: Optional[Union[str, Path]] = None,
    animate: bool = False,
    frames: Optional[int] = None,
    **overrides: Any,
) -> Run:
    """Train a config (a path or a dict, with keyword overrides) and return its `Run`."""
    if animate:
        overrides["animate"] = True
    if frames is not None:
        overrides["frames"] = frames  # validated as the config's key, named as given
    cfg = config(source, **overrides)
    data = dataset(cfg, str(source) if not isinstance(source, dict) else "config")
    with Painter() as painter:
        trained = train_run(cfg, data, runs_dir, progress, from_run, painter)
    if trained.interrupted_while_saving or trained.result.status[0] == "interrupted":
        raise KeyboardInterrupt
    return Run(trained.run)


def _silent(epochs: int, start: int, label: str) -> ContextManager[Any]:
    return nullcontext(None)


def load(path: Union[str, Path] = "runs", name: Optional[str] = None) -> Run:
    """A run: a run folder's path or a study's cell (`STUDY/cell_0417`), or `name` (a folder
    name, a cell `STUDY/cell_0417`, or "latest", the default) under the runs folder `path`."""
    path = Path(path)
    if name is None and (path / "config.yaml").exists():
        return Run(path)
    if name is None and path.name.startswith("cell_"):  # a study's cell: STUDY/cell_0417
        return Run(resolve_run(path, Path(".")))
    return Run(resolve_run(Path(name or "latest"), path))


def runs(runs_dir: Union[str, Path] = "runs") -> Any:
    """Every run and study under `runs_dir`, newest first: one row each (a DataFrame when
    pandas is installed)."""
    keys = ("status", "epochs_run", "final_loss", "accuracy", "val_loss", "learning_rate", "seed", "started_at")
    rows = []
    for path, summary in list_runs(Path(runs_dir), studies=True):
        rows.append({"run": path.name, "kind": summary.get("kind", "run"), **{k: summary.get(k) for k in keys}})
    return _table(rows)


@dataclass
class Study:
    """A sweep folder: its table (one row per rate) and one `Run` per rate."""

    path: Path
    rows: list[dict]

    @property
    def table(self) -> Any:
        return _table(self.rows)

    @property
    def runs(self) -> list[Run]:
        return [Run(p) for p in sorted(self.path.iterdir()) if (p / "config.yaml").exists()]

    def plot(self, name: str = "loss_curves") -> Any:
        return _show(self.path / f"{name}.png")

    def animate(self) -> Any:
        return _show(self.path / "training.gif")

    def _repr_html_(self) -> str:
        """The study as a table in Jupyter: one row per rate (or seed), as `rows` holds them."""
        from html import escape

        from backprop_cli.metrics import metric_text

        if not self.rows:
            return f"<b>{escape(self.path.name)}</b>: no rows"
        keys = list(self.rows[0])

        def cell(key: str, value: Any) -> str:
            return "-" if value is None else escape(metric_text(key, value) if isinstance(value, float) else str(value))

        head = "".join(f"<th>{escape(k)}</th>" for k in keys)
        body = "".join("<tr>" + "".join(f"<td>{cell(k, r.get(k))}</td>" for k in keys) + "</tr>" for r in self.rows)
        return f"<b>{escape(self.path.name)}</b><table><tr>{head}</tr>{body}</table>"


def sweep_run(
    cfg: Config,
    data: Dataset,
    rates: Sequence[float],
    runs_dir: Union[str, Path] = "runs",
    chain_rates: bool = False,
    target: Optional[float] = None,
    progress: Progress = None,
    painter: Optional[Painter] = None,
    run_plots: bool = False,
    writing: Optional[Callable[[int], ContextManager[Any]]] = None,
    live: Optional[Live] = None,
    notice: Optional[Callable[[str], None]] = None,
) -> tuple[Path, list, list, float]:
    """A learning-rate sweep of `cfg` and its study folder: the one code path of `backprop
    sweep-lr` and `bp.sweep_lr`. `progress` shows the training, `writing(n)` the n run folders
    being written; `live` a page that watches the batched pass (and pauses, steps or stops
    it); `notice` hears what a wait after training is for. Returns (folder, entries,
    warnings, target)."""
    from backprop_cli.network import param_names
    from backprop_cli.studies import default_target, start_study, study_status, write_study
    from backprop_cli.sweep import check_no_changes, check_rates, sweep_learning_rates

    rates = check_rates(rates)
    check_no_changes(cfg)
    if target is not None and not (math.isfinite(target) and target > 0):
        raise ConfigError(f"target {target!r}: must be finite and > 0")
    if cfg.training.animate:
        if chain_rates:
            raise ConfigError("--animate goes with a batched sweep, not with --chain")
        check_models(len(rates), "learning rates")
    if live is not None and chain_rates:
        raise ConfigError("--live shows a batched sweep, not --chain")
    target = default_target(cfg) if target is None else target
    started = now_iso()
    folder = start_study(cfg, Path(runs_dir), "chain" if chain_rates else "sweep")
    names = [p.name for p in param_names(cfg.model.layers, cfg.model.bias)]
    total = cfg.training.epochs * (len(rates) if chain_rates else 1)
    with guarded(folder), _unmarked(folder, live):
        shots = snapshots_for(cfg, len(rates))
        with (progress or _silent)(total, 0, "sweep") as report:
            callback = chain(report, shots, live)
            before = live.begin if live is not None else None
            entries = sweep_learning_rates(cfg, data, rates, chain_rates, callback, before)
        extra = {
            "protocol": "chain" if chain_rates else "batched",
            "learning_rates": list(rates),
            "started_at": started,
        }
        if live is not None:
            live.saving()
            if entries:  # one batched pass: every rate's model shares its result
                entries[0].result.duration_s = max(0.0, entries[0].result.duration_s - live.held)
        if shots is not None and notice is not None:
            notice(f"drawing training.gif ({shots.frames} frames, {len(rates)} panels)...")
        with (writing or (lambda n: nullcontext(None)))(len(rates)) as written:
            warnings = write_study(
                folder, "sweep", "learning_rate", cfg, data, entries, target, names, True, extra, painter,
                run_plots=run_plots, progress=written, snapshots=shots,
            )  # fmt: skip
        if live is not None and entries:
            result = entries[0].result  # one batched pass: every rate's model
            live.finish(study_status([e.status for e in entries]), result.history, result.net.theta)
    return folder, entries, warnings, target


def sweep_lr(
    source: ConfigSource,
    rates: Optional[Iterable[float]] = None,
    runs_dir: Union[str, Path] = "runs",
    chain_rates: bool = False,
    target: Optional[float] = None,
    progress: Progress = None,
    animate: bool = False,
    **overrides: Any,
) -> Study:
    """Train one model per learning rate (default: the config's sweep.learning_rates, else the
    six classic ones), batched, and return the `Study`."""
    from backprop_cli.sweep import default_rates

    if animate:
        overrides["animate"] = True
    cfg = config(source, **overrides)
    rates = list(rates) if rates is not None else default_rates(cfg)
    data = dataset(cfg, str(source) if not isinstance(source, dict) else "config")
    with Painter() as painter:
        folder, entries, _, target = sweep_run(cfg, data, rates, runs_dir, chain_rates, target, progress, painter)
    rows = [
        {
            "learning_rate": e.value,
            "final_loss": e.final_loss(),
            "best_loss": e.best_loss(),
            "epochs_to_target": e.epochs_to(target),
            "status": e.status,
        }
        for e in entries
    ]
    return Study(folder, rows)
