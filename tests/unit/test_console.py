"""The ``evofleet`` entry point: an interrupt anywhere ends with the documented exit code."""

from __future__ import annotations

import sys

import pytest

import orchestration.cli
from orchestration.console import main


def test_an_interrupt_outside_a_command_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As when Ctrl-C or SIGTERM lands while the CLI is still importing: the interrupt reaches
    # main() itself, which printed a 30-line traceback and died of SIGINT (exit -2).
    def interrupted(**_: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(orchestration.cli, "app", interrupted)
    monkeypatch.setattr(sys, "argv", ["evofleet", "status", "g"])
    try:
        main()
    except KeyboardInterrupt:  # caught here, or it would stop the whole pytest session
        pytest.fail("the interrupt escaped main()")
    except SystemExit as ended:
        assert ended.code == 130
    else:
        pytest.fail("main() returned after an interrupt")
    assert "Traceback" not in capsys.readouterr().err
