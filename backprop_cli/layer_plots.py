"""The diagnostics' pictures (see `diagnostics`): gradients.png, each layer's gradient norm
over the epochs, and units.png, each layer's saturated and dead fractions. PNG bytes, drawn
with `plots`' figure helpers (matplotlib, Agg, imported when drawn)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from backprop_cli.plots import _few_ticks, log_y, new_axes, new_figure, png_bytes, quiet_overflow


@quiet_overflow
def gradients(epochs: Any, norms: Any, names: Sequence[str], title: str) -> bytes:
    """Each layer's weight-gradient norm (R, layers) over the recorded epochs, log scale. A
    norm of exactly 0 (no gradient reaches the layer: dead or saturated units) has no place
    on a log scale: it is drawn as a triangle on the axis' floor, and the legend says so."""
    fig = new_figure()
    ax = new_axes(fig)
    norms = np.asarray(norms, float)
    epochs = np.asarray(epochs)
    positive = norms[np.isfinite(norms) & (norms > 0)]
    floor = positive.min() / 10 if positive.size else 1e-12
    marker = "." if len(epochs) < 30 else None
    zeros_seen = False
    for l, name in enumerate(names):
        values = norms[:, l]
        shown = np.isfinite(values) & (values > 0)
        line = ax.plot(epochs[shown], values[shown], marker=marker, label=name)[0]
        zero = values == 0
        if zero.any():
            zeros_seen = True
            ax.plot(epochs[zero], np.full(zero.sum(), floor), "v", color=line.get_color(), markersize=4)
    if positive.size:
        log_y(ax)  # plain tick labels: no mathtext in these figures
        ax.set_ylim(bottom=floor / 2)
    if zeros_seen:
        ax.plot([], [], "v", color="0.4", markersize=4, label="exactly 0 (drawn at the floor)")
    _few_ticks(ax)
    ax.set_xlabel("epoch (0: the initial weights)")
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
    ax.set_xlabel("epoch (0: the initial weights)")
    ax.set_ylabel("% of the layer's units")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no sigmoid, tanh, relu or leaky_relu hidden layers", ha="center", transform=ax.transAxes)
    return png_bytes(fig)
