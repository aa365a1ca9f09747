"""A run's output directory: spec, checkpoint, each generation's results (Parquet), history, pictures.

Nothing here is pickled: resuming replays the recorded results into a freshly seeded algorithm.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestration.evolve.spec import RunSpec
from orchestration.sinks import flat_row, score_column
from workers.contract import ErrorInfo, EvaluationResult, Status


def _atomic_write(path: Path, data: bytes) -> None:
    """Write-then-rename: a launcher killed mid-write leaves the old file or the new one.

    Not fsynced (two fsyncs were a sixth of a cheap generation's time): a killed launcher loses
    nothing the kernel holds; after a power loss, ``--resume`` evaluates again any generation
    whose results file the disk lost.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def find_run_root(name: str | Path) -> Path | None:
    """The run directory ``name`` names: itself, or ``runs/NAME``; None when neither holds run.json."""
    for root in (Path(name), Path("runs") / str(name)):
        if (root / "run.json").exists():
            return root
    return None


class RunStore:
    """The files of one run under ``root`` (see the README's "Multi-generation runs")."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.generations = self.root / "generations"
        self.plots = self.root / "plots"

    @property
    def spec_path(self) -> Path:
        return self.root / "run.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.root / "checkpoint.json"

    @property
    def history_path(self) -> Path:
        return self.root / "history.jsonl"

    @property
    def report_path(self) -> Path:
        return self.root / "report.html"

    def create(self, spec: RunSpec) -> None:
        """A new run's directory; refuses one that already holds a run (resume it instead)."""
        if self.checkpoint_path.exists():
            raise FileExistsError(
                f"{self.root} already holds run {spec.id!r}: resume it with "
                f"`evofleet evolve --resume {self.root}`, or choose another output"
            )
        self.generations.mkdir(parents=True, exist_ok=True)
        self.plots.mkdir(parents=True, exist_ok=True)
        self.write_spec(spec)
        self.history_path.write_text("")
        self.write_checkpoint(0)

    def write_spec(self, spec: RunSpec) -> None:
        _atomic_write(self.spec_path, spec.model_dump_json(indent=2).encode())

    def read_spec(self) -> RunSpec:
        return RunSpec.model_validate_json(self.spec_path.read_text())

    def completed(self) -> int:
        """Generations whose results were recorded and told to the algorithm."""
        if not self.checkpoint_path.exists():
            return 0
        return int(json.loads(self.checkpoint_path.read_text())["completed"])

    def write_checkpoint(self, completed: int) -> None:
        _atomic_write(self.checkpoint_path, json.dumps({"completed": completed}).encode())

    def results_path(self, generation_id: str) -> Path:
        return self.generations / f"{generation_id}.parquet"

    def write_results(self, generation_id: str, results: Sequence[EvaluationResult],
                      objectives: Sequence[str]) -> None:
        """One Parquet file per generation: the flat result columns plus ``params`` as JSON."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [flat_row(r, objectives) for r in results]
        path = self.results_path(generation_id)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        os.replace(tmp, path)

    def read_results(self, generation_id: str, objectives: Sequence[str]) -> list[EvaluationResult]:
        """A generation's results back, in the order they were written (float64 exactly)."""
        import pyarrow.parquet as pq

        rows = pq.read_table(self.results_path(generation_id)).to_pylist()
        return [_result(row, objectives) for row in rows]

    def append_history(self, record: dict[str, Any]) -> None:
        with self.history_path.open("a") as file:
            file.write(json.dumps(record) + "\n")

    def history(self) -> list[dict[str, Any]]:
        if not self.history_path.exists():
            return []
        return [json.loads(line) for line in self.history_path.read_text().splitlines() if line.strip()]

    def truncate_history(self, completed: int) -> None:
        """Drop records past the checkpoint (a kill between the two writes leaves one)."""
        kept = [r for r in self.history() if r["generation"] < completed]
        _atomic_write(self.history_path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def write_population(self, population: dict[str, np.ndarray]) -> None:
        """The algorithm's final population (X and F as minimised), one row per individual."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({key: list(map(list, np.atleast_2d(value))) for key, value in population.items()})
        pq.write_table(table, self.root / "final_population.parquet")

    def read_population(self) -> dict[str, np.ndarray]:
        import pyarrow.parquet as pq

        table = pq.read_table(self.root / "final_population.parquet").to_pydict()
        return {key: np.array(value, dtype=np.float64) for key, value in table.items()}


def _result(row: dict[str, Any], objectives: Sequence[str]) -> EvaluationResult:
    scores = {name: row[score_column(name)] for name in objectives
              if row.get(score_column(name)) is not None}
    error = None
    if row.get("error_type"):
        error = ErrorInfo(type=row["error_type"], message=row.get("error_message") or "",
                          exitcode=row.get("exitcode"), signal=row.get("signal"))
    return EvaluationResult(
        generation_id=row["generation_id"], candidate_id=row["candidate_id"],
        status=Status(row["status"]), scores=scores, error=error,
        attempts=row.get("attempts") or 0, params=json.loads(row["params"]),
    )
