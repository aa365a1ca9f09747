"""``evofleet generations`` (list a deployment's generations) and ``evofleet delete GEN``."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, NoReturn

import redis
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestration.api import BrokerUnreachable, check_broker, launcher_app
from orchestration.messages import clip_repr, err, error
from orchestration.settings import LaunchSettings
from orchestration.submit import group_id_for
from workers.contract import Status
from workers.keys import GENERATIONS_INDEX, GenerationKeys
from workers.ledger import RUNNING, GenerationNotFound, Ledger
from workers.redis_client import connect

console = Console()

COLLECTOR_GONE_S = 10.0  # delete --force: how long an attached launcher gets to collect the end
_STATE_FIELDS = ("status", "total", "recorded", "created_at", "finished_at",
                 *(f"n_{status.value}" for status in Status))


def _url(broker: str | None) -> str:
    url = broker or LaunchSettings().broker_url
    if not url:
        _fail("this command needs a deployment: pass --broker or set EVOFLEET_BROKER_URL")
    try:
        check_broker(url)
    except BrokerUnreachable as exc:
        _fail(str(exc))
    return url


def _fail(message: str) -> NoReturn:
    error(message)  # the CLI's one style: one line at any width, an id is never Rich markup
    raise typer.Exit(2)


def list_generations(client: redis.Redis, limit: int | None = None) -> list[dict[str, Any]]:
    """The index's generations, newest first, with status, counts and age; ids whose keys
    expired are dropped from the index on the way."""
    members: list[Any] = list(client.zrevrange(GENERATIONS_INDEX, 0, -1))
    ids = [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in members]
    with client.pipeline(transaction=False) as pipe:
        for generation_id in ids:
            pipe.hmget(GenerationKeys(generation_id).state, _STATE_FIELDS)
        states = pipe.execute()
    now = time.time()
    rows: list[dict[str, Any]] = []
    expired: list[str] = []
    for generation_id, values in zip(ids, states, strict=True):
        state = {name: v.decode() for name, v in zip(_STATE_FIELDS, values, strict=True) if v}
        if "status" not in state:
            expired.append(generation_id)
            continue
        created = float(state.get("created_at", now))
        finished = state.get("finished_at")
        rows.append({
            "id": generation_id,
            "status": state["status"],
            "total": int(state.get("total", 0)),
            "recorded": int(state.get("recorded", 0)),
            "counts": {s.value: int(state.get(f"n_{s.value}", 0)) for s in Status},
            "created_at": created,
            "finished_at": float(finished) if finished else None,
            "age_s": max(0.0, now - created),
        })
    if expired:
        client.zrem(GENERATIONS_INDEX, *expired)
    return rows if limit is None else rows[:limit]


def age(seconds: float) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def delete_generation(url: str, generation_id: str, *, force: bool) -> int:
    """Delete a generation's keys, its index entry and its chord's counters; return the keys
    removed. A running one is refused (ValueError) unless ``force``, which cancels it first;
    GenerationNotFound if it is not in Redis."""
    client = connect(url)
    try:
        ledger = Ledger(client, generation_id)
        status = ledger.status()
        if status is None:
            client.zrem(GENERATIONS_INDEX, generation_id)  # expired: drop the stale entry
            raise GenerationNotFound(generation_id)
        if status == RUNNING:
            if not force:
                raise ValueError(
                    f"generation {generation_id!r} is running: `evofleet cancel {generation_id}` "
                    f"first, or `evofleet delete {generation_id} --force` cancels and deletes it")
            _cancel(ledger)
        removed = ledger.delete()
        app = launcher_app(url)
        try:  # the chord's counters, so a generation launched again under this id starts clean
            group = group_id_for(generation_id)
            chord_keys = [app.backend.get_key_for_group(group, suffix) for suffix in ("", ".j", ".t", ".s")]
            removed += int(app.backend.client.delete(*chord_keys))
        finally:
            app.close()
        return removed
    finally:
        client.close()


def _cancel(ledger: Ledger) -> None:
    """Cancel as ``evofleet cancel`` does, and give an attached launcher time to collect it."""
    if ledger.close("cancelled") == "cancelled":
        count = ledger.record_missing(Status.cancelled, "generation cancelled")
        err.print(f"generation {ledger.generation_id} cancelled: {count} candidates recorded as "
                  "cancelled", markup=False, highlight=False)
    deadline = time.monotonic() + COLLECTOR_GONE_S
    while ledger.collector() is not None and time.monotonic() < deadline:
        time.sleep(0.2)


def register(app: typer.Typer) -> None:
    """Add the generation admin commands to the CLI."""

    @app.command()
    def generations(
        broker: Annotated[str | None, typer.Option(help="Redis URL; default $EVOFLEET_BROKER_URL.")] = None,
        limit: Annotated[int, typer.Option(min=1, help="Newest N only.")] = 50,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one list).")] = False,
    ) -> None:
        """List the deployment's generations, newest first: status, counts, age.

        Generations whose keys expired (EVOFLEET_RETENTION_S after their end) are not listed.
        """
        client = connect(_url(broker))
        try:
            rows = list_generations(client, limit)
        finally:
            client.close()
        if as_json:
            typer.echo(json.dumps(rows))
            return
        table = Table(title=f"{len(rows)} generation(s)")
        longest = max((len(row["id"]) for row in rows), default=2)
        table.add_column("id", no_wrap=True, min_width=longest)  # ids are copied: never wrapped
        table.add_column("status")
        table.add_column("results", justify="right")
        table.add_column("counts")
        table.add_column("age", justify="right")
        for row in rows:
            counts = ", ".join(f"{name} {n}" for name, n in row["counts"].items() if n) or "-"
            table.add_row(Text(row["id"]), row["status"], f"{row['recorded']}/{row['total']}",
                          counts, age(row["age_s"]))
        console.print(table)

    @app.command()
    def delete(
        generation_id: Annotated[str, typer.Argument(metavar="GEN", help="Generation id.")],
        broker: Annotated[str | None, typer.Option(help="Redis URL; default $EVOFLEET_BROKER_URL.")] = None,
        force: Annotated[bool, typer.Option("--force", help="Cancel a running generation first.")] = False,
    ) -> None:
        """Delete a generation from Redis: its spec, candidates, results and summary.

        A running generation is refused unless --force (which cancels it, as `evofleet cancel`,
        then deletes it). The id can then be launched again.
        """
        try:
            removed = delete_generation(_url(broker), generation_id, force=force)
        except GenerationNotFound:
            _fail(f"no generation {clip_repr(generation_id)} in Redis (never launched, or expired)")
        except ValueError as exc:
            _fail(str(exc))
        err.print(f"generation {generation_id} deleted ({removed} keys)", markup=False, highlight=False)
