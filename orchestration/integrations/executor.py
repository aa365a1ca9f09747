"""``FleetExecutor``: a ``concurrent.futures.Executor`` whose calls are candidates of generations."""

from __future__ import annotations

import atexit
import functools
import importlib
import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from orchestration.api import launch
from orchestration.generation import Generation
from orchestration.integrations.fleet import fleet, spec_fields
from orchestration.settings import LaunchSettings
from workers.contract import Candidate, EvaluationResult, GenerationSpec, Status
from workers.evaluators.call import to_json
from workers.outputs import load_outputs

logger = logging.getLogger(__name__)

RAISE = "raise"
OBJECTIVE = "value"
# Results come back in batches; a short flush keeps a single call's latency low.
DEFAULT_OPTIONS: dict[str, Any] = {"batch_size": 1000, "batch_timeout": 0.05, "chunk_size": "auto"}
GATHER_CAP_S = 0.25  # a steady trickle of submits still launches at least this often


class EvaluationFailed(Exception):
    """A call did not end ``ok`` on the fleet; ``result`` holds its status, error and attempts."""

    def __init__(self, result: EvaluationResult) -> None:
        error = result.error
        detail = f": {error.type}: {error.message}" if error is not None else ""
        super().__init__(
            f"call {result.candidate_id} of generation {result.generation_id} ended "
            f"{result.status.value}{detail} (attempts: {result.attempts})"
        )
        self.result = result

    @property
    def status(self) -> Status:
        return self.result.status


@dataclass(frozen=True)
class Target:
    """A function as the workers will import it, with any ``functools.partial`` arguments."""

    path: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)


def import_path(fn: Callable[..., Any]) -> Target:
    """``fn`` as ``module:qualname`` that a worker can import, checked here.

    A ``functools.partial`` of such a function is accepted: its arguments travel as JSON.
    Raises TypeError for a lambda, a nested function or an object without an import path,
    ValueError when the path does not import or does not lead back to ``fn``.
    """
    if isinstance(fn, functools.partial):
        inner = import_path(fn.func)
        return Target(inner.path, (*inner.args, *fn.args), {**inner.kwargs, **fn.keywords})
    if not callable(fn):
        raise TypeError(f"FleetExecutor: {fn!r} is not callable")
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise TypeError(
            f"FleetExecutor: {fn!r} has no import path; pass a module-level function "
            "(workers import it by module:name, nothing is pickled)"
        )
    if "<lambda>" in qualname:
        raise TypeError(
            "FleetExecutor: a lambda cannot be named by import path; define the function with "
            "def at module level in a module the workers can import"
        )
    if "<locals>" in qualname:
        raise TypeError(
            f"FleetExecutor: {qualname} is defined inside a function; move it to module level "
            "in a module the workers can import"
        )
    if module == "__main__":
        return Target(f"{_main_module_name(qualname)}:{qualname}")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception as exc:
        raise ValueError(
            f"FleetExecutor: {module}:{qualname} does not import ({type(exc).__name__}: {exc})"
        ) from None
    if found is not fn and found != fn:
        raise ValueError(
            f"FleetExecutor: {module}:{qualname} does not lead back to {fn!r} (a bound method, "
            "or a rebound name); pass a module-level function"
        )
    return Target(f"{module}:{qualname}")


def _main_module_name(qualname: str) -> str:
    """A script's function is importable only when it was run as ``python -m package.module``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    if not name or name == "__main__":
        raise ValueError(
            f"FleetExecutor: {qualname} is defined in the script being run (__main__), which "
            "the workers cannot import; move it into a module, or run the script as "
            "python -m package.module"
        )
    return str(name)


@dataclass
class _Call:
    future: Future[Any]
    params: dict[str, Any]


class FleetExecutor(Executor):
    """A ``concurrent.futures.Executor`` that runs each call as a candidate on the fleet.

    Failure contract: a call whose candidate ends ``error``, ``timeout``, ``crashed`` or
    ``cancelled`` makes its future raise ``EvaluationFailed`` (``.result`` is the
    EvaluationResult: status, error, attempts), or return ``on_error`` when that is not
    ``"raise"``. A generation that fails as a whole fails its remaining futures with its error.

    ``fn`` is named by import path (a module-level function, or a ``functools.partial`` of one),
    never pickled; arguments and return values are JSON: tuples become lists, numpy arrays
    and scalars become lists and Python numbers (so Nevergrad's array arguments arrive as
    lists), anything else is a TypeError at ``submit``. Calls submitted less than ``gather_s``
    apart, or by one ``map``, are one generation (up to ``max_generation_size``).
    With no broker URL one local cluster runs for the executor's life.
    """

    def __init__(
        self,
        broker_url: str | None = None,
        *,
        workers: int | None = None,
        concurrency: int | None = None,
        on_error: Any = RAISE,
        gather_s: float = 0.02,
        max_generation_size: int = 10_000,
        generation_options: Mapping[str, Any] | None = None,
        settings: LaunchSettings | None = None,
    ) -> None:
        """Connect to ``broker_url`` (or ``EVOFLEET_BROKER_URL``), or start a local cluster.

        Args:
            broker_url: A deployment's Redis URL; None with no ``EVOFLEET_BROKER_URL``: local mode.
            workers: Local mode: worker processes.
            concurrency: Local mode: pool children per worker.
            on_error: ``"raise"``, or the value a failed call's future returns instead.
            gather_s: A pending call waits for others until submits pause this long (at most
                0.25 s in all): then they are launched as one generation.
            max_generation_size: Calls per generation, at most.
            generation_options: GenerationSpec fields for every generation (``soft_time_limit``,
                ``time_limit``, ``crash_retries``, ``deadline``, ``chunk_size``...).
            settings: Launcher settings.
        """
        if max_generation_size < 1 or gather_s < 0:
            raise ValueError("FleetExecutor: max_generation_size must be >= 1 and gather_s >= 0")
        self.on_error = on_error
        self.gather_s = gather_s
        self.max_generation_size = max_generation_size
        self._options = spec_fields(DEFAULT_OPTIONS, generation_options)
        self._new_spec()  # a bad option is an error now, not at the first submit
        self._settings = settings or LaunchSettings()
        self._lock = threading.Condition()
        self._pending: list[_Call] = []
        self._first_pending_at = 0.0
        self._last_pending_at = 0.0
        self._running: dict[str, Generation] = {}
        self._generation_ids: list[str] = []
        self._shutdown = False
        self._cancelled = False
        self._ids = itertools.count()
        self._stack = ExitStack()
        self.broker_url = self._stack.enter_context(
            fleet(broker_url, settings=self._settings, workers=workers, concurrency=concurrency)
        )
        self._dispatcher = threading.Thread(target=self._dispatch, name="evofleet-executor", daemon=True)
        self._dispatcher.start()
        atexit.register(self._at_exit)

    @property
    def generation_ids(self) -> list[str]:
        """The generations launched so far, in order."""
        with self._lock:
            return list(self._generation_ids)

    # -- the Executor interface ---------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` on the fleet; its future returns the JSON return value."""
        call = self._call(import_path(fn), args, kwargs)
        self._enqueue([call])
        return call.future

    def submit_batch(
        self, fn: Callable[..., Any], argument_lists: Iterable[Sequence[Any]]
    ) -> list[Future[Any]]:
        """``submit(fn, *arguments)`` for each entry, all launched as one generation."""
        target = import_path(fn)
        calls = [self._call(target, arguments, {}) for arguments in argument_lists]
        self._enqueue(calls)
        return [call.future for call in calls]

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """``fn`` over the zipped iterables as one generation; results in input order.

        ``timeout`` counts from this call (TimeoutError when a result is not there by then);
        ``chunksize`` is accepted for compatibility: the fleet chunks by measured run time.
        """
        end = None if timeout is None else time.monotonic() + timeout
        return _in_order(self.submit_batch(fn, zip(*iterables, strict=False)), end)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; with ``cancel_futures``, cancel what has not started.

        Pending calls are cancelled outright; launched generations are cancelled, so their
        unstarted calls end ``cancelled`` (EvaluationFailed, or ``on_error``). With ``wait``,
        block until every generation has ended and a local cluster is stopped.
        """
        running: list[Generation] = []
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                self._cancelled = True
                for call in self._pending:
                    call.future.cancel()
                self._pending.clear()
                running = list(self._running.values())
            self._lock.notify_all()
        for generation in running:
            generation.cancel()
        if wait:
            self._dispatcher.join()

    # -- internals ------------------------------------------------------------------
    def _call(self, target: Target, args: Sequence[Any], kwargs: Mapping[str, Any]) -> _Call:
        try:
            params = {
                "fn": target.path,
                "args": to_json([*target.args, *args], "args"),
                "kwargs": to_json({**target.kwargs, **kwargs}, "kwargs"),
            }
        except TypeError as exc:
            raise TypeError(
                f"FleetExecutor: arguments of {target.path} must be JSON (numpy arrays and "
                f"scalars are converted): {exc}"
            ) from None
        return _Call(Future(), params)

    def _enqueue(self, calls: list[_Call]) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            now = time.monotonic()
            if not self._pending:
                self._first_pending_at = now
            self._last_pending_at = now
            self._pending.extend(calls)
            self._lock.notify_all()

    def _new_spec(self) -> GenerationSpec:
        return GenerationSpec(evaluator="call", objectives={OBJECTIVE: "min"}, **self._options)

    def _dispatch(self) -> None:
        """Gather pending calls into generations until shutdown, then wait for them all."""
        try:
            while (calls := self._next_calls()) is not None:
                self._launch(calls)
            with self._lock:
                while self._running:
                    self._lock.wait()
        finally:
            self._stack.close()
            atexit.unregister(self._at_exit)

    def _next_calls(self) -> list[_Call] | None:
        """The next generation's calls (waiting for the gathering window); None at shutdown."""
        with self._lock:
            while True:
                if self._pending:
                    # Launch once submits pause for gather_s (an optimizer asking its batch
                    # one call at a time), or the oldest has waited GATHER_CAP_S.
                    left = min(self._last_pending_at + self.gather_s,
                               self._first_pending_at + max(GATHER_CAP_S, self.gather_s)) - time.monotonic()
                    if left <= 0 or self._shutdown or len(self._pending) >= self.max_generation_size:
                        break
                    self._lock.wait(left)
                elif self._shutdown:
                    return None
                else:
                    self._lock.wait()
            calls = self._pending[: self.max_generation_size]
            del self._pending[: self.max_generation_size]
            self._first_pending_at = self._last_pending_at = time.monotonic()
            return calls

    def _launch(self, calls: list[_Call]) -> None:
        calls = [call for call in calls if call.future.set_running_or_notify_cancel()]
        if not calls:
            return
        futures = {str(next(self._ids)): call.future for call in calls}
        try:
            spec = self._new_spec()
            candidates = [
                Candidate(id=candidate_id, params=call.params)
                for candidate_id, call in zip(futures, calls, strict=True)
            ]
            generation = launch(
                spec, broker_url=self.broker_url, settings=self._settings, candidates=candidates,
                on_batch=functools.partial(self._resolve, futures),
            )
        except Exception as exc:  # e.g. the broker went away: these calls fail, others may not
            for future in futures.values():
                future.set_exception(exc)
            return
        with self._lock:
            self._running[spec.id] = generation
            self._generation_ids.append(spec.id)
            cancelled = self._cancelled
        if cancelled:
            generation.cancel()
        threading.Thread(
            target=self._watch, args=(generation, futures), name=f"evofleet-watch-{spec.id}",
            daemon=True,
        ).start()

    def _resolve(self, futures: dict[str, Future[Any]], batch: Sequence[EvaluationResult]) -> None:
        """on_batch: settle each result's future (runs in the generation's collector thread)."""
        for result in batch:
            future = futures.pop(result.candidate_id, None)
            if future is None:
                continue
            if result.status is Status.ok:
                try:
                    future.set_result(load_outputs(result))
                except Exception as exc:  # a stored return value that cannot be read back
                    future.set_exception(exc)
            elif self.on_error == RAISE:
                future.set_exception(EvaluationFailed(result))
            else:
                future.set_result(self.on_error)

    def _watch(self, generation: Generation, futures: dict[str, Future[Any]]) -> None:
        """Once the generation ends, fail any future it left unsettled (a collector error)."""
        error: BaseException | None = None
        try:
            generation.wait()
        except BaseException as exc:
            error = exc
        for candidate_id, future in list(futures.items()):
            future.set_exception(
                error or RuntimeError(f"generation {generation.id} ended without result {candidate_id}")
            )
        futures.clear()
        with self._lock:
            self._running.pop(generation.id, None)
            self._lock.notify_all()

    def _at_exit(self) -> None:
        # The interpreter is ending: nothing will read these results, and a local cluster
        # must not outlive the program.
        self.shutdown(wait=True, cancel_futures=True)


def _in_order(futures: list[Future[Any]], end: float | None) -> Iterator[Any]:
    """Results in submission order; the rest are cancelled if the consumer stops early."""
    try:
        futures.reverse()
        while futures:
            future = futures.pop()
            yield future.result() if end is None else future.result(end - time.monotonic())
    finally:
        for future in futures:
            future.cancel()
