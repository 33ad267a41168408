"""Training checkpoints: their header, atomic writes and the random-number state a resumed run
needs.

A checkpoint is a dict: the ``CheckpointHeader``'s fields (what rebuilds and exports the network)
as top-level keys, beside the weights ("model") and the training state of its phase. It is
written with ``inference.files.atomic_write``, so a crash while saving leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import difflib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.files import atomic_write
from training.model.config import ModelConfig, resolve_config


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or incomplete; the message names the file."""


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint says besides its weights: the network to rebuild (config, num_ids,
    queue_size, attr_dim) and what its export's card records. ``training.pipeline`` writes it
    into every checkpoint, ``training.export`` reads it back."""

    config: ModelConfig
    num_ids: int
    queue_size: int
    attr_dim: int = 0
    dataset: str | None = None
    max_size: tuple[int, int] | None = None  # the test size the run chose
    metrics: dict[str, Any] | None = None  # an evaluated run's final checkpoint only
    card: dict[str, Any] | None = None  # the card fields of the run's own export (final only)

    def to_state(self) -> dict[str, Any]:
        """The header as checkpoint keys (the config as its dict, the size as a list)."""
        state = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        state["config"] = self.config.to_dict()
        if self.max_size is not None:
            state["max_size"] = list(self.max_size)
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any], source: str | Path) -> CheckpointHeader:
        """The header of a checkpoint read from ``source``. Checkpoints from before a field was
        written take its default; a missing network key, a key that looks like a misspelt
        field, or a config that cannot be rebuilt raise CheckpointError."""
        fields = [item.name for item in dataclasses.fields(cls)]
        missing = [name for name in ("config", "num_ids", "queue_size") if name not in state]
        if missing:
            raise CheckpointError(f"{source}: not a model checkpoint: it lacks {missing}")
        for key in set(state) - set(fields):
            close = difflib.get_close_matches(key, fields, n=1, cutoff=0.75)
            if close:
                raise CheckpointError(
                    f"{source}: checkpoint key {key!r} is not a header field; "
                    f"a misspelling of {close[0]!r}?"
                )
        values = {name: state[name] for name in fields if name in state}
        try:
            values["config"] = resolve_config(state["config"])
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: cannot rebuild the network config: {error}") from None
        if values.get("max_size") is not None:
            long_side, short_side = values["max_size"]
            values["max_size"] = (int(long_side), int(short_side))
        return cls(**values)


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
