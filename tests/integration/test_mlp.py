"""The built-in ``mlp`` evaluator: deterministic per seed, fast enough on one core, and a subset
of examples/mlp-search.yaml through ``evofleet launch`` in local mode."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from orchestration.sinks import summary_path
from workers.contract import Candidate
from workers.evaluators import EvaluationContext, resolve
from workers.evaluators.mlp import MLPParams, RowAdam, train_and_score

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mlp-search.yaml"
OBJECTIVES = {"accuracy": "max", "params": "min", "train_seconds": "min"}


def parameter_count(hidden: list[int]) -> int:
    widths = [64, *hidden, 10]  # digits: 8x8 pixels in, 10 classes out
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def context() -> EvaluationContext:
    return EvaluationContext(device=torch.device("cpu"), generation_id="g", objectives=OBJECTIVES,
                             worker="test")


def test_same_seed_same_accuracy_and_scores_make_sense() -> None:
    torch.set_num_threads(1)
    mlp = resolve("mlp")  # through the entry point, as a worker finds it
    params = {"hidden": [32], "lr": 0.01, "epochs": 5, "dropout": 0.1, "batch_size": 64,
              "seed": 7}
    first = mlp(Candidate(id="a", params=params), context())
    second = mlp(Candidate(id="b", params=params), context())
    other_seed = mlp(Candidate(id="c", params={**params, "seed": 8}), context())
    assert first["accuracy"] == second["accuracy"]
    assert 0.8 < first["accuracy"] <= 1.0  # 5 epochs on digits: well above chance (0.1)
    assert first["params"] == second["params"] == parameter_count([32])
    assert first["train_seconds"] > 0
    assert other_seed["params"] == first["params"]
    first_weights = _trained_first_layer(params)
    assert torch.equal(first_weights, _trained_first_layer(params))
    assert not torch.equal(first_weights, _trained_first_layer({**params, "seed": 8}))


def _trained_first_layer(params: dict[str, object]) -> torch.Tensor:
    torch.manual_seed(int(params["seed"]))  # type: ignore[call-overload]
    from workers.evaluators.mlp import build_model

    model = build_model(MLPParams.from_params(params), 64, 10)
    return model[0].weight.detach().clone()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hidden": []}, "hidden"),
        ({"hidden": [0]}, "hidden"),
        ({"lr": 0}, "lr"),
        ({"epochs": 1.5}, "epochs"),
        ({"dropout": 1.0}, "dropout"),
        ({"batch_size": True}, "batch_size"),
        ({"momentum": 0.9}, "unknown"),
    ],
)
def test_bad_params_are_rejected_with_the_field_named(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MLPParams.from_params(params)


def test_largest_example_candidate_trains_in_under_two_cpu_seconds() -> None:
    """The example's largest settings, on one thread; CPU time, so other load does not count."""
    spec = yaml.safe_load(EXAMPLE.read_text())
    widest = max(spec["candidates"], key=lambda c: (parameter_count(c["params"]["hidden"]),
                                                    c["params"]["epochs"],
                                                    -c["params"]["batch_size"]))
    largest = {**widest["params"], "epochs": 20, "batch_size": 32}  # worst case of the space
    torch.set_num_threads(1)
    train_and_score(MLPParams.from_params({"hidden": [16], "epochs": 1}), "cpu")  # warm up
    started = time.process_time()
    scores = train_and_score(MLPParams.from_params(largest), torch.device("cpu"))
    cpu_seconds = time.process_time() - started
    print(f"largest example candidate {largest}: {cpu_seconds:.2f} CPU s, {scores}")
    assert cpu_seconds < 2.0
    assert scores["accuracy"] > 0.9


@pytest.mark.slow
def test_example_subset_through_evofleet_launch_in_local_mode(tmp_path: Path) -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())
    assert len(spec["candidates"]) == 64
    assert {c["priority"] for c in spec["candidates"]} == {"critical", "high", "normal", "low"}
    assert spec["objectives"] == OBJECTIVES
    subset = [c for c in spec["candidates"] if c["params"]["epochs"] <= 10][:6]
    twin = {**subset[0], "id": "twin", "priority": "low"}  # same params: same accuracy
    spec["candidates"] = [*subset, twin]
    spec_file = tmp_path / "mlp-subset.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    out = tmp_path / "mlp.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVOFLEET_")}  # local mode
    run = subprocess.run(
        [str(Path(sys.executable).with_name("evofleet")), "launch", str(spec_file), "--out",
         str(out)],
        cwd=ROOT, env={**env, "COLUMNS": "160"}, capture_output=True, text=True, timeout=100,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Pareto front" in run.stdout
    rows = {row["candidate_id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert sorted(rows) == sorted(c["id"] for c in spec["candidates"])
    for candidate in spec["candidates"]:
        row = rows[candidate["id"]]
        assert row["status"] == "ok", row
        assert row["device"] == "cpu"
        assert row["scores"]["params"] == parameter_count(candidate["params"]["hidden"])
        assert 0.5 < row["scores"]["accuracy"] <= 1.0
    assert rows["twin"]["scores"]["accuracy"] == rows[subset[0]["id"]]["scores"]["accuracy"]
    summary = json.loads(summary_path(out).read_text())
    front = {entry["candidate_id"] for entry in summary["pareto_front"]}
    assert front and front <= set(rows)


def test_a_chunk_trains_each_shape_as_one_vectorised_model_with_the_same_accuracy() -> None:
    """``evaluate_batch``: same-shape candidates (own seeds and learning rates) trained together
    reach the accuracy each reaches alone; other shapes in the chunk keep their own scores."""
    torch.set_num_threads(1)
    mlp = resolve("mlp")
    shared = {"hidden": [32], "epochs": 3, "batch_size": 64}
    params = [{**shared, "seed": seed, "lr": lr} for seed, lr in ((1, 0.005), (2, 0.01), (3, 0.02))]
    params.insert(1, {"hidden": [16, 8], "epochs": 2, "seed": 4, "lr": 0.02})  # a shape of its own
    candidates = [Candidate(id=f"c{i}", params=p) for i, p in enumerate(params)]
    together = mlp.evaluate_batch(candidates, context())  # type: ignore[attr-defined]
    alone = [mlp(candidate, context()) for candidate in candidates]
    assert len(together) == len(candidates)
    for batched, single, p in zip(together, alone, params, strict=True):
        assert abs(batched["accuracy"] - single["accuracy"]) <= 0.01, (p, batched, single)
        assert batched["params"] == single["params"] == parameter_count(p["hidden"])
        assert batched["accuracy"] > 0.5
    assert len({round(s["accuracy"], 6) for s in together}) > 1  # not one model copied


def test_row_adam_moves_each_row_as_torch_adam_moves_that_model_alone() -> None:
    """The vectorised path's optimizer: rows of one tensor, each with its own learning rate,
    step for step what ``torch.optim.Adam`` does to each row as a model of its own."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(3, 5, 4, generator=generator)
    grads = [torch.randn(3, 5, 4, generator=generator) for _ in range(6)]
    lrs = [1e-3, 1e-2, 0.1]
    stacked = start.clone().requires_grad_()
    rows = RowAdam([stacked], lrs)
    alone = [start[i].clone().requires_grad_() for i in range(3)]
    adams = [torch.optim.Adam([w], lr=lr) for w, lr in zip(alone, lrs, strict=True)]
    for grad in grads:
        rows.zero_grad()
        stacked.grad = grad.clone()
        rows.step()
        for i, (w, adam) in enumerate(zip(alone, adams, strict=True)):
            adam.zero_grad()
            w.grad = grad[i].clone()
            adam.step()
    for i, w in enumerate(alone):
        assert torch.allclose(stacked[i], w, rtol=0, atol=1e-6), i
    assert not torch.allclose(stacked[0], start[0])  # they did move


def test_a_chunk_with_an_invalid_candidate_raises_so_each_is_scored_alone() -> None:
    mlp = resolve("mlp")
    chunk = [Candidate(id="ok", params={"epochs": 1}), Candidate(id="bad", params={"lr": -1})]
    with pytest.raises(ValueError, match="lr"):
        mlp.evaluate_batch(chunk, context())  # type: ignore[attr-defined]


@pytest.mark.slow
def test_mlp_chunks_on_a_real_worker_give_one_result_each(redis_url: str, session_worker: object) -> None:
    from tests.conftest import make_spec, run_spec
    from workers.contract import Status

    rows = [{"id": f"m{i}", "params": {"hidden": [16], "epochs": 1, "seed": i, "lr": 0.01}}
            for i in range(8)]
    rows.append({"id": "bad", "params": {"hidden": [16], "epochs": 1, "lr": -1.0}})
    spec = make_spec(rows, evaluator="mlp", objectives=OBJECTIVES, chunk_size=3)
    generation = run_spec(spec, redis_url, timeout_s=120)
    results = {r.candidate_id: r for r in generation.results()}
    assert sorted(results) == sorted(row["id"] for row in rows)
    assert results["bad"].status == Status.error and "lr" in results["bad"].error.message  # type: ignore[union-attr]
    for i in range(8):
        assert results[f"m{i}"].status == Status.ok and results[f"m{i}"].scores["accuracy"] > 0.3
