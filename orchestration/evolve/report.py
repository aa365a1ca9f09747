"""One self-contained HTML page per run or generation: images embedded as base64, no server, no URLs."""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestration.evolve.history import Archive, true_front
from orchestration.evolve.plots import front_plot, progress_plot
from orchestration.evolve.spec import RunSpec
from orchestration.evolve.store import RunStore
from workers.contract import EvaluationResult, Status

MAX_FRONT_IMAGES = 12  # front pictures embedded per run report, evenly spaced, the last included
MAX_TABLE_ROWS = 200

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; } .grid { display: flex; flex-wrap: wrap; gap: 8px; }
.grid img { width: 360px; } .facts td:first-child { font-weight: 600; }
"""


def _image(path: Path, alt: str, css_class: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    klass = f' class="{css_class}"' if css_class else ""
    return f'<img{klass} alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{_fmt(c)}</td>' if isinstance(c, int | float) else f"<td>{_fmt(c)}</td>"
            for c in row
        ) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def _front_images(store: RunStore) -> list[Path]:
    images = sorted(store.plots.glob("front-g*.png"))
    if len(images) <= MAX_FRONT_IMAGES:
        return images
    picks = np.linspace(0, len(images) - 1, MAX_FRONT_IMAGES).round().astype(int)
    return [images[i] for i in sorted(set(picks.tolist()))]


def write_run_report(store: RunStore, path: Path | None = None) -> Path:
    """``report.html`` in the run's directory (or ``path``): facts, progress, fronts, the history table."""
    spec = store.read_spec()
    history = store.history()
    names = list(spec.objectives)
    progress = store.plots / "progress.png"
    if history and not progress.exists():
        progress_plot(progress, history, names)
    last = history[-1] if history else {}
    totals: Counter[str] = Counter()
    for record in history:
        totals.update(record["counts"])
    facts = [
        ("run", spec.id), ("algorithm", spec.algorithm), ("evaluator", spec.evaluator),
        ("objectives", ", ".join(f"{n} ({d})" for n, d in spec.objectives.items())),
        ("generations", f"{len(history)} of {spec.generations}"),
        ("population size", spec.population_size), ("seed", spec.seed),
        ("failure rule", spec.failure + (f" ({spec.penalty:g})" if spec.failure == "penalty" else "")),
        ("candidates by status", ", ".join(f"{s} {n}" for s, n in totals.items() if n) or "-"),
        ("front size", last.get("front_size")), ("hypervolume", last.get("hypervolume")),
        ("reference point", spec.reference_point), ("IGD", last.get("igd")),
        ("true front", spec.front_name),
    ]
    body = ['<h2>Summary</h2><table class="facts">'
            + "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in facts)
            + "</table>"]
    if progress.exists():
        body.append("<h2>Progress</h2>" + _image(progress, "progress: hypervolume and best per objective"))
    fronts = _front_images(store)
    if fronts:
        body.append("<h2>Pareto front, latest</h2>" + _image(fronts[-1], f"front {fronts[-1].stem}"))
        body.append('<h2>Pareto front by generation</h2><div class="grid">'
                    + "".join(_image(p, f"front {p.stem}") for p in fronts) + "</div>")
    rows = [
        [r["id"], *(r["counts"].get(s.value, 0) for s in Status),
         *(r["best"].get(n) for n in names), r["front_size"], r["hypervolume"], r["igd"], r["elapsed_s"]]
        for r in history
    ]
    header = ["generation", *(s.value for s in Status), *(f"best {n}" for n in names),
              "front", "hypervolume", "IGD", "seconds"]
    body.append("<h2>History</h2>" + _table(header, rows))
    path = path or store.report_path
    path.write_text(_page(f"evofleet run {spec.id}", "".join(body)))
    return path


def write_generation_report(path: Path, title: str, results: Sequence[EvaluationResult],
                            spec: RunSpec | None, objectives: Sequence[str]) -> Path:
    """A page for one generation: counts, its front scatter, its results (the first 200)."""
    counts = Counter(r.status.value for r in results)
    body = ["<h2>Counts</h2>" + _table([s.value for s in Status], [[counts.get(s.value, 0) for s in Status]])]
    if len(objectives) >= 2:
        archive = Archive(spec.objectives if spec is not None else dict.fromkeys(objectives, "min"))
        F = archive.add(results)
        buffer = path.with_name(f".{path.stem}-front.png")
        front_plot(buffer, title=title, names=list(objectives), generation=F, archive=np.empty((0, 2)),
                   front=archive.front_F,
                   true_front=true_front(spec.front_name) if spec and spec.front_name else None)
        body.append("<h2>Front</h2>" + _image(buffer, "front of the generation"))
        buffer.unlink()
    rows = [[r.candidate_id, r.status.value, *(r.scores.get(n) for n in objectives),
             r.error.type if r.error else None] for r in results[:MAX_TABLE_ROWS]]
    note = f" (first {MAX_TABLE_ROWS} of {len(results)})" if len(results) > MAX_TABLE_ROWS else ""
    body.append(f"<h2>Results{note}</h2>" + _table(["candidate", "status", *objectives, "error"], rows))
    path.write_text(_page(title, "".join(body)))
    return path
