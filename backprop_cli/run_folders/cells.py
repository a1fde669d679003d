"""The cells of a grid study: counted before they are built, enumerated by index, each one's
config validated once per distinct value (not once per cell), and a cell's run folder written
from the study's store on demand.

Cell i (0-based) is a point of the product of the grid's values in grid order (the last key
fastest), then a seed: i = combination * seeds + seed index. Its folder name is
`cell_{i + 1:03d}`. Keys that one K-model pass can vary per model (`PER_MODEL_KEYS`) are checked
value by value; every combination of the other keys is validated as a whole config.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional, Sequence

import numpy as np

from backprop_cli.config import Config, config_to_yaml, load_config
from backprop_cli.errors import BackpropError, ConfigError, RunError, RunNotFoundError
from backprop_cli.experiment import dataset, network, seeds_share_a_pass
from backprop_cli.files import atomic_write, read_json
from backprop_cli.optimizers import OPTIMIZERS, Optimizer

GRID_FILE = "grid.json"
# what one K-model pass can vary per model, besides the seed: the learning rate, the
# optimizers' scalar hyperparameters and the regularization settings, each a (K, 1) column
REGULARIZATION_KEYS = ("training.l1", "training.clip_grad_norm", "training.clip_grad_value", "model.dropout")
PER_MODEL_KEYS = ("training.learning_rate", *(f"training.{k}" for k in Optimizer.SCALARS), *REGULARIZATION_KEYS)
LAYER_RATE = re.compile(r"training\.learning_rate\.(\d+)")  # one layer's rate: per model too


def per_model_key(key: str) -> bool:
    """Whether a grid key is one a K-model pass varies per model (its values never split a group)."""
    return key in PER_MODEL_KEYS or LAYER_RATE.fullmatch(key) is not None


def text(value: Any) -> str:
    """A grid value as names and tables write it: lists and maps as JSON, the rest as str."""
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def folder_name(i: int, n: int = 0) -> str:
    """Cell i's (0-based) folder name in a study of n cells: cell_001 ... cell_999, and with as
    many digits as the largest number needs beyond that (cell_0417 of 1,024 cells)."""
    return f"cell_{i + 1:0{max(3, len(str(n)))}d}"


def cell_index(name: str) -> Optional[int]:
    """The 0-based index of a folder name `cell_0417` (None if it is not one)."""
    head, _, number = name.partition("_")
    return int(number) - 1 if head == "cell" and number.isdigit() and int(number) > 0 else None


@dataclass
class Combo:
    """One combination of the grid's structural keys: its validated config (with the first
    per-model values and the first seed) and whether its seeds may share a pass."""

    index: int
    values: dict[str, Any]
    cfg: Config
    shared_seeds: bool


class Cells:
    """Every cell of a grid: values, seed and config by index, validated up front."""

    def __init__(
        self,
        config: Path,
        grid: dict[str, list],
        seeds: Optional[Sequence[int]],
        overrides: dict,
        sets: Sequence[str],
        limit: Optional[int] = None,
    ) -> None:
        self.config, self.grid, self.overrides, self.sets = Path(config), grid, overrides, list(sets)
        self.seeds = list(seeds) if seeds else None
        self.keys = list(grid)
        self.sizes = [len(v) for v in grid.values()]
        self.n_seeds = len(self.seeds) if self.seeds else 1
        self.n = math.prod(self.sizes) * self.n_seeds
        if limit is not None and self.n > limit:
            raise ConfigError(f"the grid has {self.n:,} cells; at most {limit:,} fit this machine (see --memory)")
        self.per_model = [k for k in self.keys if per_model_key(k)]
        self.structural = [k for k in self.keys if not per_model_key(k)]
        first = {k: grid[k][0] for k in self.keys}
        self.combos: list[Combo] = []
        for index, combo in enumerate(itertools.product(*(grid[k] for k in self.structural))):
            values = {**first, **dict(zip(self.structural, combo))}
            cfg = self._validate(values, self.seeds[0] if self.seeds else None)
            shared = seeds_share_a_pass(cfg) and not self.drops_per_model()
            self.combos.append(Combo(index, dict(zip(self.structural, combo)), cfg, shared))
        # each per-model value on its own (a number with a range), and a whole config only for
        # one that fails, so the message is the config's own
        for key in self.per_model:
            check = _field_check(key)
            for value in grid[key][1:]:
                if not check(value):
                    self._validate({**first, key: value}, self.seeds[0] if self.seeds else None)
        self._strides = [math.prod(self.sizes[j + 1 :]) for j in range(len(self.keys))]

    def _validate(self, values: dict[str, Any], seed: Optional[int]) -> Config:
        cell_overrides = {**self.overrides, **{k: (v, f"--grid {k}={text(v)}") for k, v in values.items()}}
        if seed is not None:
            cell_overrides["seed"] = (seed, f"--seeds {seed}")
        try:
            return load_config(self.config, cell_overrides, tuple(self.sets))
        except BackpropError as e:
            where = ", ".join(f"{k}={text(v)}" for k, v in values.items())
            what = "search trial" if isinstance(self, Trials) else "grid cell"
            raise ConfigError(f"{what} {where}{f', seed={seed}' if seed is not None else ''}: {e}") from None

    def __len__(self) -> int:
        return self.n

    @property
    def name(self) -> str:
        return self.combos[0].cfg.name or "grid"

    def position(self, i: int) -> tuple[list[int], int]:
        """Cell i's value index per grid key, and its seed index."""
        combo, s = divmod(i, self.n_seeds)
        return [(combo // stride) % size for stride, size in zip(self._strides, self.sizes)], s

    def values(self, i: int) -> dict[str, Any]:
        """Cell i's value of each grid key."""
        at, _ = self.position(i)
        return {k: self.grid[k][j] for k, j in zip(self.keys, at)}

    def seed(self, i: int) -> int:
        _, s = self.position(i)
        return self.seeds[s] if self.seeds else self.combos[0].cfg.seed

    def combo(self, i: int) -> Combo:
        """The structural combination cell i belongs to."""
        at, _ = self.position(i)
        index = 0
        for k, j in zip(self.keys, at):
            if k in self.structural:
                index = index * len(self.grid[k]) + j
        return self.combos[index]

    def group(self, i: int) -> tuple[int, int]:
        """The batched group of cell i: its combination, and its seed where seeds cannot share a pass."""
        combo = self.combo(i)
        return combo.index, (0 if combo.shared_seeds or not self.seeds else self.position(i)[1])

    def groups(self, todo: Optional[Sequence[int]] = None) -> list[list[int]]:
        """Cells (0-based, of `todo`, default all) that can share a K-model pass, together, in
        the order of their first cell."""
        found: dict[tuple[int, int], list[int]] = {}
        for i in range(self.n) if todo is None else todo:
            found.setdefault(self.group(i), []).append(i)
        return list(found.values())

    def cfg(self, i: int) -> Config:
        """Cell i's config: its combination's, with its per-model values, its seed and its name."""
        combo = self.combo(i)
        cfg = combo.cfg.model_copy(deep=True)
        values = self.values(i)
        rate = self.learning_rate(i)  # numbers as the config holds them: floats (a YAML 2 is an int)
        cfg.training.learning_rate = [float(r) for r in rate] if isinstance(rate, list) else float(rate)
        for key in self.per_model:
            if not key.startswith("training.learning_rate"):
                section, name = key.split(".", 1)
                setattr(getattr(cfg, section), name, _number(values[key]))
        cfg.seed = self.seed(i)
        cfg.name = f"{self.name}-{folder_name(i, self.n)}"
        return cfg

    def label(self, i: int) -> str:
        return ", ".join(f"{k}={text(v)}" for k, v in self.values(i).items()) + f", seed={self.seed(i)}"

    def learning_rate(self, i: int) -> Any:
        """Cell i's learning rate: one number, or one per layer (`training.learning_rate.N` keys
        set layer N's rate of the combination's)."""
        values = self.values(i)
        rate: Any = values.get("training.learning_rate", self.combo(i).cfg.training.learning_rate)
        layers = [k for k in self.per_model if LAYER_RATE.fullmatch(k)]
        if layers:
            n = len(self.combo(i).cfg.model.layers) - 1
            rate = list(rate) if isinstance(rate, list) else [rate] * n
            for key in layers:
                match = LAYER_RATE.fullmatch(key)
                assert match is not None
                rate[int(match.group(1))] = values[key]
        return rate

    def per_model_values(self, cells: Sequence[int], key: str) -> list:
        """The values of a per-model config key (`learning_rate`, `momentum`, ... for training's,
        or dotted: `model.dropout`) for `cells`."""
        if key == "learning_rate":
            return [self.learning_rate(i) for i in cells]
        dotted = key if "." in key else f"training.{key}"
        if dotted in self.per_model:
            j = self.keys.index(dotted)
            return [self.grid[dotted][self.position(i)[0][j]] for i in cells]
        section, name = dotted.split(".", 1)
        return [getattr(getattr(self.combo(cells[0]).cfg, section), name)] * len(cells)

    def drops_per_model(self) -> bool:
        """Whether cells of one combination differ in model.dropout with some above 0: their
        masks come from each cell's seed, so seeds no longer share a pass."""
        values = self.grid.get("model.dropout", []) if "model.dropout" in self.per_model else []
        return any(np.any(np.asarray(v, float)) for v in values)

    @classmethod
    def from_spec(cls, spec: dict) -> Cells:
        """The cells a study's grid.json asked for (a grid, or a search's trials)."""
        overrides = {k: (v, f"--set {k}") for k, v in (spec.get("overrides") or {}).items()}
        if spec.get("trials") is not None:
            return Trials(Path(spec["config"]), spec["trials"], spec.get("seeds"), overrides, spec.get("set") or [])
        return cls(Path(spec["config"]), spec["grid"], spec.get("seeds"), overrides, spec.get("set") or [])

    @classmethod
    def of_study(cls, study: Path, n_stored: Optional[int] = None) -> Cells:
        """The cells of a study folder; a grid.json that is damaged (or asks for another number
        of cells than the store holds) is a RunError naming it."""
        path = Path(study) / GRID_FILE
        try:
            cells = cls.from_spec(read_json(path))
        except RunError:
            raise
        except (BackpropError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise RunError(f"{path}: corrupt: {e}") from None
        if n_stored is not None and len(cells) != n_stored:
            raise RunError(f"{path}: asks for {len(cells):,} cells; the study's store holds {n_stored:,}")
        return cells


class Trials(Cells):
    """The cells of a search: given points (trials) instead of a grid's product, each trained
    once per seed (cell i = trial i // seeds, seed i % seeds). `grid` lists each key's distinct
    values in order of first use, for tables and plots."""

    def __init__(
        self,
        config: Path,
        points: Sequence[dict[str, Any]],
        seeds: Optional[Sequence[int]],
        overrides: dict,
        sets: Sequence[str],
        limit: Optional[int] = None,
    ) -> None:
        self.config, self.overrides, self.sets = Path(config), overrides, list(sets)
        self.points = [dict(p) for p in points]
        self.seeds = list(seeds) if seeds else None
        self.keys = list(self.points[0])
        self.n_seeds = len(self.seeds) if self.seeds else 1
        self.n = len(self.points) * self.n_seeds
        if limit is not None and self.n > limit:
            raise ConfigError(f"the search has {self.n:,} cells; at most {limit:,} fit this machine (see --memory)")
        self.per_model = [k for k in self.keys if per_model_key(k)]
        self.structural = [k for k in self.keys if not per_model_key(k)]
        self.grid: dict[str, list] = {k: [] for k in self.keys}
        index: dict[str, dict[str, int]] = {k: {} for k in self.keys}
        self._at: list[list[int]] = []
        for p in self.points:
            at = []
            for k in self.keys:
                seen = index[k].setdefault(text(p[k]), len(self.grid[k]))
                if seen == len(self.grid[k]):
                    self.grid[k].append(p[k])
                at.append(seen)
            self._at.append(at)
        self.sizes = [len(v) for v in self.grid.values()]
        first = dict(self.points[0])
        self.combos = []
        found: dict[str, int] = {}
        self._combo_of: list[int] = []
        for p in self.points:
            key = json.dumps([text(p[k]) for k in self.structural])
            if key not in found:
                values = {**first, **{k: p[k] for k in self.structural}}
                cfg = self._validate(values, self.seeds[0] if self.seeds else None)
                found[key] = len(self.combos)
                shared = seeds_share_a_pass(cfg) and not self.drops_per_model()
                self.combos.append(Combo(len(self.combos), {k: p[k] for k in self.structural}, cfg, shared))
            self._combo_of.append(found[key])
        for key in self.per_model:
            check = _field_check(key)
            for value in self.grid[key]:
                if not check(value):
                    self._validate({**first, key: value}, self.seeds[0] if self.seeds else None)

    def position(self, i: int) -> tuple[list[int], int]:
        trial, s = divmod(i, self.n_seeds)
        return self._at[trial], s

    def values(self, i: int) -> dict[str, Any]:
        return dict(self.points[i // self.n_seeds])

    def combo(self, i: int) -> Combo:
        return self.combos[self._combo_of[i // self.n_seeds]]


def _number(value: Any) -> Any:
    """A per-model value as a config holds it: a float, or a list of floats (model.dropout per layer)."""
    return [float(v) for v in value] if isinstance(value, list) else float(value)


def _field_check(key: str) -> Any:
    """Whether a value is valid for a per-model key, by its field's own strict
    validator (no config around it: these keys take part in no check across fields)."""
    from pydantic import TypeAdapter, ValidationError

    from backprop_cli.config.schema import ModelConfig, TrainingConfig

    section, name = key.split(".")[:2]  # training.learning_rate.N: the rate's own type
    info = (ModelConfig if section == "model" else TrainingConfig).model_fields[name]
    parts = (info.annotation, *info.metadata)
    hint: Any = Annotated[parts] if info.metadata else info.annotation
    adapter: TypeAdapter = TypeAdapter(hint)

    def check(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        try:
            adapter.validate_python(value, strict=True)
        except ValidationError:
            return False
        return True

    return check


def spec(config: Path, grid: dict, seeds: Optional[Sequence[int]], sets: Sequence[str], overrides: dict) -> dict:
    """What a grid study asks for: the same spec means the same cells (for resuming)."""
    return {
        "config": str(Path(config).resolve()),
        "grid": grid,
        "seeds": list(seeds) if seeds else None,
        "set": list(sets),
        "overrides": {k: v for k, (v, _) in overrides.items() if v is not None},
    }


def optimizer_moments(names: Sequence[str]) -> list[str]:
    """The union of the moments (v, s, m) the named optimizers keep."""
    import numpy as np

    found: list[str] = []
    for name in names:
        for m in OPTIMIZERS[name]((1, 1), np.float64).moments():
            if m not in found:
                found.append(m)
    return found


def export_cell(study: Path, i: int, target: Optional[Path] = None, plots: bool = True) -> Path:
    """Write cell i's complete run folder (default: `study/cell_XXX`) from the study's store:
    the files the study writes for a cell it keeps a folder for, byte for byte."""
    from backprop_cli.run_folders.write import finish_run, no_interrupts
    from backprop_cli.store import Store

    study = Path(study)
    if not Store.exists(study):
        raise RunNotFoundError(f"{study}: not a study with a store")
    store = Store.open(study)
    cells = Cells.of_study(study, store.layout.cells)
    if not 0 <= i < len(cells):
        n = len(cells)
        raise RunNotFoundError(f"{study}: has cells {folder_name(0, n)} to {folder_name(n - 1, n)}; no cell {i + 1}")
    if not store.done()[i] and store.status(i) == "pending":
        raise RunError(
            f"{study / folder_name(i, len(cells))}: not trained yet (run the study again with --name to finish it)"
        )
    cfg = cells.cfg(i)
    data = dataset(cfg, str(cells.config))
    net = network(cfg)
    es = cfg.training.early_stopping
    result = store.result(i, net, cfg.training.optimizer, es.monitor if es is not None else None)
    run = Path(target) if target is not None else study / folder_name(i, len(cells))
    run.mkdir(parents=True, exist_ok=True)
    with no_interrupts():
        atomic_write(run / "config.yaml", config_to_yaml(cfg))
    extra = cell_extra(cells, store, i)
    finish_run(run, cfg, data, result, model=0, learning_rate=cfg.training.learning_rate, extra=extra, plots=plots)
    return run


def cell_extra(cells: Cells, store: Any, i: int) -> dict:
    """What a cell's summary.json records besides a run's: its grid values, how many cells
    shared its pass, and when its chunk started and finished."""
    from backprop_cli.run_folders.write import iso

    return {
        "grid_cell": cells.values(i),
        "batched_with": len(cells.groups([j for j in range(len(cells)) if cells.group(j) == cells.group(i)])[0]),
        "started_at": iso(float(store.field("started")[i])),
        "finished_at": iso(float(store.field("finished")[i])),
    }


def resolve_cell(path: Path) -> Optional[Path]:
    """`STUDY/cell_0417` of a study whose store holds the cell: the cell's run folder, written
    from the store when it has none yet (None when `path` is not such a cell)."""
    i = cell_index(path.name)
    if i is None or not (path.parent / GRID_FILE).exists():
        return None
    from backprop_cli.store import Store

    if not Store.exists(path.parent):
        return None
    n = Store.open(path.parent).layout.cells
    folder = path.parent / folder_name(i, n)
    if (folder / "summary.json").exists():
        return folder
    try:
        return export_cell(path.parent, i, plots=False)
    except OSError as e:
        raise RunError(f"{path}: cannot write the cell's run folder: {e.strerror}") from None
