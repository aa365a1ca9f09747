"""The CLI's one message style: ``error: ...`` as one line on stderr, whatever the terminal width,
with data (ids, paths, evaluator messages) never read as Rich markup."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

VALUE_LIMIT = 80  # characters of a user's value echoed back in a message
# soft_wrap: a message stays one line at any width (a log, a pipe, an 80-column CI console);
# markup/emoji/highlight off: "[/bold]" or ":smile:" in a candidate id is printed as it is.
err = Console(stderr=True, soft_wrap=True, markup=False, emoji=False, highlight=False)


def printable(text: object, limit: int | None = VALUE_LIMIT) -> str:
    """``text`` as one printable line: control characters escaped, cut to ``limit`` + "..."."""
    value = str(text)
    if not value.isprintable():
        value = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
    if limit is not None and len(value) > limit:
        value = value[:limit] + "..."
    return value


def clip_repr(value: object, limit: int = VALUE_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters + "..." (an echoed value stays short)."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def error(message: str) -> None:
    """Print ``error: message`` on one line of stderr (the message is plain text)."""
    err.print(Text.assemble(("error:", "bold red"), " ", printable(message, None)))


def warning(message: str) -> None:
    """Print ``warning: message`` on one line of stderr (the message is plain text)."""
    err.print(Text.assemble(("warning:", "bold yellow"), " ", printable(message, None)))
