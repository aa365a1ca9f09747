"""Built-in ``mlp``: a small torch MLP trained on scikit-learn's digits (shipped, not downloaded).

Params: ``hidden`` (layer widths), ``lr``, ``epochs``, ``dropout``, ``batch_size``, ``seed``.
Scores: ``accuracy`` (validation, max), ``params`` (parameter count, min), ``train_seconds`` (min).
Runs on ``context.device``; the same seed gives the same accuracy on the same device.
A chunk of candidates is trained together (``evaluate_batch``): candidates of one shape (layers,
epochs, batch size, dropout) as one vectorised model, each with its own weights, seed, learning
rate and result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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


def shape_of(p: MLPParams) -> tuple[Any, ...]:
    """What candidates must share to be trained as one vectorised model."""
    return (p.hidden, p.epochs, p.batch_size, p.dropout)


class RowAdam:
    """``torch.optim.Adam``'s update with its defaults, on parameters whose rows are separate
    models, each row with its own learning rate. Adam is elementwise, so a row moves as that
    model's own Adam would move it (up to rounding); torch's Adam takes one learning rate per
    parameter group, and a group cannot hold one row of a tensor."""

    def __init__(self, params: list[Any], lrs: Sequence[float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        import torch

        self.params = params
        self.betas, self.eps, self.steps = betas, eps, 0
        rows = torch.tensor(lrs, dtype=params[0].dtype, device=params[0].device)
        self.lrs = [rows.view(-1, *[1] * (p.dim() - 1)) for p in params]  # broadcast per row
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    def step(self) -> None:
        import torch

        beta1, beta2 = self.betas
        self.steps += 1
        correction1 = 1 - beta1**self.steps
        correction2_sqrt = (1 - beta2**self.steps) ** 0.5
        with torch.no_grad():
            for param, lr, avg, avg_sq in zip(self.params, self.lrs, self.exp_avg, self.exp_avg_sq,
                                              strict=True):
                grad = param.grad
                avg.lerp_(grad, 1 - beta1)
                avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (avg_sq.sqrt() / correction2_sqrt).add_(self.eps)
                param.addcdiv_(avg * (lr / correction1), denom, value=-1.0)


def train_group_and_score(group: Sequence[MLPParams], device: Any) -> list[dict[str, float]]:
    """Train models of one shape together: ``torch.func.vmap`` over their stacked weights.

    Each model starts from the weights its seed gives alone, shuffles with its own seed and
    has its own Adam learning rate (a row of RowAdam), so without dropout it
    reaches the accuracy it reaches alone, up to floating-point summation order; with dropout
    the masks are drawn differently. ``train_seconds`` is the group's time over its size.
    """
    import torch
    from torch.func import functional_call, vmap

    assert len({shape_of(p) for p in group}) == 1, "one shape per group"
    x_train, y_train, x_val, y_val = dataset(str(device))
    models = []
    for p in group:
        torch.manual_seed(p.seed)
        models.append(build_model(p, x_train.shape[1], 10).to(device))
    base = models[0]
    # One leaf per parameter, its rows the models: the step touches a few tensors, not G models'.
    per_model = [dict(m.named_parameters()) for m in models]
    stacked = {name: torch.stack([params[name].detach() for params in per_model]).requires_grad_()
               for name in per_model[0]}
    optimizer = RowAdam(list(stacked.values()), [p.lr for p in group])

    def loss_of(weights: dict[str, Any], x: Any, y: Any) -> Any:
        return torch.nn.functional.cross_entropy(functional_call(base, weights, (x,)), y)

    losses = vmap(loss_of, randomness="different")
    shuffles = [torch.Generator().manual_seed(p.seed) for p in group]
    shape = group[0]
    started = time.perf_counter()
    base.train()
    for _ in range(shape.epochs):
        orders = torch.stack([torch.randperm(len(y_train), generator=g) for g in shuffles]).to(device)
        for start in range(0, orders.shape[1], shape.batch_size):
            batch = orders[:, start : start + shape.batch_size]
            optimizer.zero_grad()
            # Each model's loss depends on its own weights only: the sum's gradient is each one's.
            losses(stacked, x_train[batch], y_train[batch]).sum().backward()
            optimizer.step()
    base.eval()
    with torch.no_grad():
        logits = vmap(lambda s: functional_call(base, s, (x_val,)))(stacked)
        accuracy = (logits.argmax(dim=2) == y_val).float().mean(dim=1).tolist()
    seconds = (time.perf_counter() - started) / len(group)
    size = float(sum(t.numel() for t in base.parameters()))
    return [{"accuracy": float(a), "params": size, "train_seconds": seconds} for a in accuracy]


def _mlp_batch(candidates: Sequence[Candidate], context: EvaluationContext) -> list[Scores]:
    """Score a chunk: candidates grouped by shape, each group trained as one vectorised model.

    Raises on any invalid candidate, so that the chunk falls back to one by one and the bad
    one gets its own ``error``.
    """
    params = [MLPParams.from_params(dict(c.params)) for c in candidates]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, p in enumerate(params):
        groups.setdefault(shape_of(p), []).append(index)
    scores: list[Scores] = [{} for _ in candidates]
    for members in groups.values():
        group = [params[i] for i in members]
        if len(group) == 1:
            results = [train_and_score(group[0], context.device)]
        else:
            results = train_group_and_score(group, context.device)
        for index, result in zip(members, results, strict=True):
            scores[index] = result
    return scores


mlp.evaluate_batch = _mlp_batch  # type: ignore[attr-defined]
