"""The example run through the CLI; its report opens in a real headless Chromium; bad specs exit 2."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml
from PIL import Image
from typer.testing import CliRunner

from orchestration.cli import app
from orchestration.evolve.plots import FIGURE_PX
from orchestration.evolve.store import RunStore
from orchestration.local_cluster import LocalWorker
from tests.conftest import unique_id

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "evolve-zdt1.yaml"
WINDOW = (1200, 1600)
# Where the report's pictures land in a 1200x1600 window: the progress plot, then the latest front.
PLOT_REGIONS = {"progress": (520, 1050), "front": (1200, 1580)}


def screenshot(page: Path, png: Path, profile: Path) -> np.ndarray:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's)")
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
         page.as_uri()],
        check=True, capture_output=True, timeout=90,
    )
    return np.asarray(Image.open(png).convert("L"), dtype=float)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_example_runs_and_its_report_renders_in_chromium(
    redis_url: str, session_worker: LocalWorker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # runs/ID is where `evofleet report ID` looks
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec.update(id=unique_id("example"), generations=6)  # the example, shorter
    spec_path = tmp_path / "run.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "runs" / spec["id"]
    result = CliRunner().invoke(app, ["evolve", str(spec_path), "--broker", redis_url, "--quiet"])
    assert result.exit_code == 0, result.output
    pngs = sorted((out / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["front-g0000.png", "front-g0005.png", "progress.png"]
    for png in pngs:
        image = Image.open(png)
        assert image.size == FIGURE_PX and np.asarray(image.convert("L")).std() > 10
    assert len(list((out / "generations").glob("*.parquet"))) == 6
    page = out / "report.html"
    html = page.read_text()
    assert "http://" not in html and "https://" not in html and html.count("data:image/png;base64,") >= 3

    pixels = screenshot(page, tmp_path / "shot.png", tmp_path / "profile")
    assert pixels.shape == (WINDOW[1], WINDOW[0])
    for name, (top, bottom) in PLOT_REGIONS.items():
        region = pixels[top:bottom, 40:800]
        assert region.std() > 8, f"{name} plot region is blank"  # a blank page: < 1
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    empty = screenshot(blank, tmp_path / "blank.png", tmp_path / "profile2")
    assert empty[520:1050, 40:800].std() < 1  # the check above can tell a blank page

    page.unlink()
    assert CliRunner().invoke(app, ["report", spec["id"]]).exit_code == 0 and page.exists()
    generation = CliRunner().invoke(app, ["report", f"{spec['id']}-g0002"])
    assert generation.exit_code == 0, generation.output
    one = (out / f"report-{spec['id']}-g0002.html").read_text()
    assert one.count("data:image/png;base64,") == 1 and one.count("<tr>") == 3 + 40  # headers, counts, rows


@pytest.mark.slow
def test_command_line_fields_start_a_new_run_and_a_resume_keeps_its_own(
    redis_url: str, session_worker: LocalWorker, tmp_path: Path
) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec.update(id=unique_id("spec"), population_size=8, plot_every=0)
    spec_path = tmp_path / "run.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    run_id, out = unique_id("cli"), tmp_path / "out"
    result = CliRunner().invoke(app, ["evolve", str(spec_path), "--id", run_id, "--seed", "7",
                                      "--generations", "2", "--out", str(out), "--broker", redis_url,
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    stored = RunStore(out).read_spec()
    assert (stored.id, stored.seed, stored.generations) == (run_id, 7, 2)
    assert sorted(p.name for p in (out / "generations").glob("*.parquet")) == [
        f"{run_id}-g0000.parquet", f"{run_id}-g0001.parquet"]
    for args, message in ((["--seed", "3"], "--seed and --id start a new run"),
                          (["--generations", "1"], f"run {run_id} has recorded 2 generations")):
        refused = CliRunner().invoke(app, ["evolve", "--resume", str(out), *args, "--broker", redis_url])
        lines = refused.output.strip().splitlines()
        assert refused.exit_code == 2 and len(lines) == 1 and message in lines[0], refused.output
    assert RunStore(out).read_spec().generations == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"algorithm": "nsga9"}, "unknown algorithm 'nsga9'"),
        ({"search_space": {"n_var": 3, "low": 0, "high": [1, 1]}}, "2 bounds for 3 variables"),
        ({"search_space": {"n_var": 3, "low": 1, "high": 0}}, "low 1.0 >= high 0.0"),
        ({"reference_point": [1.1]}, "reference_point has 1 values for 2 objectives"),
        ({"reference_point": ["a", 1]}, "reference_point"),
        ({"algorithm": "ga"}, "ga optimizes one objective"),
    ],
)
def test_a_bad_run_spec_exits_2_in_one_line_with_nothing_submitted(
    change: dict[str, object], message: str, redis_url: str, tmp_path: Path
) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec.update(id=unique_id("bad"), **change)
    spec_path = tmp_path / "run.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["evolve", str(spec_path), "--out", str(out), "--broker", redis_url])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out.exists()
    client = redis.Redis.from_url(redis_url)
    assert not client.keys(f"*{spec['id']}*")
    client.close()


def test_a_run_id_already_used_in_redis_exits_2(redis_url: str, tmp_path: Path) -> None:
    from orchestration.spec_loading import spec_from_dict
    from workers.ledger import Ledger

    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["id"] = unique_id("used")
    client = redis.Redis.from_url(redis_url)
    Ledger(client, f"{spec['id']}-g0000").create(
        spec_from_dict({"id": f"{spec['id']}-g0000", "evaluator": "zdt1",
                        "objectives": {"f1": "min"}, "candidates": [{"id": "a"}]}), None)
    client.close()
    spec_path = tmp_path / "run.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["evolve", str(spec_path), "--out", str(tmp_path / "out"),
                                      "--broker", redis_url])
    assert result.exit_code == 2 and "already exists in Redis" in result.output, result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_report_of_a_generation_in_redis(redis_url: str, session_worker: LocalWorker, tmp_path: Path) -> None:
    from tests.conftest import make_spec, run_spec

    spec = make_spec([{"id": f"c{i}", "params": {"x": [i / 10, 0.5, 0.5]}} for i in range(10)])
    run_spec(spec, redis_url)
    page = tmp_path / "gen.html"
    result = CliRunner().invoke(app, ["report", spec.id, "--broker", redis_url, "--out", str(page)])
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 1 and html.count("<td>ok</td>") == 10
    missing = CliRunner().invoke(app, ["report", "no-such-gen", "--broker", redis_url])
    assert missing.exit_code == 2 and "no generation 'no-such-gen'" in missing.output
