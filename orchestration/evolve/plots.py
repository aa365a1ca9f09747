"""Pictures of a run (matplotlib, Agg, no display): a Pareto-front scatter per generation, progress."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FIGURE_PX = (800, 600)  # every PNG is this size
_DPI = 100


def _figure() -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

    return Figure(figsize=(FIGURE_PX[0] / _DPI, FIGURE_PX[1] / _DPI), dpi=_DPI)


def warm_up() -> None:
    """Import matplotlib and render once (about a second, once per process), so the run's
    first and last pictures do not pay for it: the run calls this while a generation runs."""
    import io

    figure = _figure()
    figure.add_subplot().set_title("warm-up")
    figure.savefig(io.BytesIO(), dpi=_DPI, format="png")


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(tmp, dpi=_DPI, format="png")
    tmp.replace(path)
    return path


def front_plot(path: Path, *, title: str, names: Sequence[str], generation: np.ndarray,
               archive: np.ndarray, front: np.ndarray, true_front: np.ndarray | None = None) -> Path:
    """Objectives 1 and 2 (as minimised): this generation's points, all earlier ones, the front."""
    figure = _figure()
    ax = figure.add_subplot()
    if true_front is not None:
        ax.plot(true_front[:, 0], true_front[:, 1], color="black", lw=1.2, label="true front")
    if len(archive):
        ax.scatter(archive[:, 0], archive[:, 1], s=6, color="#c8c8c8", label="earlier generations")
    if len(generation):
        ax.scatter(generation[:, 0], generation[:, 1], s=14, color="#4c78a8", label="this generation")
    if len(front):
        order = np.argsort(front[:, 0])
        ax.plot(front[order, 0], front[order, 1], "o-", ms=4, color="#e45756", lw=1, label="front so far")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1] if len(names) > 1 else "")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def progress_plot(path: Path, history: Sequence[dict[str, Any]], names: Sequence[str]) -> Path:
    """Hypervolume (and IGD, when known) and the best value per objective against generation."""
    figure = _figure()
    top, bottom = figure.subplots(2, 1, sharex=True)
    generations = [record["generation"] for record in history]
    # Hypervolume rises, IGD falls, on scales of their own: one axis each.
    axes = {"hypervolume": top, "igd": top.twinx()}
    for key, color in (("hypervolume", "#4c78a8"), ("igd", "#e45756")):
        points = [(g, r[key]) for g, r in zip(generations, history, strict=True) if r[key] is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            axes[key].plot(xs, ys, "o-", ms=3, color=color, label=key)
            axes[key].set_ylabel(key, color=color)
    top.grid(alpha=0.3)
    for name in names:
        points = [(g, r["best"].get(name)) for g, r in zip(generations, history, strict=True)
                  if r["best"].get(name) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            bottom.plot(xs, ys, "o-", ms=3, label=f"best {name}")
    from matplotlib.ticker import MaxNLocator

    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel("generation")
    bottom.set_ylabel("best so far")
    bottom.grid(alpha=0.3)
    if bottom.get_legend_handles_labels()[0]:
        bottom.legend(fontsize=8)
    figure.suptitle("progress")
    figure.tight_layout()
    return _save(figure, path)
