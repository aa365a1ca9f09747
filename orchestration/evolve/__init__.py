"""Multi-generation runs on the fleet: ``evolve(run_spec) -> Run``, resumable, with history and pictures."""

from orchestration.evolve.run import ResumeMismatch, Run, evolve, resume
from orchestration.evolve.spec import RunSpec, load_run_spec

__all__ = ["ResumeMismatch", "Run", "RunSpec", "evolve", "load_run_spec", "resume"]
