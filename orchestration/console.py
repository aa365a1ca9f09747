"""The ``evofleet`` console script: bad input or settings end in one line and exit code 2."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, NoReturn

import typer
from pydantic import ValidationError

from orchestration.messages import clip_repr, error

EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (systemd, timeout, a supervisor) cleans up like Ctrl-C


def _fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    error(message)
    sys.exit(code)


def _usage_error(exc: typer.TyperException) -> NoReturn:
    """Click's usage errors in the same one-line style as ours (not a boxed panel)."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # the help has been printed already
        sys.exit(exc.exit_code)
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    _fail(exc.format_message() + hint, exc.exit_code)


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
            code = app(standalone_mode=False)
        except (SpecError, BrokerUnreachable, LocalClusterError) as exc:
            _fail(str(exc))
        except typer.TyperException as exc:
            _usage_error(exc)
        except typer.Abort:
            _fail("aborted", 1)
    except ValidationError as exc:
        _fail("invalid setting " + "; ".join(
            f"EVOFLEET_{'_'.join(map(str, e['loc'])).upper()}={clip_repr(e['input'])}: {e['msg']}"
            for e in exc.errors()
        ))
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM while the CLI imports (a second or two) or outside a command's own
        # handling: the documented 130, not a traceback of whatever module was loading.
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
