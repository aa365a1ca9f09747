"""The ``evofleet`` console script: bad input or settings end in one line and exit code 2."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from pydantic import ValidationError
from rich.console import Console

EXIT_INVALID = 2
err = Console(stderr=True)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (systemd, timeout, a supervisor) cleans up like Ctrl-C


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    sys.exit(EXIT_INVALID)


def main() -> None:
    """Entry point of ``evofleet``."""
    # A `module:function` evaluator beside the spec imports, as with `python -m`; appended, so
    # a module there cannot shadow evofleet's own packages.
    sys.path.append(os.getcwd())
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        # Importing the CLI builds the Celery app, which reads the EVOFLEET_* settings.
        from orchestration.api import BrokerUnreachable
        from orchestration.cli import app
        from orchestration.local_cluster import LocalClusterError
        from orchestration.spec_loading import SpecError

        try:
            app()
        except (SpecError, BrokerUnreachable, LocalClusterError) as exc:
            _fail(str(exc))
    except ValidationError as exc:
        _fail("invalid setting " + "; ".join(
            f"EVOFLEET_{'_'.join(map(str, e['loc'])).upper()}={e['input']!r}: {e['msg']}"
            for e in exc.errors()
        ))


if __name__ == "__main__":
    main()
