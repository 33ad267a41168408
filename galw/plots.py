"""Plots for a training run: gradient magnitudes per task over epochs, sigmas over steps.

Uses matplotlib's object API with the Agg canvas, so no display and no global backend change.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def save_figure(figure: Figure, path: str | Path) -> None:
    """Lay out and write a figure as PNG through the Agg canvas (no display needed)."""
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_gradient_magnitudes(
    magnitudes: Mapping[str, Sequence[float]], path: str | Path, title: str = ""
) -> None:
    """One line per task: mean gradient magnitude on the shared parameters per epoch.

    The y axis is logarithmic when every value is positive (magnitudes of different tasks
    often differ by orders of magnitude).
    """
    if not magnitudes:
        raise ValueError("no magnitudes to plot")
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for task, values in magnitudes.items():
        epochs = range(1, len(values) + 1)
        axes.plot(epochs, values, marker="o", markersize=3, label=task)
    finite = [v for values in magnitudes.values() for v in values if math.isfinite(v)]
    if finite and min(finite) > 0:
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    axes.set_xlabel("epoch")
    axes.set_ylabel("gradient magnitude on shared parameters")
    axes.set_title(title or "Gradient magnitude per task")
    axes.legend(fontsize="small", ncol=2)
    axes.grid(alpha=0.3)
    save_figure(figure, path)


def plot_sigmas(log_records: Iterable[Mapping], path: str | Path, title: str = "") -> None:
    """One line per group: sigma over training steps.

    ``log_records`` are train-log rows; rows with a ``"sigmas"`` mapping (group name -> sigma,
    as ``LossWeighting.sigmas()`` gives) and a ``"step"`` are plotted, others are skipped.
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    for record in log_records:
        if "sigmas" not in record or "step" not in record:
            continue
        for name, sigma in record["sigmas"].items():
            steps, values = series.setdefault(name, ([], []))
            steps.append(record["step"])
            values.append(sigma)
    if not series:
        raise ValueError("no log record has both 'step' and 'sigmas'")
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    for name, (steps, values) in series.items():
        axes.plot(steps, values, label=name)
    axes.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel("step")
    axes.set_ylabel("sigma")
    axes.set_title(title or "Learned sigma per group")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    save_figure(figure, path)
