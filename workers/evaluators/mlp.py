"""Built-in ``mlp``: a small torch MLP trained on scikit-learn's digits (shipped, not downloaded).

Params: ``hidden`` (layer widths), ``lr``, ``epochs``, ``dropout``, ``batch_size``, ``seed``.
Scores: ``accuracy`` (validation, max), ``params`` (parameter count, min), ``train_seconds`` (min).
Runs on ``context.device``; the same seed gives the same accuracy on the same device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from workers.contract import Candidate
from workers.evaluators import EvaluationContext, Scores

DATA_SPLIT_SEED = 0  # the train/validation split is the same for every candidate
VALIDATION_FRACTION = 0.2
MAX_LAYERS = 4
MAX_WIDTH = 1024
MAX_EPOCHS = 500


@dataclass(frozen=True)
class MLPParams:
    """A candidate's hyper-parameters, validated."""

    hidden: tuple[int, ...] = (64,)
    lr: float = 1e-3
    epochs: int = 10
    dropout: float = 0.0
    batch_size: int = 64
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> MLPParams:
        """Validate ``candidate.params``; raises ValueError naming the bad field."""
        unknown = set(params) - {"hidden", "lr", "epochs", "dropout", "batch_size", "seed"}
        if unknown:
            raise ValueError(f"mlp: unknown param(s) {sorted(unknown)}")
        hidden = params.get("hidden", [64])
        if isinstance(hidden, int):
            hidden = [hidden]
        if (
            not isinstance(hidden, list)
            or not 1 <= len(hidden) <= MAX_LAYERS
            or not all(isinstance(w, int) and 1 <= w <= MAX_WIDTH for w in hidden)
        ):
            raise ValueError(
                f"mlp: hidden must be a list of 1..{MAX_LAYERS} widths in 1..{MAX_WIDTH}, "
                f"got {hidden!r}"
            )
        lr = _number(params, "lr", 1e-3, 0.0, 10.0)
        dropout = _number(params, "dropout", 0.0, 0.0, 0.95, closed=True)
        epochs = _integer(params, "epochs", 10, 1, MAX_EPOCHS)
        batch_size = _integer(params, "batch_size", 64, 1, 4096)
        seed = _integer(params, "seed", 0, 0, 2**31 - 1)
        return cls(tuple(hidden), lr, epochs, dropout, batch_size, seed)


def _number(
    params: dict[str, Any], name: str, default: float, low: float, high: float, *,
    closed: bool = False,
) -> float:
    value = params.get(name, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and (low <= value <= high if closed else low < value <= high):
        return float(value)
    bracket = "[" if closed else "("
    raise ValueError(f"mlp: {name} must be a number in {bracket}{low}, {high}], got {value!r}")


def _integer(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    raise ValueError(f"mlp: {name} must be an integer in [{low}, {high}], got {value!r}")


@cache
def dataset(device: str) -> tuple[Any, Any, Any, Any]:
    """Digits as tensors on ``device`` (cached per process): x_train, y_train, x_val, y_val."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(DATA_SPLIT_SEED))
    n_val = int(len(y) * VALIDATION_FRACTION)
    val, train = order[:n_val], order[n_val:]
    return tuple(t.to(device) for t in (x[train], y[train], x[val], y[val]))  # type: ignore[return-value]


def build_model(p: MLPParams, n_in: int, n_out: int) -> Any:
    """Linear -> ReLU -> Dropout per hidden layer, then a linear classifier."""
    from torch import nn

    layers: list[nn.Module] = []
    width = n_in
    for size in p.hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if p.dropout > 0:
            layers.append(nn.Dropout(p.dropout))
        width = size
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def train_and_score(p: MLPParams, device: Any) -> dict[str, float]:
    """Train with Adam and cross-entropy; score on the held-out split."""
    import torch

    x_train, y_train, x_val, y_val = dataset(str(device))
    torch.manual_seed(p.seed)  # initial weights and dropout masks
    shuffle = torch.Generator().manual_seed(p.seed)
    model = build_model(p, x_train.shape[1], 10).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    started = time.perf_counter()
    model.train()
    for _ in range(p.epochs):
        order = torch.randperm(len(y_train), generator=shuffle).to(device)
        for start in range(0, len(order), p.batch_size):
            batch = order[start : start + p.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_val).argmax(dim=1) == y_val).float().mean().item()
    seconds = time.perf_counter() - started  # .item() above waited for the device
    return {
        "accuracy": float(accuracy),
        "params": float(sum(t.numel() for t in model.parameters())),
        "train_seconds": seconds,
    }


def mlp(candidate: Candidate, context: EvaluationContext) -> Scores:
    """Train the candidate's MLP on digits; accuracy, parameter count and training time."""
    return train_and_score(MLPParams.from_params(dict(candidate.params)), context.device)
