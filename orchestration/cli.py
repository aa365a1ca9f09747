"""The ``evofleet`` command line. Exit codes: 0 complete, 2 invalid input, 3 partial or cancelled,
4 complete but no candidate ended ok, 130 interrupted."""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from orchestration.api import BrokerUnreachable, attach, check_broker, launch, launcher_app
from orchestration.generation import CollectorBusy, Generation
from orchestration.messages import err, error
from orchestration.progress import FailureTally, ProgressDisplay, print_summary
from orchestration.settings import LaunchSettings
from orchestration.sinks import check_output, open_sink, summary_path, write_summary
from orchestration.spec_loading import SpecError, load_generation, spec_from_dict
from workers.contract import PRIORITIES, Status
from workers.ledger import RUNNING, GenerationNotFound, Ledger
from workers.redis_client import connect
from workers.summary import summarize

EXIT_COMPLETE, EXIT_INVALID, EXIT_PARTIAL, EXIT_NONE_OK, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
LOCAL_STOP_S = 30.0  # Ctrl-C in local mode: the longest the cancel and shutdown may take

app = typer.Typer(
    help="Evaluate a generation of optimizer candidates on Celery workers, with one result "
    "per candidate whatever happens to the workers.",
    epilog="Exit codes: 0 complete; 2 invalid input or settings, nothing submitted; 3 partial "
    "(deadline) or cancelled; 4 complete but no candidate ended ok (the most common errors are "
    "printed); 130 interrupted. Settings: EVOFLEET_* environment variables (see README).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(markup=False, emoji=False)  # data (ids, names) is never Rich markup

BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="Redis URL of a deployment (redis://:password@host:6379/0, rediss:// for TLS). "
        "Default: $EVOFLEET_BROKER_URL. launch and demo run in local mode without one; status, "
        "results, cancel and resume need one (a local generation ends with its launcher).",
        show_default=False,
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Results file: .jsonl, .parquet or .csv (launch in local "
                 "mode: GEN.jsonl here by default).", show_default=False),
]
FormatOption = Annotated[
    str | None,
    typer.Option("--format", help="jsonl | parquet | csv (default: from --out's extension)."),
]
GenArgument = Annotated[
    str, typer.Argument(metavar="GEN", help="Generation id (the spec's id, printed by launch).")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or tables.")]
WorkersOption = Annotated[
    int | None,
    typer.Option(min=1, help="Local mode: worker processes. [default: $EVOFLEET_LOCAL_WORKERS or 1]",
                 show_default=False),
]
ConcurrencyOption = Annotated[
    int | None,
    typer.Option(min=1, help="Local mode: pool children per worker. "
                 "[default: $EVOFLEET_LOCAL_CONCURRENCY or 2]", show_default=False),
]


def _version(show: bool) -> None:
    if show:
        typer.echo(f"evofleet {importlib.metadata.version('evofleet')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


def _fail(message: str, code: int = EXIT_INVALID) -> typer.Exit:
    error(message)
    return typer.Exit(code)


def _settings(workers: int | None = None, concurrency: int | None = None) -> LaunchSettings:
    overrides: dict[str, Any] = {}
    if workers is not None:
        overrides["local_workers"] = workers
    if concurrency is not None:
        overrides["local_concurrency"] = concurrency
    return LaunchSettings(**overrides)


def _deployment_url(broker: str | None) -> str:
    url = broker or LaunchSettings().broker_url
    if not url:
        raise _fail("this command needs a deployment: pass --broker or set EVOFLEET_BROKER_URL")
    try:
        check_broker(url)
    except BrokerUnreachable as exc:
        raise _fail(str(exc)) from None
    return url


def _announce(generation: Generation, out: Path | None) -> None:
    """One line at the start: the id that status, resume and cancel take, and where results go."""
    where = (f"results to {out}" if out is not None else
             f"no results file (`evofleet results {generation.id} --out FILE` writes one)")
    plural = "" if generation.total == 1 else "s"
    err.print(f"generation {generation.id}: {generation.total} candidate{plural}, {where}")


def _run(generation: Generation, out: Path | None, quiet: bool, tally: FailureTally) -> int:
    """Show progress until the generation ends; return the exit code (see the module docstring)."""
    display = None if quiet else ProgressDisplay(generation.total, console=err)
    if display is not None:
        tally.forward = display.on_batch
        display.__enter__()
    interrupted = False
    try:
        status = generation.wait()
    except KeyboardInterrupt:
        if not generation.local:
            err.print("interrupted: the generation goes on; `evofleet resume "
                      f"{generation.id}` re-attaches, `evofleet cancel {generation.id}` stops it")
            raise typer.Exit(130) from None
        interrupted = True
        status = _cancel_local(generation)
    finally:
        if display is not None:
            display.__exit__(None, None, None)
    summary = generation.summary() or {}
    if not quiet:
        print_summary(summary, console)
    if out is not None:
        written = write_summary(summary_path(out), summary)
        err.print(f"results: {out}   summary: {written}")
    if generation.artifacts_written:
        err.print(f"artifacts of {generation.artifacts_written} candidate(s): {generation.artifact_store}")
    if interrupted:
        return EXIT_INTERRUPTED
    counts = summary.get("counts", {})
    none_ok = bool(generation.total) and not counts.get("ok")
    if none_ok and status != "cancelled":
        failed = ", ".join(f"{name} {n}" for name, n in counts.items() if n)
        error(f"no candidate ended ok ({failed}); the most common failures:")
        for line in tally.most_common(3):
            err.print("  " + line)
    if status != "complete":
        return EXIT_PARTIAL
    return EXIT_NONE_OK if none_ok else EXIT_COMPLETE


def _cancel_local(generation: Generation) -> str:
    """Ctrl-C in local mode: nothing outlives the launcher, so cancel, keep what was recorded,
    and stop the private Redis and workers (the collector's end does that)."""
    err.print("interrupted: cancelling the local generation (local mode keeps nothing after it "
              "exits); stopping its workers...")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a few seconds, bounded below
    try:
        generation.close(LOCAL_STOP_S)
    finally:
        signal.signal(signal.SIGINT, previous)
    return "cancelled"


def _check_output(out: Path | None, fmt: str | None) -> None:
    if out is None:
        if fmt is not None:
            raise _fail("--format needs --out: there is no results file to write")
        return
    try:
        check_output(out, fmt)
    except ValueError as exc:
        raise _fail(str(exc)) from None


@app.command("launch")
def launch_command(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="Generation spec, YAML or JSON.")],
    out: OutOption = None,
    fmt: FormatOption = None,
    broker: BrokerOption = None,
    workers: WorkersOption = None,
    concurrency: ConcurrencyOption = None,
    quiet: QuietOption = False,
) -> None:
    """Run a generation: against a deployment when a broker is set, else in local mode.

    The spec format (YAML or JSON) is in README.md, "A generation spec"; examples/ has some.
    Local mode keeps nothing after it exits, so without --out it writes GEN.jsonl here.
    """
    settings = _settings(workers, concurrency)
    local = not (broker or settings.broker_url)
    try:
        spec, population = load_generation(spec_path)
    except SpecError as exc:
        raise _fail(str(exc)) from None
    if out is None and local:  # its Redis stops with it: the results must land somewhere
        suffix = (fmt or "jsonl").lower()
        out = Path(f"{spec.id}.{'jsonl' if suffix == 'json' else suffix}")
    _check_output(out, fmt)  # after the spec: a bad spec leaves no file, whatever checking does
    if local and not quiet:
        err.print("local mode: starting a private redis-server and local worker(s)...")
    tally = FailureTally()
    try:
        generation = launch(spec, broker_url=broker, settings=settings, out=out, fmt=fmt,
                            candidates=population, on_batch=tally.on_batch)
        del spec, population  # a large population must not stay alive for the whole run
    except ValueError as exc:  # e.g. the generation id is already in use
        raise _fail(str(exc)) from None
    _announce(generation, out)
    raise typer.Exit(_run(generation, out, quiet, tally))


def demo_spec(candidates: int, seed: int) -> dict[str, Any]:
    """A ZDT1 generation: random points plus points on the Pareto set, mixed priorities."""
    rng = random.Random(seed)
    rows = []
    for index in range(candidates):
        x = [rng.random() for _ in range(10)]
        if index % 4 == 0:  # on the Pareto set: x[1:] = 0
            x = [x[0]] + [0.0] * 9
        rows.append(
            {"id": f"c{index:05d}", "priority": PRIORITIES[index % 4], "params": {"x": x}}
        )
    return {
        "id": f"demo-{os.getpid()}-{rng.randrange(10**6):06d}",
        "evaluator": "zdt1",
        "objectives": {"f1": "min", "f2": "min"},
        "candidates": rows,
        "batch_size": 25,
        "batch_timeout": 0.5,
        "soft_time_limit": 30,
        "time_limit": 60,
        "deadline": 600,
    }


@app.command()
def demo(
    candidates: Annotated[int, typer.Option(min=1, help="Population size.")] = 200,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results file.")] = Path(
        "demo-results.jsonl"
    ),
    broker: BrokerOption = None,
    workers: WorkersOption = None,
    concurrency: ConcurrencyOption = None,
    seed: Annotated[int, typer.Option(help="Random seed of the population.")] = 0,
    quiet: QuietOption = False,
) -> None:
    """Run a built-in ZDT1 generation (local mode unless a broker is set) and print its summary."""
    _check_output(out, None)
    spec = spec_from_dict(demo_spec(candidates, seed), source="demo")
    settings = _settings(workers, concurrency)
    if not (broker or settings.broker_url) and not quiet:
        err.print("local mode: starting a private redis-server and a local worker...")
    tally = FailureTally()
    generation = launch(spec, broker_url=broker, settings=settings, out=out,
                        on_batch=tally.on_batch)
    _announce(generation, out)
    raise typer.Exit(_run(generation, out, quiet, tally))


@app.command()
def resume(
    generation_id: GenArgument,
    out: OutOption = None,
    fmt: FormatOption = None,
    broker: BrokerOption = None,
    quiet: QuietOption = False,
) -> None:
    """Re-attach to a generation whose launcher died: submit the rest, collect every result."""
    _check_output(out, fmt)
    url = _deployment_url(broker)
    tally = FailureTally()
    try:
        generation = attach(generation_id, broker_url=url, out=out, fmt=fmt,
                            on_batch=tally.on_batch)
    except GenerationNotFound:
        raise _fail(f"no generation {generation_id!r} in Redis (never launched, or expired)") from None
    except CollectorBusy as exc:
        raise _fail(f"{exc}; it is still running, nothing to resume") from None
    raise typer.Exit(_run(generation, out, quiet, tally))


def _ledger(generation_id: str, broker: str | None) -> Ledger:
    ledger = Ledger(connect(_deployment_url(broker)), generation_id)
    if not ledger.exists():
        raise _fail(f"no generation {generation_id!r} in Redis (never launched, or expired)")
    return ledger


@app.command()
def status(
    generation_id: GenArgument,
    broker: BrokerOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts per status, in flight, queued per priority, elapsed time and ETA."""
    report = status_report(_ledger(generation_id, broker))
    if as_json:
        console.print_json(json.dumps(report))
        return
    table = Table(title=f"generation {generation_id}: {report['status']}")
    table.add_column("field")
    table.add_column("value", justify="right")
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.1f}"
        table.add_row(key, str(value))
    console.print(table)


def status_report(ledger: Ledger) -> dict[str, Any]:
    """A generation's progress from its state hash."""
    state = ledger.state()
    total = int(state.get("total", 0))
    recorded = int(state.get("recorded", 0))
    submitted = int(state.get("submitted", 0))
    created = float(state.get("created_at", time.time()))
    end = float(state.get("finished_at") or time.time())
    elapsed = end - created
    rate = recorded / elapsed if elapsed > 0 else 0.0
    eta = (total - recorded) / rate if rate > 0 and recorded < total else None
    return {
        "status": state.get("status", "unknown"),
        "total": total,
        "submitted": submitted,
        "recorded": recorded,
        "in_flight": max(0, submitted - recorded),
        "counts": {s.value: int(state.get(f"n_{s.value}", 0)) for s in Status},
        "queued_or_running": {
            p: max(0, int(state.get(f"s_{p}", 0)) - int(state.get(f"r_{p}", 0))) for p in PRIORITIES
        },
        "elapsed_s": elapsed,
        "eta_s": eta,
    }


@app.command()
def results(
    generation_id: GenArgument,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results file: .jsonl, .parquet, .csv.")],
    fmt: FormatOption = None,
    broker: BrokerOption = None,
) -> None:
    """Write every recorded result of a generation, in the order they were recorded."""
    _check_output(out, fmt)
    ledger = _ledger(generation_id, broker)
    sink = open_sink(out, list(ledger.header().objectives), fmt)
    count = 0
    try:
        for batch in iter_stream(ledger):
            sink.write(batch)
            count += len(batch)
    finally:
        sink.close()
    summary = ledger.summary()
    if summary is not None:
        write_summary(summary_path(out), summary)
    err.print(f"{count} results written to {out}")


def iter_stream(ledger: Ledger, batch: int = 1000) -> Any:
    """The generation's results in recording order, a batch at a time."""
    last = "-"
    while True:
        entries: list[Any] = list(ledger.client.xrange(ledger.keys.stream, min=last, count=batch) or [])
        if not entries:
            return
        last = "(" + entries[-1][0].decode()
        yield ledger.stream_results(entries)


@app.command()
def cancel(
    generation_id: GenArgument,
    broker: BrokerOption = None,
) -> None:
    """Stop a generation: queued candidates are skipped, those without a result become cancelled."""
    ledger = _ledger(generation_id, broker)
    before = ledger.status()  # close() answers "cancelled" for one cancelled earlier, too
    ended = ledger.close("cancelled") if before in (RUNNING, None) else before
    if before not in (RUNNING, None) or ended != "cancelled":
        err.print(f"generation {generation_id} had already ended: {ended}")
        raise typer.Exit(EXIT_COMPLETE)
    count = ledger.record_missing(Status.cancelled, "generation cancelled")
    summary = summarize(ledger.iter_results(), ledger.header().objectives, ledger.state())
    summary["status"] = "cancelled"
    ledger.write_summary(summary, LaunchSettings().retention_s)
    err.print(f"generation {generation_id} cancelled: {count} candidates recorded as cancelled")


from orchestration.worker_cli import register as _register_worker_commands  # noqa: E402

_register_worker_commands(app)
from orchestration.admin_cli import register as _register_admin_commands  # noqa: E402

_register_admin_commands(app)

from orchestration.cleanup_cli import register as _register_cleanup  # noqa: E402

_register_cleanup(app)

from orchestration.evolve_cli import register as _register_evolve_commands  # noqa: E402

_register_evolve_commands(app)


__all__ = ["app", "launcher_app"]
