"""Training checkpoints: atomic writes and the random-number state a resumed run needs.

A checkpoint is written with ``inference.files.atomic_write``, so a crash while saving leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.files import atomic_write


class CheckpointError(RuntimeError):
    """A checkpoint is missing or unreadable; the message names the file."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` with torch.save, atomically."""
    path = Path(path)
    with atomic_write(path) as temporary:
        torch.save(state, temporary)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU (tensors are moved to the device by their owners)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        # our own files: they hold numpy RNG state and plain dicts besides tensors
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for a damaged file
        raise CheckpointError(f"{path}: cannot read checkpoint ({error})") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training checkpoint")
    return state


def rng_state() -> dict[str, Any]:
    """The state of every random generator a training step may draw from."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned (CUDA state only when there is CUDA)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def split_rng_by_rank(rank: int) -> None:
    """Give process ``rank`` of a data-parallel run random streams of its own, derived from the
    state every process shares (rank 0 keeps it): the RPN and ROI samplers of different
    processes then draw independently."""
    if rank == 0:
        return
    seed_everything(int(torch.randint(2**62, ())) + rank)
