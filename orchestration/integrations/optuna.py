"""Optuna on the fleet: ``study.ask()`` a batch of trials, evaluate it as one generation, ``tell``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, Trial, TrialState

from orchestration.api import launch_and_collect
from orchestration.integrations.fleet import fleet, spec_fields
from orchestration.settings import LaunchSettings
from workers.contract import Candidate, EvaluationResult, GenerationSpec, Status

SearchSpace = Mapping[str, BaseDistribution] | Callable[[Trial], Mapping[str, Any]]
# Results are read once the generation ends; short flushes keep a small batch's latency low.
DEFAULT_OPTIONS: dict[str, Any] = {"batch_size": 500, "batch_timeout": 0.1}


def optimize(
    study: optuna.Study,
    evaluator: str,
    search_space: SearchSpace,
    *,
    n_trials: int,
    batch_size: int = 8,
    objectives: Sequence[str] | None = None,
    broker_url: str | None = None,
    workers: int | None = None,
    concurrency: int | None = None,
    generation_options: Mapping[str, Any] | None = None,
    settings: LaunchSettings | None = None,
) -> list[FrozenTrial]:
    """Run ``n_trials`` trials of ``study``, ``batch_size`` at a time, each batch one generation.

    Failure contract: a trial whose candidate ends ``error``, ``timeout``, ``crashed`` or
    ``cancelled`` is told ``TrialState.FAIL``, with user attributes ``evofleet_status``,
    ``evofleet_error`` (type: message) and ``evofleet_attempts``; the study goes on. Every
    trial carries ``evofleet_generation``. A generation that cannot be launched fails its
    batch's trials the same way and raises (nothing is left RUNNING in the storage).

    Args:
        study: Any study: single or multi-objective, any sampler, in memory or RDB storage
            (several launchers may share one; each asks and tells its own trials).
        evaluator: A registered evofleet evaluator or ``module:function``; it gets the trial's
            params as ``candidate.params`` and ``{"trial": number, "study": name}`` as metadata.
        search_space: Name -> Optuna distribution (``study.ask(fixed_distributions)``), or a
            define-by-run function ``space(trial) -> params`` (JSON) for conditional spaces.
        n_trials: Trials to run in all.
        batch_size: Trials asked before a generation is launched.
        objectives: Objective names in the order of ``study.directions``; ``["value"]`` by
            default for a single-objective study (the evaluator may then return a bare number).
        broker_url: A deployment; None (and no ``EVOFLEET_BROKER_URL``): one local cluster for
            the whole run.
        workers: Local mode: worker processes.
        concurrency: Local mode: pool children per worker.
        generation_options: GenerationSpec fields for every generation (time limits, retries).
        settings: Launcher settings.

    Returns:
        The trials this call ran, as told.
    """
    if n_trials < 1 or batch_size < 1:
        raise ValueError("optimize: n_trials and batch_size must be >= 1")
    names = _objective_names(study, objectives)
    directions = {
        name: "max" if direction == StudyDirection.MAXIMIZE else "min"
        for name, direction in zip(names, study.directions, strict=True)
    }
    options = spec_fields(DEFAULT_OPTIONS, generation_options)
    GenerationSpec(evaluator=evaluator, objectives=directions, **options)  # bad options: now
    told: list[FrozenTrial] = []
    with fleet(broker_url, settings=settings, workers=workers, concurrency=concurrency) as url:
        while len(told) < n_trials:
            trials = [_ask(study, search_space) for _ in range(min(batch_size, n_trials - len(told)))]
            spec = GenerationSpec(evaluator=evaluator, objectives=directions, **options)
            told += _run_batch(study, spec, trials, names, url, settings)
    return told


def _objective_names(study: optuna.Study, objectives: Sequence[str] | None) -> list[str]:
    if objectives is None:
        if len(study.directions) > 1:
            raise ValueError(
                f"optimize: the study has {len(study.directions)} objectives; name them with "
                "objectives=[...] in the order of study.directions"
            )
        return ["value"]
    names = list(objectives)
    if len(names) != len(study.directions) or len(set(names)) != len(names):
        raise ValueError(
            f"optimize: objectives {names} must be {len(study.directions)} distinct names, one "
            "per study direction"
        )
    return names


def _ask(study: optuna.Study, search_space: SearchSpace) -> tuple[Trial, dict[str, Any]]:
    if isinstance(search_space, Mapping):
        trial = study.ask(dict(search_space))
        return trial, dict(trial.params)
    trial = study.ask()
    try:
        params = dict(search_space(trial))
    except Exception:
        study.tell(trial, state=TrialState.FAIL)
        raise
    return trial, params


def _run_batch(
    study: optuna.Study,
    spec: GenerationSpec,
    trials: list[tuple[Trial, dict[str, Any]]],
    names: list[str],
    url: str,
    settings: LaunchSettings | None,
) -> list[FrozenTrial]:
    by_id = {f"trial-{trial.number}": trial for trial, _ in trials}
    try:
        candidates = [
            Candidate(id=f"trial-{trial.number}", params=params,
                      metadata={"trial": trial.number, "study": study.study_name})
            for trial, params in trials
        ]
        results = {result.candidate_id: result for result in launch_and_collect(
            spec, candidates, broker_url=url, settings=settings)}
    except Exception as exc:
        for trial in by_id.values():
            trial.set_user_attr("evofleet_status", "not launched")
            trial.set_user_attr("evofleet_error", f"{type(exc).__name__}: {exc}")
            study.tell(trial, state=TrialState.FAIL)
        raise
    told = []
    for candidate_id, trial in by_id.items():
        trial.set_user_attr("evofleet_generation", spec.id)
        told.append(_tell(study, trial, results.get(candidate_id), names))
    return told


def _tell(
    study: optuna.Study, trial: Trial, result: EvaluationResult | None, names: list[str]
) -> FrozenTrial:
    if result is not None and result.status is Status.ok:
        values = [result.scores[name] for name in names]
        return study.tell(trial, values[0] if len(values) == 1 else values)
    status = result.status.value if result is not None else "missing"
    error = result.error if result is not None else None
    trial.set_user_attr("evofleet_status", status)
    trial.set_user_attr("evofleet_error", f"{error.type}: {error.message}" if error else status)
    trial.set_user_attr("evofleet_attempts", result.attempts if result is not None else 0)
    return study.tell(trial, state=TrialState.FAIL)
