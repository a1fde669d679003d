"""The package's shape: layers import only downwards, the engine loads no UI or config
libraries, and each rule lives in one place."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backprop_cli.metrics import class_indices, class_name
from backprop_cli.optimizers import OPTIMIZERS
from backprop_cli.schedules import SCHEDULES

PACKAGE = Path(__file__).resolve().parent.parent / "backprop_cli"

# The Design table's order: a module may import only modules in its own tier or an earlier one.
TIERS = [
    ["errors", "files"],
    ["activations", "losses", "optimizers", "schedules", "initializers"],
    ["network", "metrics", "checkpoint"],
    ["differences", "evaluation"],
    ["datasets"],
    ["exchange"],
    ["config"],
    ["data"],
    ["policies", "regularization", "training", "diagnostics"],
    ["experiment"],
    ["plots", "painter", "pictures", "animation", "gif", "tables", "layer_plots"],
    ["live"],
    ["sweep", "gradcheck", "explain", "search"],
    ["store", "run_folders", "events"],
    ["studies", "results", "grid"],
    ["api", "report", "server"],
    ["cli"],
    ["launch"],
]
TIER = {name: i for i, names in enumerate(TIERS) for name in names}


def _top(module: str) -> str:
    """backprop_cli.config.loader -> config."""
    return module.split(".")[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("backprop_cli."):
            found.add(_top(node.module))
        elif isinstance(node, ast.ImportFrom) and node.module == "backprop_cli":
            found.update(alias.name for alias in node.names if alias.name in TIER)
        elif isinstance(node, ast.Import):
            found.update(_top(a.name) for a in node.names if a.name.startswith("backprop_cli."))
    return found


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("__init__.py", "__main__.py"):
            continue
        yield rel.parts[0].removesuffix(".py"), path


def test_every_module_has_a_tier():
    assert {name for name, _ in _modules()} <= set(TIER)


@pytest.mark.parametrize(
    "name,path", list(_modules()), ids=lambda v: str(v.relative_to(PACKAGE)) if isinstance(v, Path) else v
)
def test_modules_import_only_earlier_tiers(name, path):
    later = {m for m in _imports(path) if TIER[m] > TIER[name]}
    assert not later, f"{path.name} imports {later}, which come after {name} in the Design table"


def test_only_the_cli_imports_typer_and_rich():
    for name, path in _modules():
        if name == "cli":
            continue
        tree = ast.parse(path.read_text())
        roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not roots & {"typer", "rich"}, path


def test_importing_the_engine_loads_no_yaml_pydantic_or_ui():
    code = (
        "import sys, backprop_cli.training, backprop_cli.sweep, backprop_cli.gradcheck, backprop_cli.explain, "
        "backprop_cli.experiment; print(sorted(m for m in ('yaml', 'pydantic', 'typer', 'rich', 'matplotlib') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_class_decision_argmax_or_threshold():
    # several outputs: the largest wins; one output: class 1 above 0.5, class 0 at or below
    assert class_indices(np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])).tolist() == [1, 0]
    assert class_indices(np.array([[0.51], [0.5], [0.2]])).astype(int).tolist() == [1, 0, 0]
    assert class_name(np.array([0.2, 0.8]), ["cat", "dog"]) == "dog"
    assert class_name(np.array([0.9]), None) == 1


def test_optimizers_take_only_their_hyperparameters():
    with pytest.raises(TypeError):
        OPTIMIZERS["sgd"]((1, 2), np.float64, momentum=0.9)
    with pytest.raises(TypeError):
        OPTIMIZERS["adam"]((1, 2), np.float64, rho=0.9)
    for cls in OPTIMIZERS.values():
        cls((1, 2), np.float64, 0.0, **{name: 0.5 for name in cls.hyperparameters})


def test_schedules_take_only_their_settings():
    assert SCHEDULES["step"](lr_step_size=2, lr_gamma=0.5).factor(3, 10) == 0.5
    with pytest.raises(TypeError):
        SCHEDULES["exponential"](lr_gamma=0.5, lr_min=0.1)
