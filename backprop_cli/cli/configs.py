"""`backprop validate`, `backprop schema` and `backprop init`: configs without training."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from backprop_cli.cli.app import UsageError, app, cli_errors, out
from backprop_cli.cli.options import ConfigFile, Sets, Template, load, load_data

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@app.command()
@cli_errors
def validate(
    config: ConfigFile,
    sets: Sets = None,
) -> None:
    """Check a config and its data fully, without training (exit 0 or 2).

    Example: backprop validate configs/xor.yaml
    """
    cfg = load(config, sets=sets)
    data = load_data(cfg, config)
    from backprop_cli.network import param_names

    n_params = len(param_names(cfg.model.layers, cfg.model.bias))
    shape = "-".join(map(str, cfg.model.layers))
    val = f", {len(data.X_val)} validation" if data.X_val is not None else ""
    out.print(
        f"{config}: OK: {shape} network ({'/'.join(dict.fromkeys(cfg.model.activations))}), {n_params} parameters, "
        f"loss {cfg.training.loss}, {len(data.X)} training sample{'' if len(data.X) == 1 else 's'}{val}",
        soft_wrap=True,
    )


@app.command()
@cli_errors
def schema() -> None:
    """Print the JSON Schema of the config file (for editor completion).

    Example: backprop schema > backprop.schema.json
    """
    import json

    from backprop_cli.config import json_schema

    out.print_json(json.dumps(json_schema()))


@app.command()
@cli_errors
def init(
    path: Annotated[
        Optional[Path], typer.Argument(help="Where to write the config (default: <template>.yaml).")
    ] = None,
    template: Annotated[Template, typer.Option("--template", "-t", help="Which starting config.")] = Template.xor,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starting config.

    Example: backprop init --template classification my_classifier.yaml
    """
    path = path or Path(f"{template.value}.yaml")
    if path.exists() and not force:
        raise UsageError(f"{path}: already exists (use --force to overwrite)")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder")
    from backprop_cli.files import atomic_write
    from backprop_cli.run_folders import check_output

    check_output(path)

    atomic_write(path, (TEMPLATES / f"{template.value}.yaml").read_text(encoding="utf-8"))
    out.print(f"wrote {path}; train it with: backprop train {path}", soft_wrap=True)
