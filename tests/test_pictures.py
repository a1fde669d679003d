"""What the pictures say, read from the figures themselves (issue 27 item 17): seeds in colours
that can be told apart, the box plot's marks explained, biases under their neurons."""

import numpy as np
import pytest

from backprop_cli import pictures, plots


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, kept instead of turned into PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    drawn = []

    def keep_drawn(fig):
        FigureCanvasAgg(fig).draw()
        drawn.append(fig)
        return b""

    monkeypatch.setattr(plots, "png_bytes", keep_drawn)
    monkeypatch.setattr(pictures, "png_bytes", keep_drawn)
    return drawn


def _curves(n):
    epochs = np.arange(1, 11)
    return {f"seed={k}": (epochs, np.linspace(1, 0.1 * (k + 1), 10)) for k in range(n)}


def test_up_to_ten_seeds_get_distinct_colours_and_a_legend(figures):
    plots.study_plot(_curves(6), list(range(6)), "seed", "xor: loss by seed")
    (fig,) = figures
    assert len(fig.axes) == 1  # no colorbar
    colours = {tuple(line.get_color()) for line in fig.axes[0].get_lines()[:6]}
    assert len(colours) == 6
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [f"seed {k}" for k in range(6)]


def test_more_seeds_get_the_colormap_and_say_so(figures):
    plots.study_plot(_curves(14), list(range(14)), "seed", "xor: loss by seed")
    (fig,) = figures
    assert len(fig.axes) == 2 and "neighbours look alike" in fig.axes[1].get_ylabel()


def test_rates_keep_their_ordered_colormap(figures):
    plots.study_plot(_curves(3), [0.1, 1.0, 10.0], "learning_rate", "xor: loss by rate")
    assert len(figures[0].axes) == 2 and figures[0].axes[1].get_ylabel() == "learning_rate"


def test_the_box_plot_says_what_its_marks_are(figures):
    groups = {"training.learning_rate": [("0.1", [0.5, 0.4, 0.45]), ("1", [0.01, 0.02, 0.3])]}
    plots.box_plots(groups, "final_loss", "xor")
    labels = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert labels == ["middle half (25% to 75%)", "median", "mean", "beyond 1.5 boxes", "whiskers: the rest"]


def test_a_bias_label_sits_right_under_its_neuron(figures):
    params = [(np.array([[1.0, -2.0], [0.5, 0.25]]), np.array([0.1, -0.2])), (np.array([[3.0, -1.0]]), np.array([0.3]))]
    pictures.network_diagram([2, 2, 1], params, "net")
    fig = figures[0]
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    centres = {(l, i): (l * 3.0, (size - 1) / 2.0 - i) for l, size in enumerate([2, 2, 1]) for i in range(size)}
    for text, neuron in (("b1=0.1", (1, 0)), ("b2=-0.2", (1, 1)), ("b3=0.3", (2, 0))):
        (label,) = [t for t in ax.texts if t.get_text() == text]
        box = label.get_window_extent(renderer)
        x, y = ax.transData.transform(centres[neuron])
        assert abs((box.x0 + box.x1) / 2 - x) < 1.0  # centred on the neuron
        assert y - 40 < box.y1 < y  # just below it
