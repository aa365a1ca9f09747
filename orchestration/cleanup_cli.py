"""``evofleet cleanup``: delete the artifacts of generations that no longer exist in Redis."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from orchestration.api import BrokerUnreachable, check_broker
from orchestration.settings import LaunchSettings
from workers.artifacts import as_store_url, check_store_url
from workers.redis_client import connect
from workers.retention import sweep

err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``cleanup`` to the CLI."""

    @app.command(
        help="Delete the artifacts of generations whose Redis keys are gone: their retention "
        "passed (workers also sweep every EVOFLEET_ARTIFACT_SWEEP_S) or Redis lost them in a "
        "crash (give --store to find those). Only folders evofleet marked as a generation's are "
        "touched, never those of a generation still in Redis. Use one store prefix per "
        "deployment: another Redis's generations would look orphaned here.",
    )
    def cleanup(
        store: Annotated[
            list[str] | None,
            typer.Option(
                "--store",
                help="Also look in this artifact store (fsspec URL or path; repeatable) for "
                "generation folders Redis has forgotten (it lost its data). Default: "
                "$EVOFLEET_ARTIFACT_STORE.",
                show_default=False,
            ),
        ] = None,
        broker: Annotated[
            str | None,
            typer.Option("--broker", help="Redis URL of the deployment; default $EVOFLEET_BROKER_URL.",
                         show_default=False),
        ] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List, delete nothing.")] = False,
    ) -> None:
        """Delete the artifacts of generations no longer in Redis."""
        settings = LaunchSettings()
        url = broker or settings.broker_url
        if not url:
            err.print("[bold red]error:[/] cleanup needs a deployment: pass --broker or set "
                      "EVOFLEET_BROKER_URL")
            raise typer.Exit(2)
        try:
            check_broker(url)
            stores = [check_store_url(as_store_url(s)) for s in (store or [])]
        except (BrokerUnreachable, ValueError) as exc:
            err.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None
        if not stores and settings.artifact_store:
            stores = [as_store_url(settings.artifact_store)]
        client = connect(url)
        try:
            report = sweep(client, stores=stores, options=settings.artifact_store_options,
                           dry_run=dry_run)
        finally:
            client.close()
        verb = "would delete" if dry_run else "deleted"
        for where, generation_id in report.removed:
            err.print(f"{verb} artifacts of {generation_id} in {where}")
        for where, generation_id, why in report.failed:
            err.print(f"[bold yellow]warning:[/] {where} ({generation_id}): {why}")
        err.print(f"{len(report.removed)} generation(s) {verb}, {len(report.failed)} failed")
        if report.failed:
            raise typer.Exit(1)
