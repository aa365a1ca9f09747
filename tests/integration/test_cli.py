"""The ``evofleet`` command: exit codes, bad input rejected before anything is submitted."""

from __future__ import annotations

import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from orchestration.local_cluster import LocalRedis, LocalWorker
from workers.keys import GenerationKeys

SPEC = """
id: {gen_id}
evaluator: zdt2
objectives: {{f1: min, f2: min}}
batch_size: 5
batch_timeout: 0.2
candidates:
  - {{id: a, priority: critical, params: {{x: [0.1, 0.0, 0.0]}}}}
  - {{id: b, priority: low, params: {{x: [0.5, 0.0, 0.0]}}}}
  - {{id: c, params: {{x: [0.9, 0.0, 0.0]}}}}
  - {{id: d, priority: high, params: {{x: [0.5, 0.5, 0.5]}}}}
"""


def cli_env(broker: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOFLEET_")}
    if broker:
        env["EVOFLEET_BROKER_URL"] = broker
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env["COLUMNS"] = "160"
    return {**env, **extra}


def evofleet(
    *args: str, broker: str | None, cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.console", *args],
        capture_output=True, text=True, timeout=timeout, env=cli_env(broker, **env), cwd=cwd,
    )


def keys_of(client: redis.Redis, gen_id: str) -> list[bytes]:
    return list(client.scan_iter(match=f"*{gen_id}*"))


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda s: s.replace("batch_size: 5", "batch_size: [5"), "malformed YAML"),
        (lambda s: s.replace("id: b,", "id: a,"), "duplicate candidate id 'a'"),
        (lambda s: s.replace("priority: low", "priority: lowest"), "candidate #1 (id 'b'), field 'priority'"),
        (lambda s: s.replace("evaluator: zdt2", "evaluator: nope"), "unknown evaluator 'nope'"),
        (lambda s: s.replace("batch_size: 5", "batch_size: 5\ntime_limit: 1\nsoft_time_limit: 2"),
         "must not be below soft_time_limit"),
    ],
)
def test_invalid_spec_exits_2_and_submits_nothing(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, mutation: object, expected: str
) -> None:
    gen_id = f"bad-{tmp_path.name}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(mutation(SPEC.format(gen_id=gen_id)))  # type: ignore[operator]
    done = evofleet("launch", str(spec), "--out", str(tmp_path / "r.jsonl"), broker=redis_url,
                    cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert expected in " ".join(done.stderr.split())
    assert str(spec) in " ".join(done.stderr.split()) or "spec" in done.stderr
    assert keys_of(redis_client, gen_id) == []
    assert not (tmp_path / "r.jsonl").exists()


def test_unknown_output_format_exits_2(redis_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(gen_id="fmt"))
    done = evofleet("launch", str(spec), "--out", "r.txt", broker=redis_url, cwd=tmp_path)
    assert done.returncode == 2 and "cannot tell the output format" in done.stderr


def test_launch_against_deployment_exits_0_and_writes_results_and_summary(
    redis_url: str, session_worker: LocalWorker, tmp_path: Path
) -> None:
    gen_id = f"cli-{tmp_path.name}"
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(gen_id=gen_id))
    out = tmp_path / "out" / "results.jsonl"
    done = evofleet("launch", str(spec), "--out", str(out), broker=redis_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # The id comes first, so the user can `status`, `resume` or `cancel` the generation.
    assert done.stderr.splitlines()[0] == f"generation {gen_id}: 4 candidates, results to {out}"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["candidate_id"] for r in rows) == ["a", "b", "c", "d"]
    summary = json.loads((tmp_path / "out" / "results.jsonl.summary.json").read_text())
    assert summary["status"] == "complete" and summary["counts"]["ok"] == 4
    front_ids = {m["candidate_id"] for m in summary["pareto_front"]}
    assert front_ids == {"a", "b", "c"}  # d is off the Pareto set (x[1:] != 0)
    assert "Pareto front (3 candidates)" in done.stdout

    again = evofleet("launch", str(spec), broker=redis_url, cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.slow
def test_launch_in_local_mode_without_broker_or_out_writes_a_file_named_after_it(
    tmp_path: Path,
) -> None:
    """Local mode keeps nothing after it exits: without --out the results land in GEN.<format>
    in the current directory, and the first line says so."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(gen_id="local-mode"))
    out = tmp_path / "local-mode.csv"
    done = evofleet("launch", str(spec), "--format", "csv", "--workers", "2", broker=None,
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[:2] == [
        "local mode: starting a private redis-server and local worker(s)...",
        "generation local-mode: 4 candidates, results to local-mode.csv",
    ]
    lines = out.read_text().splitlines()
    assert lines[0].startswith("generation_id,candidate_id,status") and len(lines) == 5
    workers = {line.split(",")[5] for line in lines[1:]}
    assert all(w.startswith("local") for w in workers)


@pytest.mark.slow
def test_demo_runs_in_local_mode(tmp_path: Path) -> None:
    done = evofleet("demo", "--candidates", "40", "--out", "demo.jsonl", broker=None, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "demo.jsonl").read_text().splitlines()) == 40
    summary = json.loads((tmp_path / "demo.jsonl.summary.json").read_text())
    assert summary["counts"]["ok"] == 40 and summary["pareto_front"]
    assert "best per objective" in done.stdout


def test_help_explains_every_command(tmp_path: Path) -> None:
    done = evofleet("--help", broker=None, cwd=tmp_path)
    assert done.returncode == 0
    for command in ("launch", "demo", "resume", "status", "results", "cancel", "worker", "workers"):
        assert command in done.stdout
    launch_help = evofleet("launch", "--help", broker=None, cwd=tmp_path)
    assert "--broker" in launch_help.stdout and "local mode" in launch_help.stdout


@pytest.fixture
def not_redis() -> Iterator[str]:
    """A TCP server that answers like a web server, not like Redis."""
    server = socketserver.TCPServer(("127.0.0.1", 0), HttpLike)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    server.shutdown()
    server.server_close()


class HttpLike(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()
        self.wfile.write(b"<html>not redis</html>\r\n")


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["demo", "--broker", "redis://127.0.0.1:1/0"], {}, "cannot reach Redis at redis://127.0.0.1:1/0"),
        (["status", "g", "--broker", "notaurl"], {}, "not a Redis URL: 'notaurl'"),
        (["status", "g", "--broker", "NOT_REDIS"], {}, "did not answer like Redis"),
        (["demo"], {"EVOFLEET_LOCAL_WORKERS": "abc"}, "invalid setting EVOFLEET_LOCAL_WORKERS='abc'"),
        (["status", "g", "--broker", "notaurl"], {"EVOFLEET_VISIBILITY_TIMEOUT_S": "-3"},
         "invalid setting EVOFLEET_VISIBILITY_TIMEOUT_S='-3': Input should be greater than 0"),
        (["demo"], {"EVOFLEET_REDIS_SERVER": "/nonexistent"}, "(EVOFLEET_REDIS_SERVER) is not"),
        (["demo"], {"EVOFLEET_REDIS_SERVER": "/bin/false"}, "redis-server /bin/false exited"),
        (["demo", "--out", "adir.jsonl"], {}, "cannot write results to 'adir.jsonl': it is a directory"),
        (["demo", "--workers", "0"], {}, "Invalid value for '--workers'"),
        (["launch", "SPEC", "--format", "parquet", "--broker", "NOT_REDIS"], {}, "--format needs --out"),
        (["launch", "SPEC", "-o", "r.jsonl", "--format", "xml"], {}, "unknown output format 'xml'"),
    ],
)
def test_bad_broker_settings_and_options_are_one_line_and_exit_2(
    tmp_path: Path, not_redis: str, args: list[str], env: dict[str, str], expected: str
) -> None:
    (tmp_path / "adir.jsonl").mkdir()
    (tmp_path / "spec.yaml").write_text(SPEC.format(gen_id="never"))
    args = [not_redis if a == "NOT_REDIS" else "spec.yaml" if a == "SPEC" else a for a in args]
    done = evofleet(*args, broker=None, cwd=tmp_path, timeout=60, **{"COLUMNS": "80", **env})
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], done.stderr  # one line, whatever the width
    assert all(line.startswith(("error: ", "local mode: ")) for line in done.stderr.splitlines())
    assert "Traceback" not in done.stderr and "╭" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.jsonl", "spec.yaml"]


@pytest.mark.parametrize(
    ("out", "reason"),
    [
        ("taken.jsonl", "is a directory"),
        # Paths os.access() approves for root, that still cannot be created.
        ("/proc/results.jsonl", "cannot write results to '/proc/results.jsonl'"),
        ("afile/results.jsonl", "Not a directory"),
        ("r" * 300 + ".jsonl", "File name too long"),
    ],
)
def test_unwritable_output_submits_nothing(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, out: str, reason: str
) -> None:
    gen_id = f"unwritable-{tmp_path.name}"
    (tmp_path / "spec.yaml").write_text(SPEC.format(gen_id=gen_id))
    (tmp_path / "taken.jsonl").mkdir()
    (tmp_path / "afile").write_text("")
    done = evofleet("launch", "spec.yaml", "-o", out, broker=redis_url, cwd=tmp_path)
    message = " ".join(done.stderr.split())  # Rich wraps long lines when not on a terminal
    assert done.returncode == 2 and reason in message
    assert message.count("error:") == 1 and "Traceback" not in message
    assert "r" * 100 not in message  # a long path is cut, as every echoed value
    assert keys_of(redis_client, gen_id) == []  # so the same spec can be launched again


def test_cancel_twice_says_it_had_ended(private_redis: LocalRedis, tmp_path: Path) -> None:
    url = private_redis.url  # no worker: nothing can finish before the cancel
    gen_id = f"cancel-twice-{tmp_path.name}"
    (tmp_path / "spec.yaml").write_text(SPEC.format(gen_id=gen_id))
    launcher = subprocess.Popen(
        [sys.executable, "-m", "orchestration.console", "launch", "spec.yaml", "-q"],
        env=cli_env(url), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 30
        while not client.exists(GenerationKeys(gen_id).state):
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.1)
        first = evofleet("cancel", gen_id, broker=url, cwd=tmp_path)
        second = evofleet("cancel", gen_id, broker=url, cwd=tmp_path)
        assert launcher.wait(timeout=30) == 3
    finally:
        launcher.kill()
        client.close()
    assert first.returncode == 0 and "4 candidates recorded as cancelled" in first.stderr
    assert second.returncode == 0 and "had already ended: cancelled" in second.stderr


def _local_launch_under_way(tmp_path: Path) -> tuple[subprocess.Popen[str], Path, list[psutil.Process]]:
    """A local-mode launch of 12 one-second candidates, once two results are in the file:
    the launcher, its output file and every process it spawned (Redis, workers, the guard)."""
    candidates = "".join(f"  - {{id: c{i}, params: {{seconds: 1.0}}}}\n" for i in range(12))
    (tmp_path / "spec.yaml").write_text(
        "evaluator: sleep\nobjectives: {seconds: min}\nbatch_size: 1\nbatch_timeout: 0.1\n"
        f"candidates:\n{candidates}"
    )
    out = tmp_path / "r.jsonl"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "orchestration.console", "launch", "spec.yaml", "-o", "r.jsonl", "-q"],
        env=cli_env(None), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, start_new_session=True,  # a group of its own, as a shell's foreground job
    )
    deadline = time.monotonic() + 90
    while not (out.exists() and out.read_text().count("\n") >= 2):
        if time.monotonic() > deadline or launcher.poll() is not None:
            launcher.kill()
            pytest.fail(f"no results within 90 s: {launcher.communicate()[1][-2000:]}")
        time.sleep(0.1)
    spawned = psutil.Process(launcher.pid).children(recursive=True)
    assert any("redis-server" in p.name() for p in spawned) and len(spawned) >= 3
    return launcher, out, spawned


@pytest.mark.slow
@pytest.mark.parametrize("sender", ["terminal", "supervisor"])
def test_interrupt_in_local_mode_cancels_and_leaves_no_process(tmp_path: Path, sender: str) -> None:
    """Ctrl-C in a terminal (SIGINT to the whole foreground group) or SIGTERM from a supervisor
    (to the launcher alone): the local generation is cancelled, the file has one line per
    candidate, and its Redis and workers are gone."""
    launcher, out, spawned = _local_launch_under_way(tmp_path)
    try:
        if sender == "terminal":
            os.killpg(launcher.pid, signal.SIGINT)
        else:
            launcher.send_signal(signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=40)
        assert launcher.returncode == 130, stderr
    finally:
        launcher.kill()
        launcher.communicate()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["candidate_id"] for r in rows) == sorted(f"c{i}" for i in range(12))
    statuses = {r["status"] for r in rows}
    assert "ok" in statuses and "cancelled" in statuses and statuses <= {"ok", "cancelled"}
    _, alive = psutil.wait_procs(spawned, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]
    assert "cancelling the local generation" in stderr


@pytest.mark.slow
def test_a_sigkilled_local_launcher_leaves_no_process(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer, a CI timeout) gives the launcher no chance to stop its Redis and
    workers: the orphan guard it started does, within its grace period, and removes Redis' folder."""
    launcher, _, spawned = _local_launch_under_way(tmp_path)
    redis_dirs = {Path(p.cwd()) for p in spawned if "redis-server" in p.name()}
    launcher.kill()
    launcher.communicate()
    _, alive = psutil.wait_procs(spawned, timeout=30)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [p.cmdline() for p in alive]
    assert redis_dirs and not any(d.exists() for d in redis_dirs)


def test_a_users_workers_package_in_the_launch_directory_is_refused(tmp_path: Path) -> None:
    """The local worker imports from the launch directory first (so `module:function` works);
    a `workers` package there would replace evofleet's own."""
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "__init__.py").write_text("")
    done = evofleet("demo", "-q", broker=None, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "would shadow evofleet's own `workers` package" in " ".join(done.stderr.split())


def test_a_generation_where_nothing_ended_ok_exits_4_naming_the_errors(
    redis_url: str, session_worker: LocalWorker, tmp_path: Path
) -> None:
    """A misnamed objective fails every candidate: complete, but exit 4 and the most common
    error with its count, so scripts and CI notice."""
    spec = SPEC.format(gen_id=f"none-ok-{tmp_path.name}").replace("f1: min, f2: min", "g: min")
    (tmp_path / "spec.yaml").write_text(spec)
    done = evofleet("launch", "spec.yaml", "-q", broker=redis_url, cwd=tmp_path)
    assert done.returncode == 4, done.stderr
    lines = done.stderr.splitlines()
    assert "error: no candidate ended ok (error 4); the most common failures:" in lines
    assert lines[-1].startswith("  4x error ") and "'g'" in lines[-1], lines


def alias_bomb() -> str:
    levels = [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return ("id: {gen_id}\nevaluator: zdt2\nobjectives: {{f1: min, f2: min}}\nl0: &l0 [lol, lol]\n"
            + "\n".join(levels) + "\ncandidates:\n  - {{id: a, params: {{x: *l8}}}}\n")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ((SPEC + "# caf\u00e9\n").encode("latin-1"), "spec.yaml: line 12: not UTF-8 text"),
        (alias_bomb().encode(), "(an alias bomb?)"),
        (SPEC.replace("id: b,", 'id: "b\\e[2J\\0",').encode(),
         "field 'id': must be printable text: it contains '\\x1b'"),
        (SPEC.replace("evaluator: zdt2", "evaluator: os:system").encode(),
         "'os:system' cannot be called as evaluator(candidate, context)"),
        (SPEC.replace("batch_size", "batchsize").encode(), "did you mean 'batch_size'?"),
    ],
    ids=["latin-1", "alias-bomb", "control-characters", "os-system", "misspelt-field"],
)
def test_hostile_specs_exit_2_in_one_line_and_leave_nothing(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path, content: bytes, expected: str
) -> None:
    gen_id = f"hostile-{tmp_path.name}"
    (tmp_path / "spec.yaml").write_bytes(content.replace(b"{gen_id}", gen_id.encode())
                                         .replace(b"{{", b"{").replace(b"}}", b"}"))
    done = evofleet("launch", "spec.yaml", "-o", "r.jsonl", broker=redis_url, cwd=tmp_path,
                    COLUMNS="80")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: spec.yaml"), done.stderr
    assert expected in done.stderr
    assert keys_of(redis_client, gen_id) == []
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]


def test_ids_that_look_like_rich_markup_are_printed_as_they_are(
    redis_url: str, session_worker: LocalWorker, tmp_path: Path
) -> None:
    """An id such as ``v2[/bold]`` once crashed the summary (exit 1, no summary file)."""
    gen_id = f"markup-{tmp_path.name}"
    spec = SPEC.format(gen_id=gen_id)
    for old, new in (("id: a,", 'id: "v2[/bold]",'), ("id: b,", 'id: "[red]b:smile:",')):
        spec = spec.replace(old, new)
    (tmp_path / "spec.yaml").write_text(spec)
    done = evofleet("launch", "spec.yaml", "-o", "r.jsonl", broker=redis_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "v2[/bold]" in done.stdout and "[red]b:smile:" in done.stdout
    assert json.loads((tmp_path / "r.jsonl.summary.json").read_text())["counts"]["ok"] == 4
