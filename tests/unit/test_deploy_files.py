"""Deployment files and docs: `.env` (it holds passwords) is never committed; the Procfile's
interpreter is found without an activated venv; `launch --help` points at a README section."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / "deploy" / "venv-python"


def test_dot_env_is_git_ignored() -> None:
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", ".env"], cwd=ROOT)
        assert ignored.returncode == 0
    else:  # a source tree without git: read the rule itself
        assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def prefix_of(env: dict[str, str]) -> str:
    """sys.prefix of the interpreter deploy/venv-python runs, started from another directory."""
    out = subprocess.run([str(VENV_PYTHON), "-c", "import sys; print(sys.prefix)"], env=env,
                         cwd="/", capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_venv_python_finds_the_interpreter_without_an_activated_venv() -> None:
    bare = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}
    assert prefix_of({**bare, "PYTHON": sys.executable}) == sys.prefix
    assert prefix_of({**bare, "VIRTUAL_ENV": sys.prefix}) == sys.prefix
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in the repository root to find")
    assert Path(prefix_of(bare)).resolve() == (ROOT / ".venv").resolve()


def test_launch_help_names_a_readme_section_that_exists() -> None:
    from typer.testing import CliRunner

    from orchestration.cli import app

    help_text = " ".join(CliRunner().invoke(app, ["launch", "--help"], env={"COLUMNS": "200"})
                         .stdout.split())
    named = re.search(r'README\.md, "([^"]+)"', help_text)
    assert named is not None, help_text
    headings = [line.lstrip("#").strip() for line in (ROOT / "README.md").read_text().splitlines()
                if line.startswith("#")]
    assert named.group(1) in headings
