"""What the CLI prints: one-line errors at any width, data never read as Rich markup, the most
common failures with counts, and help that points at README sections that exist."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from orchestration import messages
from orchestration.cli import launch_command
from orchestration.progress import FailureTally, ProgressDisplay, print_summary
from workers.contract import ErrorInfo, EvaluationResult, Status
from workers.summary import summarize

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_IDS = ["v2[/bold]", "[red]x[/red]", "a:smile:b", "[link=http://x]y"]


def result(candidate_id: str, status: Status = Status.ok, **fields: object) -> EvaluationResult:
    now = datetime.now(UTC)
    return EvaluationResult(generation_id="g", candidate_id=candidate_id, status=status,
                            started_at=now, finished_at=now, **fields)  # type: ignore[arg-type]


def test_the_summary_prints_ids_and_objective_names_as_plain_text() -> None:
    results = [result(cid, scores={"f[/b]": float(i), ":x:": -float(i)})
               for i, cid in enumerate(HOSTILE_IDS)]
    results.append(result("e[/bold]", Status.error, error=ErrorInfo(type="E")))
    summary = summarize(results, {"f[/b]": "min", ":x:": "min"}, {"generation_id": "g"})
    out = io.StringIO()
    print_summary(summary, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    for shown in [*HOSTILE_IDS, "f[/b]", ":x:", "error ids: e[/bold]"]:
        assert shown in text
    # Only a real error message starts with "error: " (a script greps for it; the failed ids of
    # a generation that exited 0 did too).
    assert not any(line.startswith("error:") for line in text.splitlines())


def test_an_error_is_one_line_at_80_columns_and_keeps_brackets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    long = "cannot reach Redis at redis://[::1]:6379/0 " + "because " * 40 + "[/bold] :smile:\nend"
    messages.error(long)
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("error: cannot reach")
    assert "[/bold] :smile:\\nend" in stderr


def test_printable_escapes_control_characters_and_cuts_long_values() -> None:
    assert messages.printable("a\x1b[2J\nb\x00") == "a\\x1b[2J\\nb\\x00"
    assert messages.printable("x" * 100) == "x" * 80 + "..."
    assert messages.clip_repr("y" * 100) == "'" + "y" * 79 + "..."


def test_the_tally_names_the_most_common_failures_with_counts() -> None:
    forwarded: list[int] = []
    tally = FailureTally(forward=lambda batch: forwarded.append(len(batch)))
    missing = ErrorInfo(type="ValueError", message="no score for objective(s) ['f3']")
    batch = [result(f"m{i}", Status.error, error=missing) for i in range(12)]
    batch += [result(f"t{i}", Status.timeout, error=ErrorInfo(type="SoftTimeLimitExceeded"))
              for i in range(3)]
    batch += [result("x", Status.error, error=ErrorInfo(type="KeyError", message="'a'\n\x1b[2J")),
              result("y", Status.crashed, error=ErrorInfo(type="WorkerLost", message="SIGKILL")),
              result("ok"), result("c", Status.cancelled)]
    tally.on_batch(batch[:10])
    tally.on_batch(batch[10:])
    assert forwarded == [10, len(batch) - 10]
    top = tally.most_common(3)
    assert top[0] == "12x error ValueError: no score for objective(s) ['f3']"
    assert top[1] == "3x timeout SoftTimeLimitExceeded"
    assert len(top) == 3 and all("\n" not in line and "\x1b" not in line for line in top)


def test_the_tally_counts_crashes_together_whatever_celerys_job_number() -> None:
    # Three children that SIGKILL themselves: Celery numbers each lost job, and the tally
    # printed "1x crashed ... Job: 24." three times instead of one line with the count.
    tally = FailureTally()
    tally.on_batch([result(f"k{job}", Status.crashed, error=ErrorInfo(
        type="WorkerLostError",
        message=f"Worker exited prematurely: signal 9 (SIGKILL) Job: {job}.")) for job in (24, 25, 26)])
    assert tally.most_common(3) == [
        "3x crashed WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL)"]


def test_progress_in_a_log_is_one_plain_line_at_the_end() -> None:
    # Not a terminal at 80 columns: the live bar's last frame was cut ("0:0… 0:00:…").
    out = io.StringIO()
    display = ProgressDisplay(3, console=Console(file=out, width=80))
    with display:
        display.on_batch([result(f"k{i}", Status.crashed) for i in range(3)])
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "…" not in lines[0], lines
    assert lines[0].startswith("evaluating 3/3  ok 0  error 0  timeout 0  crashed 3  cancelled 0")


def test_the_tally_stays_bounded_when_every_message_differs() -> None:
    tally = FailureTally()
    tally.on_batch([result(f"c{i}", Status.error, error=ErrorInfo(type="E", message=f"m{i}"))
                    for i in range(FailureTally.KINDS + 500)])
    assert len(tally.failures) == FailureTally.KINDS + 1
    assert tally.failures["error (other failures)"] == 500


def test_launch_help_names_a_readme_section_that_exists() -> None:
    doc = " ".join((launch_command.__doc__ or "").split())
    sections = re.findall(r'README\.md, "([^"]+)"', doc)
    headings = {line.lstrip("#").strip() for line in (ROOT / "README.md").read_text().splitlines()
                if line.startswith("#")}
    assert sections and all(section in headings for section in sections), (sections, headings)
