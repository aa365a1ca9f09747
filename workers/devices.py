"""GPU placement: each pool child claims one GPU before CUDA initialises; CPU without one.

``evofleet worker`` sets ``EVOFLEET_GPUS`` (e.g. ``0,2,3``) and concurrency = their count.
billiard gives every live pool child a distinct index in ``range(concurrency)`` and hands a
replaced child the lowest free index, so ``gpu_for_child`` maps live children one to one onto
GPUs. The worker's main process never touches CUDA (a forked CUDA context is unusable).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from celery.signals import worker_init, worker_process_init

logger = logging.getLogger(__name__)

GPUS_ENV = "EVOFLEET_GPUS"
THREADS_ENV = "EVOFLEET_TORCH_THREADS"

_device: Any = None


def parse_gpu_list(value: str | None) -> list[str]:
    """``"0,2,3"`` -> ``["0", "2", "3"]``; empty, ``none`` or ``cpu`` -> no GPU."""
    if not value or value.strip().lower() in ("none", "cpu", ""):
        return []
    ids = [part.strip() for part in value.split(",") if part.strip()]
    for gpu in ids:
        if not gpu.isdigit():
            raise ValueError(f"GPU ids must be non-negative integers, got {gpu!r} in {value!r}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"GPU ids must not repeat: {value!r}")
    return ids


def gpu_for_child(index: int, gpu_ids: Sequence[str]) -> str | None:
    """The GPU a pool child with this billiard index uses, or None on a CPU node."""
    if not gpu_ids:
        return None
    if index < 0:
        raise ValueError(f"pool child index must be >= 0, got {index}")
    return gpu_ids[index % len(gpu_ids)]


@worker_init.connect
def preload_torch(**_: Any) -> None:
    """Import torch once in the worker's main process, before the pool forks.

    Importing it takes seconds; done in a pool child, it would run inside the first task's hard
    time limit (and again in every replaced child). Importing does not initialise CUDA.
    """
    import torch  # noqa: F401


@worker_process_init.connect
def claim_gpu(**_: Any) -> None:
    """In a fresh pool child: pin it to its GPU before anything initialises CUDA."""
    from billiard.process import current_process

    gpus = parse_gpu_list(os.environ.get(GPUS_ENV))
    index = getattr(current_process(), "index", 0) or 0
    gpu = gpu_for_child(index, gpus)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        logger.info("pool child %d claims GPU %s", index, gpu)


def current_device() -> Any:
    """This process's torch device: its GPU when it claimed one and CUDA works, else the CPU."""
    global _device
    if _device is None:
        import torch

        if torch.cuda.is_available():
            _device = torch.device("cuda", 0)
        else:
            torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
            _device = torch.device("cpu")
    return _device


def release_memory() -> None:
    """Give cached GPU memory back after a candidate (no-op on the CPU)."""
    if _device is not None and _device.type == "cuda":
        import torch

        torch.cuda.empty_cache()


def after_failure(exc: BaseException) -> None:
    """Log a CUDA failure; the result is already recorded as ``error``."""
    if "CUDA" in str(exc) or type(exc).__name__ == "OutOfMemoryError":
        logger.warning("CUDA failure in evaluator: %s", exc)
