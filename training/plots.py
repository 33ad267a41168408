"""Person-search plots of a training run (galw.plots has the method's own: gradients, sigmas)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from galw.plots import save_figure
from training.model.diagnostics import BRANCHES, COLLAPSE_COSINE


def plot_embedding_spread(log_records: Iterable[Mapping], path: str | Path) -> None:
    """Per epoch and branch: the mean cosine between different people's embeddings (solid)
    and between lookup-table rows (dashed), with the collapse threshold. ``log_records`` are
    train-log rows; the ``embedding_spread`` ones are plotted."""
    spreads = [r for r in log_records if r.get("event") == "embedding_spread"]
    if not spreads:
        raise ValueError("no embedding_spread record in the log")
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    epochs = [record["epoch"] + 1 for record in spreads]
    for branch, colour in zip(BRANCHES, ("tab:blue", "tab:orange"), strict=True):
        people = [record[f"{branch}_cosine_between_people"] for record in spreads]
        rows = [record[f"{branch}_lut_cosine"] for record in spreads]
        axes.plot(epochs, people, color=colour, marker="o", markersize=3, label=f"{branch}: people")
        axes.plot(epochs, rows, color=colour, linestyle="--", label=f"{branch}: lookup rows")
    axes.axhline(COLLAPSE_COSINE, color="red", linewidth=0.8, linestyle=":", label="collapse")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylim(min(-0.05, axes.get_ylim()[0]), 1.02)
    axes.set_xlabel("epoch")
    axes.set_ylabel("mean cosine between different identities")
    axes.set_title("Embedding spread per branch (lower: people told apart)")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    save_figure(figure, path)
