"""The diagnostics' pictures (see `diagnostics`): gradients.png, each layer's gradient norm
over the epochs, and units.png, each layer's saturated and dead fractions. PNG bytes, drawn
with `plots`' figure helpers (matplotlib, Agg, imported when drawn)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from backprop_cli.plots import _few_ticks, new_axes, new_figure, png_bytes, quiet_overflow


@quiet_overflow
def gradients(epochs: Any, norms: Any, names: Sequence[str], title: str) -> bytes:
    """Each layer's weight-gradient norm (R, layers) over the recorded epochs, log scale."""
    fig = new_figure()
    ax = new_axes(fig)
    norms = np.asarray(norms, float)
    for l, name in enumerate(names):
        values = norms[:, l]
        shown = np.isfinite(values) & (values > 0)
        ax.plot(np.asarray(epochs)[shown], values[shown], marker="." if len(values) < 30 else None, label=name)
    if np.any(np.isfinite(norms) & (norms > 0)):
        ax.set_yscale("log")
    _few_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("gradient norm ||dL/dW|| (log)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return png_bytes(fig)


@quiet_overflow
def units(epochs: Any, saturated: Any, dead: Any, names: Sequence[str], title: str) -> bytes:
    """Each layer's fraction of saturated units (sigmoid, tanh: solid) and of dead units (relu,
    leaky_relu: dashed) over the recorded epochs, 0 to 100%."""
    fig = new_figure()
    ax = new_axes(fig)
    epochs = np.asarray(epochs)
    for values, style, what in ((saturated, "-", "saturated"), (dead, "--", "dead")):
        values = np.asarray(values, float)
        for l, name in enumerate(names):
            if np.any(np.isfinite(values[:, l])):
                ax.plot(epochs, 100 * values[:, l], style, marker="." if len(epochs) < 30 else None,
                        label=f"{name}: {what}")  # fmt: skip
    ax.set_ylim(-3, 103)
    _few_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("% of the layer's units")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no sigmoid, tanh, relu or leaky_relu hidden layers", ha="center", transform=ax.transAxes)
    return png_bytes(fig)
