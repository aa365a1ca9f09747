"""``evofleet worker`` (start a GPU node's celery worker) and ``evofleet workers`` (list them)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from orchestration.api import BrokerUnreachable, check_broker
from orchestration.local_cluster import worker_command
from orchestration.settings import LaunchSettings
from workers.contract import PRIORITIES
from workers.devices import GPUS_ENV, MEMORY_FRACTION_ENV, memory_fraction, parse_gpu_list
from workers.keys import WORKER_SLOTS
from workers.redis_client import connect

console = Console(markup=False, emoji=False)  # data (ids, names) is never Rich markup


VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
DEFAULT_BROKER = "redis://localhost:6379/0"  # as Celery's own Redis default
METRICS_PORT_ENV = "EVOFLEET_METRICS_PORT"


def detect_gpus() -> tuple[list[str], str] | None:
    """The GPUs this node gives us, and where that came from, without initialising CUDA here.

    ``CUDA_VISIBLE_DEVICES``, when set (a scheduler's allocation: SLURM, a container), wins over
    ``nvidia-smi``, which lists every GPU of the machine. None: neither says anything.
    """
    if VISIBLE_ENV in os.environ:
        value = os.environ[VISIBLE_ENV].strip()
        return ([] if value in ("", "-1") else parse_gpu_list(value)), VISIBLE_ENV
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        typer.echo(f"warning: nvidia-smi failed ({exc}); GPUs not detected", err=True)
        return None
    return [line.strip() for line in out.splitlines() if line.strip()], "nvidia-smi"


def resolve_gpus(spec: str, detected: tuple[list[str], str] | None) -> list[str]:
    """``auto`` (every GPU detected), ``N`` (the first N) or ``0,2,3`` (those) -> GPU ids.

    Asking for a GPU that ``detect_gpus`` did not find is an error (its child would silently
    evaluate on the CPU). When nothing was detected, ids are taken as given.
    """
    found, source = detected if detected is not None else (None, "")
    have = ",".join(found or []) or "none"
    spec = spec.strip()
    if spec.lower() == "auto":
        return found or []
    if spec.isdigit():
        count = int(spec)
        if found is None:
            return [str(i) for i in range(count)]
        if count > len(found):
            raise ValueError(f"--gpus {count} asks for {count} GPUs; {source} lists {have}")
        return found[:count]
    wanted = parse_gpu_list(spec)
    missing = [gpu for gpu in wanted if found is not None and gpu not in found]
    if missing:
        raise ValueError(f"GPU {','.join(missing)} not on this node; {source} lists {have}")
    return wanted


def parse_queues(value: str) -> list[str]:
    queues = [q.strip() for q in value.split(",") if q.strip()]
    unknown = [q for q in queues if q not in PRIORITIES]
    if unknown or not queues:
        raise typer.BadParameter(f"queues must be among {', '.join(PRIORITIES)}; got {value!r}")
    # Kombu's priority strategy drains the -Q list in its order: always highest first.
    return sorted(set(queues), key=PRIORITIES.index)


def register(app: typer.Typer) -> None:
    """Add the worker commands to the CLI."""

    @app.command()
    def worker(
        gpus: Annotated[
            str,
            typer.Option(help=(
                "auto: every GPU in CUDA_VISIBLE_DEVICES if set (a scheduler's allocation), "
                "else every GPU nvidia-smi lists; N: the first N of those; or ids: 0,2,3 or "
                "GPU-/MIG- UUIDs (a single index: '3,'). 0: a CPU worker."
            )),
        ] = "auto",
        queues: Annotated[
            str, typer.Option(help="Queues to consume, drained highest priority first.")
        ] = ",".join(PRIORITIES),
        concurrency: Annotated[
            int | None, typer.Option(min=1, help="Pool children without GPUs (default: CPU cores).")
        ] = None,
        children_per_gpu: Annotated[
            int, typer.Option(min=1, help=(
                "Pool children sharing each GPU (K): for evaluations too small to fill a GPU, "
                "as Ray's fractional GPUs. Each child is pinned to its GPU before CUDA starts."
            )),
        ] = 1,
        gpu_memory_fraction: Annotated[
            float | None, typer.Option(help=(
                "Cap each child at this share of its GPU's memory, in (0, 1] (e.g. 1/K), so one "
                "child's out-of-memory is its own candidate's error. Default: no cap."
            ), show_default=False),
        ] = None,
        max_tasks_per_child: Annotated[
            int | None, typer.Option(min=1, help="Recycle a pool child after K tasks.")
        ] = None,
        max_memory_per_child: Annotated[
            int | None, typer.Option(min=1, help="Recycle a pool child past this many MB resident.")
        ] = None,
        hostname: Annotated[str | None, typer.Option(help="Worker node name.")] = None,
        loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
        broker: Annotated[
            str | None,
            typer.Option(help="Redis URL; default $EVOFLEET_BROKER_URL, else redis://localhost:6379/0."),
        ] = None,
        metrics_port: Annotated[
            int | None,
            typer.Option(min=0, max=65535, help="Serve Prometheus /metrics on this port (all "
                         "interfaces); 0: off. [default: $EVOFLEET_METRICS_PORT or 0]",
                         show_default=False),
        ] = None,
        dry_run: Annotated[bool, typer.Option(help="Print the celery command and exit.")] = False,
    ) -> None:
        """Start this node's celery worker: one pool child per GPU (CPU: one per core)."""
        command, env = worker_invocation(
            gpus, queues, concurrency=concurrency, max_tasks_per_child=max_tasks_per_child,
            max_memory_per_child=max_memory_per_child, hostname=hostname, loglevel=loglevel,
            children_per_gpu=children_per_gpu, gpu_memory_fraction=gpu_memory_fraction,
        )
        if broker:
            env["EVOFLEET_BROKER_URL"] = broker
        if metrics_port is not None:
            env[METRICS_PORT_ENV] = str(metrics_port)
        if dry_run:  # plain echo: one line, never wrapped, easy to paste into a unit file
            names = (GPUS_ENV, MEMORY_FRACTION_ENV, METRICS_PORT_ENV)
            shown = [f"{name}={env[name]}" for name in names if name in env and
                     (name != METRICS_PORT_ENV or metrics_port is not None)]
            typer.echo(" ".join(shown) + " " + shlex.join(command))
            return
        if not env.get("EVOFLEET_BROKER_URL"):
            env["EVOFLEET_BROKER_URL"] = DEFAULT_BROKER
            typer.echo(f"note: no --broker or EVOFLEET_BROKER_URL; using {DEFAULT_BROKER}", err=True)
        _refuse_wrong_password(env["EVOFLEET_BROKER_URL"])
        os.execvpe(command[0], command, env)

    @app.command()
    def workers(
        broker: Annotated[str | None, typer.Option(help="Redis URL; default $EVOFLEET_BROKER_URL.")] = None,
        timeout: Annotated[float, typer.Option(help="Seconds to wait for replies.")] = 2.0,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one list).")] = False,
    ) -> None:
        """List live workers: hostname, GPUs, pool children, tasks done, what each child runs."""
        url = broker or LaunchSettings().broker_url
        if not url:
            raise typer.BadParameter("pass --broker or set EVOFLEET_BROKER_URL")
        try:
            check_broker(url)
        except BrokerUnreachable as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        rows = list_workers(url, timeout)
        if as_json:
            typer.echo(json.dumps(rows))
            return
        table = Table(title=f"{len(rows)} live worker(s)")
        for column in ("hostname", "gpus", "children", "tasks done", "running"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["hostname"], ",".join(row["gpus"]) or "cpu", str(row["children"]),
                str(row["tasks_done"]), "\n".join(row["running"]) or "-",
            )
        console.print(table)


def worker_invocation(
    gpus: str,
    queues: str,
    *,
    concurrency: int | None = None,
    max_tasks_per_child: int | None = None,
    max_memory_per_child: int | None = None,
    hostname: str | None = None,
    loglevel: str = "INFO",
    children_per_gpu: int = 1,
    gpu_memory_fraction: float | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The celery command line and environment of ``evofleet worker``."""
    detected = detect_gpus()
    try:
        gpu_ids = resolve_gpus(gpus, detected)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--gpus") from None
    if detected is None and gpu_ids:
        typer.echo(f"warning: no GPU detected (no CUDA_VISIBLE_DEVICES, no nvidia-smi): taking "
                   f"--gpus {gpus} as {len(gpu_ids)} GPU(s); without CUDA their children run on "
                   "the CPU", err=True)
    if children_per_gpu < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--children-per-gpu")
    env = {**os.environ, GPUS_ENV: ",".join(gpu_ids)}
    if gpu_memory_fraction is not None:
        try:
            memory_fraction(str(gpu_memory_fraction))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--gpu-memory-fraction") from None
        env[MEMORY_FRACTION_ENV] = str(gpu_memory_fraction)
    children = len(gpu_ids) * children_per_gpu or concurrency or os.cpu_count() or 1
    extra: list[str] = []
    if max_tasks_per_child:
        extra += ["--max-tasks-per-child", str(max_tasks_per_child)]
    if max_memory_per_child:
        extra += ["--max-memory-per-child", str(max_memory_per_child * 1024)]  # celery: KiB
    command = worker_command(
        concurrency=children, queues=parse_queues(queues), hostname=hostname,
        loglevel=loglevel, extra=extra,
    )
    return command, env


def _refuse_wrong_password(url: str) -> None:
    """Exit 2 at once on rejected credentials or a bad URL; a Redis merely down is waited for."""
    try:
        check_broker(url)
    except BrokerUnreachable as exc:
        if not exc.down:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        # Not up yet (systemd ordering, a restart): celery retries the connection itself.
        typer.echo(f"warning: {exc}; the worker keeps retrying", err=True)


def list_workers(url: str, timeout_s: float = 2.0) -> list[dict[str, Any]]:
    """Live workers from Celery's inspect, with GPUs from their Redis presence record."""
    from orchestration.api import launcher_app

    app = launcher_app(url)
    inspect = app.control.inspect(timeout=timeout_s)
    stats = inspect.stats() or {}
    active = inspect.active() or {}
    client = connect(url)
    rows = []
    for hostname, info in sorted(stats.items()):
        presence_raw = client.get(WORKER_SLOTS.format(hostname=hostname))
        presence = json.loads(presence_raw) if presence_raw else {}
        running = []
        for task in active.get(hostname, []):
            args = task.get("args") or []
            ids = [c.get("id") for c in args[1]] if len(args) > 1 else []
            running.append(f"pid {task.get('worker_pid')}: {args[0] if args else '?'} {','.join(ids)}")
        rows.append(
            {
                "hostname": hostname,
                "gpus": presence.get("gpus", []),
                "children": len(info.get("pool", {}).get("processes", [])),
                # Celery's total counts tasks taken, the running ones included.
                "tasks_done": sum(info.get("total", {}).values()) - len(running),
                "running": running,
            }
        )
    return rows
