"""What a person sees: a live progress bar with counts per status, and the summary tables."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from orchestration.messages import printable
from workers.contract import EvaluationResult, Status

# Celery names the pool's job in a lost child's message ("... signal 9 (SIGKILL) Job: 24."):
# a number per task, which would make every crash its own kind of failure.
_JOB_NUMBER = re.compile(r"\s*Job: \d+\.?$")

STATUS_STYLE = {
    "ok": "green",
    "error": "red",
    "timeout": "yellow",
    "crashed": "magenta",
    "cancelled": "dim",
}


def _counts_text(counts: Mapping[str, int]) -> str:
    return "  ".join(
        f"[{STATUS_STYLE[s.value]}]{s.value} {counts.get(s.value, 0)}[/]" for s in Status
    )


class ProgressDisplay:
    """A rich progress bar fed by ``on_batch``."""

    def __init__(self, total: int, console: Console | None = None, label: str = "evaluating") -> None:
        self.console = console or Console(stderr=True)
        self.counts: Counter[str] = Counter()
        self.label, self.total, self.started = label, total, time.monotonic()
        # Not a terminal (a log, CI): no live bar, whose last frame was cut to 80 columns
        # ("0:0… 0:00:…"), but one plain line at the end.
        self.plain = not self.console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=self.plain,
        )
        self.task = self.progress.add_task(label, total=total, counts=_counts_text(self.counts))

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
        if self.plain:
            counts = "  ".join(f"{s.value} {self.counts.get(s.value, 0)}" for s in Status)
            elapsed = time.monotonic() - self.started
            self.console.print(Text(f"{self.label} {sum(self.counts.values())}/{self.total}  {counts}  "
                                    f"{elapsed:.1f}s"), soft_wrap=True)

    def on_batch(self, batch: Sequence[EvaluationResult]) -> None:
        for result in batch:
            self.counts[result.status.value] += 1
        self.progress.update(self.task, advance=len(batch), counts=_counts_text(self.counts))


class FailureTally:
    """Counts failed results by status and error, to name the most common failures at the end.

    An ``on_batch`` callback; it hands each batch on to ``forward`` (the progress display).
    """

    KINDS = 1000  # distinct failures kept; more are counted together (messages can be unique)
    MESSAGE_LIMIT = 120

    def __init__(self, forward: Callable[[Sequence[EvaluationResult]], None] | None = None) -> None:
        self.forward = forward
        self.failures: Counter[str] = Counter()

    def on_batch(self, batch: Sequence[EvaluationResult]) -> None:
        for result in batch:
            if result.status in (Status.ok, Status.cancelled):
                continue
            kind = self.describe(result)
            if kind not in self.failures and len(self.failures) >= self.KINDS:
                kind = f"{result.status.value} (other failures)"
            self.failures[kind] += 1
        if self.forward is not None:
            self.forward(batch)

    def describe(self, result: EvaluationResult) -> str:
        """``error ValueError: no score ...``: status, error type and message, one line."""
        if result.error is None:
            return result.status.value
        message = printable(_JOB_NUMBER.sub("", result.error.message.strip()), self.MESSAGE_LIMIT)
        return f"{result.status.value} {result.error.type}" + (f": {message}" if message else "")

    def most_common(self, n: int = 3) -> list[str]:
        """The ``n`` most common failures, one line each: ``12x error ValueError: ...``."""
        return [f"{count}x {kind}" for kind, count in self.failures.most_common(n)]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _plain(value: Any) -> Text:
    """Data as a table cell: never read as Rich markup or emoji, control characters escaped."""
    return Text(printable(value, None))


def print_summary(summary: Mapping[str, Any], console: Console | None = None) -> None:
    """The summary as tables: counts, best per objective, Pareto front, workers.

    Ids and objective names are data: they are shown as plain text, never as Rich markup.
    """
    console = console or Console()
    counts = Table(title=_plain(f"generation {summary.get('generation_id')}: {summary.get('status')}"))
    for status in Status:
        counts.add_column(status.value, justify="right", style=STATUS_STYLE[status.value])
    counts.add_column("wall s", justify="right")
    counts.add_column("per s", justify="right")
    counts.add_row(
        *[str(summary["counts"].get(s.value, 0)) for s in Status],
        _fmt(summary.get("wall_seconds")),
        _fmt(summary.get("throughput_per_s")),
    )
    console.print(counts)

    best = Table(title="best per objective")
    best.add_column("objective")
    best.add_column("candidate")
    best.add_column("scores")
    for name, entry in summary.get("best", {}).items():
        if entry:
            scores = ", ".join(f"{k}={_fmt(v)}" for k, v in entry["scores"].items())
            best.add_row(_plain(name), _plain(entry["candidate_id"]), _plain(scores))
    console.print(best)

    front = summary.get("pareto_front", [])
    tied = sum(entry.get("ties", 0) for entry in front)
    title = f"Pareto front ({len(front)} candidates" + (f", {tied} more tied)" if tied else ")")
    table = Table(title=title, min_width=len(title) + 4)
    table.add_column("candidate")
    names = list(front[0]["scores"]) if front else []
    for name in names:
        table.add_column(_plain(name), justify="right")
    for entry in front[:20]:
        label = entry["candidate_id"] + (f" (+{entry['ties']} tied)" if entry.get("ties") else "")
        table.add_row(_plain(label), *[_fmt(entry["scores"].get(n)) for n in names])
    if len(front) > 20:
        table.add_row(f"... {len(front) - 20} more", *["" for _ in names])
    console.print(table)

    failed = summary.get("failed") or {}
    for status, ids in failed.items():
        if ids:
            shown = ", ".join(ids[:10]) + (f" ... ({len(ids)})" if len(ids) > 10 else "")
            # "error ids: ...", not "error: ...": that is the CLI's error message, one per run
            console.print(Text.assemble((status, STATUS_STYLE.get(status, "white")), " ids: ",
                                        printable(shown, None)))
