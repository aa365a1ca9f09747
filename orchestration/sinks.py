"""Where results go, batch by batch: JSONL, Parquet (a row group per batch) or CSV."""

from __future__ import annotations

import csv
import errno
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from pydantic_core import to_json

from orchestration.messages import clip_repr
from workers.contract import EvaluationResult

FORMATS = ("jsonl", "parquet", "csv")
_FIXED_COLUMNS = (
    "generation_id", "candidate_id", "status", "priority", "attempts", "worker", "device",
    "submitted_at", "started_at", "finished_at", "eval_seconds",
    "error_type", "error_message", "exitcode", "signal", "params", "metadata",
    "outputs", "feedback", "artifacts",  # outputs and artifacts: JSON strings
)


class Sink(Protocol):
    """Receives results batch by batch; ``close`` finishes the file."""

    path: Path

    def write(self, batch: Sequence[EvaluationResult]) -> None: ...

    def close(self) -> None: ...


def format_for(path: str | Path, explicit: str | None = None) -> str:
    """The output format: ``explicit``, else the file extension; raises ValueError."""
    fmt = (explicit or Path(path).suffix.lstrip(".")).lower()
    if fmt == "json":
        fmt = "jsonl"
    if fmt not in FORMATS:
        raise ValueError(
            f"cannot tell the output format of {clip_repr(str(path))}: use a .jsonl, .parquet or .csv "
            f"name, or --format {'|'.join(FORMATS)}"
        )
    return fmt


def check_output(path: str | Path, explicit: str | None = None) -> str:
    """The format of an output file that can be written, checked before anything is submitted;
    raises ValueError saying what is wrong (the format, a directory, no permission).

    The results file and its summary are really created (then removed again, unless they
    existed): permission bits say yes to root, and say nothing of /proc, read-only mounts or
    names too long.
    """
    path = Path(path)
    if explicit is not None and explicit.lower() not in (*FORMATS, "json"):
        raise ValueError(f"unknown output format {explicit!r}: use --format {'|'.join(FORMATS)}")
    fmt = format_for(path, explicit)
    try:
        if path.is_dir():
            raise ValueError(f"cannot write results to {clip_repr(str(path))}: it is a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a parent is a file
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from None
        for target in (path, summary_path(path)):
            _try_create(target)
    except OSError as exc:
        raise ValueError(f"cannot write results to {clip_repr(str(path))}: {exc.strerror or exc}") from None
    return fmt


def _try_create(path: Path) -> None:
    """Open ``path`` for writing as a sink will, without changing it; raises OSError."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path)) from None
        # Writes nothing, truncates nothing; a FIFO without a reader fails instead of blocking.
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        return
    os.close(fd)
    path.unlink()


def score_column(name: str) -> str:
    return f"score.{name}" if name in _FIXED_COLUMNS else name


def flat_row(result: EvaluationResult, objectives: Sequence[str]) -> dict[str, Any]:
    """One result as a flat row: fixed columns, then one column per objective."""
    error = result.error
    row: dict[str, Any] = {
        "generation_id": result.generation_id,
        "candidate_id": result.candidate_id,
        "status": result.status.value,
        "priority": result.priority.value,
        "attempts": result.attempts,
        "worker": result.worker,
        "device": result.device,
        "submitted_at": result.submitted_at,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "eval_seconds": result.eval_seconds,
        "error_type": error.type if error else None,
        "error_message": error.message if error else None,
        "exitcode": error.exitcode if error else None,
        "signal": error.signal if error else None,
        # The echo as a JSON string column (null when not echoed).
        "params": _json_or_none(result.params),
        "metadata": _json_or_none(result.metadata),
        "outputs": None if result.outputs is None else json.dumps(result.outputs, ensure_ascii=False),
        "feedback": result.feedback,
        "artifacts": json.dumps({name: ref.model_dump() for name, ref in result.artifacts.items()})
        if result.artifacts else None,
    }
    for name in objectives:
        row[score_column(name)] = result.scores.get(name)
    return row


def _json_or_none(value: Any) -> str | None:
    # pydantic's serializer: ~7x json.dumps for a candidate's list of floats.
    return None if value is None else to_json(value).decode()


class JsonlSink:
    """One JSON object per line, appended and flushed per batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = path.open("w")

    def write(self, batch: Sequence[EvaluationResult]) -> None:
        self._file.write("".join(r.model_dump_json() + "\n" for r in batch))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class CsvSink:
    """A header row, then one flat row per result."""

    def __init__(self, path: Path, objectives: Sequence[str]) -> None:
        self.path = path
        self.objectives = list(objectives)
        self._file: IO[str] = path.open("w", newline="")
        columns = [*_FIXED_COLUMNS, *(score_column(n) for n in self.objectives)]
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        self._writer.writeheader()

    def write(self, batch: Sequence[EvaluationResult]) -> None:
        for result in batch:
            row = flat_row(result, self.objectives)
            for key in ("submitted_at", "started_at", "finished_at"):
                row[key] = row[key].isoformat() if row[key] else None
            self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class ParquetSink:
    """A Parquet file with one row group per batch; each objective is a float column, outputs and
    artifact references JSON strings."""

    def __init__(self, path: Path, objectives: Sequence[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        self.objectives = list(objectives)
        timestamp = pa.timestamp("us", tz="UTC")
        fields = [
            ("generation_id", pa.string()), ("candidate_id", pa.string()),
            ("status", pa.string()), ("priority", pa.string()), ("attempts", pa.int32()),
            ("worker", pa.string()), ("device", pa.string()),
            ("submitted_at", timestamp), ("started_at", timestamp), ("finished_at", timestamp),
            ("eval_seconds", pa.float64()), ("error_type", pa.string()),
            ("error_message", pa.string()), ("exitcode", pa.int32()), ("signal", pa.string()),
            ("params", pa.string()), ("metadata", pa.string()),
            ("outputs", pa.string()), ("feedback", pa.string()), ("artifacts", pa.string()),
        ]
        fields += [(score_column(n), pa.float64()) for n in self.objectives]
        self.schema = pa.schema(fields)
        self._writer = pq.ParquetWriter(str(path), self.schema)

    def write(self, batch: Sequence[EvaluationResult]) -> None:
        import pyarrow as pa

        if not batch:
            return
        rows = [flat_row(r, self.objectives) for r in batch]
        self._writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def close(self) -> None:
        self._writer.close()


def open_sink(path: str | Path, objectives: Sequence[str], fmt: str | None = None) -> Sink:
    """A sink for ``path`` in the format its extension (or ``fmt``) names; truncates the file."""
    path = Path(path)
    kind = format_for(path, fmt)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "parquet":
        return ParquetSink(path, objectives)
    if kind == "csv":
        return CsvSink(path, objectives)
    return JsonlSink(path)


def summary_path(results_path: str | Path) -> Path:
    """``results.jsonl`` -> ``results.jsonl.summary.json``, beside it: the results' own name,
    so ``results.jsonl`` and ``results.parquet`` never share (overwrite) one summary."""
    path = Path(results_path)
    return path.with_name(path.name + ".summary.json")


def write_summary(path: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write the summary JSON atomically."""
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, target)
    return target
