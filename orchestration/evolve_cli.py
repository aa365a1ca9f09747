"""``evofleet evolve`` (a whole multi-generation run, resumable) and ``evofleet report`` (its HTML page)."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from orchestration.messages import err, error

EXIT_COMPLETE, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
EXTRA_HINT = "pip install 'evofleet[evolve]' (pymoo and matplotlib)"
_GENERATION_ID = re.compile(r"^(?P<run>[A-Za-z0-9._-]+)-g\d{4,}$")


def _fail(message: str, code: int = EXIT_INVALID) -> typer.Exit:
    error(message)  # one line, whatever the width; data never read as markup
    return typer.Exit(code)


def _require_extra(command: str) -> None:
    missing = []
    for module in ("pymoo", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise _fail(f"evofleet {command} needs {' and '.join(missing)}: {EXTRA_HINT}")


def _live(run: Any, quiet: bool) -> None:
    """Poll the run until it ends: generation bar, candidates of the current one, front, HV."""
    if quiet:
        while not run.ended:
            time.sleep(0.2)
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err,
    )
    with progress:
        generations = progress.add_task("generations", total=run.spec.generations, info="")
        candidates = progress.add_task("candidates", total=run.spec.population_size, info="")
        while not run.ended:
            last = run.history[-1] if run.history else {}
            hv = last.get("hypervolume")
            igd = last.get("igd")
            info = f"front {last.get('front_size', 0)}" + (f"  HV {hv:.4f}" if hv is not None else "") \
                + (f"  IGD {igd:.4f}" if igd is not None else "")
            progress.update(generations, completed=len(run.history),
                            description=f"{run.spec.id} g{run.index:04d}", info=info)
            current = run.current
            if current is not None:
                stats = current.stats()
                progress.update(candidates, total=max(1, stats["total"]), completed=stats["collected"],
                                info=", ".join(f"{k} {v}" for k, v in stats["counts"].items() if v))
            time.sleep(0.2)
        progress.update(generations, completed=len(run.history))


def register(app: typer.Typer) -> None:
    """Add ``evolve`` and ``report`` to the ``evofleet`` app."""

    @app.command("evolve")
    def evolve_command(
        spec_path: Annotated[Path | None, typer.Argument(
            metavar="RUN_SPEC", help="Run spec, YAML or JSON (see README, 'Multi-generation runs').",
            show_default=False)] = None,
        resume_run: Annotated[str | None, typer.Option(
            "--resume", metavar="RUN", help="Continue a run from its last complete generation: its "
            "output directory, or its id under runs/.", show_default=False)] = None,
        out: Annotated[Path | None, typer.Option(
            "--out", "-o", help="Output directory (default: the spec's output, else runs/ID).",
            show_default=False)] = None,
        broker: Annotated[str | None, typer.Option(
            "--broker", help="Redis URL of a deployment; default $EVOFLEET_BROKER_URL, else one "
            "local cluster for the whole run.", show_default=False)] = None,
        workers: Annotated[int | None, typer.Option(min=1, help="Local mode: worker processes.",
                                                    show_default=False)] = None,
        concurrency: Annotated[int | None, typer.Option(min=1, help="Local mode: pool children per "
                                                        "worker.", show_default=False)] = None,
        generations: Annotated[int | None, typer.Option(
            min=1, help="Generations in all, instead of the spec's; with --resume, extends the run "
            "(a complete one too) or ends it sooner, not before what it has recorded.",
            show_default=False)] = None,
        seed: Annotated[int | None, typer.Option(
            help="A new run's seed, instead of the spec's.", show_default=False)] = None,
        run_id: Annotated[str | None, typer.Option(
            "--id", help="A new run's id, instead of the spec's: generations ID-g0000..., output "
            "runs/ID unless the spec or --out names one.", show_default=False)] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live view.")] = False,
    ) -> None:
        """Run a whole optimization: each generation is an evofleet generation RUN-g0000, RUN-g0001...

        The algorithm (pymoo's NSGA-II by default) asks for candidates, the fleet evaluates them, the results are told back. After every generation its results (Parquet), the history and a checkpoint go to the output directory; --resume continues after a crash of this process. Needs the evolve extra (pymoo, matplotlib).
        """  # noqa: E501 (typer keeps a docstring's line breaks: one line per paragraph)
        _require_extra("evolve")
        from orchestration.cli import _settings
        from orchestration.evolve.run import evolve, resume
        from orchestration.evolve.spec import load_run_spec
        from orchestration.spec_loading import SpecError

        if (spec_path is None) == (resume_run is None):
            raise _fail("give a run spec, or --resume RUN (not both)")
        if resume_run is not None and (seed is not None or run_id is not None):
            raise _fail("--seed and --id start a new run: a resumed run keeps its own")
        settings = _settings(workers, concurrency)
        overrides = {name: value for name, value in
                     (("generations", generations), ("seed", seed), ("id", run_id)) if value is not None}
        try:
            if resume_run is not None:
                run = resume(resume_run, broker_url=broker, settings=settings, generations=generations)
            else:
                assert spec_path is not None
                run = evolve(load_run_spec(spec_path, overrides=overrides), broker_url=broker,
                             settings=settings, output=out)
        except (SpecError, FileExistsError, FileNotFoundError) as exc:
            raise _fail(str(exc)) from None
        if not quiet:
            where = "a deployment" if (broker or settings.broker_url) else "one local cluster"
            err.print(f"run {run.spec.id} on {where}; output {run.store.root}")
        try:
            _live(run, quiet)
            status = run.wait()
        except KeyboardInterrupt:
            run.cancel()
            with contextlib.suppress(Exception):  # the loop's own error changes nothing here
                run.wait(60)
            err.print(f"interrupted; continue with `evofleet evolve --resume {run.store.root}`")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # the loop's error, e.g. a ResumeMismatch or a lost broker
            raise _fail(f"run {run.spec.id} stopped: {type(exc).__name__}: {exc}; fix it and "
                        f"continue with `evofleet evolve --resume {run.store.root}`", EXIT_FAILED) from None
        last = run.history[-1] if run.history else {}
        err.print(f"run {run.spec.id} {status}: {len(run.history)} generations recorded here, front "
                  f"{last.get('front_size')}, hypervolume {last.get('hypervolume')}, IGD {last.get('igd')}")
        err.print(f"report: {run.store.report_path}")
        raise typer.Exit(EXIT_COMPLETE)

    @app.command("report")
    def report_command(
        target: Annotated[str, typer.Argument(
            metavar="RUN|GEN", help="A run (its output directory or id under runs/), or a generation "
            "id: RUN-g0003 from the run's files, any other from Redis (--broker).")],
        out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file to write.",
                                                 show_default=False)] = None,
        broker: Annotated[str | None, typer.Option(
            "--broker", help="Redis URL, for a generation that is in no run directory.",
            show_default=False)] = None,
    ) -> None:
        """Write one self-contained HTML page (images embedded, no server) for a run or a generation."""
        _require_extra("report")
        path = make_report(target, out, broker)
        err.print(f"report: {path}")


def make_report(target: str, out: Path | None, broker: str | None) -> Path:
    """The report for ``target`` (see ``evofleet report --help``); raises typer.Exit on bad input."""
    from orchestration.evolve.report import write_generation_report, write_run_report
    from orchestration.evolve.store import RunStore, find_run_root

    root = find_run_root(target)
    if root is not None:
        return write_run_report(RunStore(root), out)
    match = _GENERATION_ID.match(target)
    run_root = find_run_root(match["run"]) if match else None
    if run_root is not None and RunStore(run_root).results_path(target).exists():
        store = RunStore(run_root)
        spec = store.read_spec()
        results = store.read_results(target, list(spec.objectives))
        return write_generation_report(out or store.root / f"report-{target}.html",
                                       f"evofleet generation {target}", results, spec, list(spec.objectives))
    from orchestration.cli import _ledger

    if not (broker or _env_broker()):
        raise _fail(f"no run or generation {target!r} here (runs/, or a run directory); for a "
                    "generation in Redis pass --broker")
    ledger = _ledger(target, broker)
    try:
        objectives = list(ledger.header().objectives)
        results = list(ledger.iter_results())
    finally:
        ledger.client.close()
    return write_generation_report(out or Path(f"report-{target}.html"), f"evofleet generation {target}",
                                   results, None, objectives)


def _env_broker() -> str | None:
    from orchestration.settings import LaunchSettings

    return LaunchSettings().broker_url
