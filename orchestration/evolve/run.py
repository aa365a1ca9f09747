"""The run loop: ask, evaluate one generation on the fleet, tell; checkpoint, history and pictures.

Resuming needs no pickle: a freshly seeded algorithm is told the recorded generations again
(from the run's Parquet files), which with a deterministic algorithm rebuilds its exact state.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import redis

from orchestration.admin_cli import delete_generation
from orchestration.api import attach, launch
from orchestration.evolve.algorithms import Optimizer, build_optimizer
from orchestration.evolve.history import Archive, generation_record, true_front
from orchestration.evolve.plots import front_plot, progress_plot, warm_up
from orchestration.evolve.spec import RunSpec, load_run_spec, run_spec_from_dict
from orchestration.evolve.store import RunStore, find_run_root
from orchestration.generation import Generation
from orchestration.integrations.pymoo import WAIT_SLACK_S, Fleet, candidate_id, in_row_order
from orchestration.settings import LaunchSettings
from orchestration.spec_loading import SpecError, spec_from_dict
from workers.contract import EvaluationResult, GenerationSpec
from workers.keys import RUN_CHECKPOINT
from workers.ledger import Ledger
from workers.redis_client import connect

logger = logging.getLogger(__name__)
GenerationCallback = Callable[[dict[str, Any]], None]


class ResumeMismatch(RuntimeError):
    """Replaying the recorded generations asked for other candidates than were evaluated."""


class Run:
    """A multi-generation run, driven in a background thread.

    ``history`` grows one record per generation; ``front()`` is the current Pareto front;
    ``wait()`` blocks until the end and returns ``complete`` or ``cancelled``.
    """

    def __init__(self, spec: RunSpec, store: RunStore, fleet: Fleet,
                 on_generation: GenerationCallback | None = None,
                 optimizer: Optimizer | None = None) -> None:
        self.spec = spec
        self.store = store
        self.fleet = fleet
        self.on_generation = on_generation
        self.history: list[dict[str, Any]] = []
        self.archive = Archive(spec.objectives)
        self.index = 0  # the generation being evaluated (or replayed)
        self.current: Generation | None = None
        self.replayed = 0
        self._template: GenerationSpec | None = None
        self._may_exist = True  # until a generation is not in Redis: see _evaluate
        self._client: redis.Redis | None = None
        # The last generation's files, written while the next one runs (matplotlib's import,
        # needed for the pictures, while the first one runs).
        self._pending: list[Callable[[], None]] = [warm_up]
        self._optimizer = optimizer  # a fresh one (none told yet) from evolve(), else built here
        self._status: str | None = None
        self._error: BaseException | None = None
        self._cancel = threading.Event()
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"evolve-{spec.id}", daemon=True)

    # -- public API ---------------------------------------------------------------
    def start(self) -> Run:
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends; ``complete`` or ``cancelled``. Raises the loop's error."""
        if not self._ended.wait(timeout):
            raise TimeoutError(f"run {self.spec.id} still running after {timeout}s")
        if self._error is not None:
            raise self._error
        assert self._status is not None
        return self._status

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def front(self) -> list[dict[str, Any]]:
        """The non-dominated ``ok`` results so far (ids, params, scores)."""
        return self.archive.front()

    def population(self) -> dict[str, np.ndarray] | None:
        """A pymoo algorithm's current population (X, and F as minimised); None otherwise."""
        return self._optimizer.population() if self._optimizer is not None else None

    def cancel(self) -> None:
        """Stop after cancelling the running generation; ``--resume`` re-runs it."""
        self._cancel.set()
        if self.current is not None:
            self.current.cancel()

    # -- the loop -------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._status = self._loop()
        except BaseException as exc:  # surfaced by wait()
            logger.exception("run %s failed", self.spec.id)
            self._error = exc
        finally:
            # Whatever ended the loop, the generations it finished get their files.
            self._pending = [job for job in self._pending if job is not warm_up]
            try:
                self._write_pending()
            except BaseException as exc:
                logger.exception("run %s: writing its files failed", self.spec.id)
                if self._error is None:
                    self._error = exc
            if self._client is not None:
                self._client.close()
            self.fleet.close()
            self._ended.set()

    def _loop(self) -> str:
        spec, store = self.spec, self.store
        completed = store.completed()
        store.truncate_history(completed)
        self.history = store.history()
        optimizer = self._optimizer = self._optimizer or build_optimizer(spec)
        objectives = list(spec.objectives)
        for index in range(spec.generations):
            if self._cancel.is_set():
                return "cancelled"
            self.index = index
            started = time.monotonic()
            params = optimizer.ask()
            generation_id = spec.generation_id(index)
            replayed = store.results_path(generation_id).exists()
            if replayed:
                results = store.read_results(generation_id, objectives)
                _check_replay(generation_id, params, results)
                self.replayed += 1
            else:
                evaluated = self._evaluate(index, params)
                if evaluated is None:
                    return "cancelled"
                results = evaluated
            optimizer.tell(results)
            F = self.archive.add(results)
            # Generation k's files are written once k+1 is launched, while it runs (ask k+1
            # needs only tell k); a resume collects a generation launched before its files.
            self._pending.append(partial(
                self._write, index, results, F, self.archive.snapshot(),
                time.monotonic() - started, write_results=not replayed, record=index >= completed,
            ))
            if replayed:
                self._write_pending()
        self._write_pending()
        population = optimizer.population()
        if population is not None:
            store.write_population(population)
        progress_plot(store.plots / "progress.png", self.history, objectives)
        from orchestration.evolve.report import write_run_report

        write_run_report(store)
        return "complete"

    def _write_pending(self) -> None:
        """Write what the last generation left to write, in order (each job at most once)."""
        while self._pending:
            self._pending.pop(0)()

    def _redis(self) -> redis.Redis:
        """One client for the run's own commands (the ledger check, the checkpoint mirror)."""
        if self._client is None:
            self._client = connect(self.fleet.url)
        return self._client

    def _evaluate(self, index: int, params: Sequence[dict[str, Any]]) -> list[EvaluationResult] | None:
        """One generation on the fleet; None when the run was cancelled meanwhile."""
        spec = self.spec
        generation_id = spec.generation_id(index)
        url = self.fleet.url
        # A launcher that died may have left its last two generations launched without their
        # files (see _write_pending): collect those, do not submit them again. Launches go in
        # order, so the first generation not in Redis ends the search.
        status = Ledger(self._redis(), generation_id).status() if self._may_exist else None
        if status == "cancelled":  # the run was stopped (Ctrl-C, cancel()): evaluate it again
            delete_generation(url, generation_id, force=False)
            status = None
        exists = self._may_exist = status is not None
        collected: list[EvaluationResult] = []  # handed over batch by batch: no second read
        if exists:
            generation = attach(generation_id, broker_url=url, settings=self.fleet.settings,
                                on_batch=collected.extend)
        else:
            candidates = [{"id": candidate_id(i), "params": p} for i, p in enumerate(params)]
            generation = launch(self._generation_spec(index), broker_url=url,
                                settings=self.fleet.settings, candidates=candidates,
                                on_batch=collected.extend)
        self.current = generation
        try:
            # The workers evaluate this generation meanwhile. (A writer thread did worse on two
            # cores: the GIL made ask, launch and the pictures slower than this order costs.)
            self._write_pending()
            ended = generation.wait(spec.deadline + WAIT_SLACK_S)
        finally:
            self.current = None
        if ended == "cancelled" and self._cancel.is_set():
            return None
        results = in_row_order(generation.results_or(collected), len(params))
        # The params echo makes each Parquet file self-contained (and checks an attached one).
        _check_replay(generation_id, params,
                      [r for r in results if r.params is not None])
        return [r if r.params is not None else r.model_copy(update={"params": dict(p)})
                for r, p in zip(results, params, strict=True)]

    def _generation_spec(self, index: int) -> GenerationSpec:
        """Generation ``index``'s spec: the run's, validated once, with its id. (Under
        ``chunk_size: auto`` each launch sizes chunks from what the last ones measured.)"""
        if self._template is None:
            self._template = spec_from_dict(self.spec.generation_fields(0), source=self.spec.id,
                                            allow_empty=True)
        return self._template.model_copy(update={"id": self.spec.generation_id(index)})

    def _write(self, index: int, results: Sequence[EvaluationResult], F: np.ndarray,
               archive: Archive, elapsed_s: float, *, write_results: bool, record: bool) -> None:
        """Generation ``index``'s files: its Parquet file, then (when not recorded before) its
        history line, the checkpoint, its front picture; ``archive`` as it was after ``index``."""
        spec, store = self.spec, self.store
        if write_results:
            store.write_results(spec.generation_id(index), results, list(spec.objectives))
        if record:
            self._record(index, results, F, archive, elapsed_s)

    def _mirror_checkpoint(self, completed: int) -> None:
        """Against a deployment, Redis also says how far the run got and where its files are
        (the files are the checkpoint: ``--resume`` replays them; nothing else is needed)."""
        if self.fleet.broker_url is None:
            return
        mirror = {"completed": completed, "generations": self.spec.generations,
                  "output": str(self.store.root.resolve()), "host": socket.gethostname(),
                  "updated_at": time.time()}
        try:
            self._redis().set(checkpoint_key(self.spec.id), json.dumps(mirror),
                              ex=self.fleet.settings.retention_s)
        except redis.RedisError as exc:  # the files are what counts; Redis only mirrors them
            logger.warning("run %s: checkpoint not mirrored to Redis: %s", self.spec.id, exc)

    def _record(self, index: int, results: Sequence[EvaluationResult], F: np.ndarray,
                archive: Archive, elapsed_s: float) -> None:
        spec, store = self.spec, self.store
        record = generation_record(spec, index, results, archive, elapsed_s)
        store.append_history(record)
        self.history.append(record)
        store.write_checkpoint(index + 1)
        self._mirror_checkpoint(index + 1)
        last = index == spec.generations - 1
        if len(spec.objectives) >= 2 and (last or (spec.plot_every and index % spec.plot_every == 0)):
            front_plot(
                store.plots / f"front-g{index:04d}.png",
                title=f"{spec.generation_id(index)}: front {record['front_size']}",
                names=list(spec.objectives), generation=F,
                archive=archive.F[: len(archive.F) - len(F)],
                front=archive.front_F,
                true_front=true_front(spec.front_name) if spec.front_name else None,
            )
        if self.on_generation is not None:
            self.on_generation(record)


def checkpoint_key(run_id: str) -> str:
    return RUN_CHECKPOINT.format(run_id=run_id)


def _check_replay(generation_id: str, params: Sequence[dict[str, Any]],
                  results: Sequence[EvaluationResult]) -> None:
    by_id = {candidate_id(i): p for i, p in enumerate(params)}
    for result in results:
        if by_id.get(result.candidate_id) != result.params:
            raise ResumeMismatch(
                f"{generation_id}: the algorithm asked for other candidates than were evaluated "
                f"({result.candidate_id}); was the spec, the seed or pymoo changed since?"
            )


def _where_in_redis(url: str, run_id: str) -> str:
    client = connect(url)
    try:
        mirror = client.get(checkpoint_key(run_id))
    except redis.RedisError:
        return ""
    finally:
        client.close()
    if not mirror:
        return ""
    found = json.loads(mirror)
    return (f"; Redis says run {run_id} ({found['completed']} of {found['generations']} generations) "
            f"has its files at {found['host']}:{found['output']}: resume there, or copy that directory")


def evolve(
    run_spec: RunSpec | dict[str, Any] | str | Path,
    *,
    broker_url: str | None = None,
    settings: LaunchSettings | None = None,
    output: str | Path | None = None,
    on_generation: GenerationCallback | None = None,
) -> Run:
    """Start a run (a RunSpec, a dict or a YAML/JSON path) and return it, running.

    With no broker URL one local cluster serves every generation. The output directory
    (``output``, the spec's ``output``, or ``runs/ID``) must not hold a run yet.
    """
    if isinstance(run_spec, str | Path):
        spec = load_run_spec(run_spec)
    elif isinstance(run_spec, dict):
        spec = run_spec_from_dict(run_spec)
    else:
        spec = run_spec
    store = RunStore(output or spec.output or Path("runs") / spec.id)
    optimizer = build_optimizer(spec)  # bad algorithm options fail here, before anything is created
    fleet = Fleet(broker_url, settings)
    if fleet.broker_url is not None:
        _refuse_used_id(fleet.broker_url, spec)
    store.create(spec)
    return Run(spec, store, fleet, on_generation, optimizer).start()


def _refuse_used_id(url: str, spec: RunSpec) -> None:
    """A new run whose first generation id is taken in this Redis would fail at its first launch."""
    client = connect(url)
    try:
        if Ledger(client, spec.generation_id(0)).exists():
            raise FileExistsError(
                f"generation {spec.generation_id(0)} already exists in Redis: give the run another "
                "id, or continue it with --resume"
            )
    finally:
        client.close()


def resume(
    run: str | Path,
    *,
    broker_url: str | None = None,
    settings: LaunchSettings | None = None,
    on_generation: GenerationCallback | None = None,
    generations: int | None = None,
) -> Run:
    """Continue a run from its last complete generation: a run directory, or an id under runs/.

    ``generations``: the run's new total, to extend a run (a complete one too) or end it sooner;
    not fewer than it has recorded. The run then ends as one started with that total would.
    """
    root = find_run_root(run) or Path(run)
    store = RunStore(root)
    if not store.spec_path.exists():
        url = broker_url or (settings or LaunchSettings()).broker_url
        raise FileNotFoundError(f"no run at {root} (a run directory holds run.json)"
                                + (_where_in_redis(url, str(run)) if url else ""))
    spec = store.read_spec()
    if generations is not None and generations != spec.generations:
        recorded = store.completed()
        if generations < max(recorded, 1):
            raise SpecError(f"run {spec.id} has recorded {recorded} generations: it cannot end "
                            f"at {generations}")
        spec = spec.model_copy(update={"generations": generations})
        store.write_spec(spec)
    return Run(spec, store, Fleet(broker_url, settings), on_generation).start()
