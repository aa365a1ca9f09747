"""GPU placement: each pool child claims one GPU before CUDA initialises; CPU without one.

``evofleet worker`` sets ``EVOFLEET_GPUS`` (e.g. ``0,2,3``) and concurrency = their count times
``--children-per-gpu`` K. billiard gives every live pool child a distinct index in
``range(concurrency)`` and hands a replaced child the lowest free index, so ``gpu_for_child``
(index modulo the GPU count) puts exactly K live children on every GPU. The worker's main
process never touches CUDA (a forked CUDA context is unusable).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from billiard.pool import EX_RECYCLE
from celery.signals import worker_init, worker_process_init

logger = logging.getLogger(__name__)

GPUS_ENV = "EVOFLEET_GPUS"
THREADS_ENV = "EVOFLEET_TORCH_THREADS"
MEMORY_FRACTION_ENV = "EVOFLEET_GPU_MEMORY_FRACTION"  # per child: an OOM stays that child's own

_device: Any = None
_context_broken = False

# Messages of CUDA errors after which the context is unusable (torch raises RuntimeError, or
# torch.AcceleratorError in recent versions).
_BROKEN_CONTEXT_MARKERS = (
    "CUDA error", "illegal memory access", "device-side assert", "unspecified launch failure",
    "CUBLAS_STATUS_EXECUTION_FAILED", "CUDNN_STATUS_EXECUTION_FAILED", "misaligned address",
)


_GPU_ID = re.compile(r"\d+|(GPU|MIG)-[0-9A-Za-z/-]+")


def parse_gpu_list(value: str | None) -> list[str]:
    """``"0,2,3"`` -> ``["0", "2", "3"]``; empty, ``none`` or ``cpu`` -> no GPU.

    Ids are indices or UUIDs (``GPU-...``, ``MIG-...``), as ``CUDA_VISIBLE_DEVICES`` takes them.
    """
    if not value or value.strip().lower() in ("none", "cpu", ""):
        return []
    ids = [part.strip() for part in value.split(",") if part.strip()]
    for gpu in ids:
        if not _GPU_ID.fullmatch(gpu):
            raise ValueError(
                f"GPU ids are indices (0, 1, ...) or UUIDs (GPU-..., MIG-...); got {gpu!r} in {value!r}"
            )
    if len(set(ids)) != len(ids):
        raise ValueError(f"GPU ids must not repeat: {value!r}")
    return ids


def gpu_for_child(index: int, gpu_ids: Sequence[str]) -> str | None:
    """The GPU a pool child with this billiard index uses, or None on a CPU node.

    With ``len(gpu_ids) * K`` children, the live indices are ``range(len(gpu_ids) * K)`` and
    each GPU gets exactly K of them.
    """
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

    configured = os.environ.get(GPUS_ENV)
    index = getattr(current_process(), "index", 0) or 0
    gpu = gpu_for_child(index, parse_gpu_list(configured))
    if gpu is not None:
        # nvidia-smi numbers GPUs in PCI bus order, CUDA fastest first unless told otherwise.
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        logger.info("pool child %d claims GPU %s", index, gpu)
    elif configured is not None:
        # `evofleet worker --gpus 0` on a GPU machine: a CPU worker must not grab GPU 0.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def current_device() -> Any:
    """This process's torch device: its GPU when it claimed one and CUDA works, else the CPU."""
    global _device
    if _device is None:
        import torch

        if torch.cuda.is_available():
            _device = torch.device("cuda", 0)
            fraction = memory_fraction(os.environ.get(MEMORY_FRACTION_ENV))
            if fraction is not None:
                # The caching allocator refuses past this share, raising an ordinary OOM.
                torch.cuda.set_per_process_memory_fraction(fraction, _device)
        else:
            if os.environ.get("CUDA_VISIBLE_DEVICES"):
                logger.warning("GPU %s claimed but CUDA is unavailable; evaluating on the CPU",
                               os.environ["CUDA_VISIBLE_DEVICES"])
            torch.set_num_threads(int(os.environ.get(THREADS_ENV, "1")))
            _device = torch.device("cpu")
    return _device


def memory_fraction(value: str | None) -> float | None:
    """``EVOFLEET_GPU_MEMORY_FRACTION`` as a share of the GPU in (0, 1]; None when unset."""
    if value is None or not value.strip():
        return None
    try:
        fraction = float(value)
    except ValueError:
        fraction = math.nan
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"GPU memory fraction must be in (0, 1], got {value!r}")
    return fraction


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error: the context survives it, the candidate fails."""
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc)


def is_context_broken(exc: BaseException) -> bool:
    """A CUDA error that leaves this process's context unusable (every later call fails too).

    Sticky errors (illegal address, device-side assert, launch failure) and any other CUDA
    error but out of memory count as broken: replacing a child costs seconds, keeping a
    poisoned one turns every later candidate into an error.
    """
    if is_out_of_memory(exc):
        return False
    text = str(exc)
    return type(exc).__name__ == "AcceleratorError" or any(
        marker in text for marker in _BROKEN_CONTEXT_MARKERS
    )


def release_memory() -> None:
    """Give cached GPU memory back after a candidate (no-op on the CPU).

    Raises SystemExit (see ``after_failure``) when the CUDA context turns out to be broken.
    """
    if _device is None or _device.type != "cuda" or _context_broken:
        return
    import torch

    try:
        torch.cuda.empty_cache()
    except Exception as exc:
        after_failure(exc)
        logger.warning("could not release GPU memory: %s", exc)


def after_failure(exc: BaseException) -> None:
    """Called in the pool child after an evaluator's exception was recorded as ``error``.

    Out of memory: logged; the cache is released after the candidate as always. A broken CUDA
    context: this child leaves at once with billiard's recycle exit code, so the pool replaces
    it. The SystemExit leaves the task before Celery stores its result, so the task is counted
    once, by the worker's main process (``failures.settle_lost_task``): candidates of the task
    that already have a result are left alone, the rest are re-sent one by one to healthy
    children.
    """
    global _context_broken
    if is_out_of_memory(exc):
        logger.warning("CUDA out of memory in evaluator: %s", exc)
    elif is_context_broken(exc):
        _context_broken = True
        logger.error("CUDA context broken (%s); pool child %d exits to be replaced",
                     exc, os.getpid())
        raise SystemExit(EX_RECYCLE)
