"""Gradient probe: per-task gradient magnitude on shared parameters, averaged per epoch.

Gamma_n^t = mean over shared parameter tensors m of ||dL_t / d theta_m||, each task's gradient
taken on its own with ``torch.autograd.grad`` (retain_graph=True), which returns the gradients
instead of accumulating them into ``.grad``: the training step that follows is unchanged.

The history is stored as gradients.json:
``{"tasks": {"<name>": {"kind": "cls"|"reg", "magnitudes": [per-epoch floats]}}}``
(an epoch in which a task had no usable sample is written as ``null``).
"""

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from galw.weighting import KIND_FACTORS, check_kinds


class GalwFileError(ValueError):
    """A gradients.json or groups.json file that does not have the expected shape."""


def read_json(path: str | Path) -> object:
    """Parse a JSON file; an unreadable or invalid file is a GalwFileError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as error:
        raise GalwFileError(f"cannot read {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise GalwFileError(f"{path} is not valid JSON: {error}") from error


@dataclass
class GradientHistory:
    """Per-task kinds and per-epoch gradient magnitudes (NaN where an epoch had no sample)."""

    kinds: dict[str, str]
    magnitudes: dict[str, list[float]]

    def to_dict(self) -> dict:
        return {
            "tasks": {
                task: {
                    "kind": self.kinds[task],
                    "magnitudes": [None if math.isnan(m) else m for m in self.magnitudes[task]],
                }
                for task in self.magnitudes
            }
        }

    @classmethod
    def from_dict(cls, data: object) -> "GradientHistory":
        tasks = data.get("tasks") if isinstance(data, dict) else None
        if not isinstance(tasks, dict) or not tasks:
            raise GalwFileError(
                'expected {"tasks": {"<name>": {"kind": ..., "magnitudes": [...]}}}'
            )
        kinds, magnitudes = {}, {}
        for task, entry in tasks.items():
            if not isinstance(entry, dict) or entry.get("kind") not in KIND_FACTORS:
                raise GalwFileError(f"task {task!r}: 'kind' must be one of {sorted(KIND_FACTORS)}")
            values = entry.get("magnitudes")
            if not isinstance(values, list) or not all(_is_number_or_null(v) for v in values):
                raise GalwFileError(f"task {task!r}: 'magnitudes' must be a list of numbers")
            kinds[task] = entry["kind"]
            magnitudes[task] = [math.nan if v is None else float(v) for v in values]
        return cls(kinds, magnitudes)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "GradientHistory":
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except GalwFileError as error:
            raise GalwFileError(f"{path}: {error}") from error


def _is_number_or_null(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _split_named(params: Iterable[Tensor] | Iterable[tuple[str, Tensor]]) -> list[Tensor]:
    """Accept ``model.parameters()`` or ``model.named_parameters()``; keep trainable tensors."""
    tensors = [p[1] if isinstance(p, tuple) else p for p in params]
    return [t for t in tensors if t.requires_grad]


class GradientProbe:
    """Records per-task gradient magnitudes on ``shared_params`` and averages them per epoch.

    Use: ``if probe.should_sample(i): probe.record(losses)`` before ``backward()``, and
    ``probe.end_epoch()`` after each epoch; ``probe.history()`` gives the gradients.json data.

    A shared tensor a task does not reach (``allow_unused``) counts as a zero gradient, so every
    task's magnitude is a mean over the same tensors. A task whose loss has no graph (a constant,
    e.g. no positives in the batch) or whose gradient is not finite (a skipped AMP step) gives
    no sample on that iteration.

    In data-parallel training each process holds one shard of the batch; ``reduce_gradients``
    (e.g. an all-reduce mean over the processes) then turns each task's per-shard gradients into
    the whole batch's before the norms are taken, on every process alike. The norm of the mean
    is the magnitude one process would measure on the whole batch; a mean of per-shard norms
    would be larger, and more so with more processes.
    """

    def __init__(
        self,
        shared_params: Iterable[Tensor] | Iterable[tuple[str, Tensor]],
        tasks: Sequence[str],
        kinds: Mapping[str, str] | None = None,
        every: int = 1,
        reduce_gradients: Callable[[list[Tensor]], list[Tensor]] | None = None,
    ) -> None:
        self.params = _split_named(shared_params)
        self.reduce_gradients = reduce_gradients
        if not self.params:
            raise ValueError("the probe needs at least one shared parameter that requires grad")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if kinds is not None:
            check_kinds(tasks, kinds)
        self.tasks = tuple(tasks)
        self.kinds = None if kinds is None else {task: kinds[task] for task in tasks}
        self.every = every
        self._sums = dict.fromkeys(self.tasks, 0.0)
        self._counts = dict.fromkeys(self.tasks, 0)
        self._magnitudes: dict[str, list[float]] = {task: [] for task in self.tasks}

    def should_sample(self, iteration: int) -> bool:
        """Whether to probe on this iteration (every ``every``-th, counting from 0)."""
        return iteration % self.every == 0

    def record(self, losses: Mapping[str, Tensor], grad_scale: float = 1.0) -> dict[str, float]:
        """Measure each task's magnitude on this iteration; return the values taken.

        Extra loss names are ignored. ``grad_scale`` (e.g. ``GradScaler.get_scale()``) scales
        the (float32) losses before differentiation, against fp16 underflow in backward, and is
        divided out.
        """
        missing = [task for task in self.tasks if task not in losses]
        if missing:
            raise KeyError(f"losses missing for probed tasks {missing}")
        taken = {}
        for task in self.tasks:
            magnitude = self._magnitude(losses[task], grad_scale)
            if magnitude is not None:
                self._sums[task] += magnitude
                self._counts[task] += 1
                taken[task] = magnitude
        return taken

    def _magnitude(self, loss: Tensor, grad_scale: float) -> float | None:
        has_graph = loss.requires_grad
        if not has_graph and self.reduce_gradients is None:
            return None
        grads: Sequence[Tensor | None] = [None] * len(self.params)
        if has_graph:
            grads = torch.autograd.grad(
                loss.float() * grad_scale, self.params, retain_graph=True, allow_unused=True
            )
        if self.reduce_gradients is not None:
            # every process takes part, with zeros where its shard gave no gradient
            filled = [
                torch.zeros_like(p, dtype=torch.float32) if g is None else g.float()
                for g, p in zip(grads, self.params, strict=True)
            ]
            flag = torch.tensor([float(has_graph)], device=self.params[0].device)
            *grads, flag = self.reduce_gradients([*filled, flag])
            if flag.item() == 0.0:
                return None  # no process's loss had a graph
        with torch.no_grad():
            # an unused tensor (None) has a zero gradient: it adds 0 to the sum, 1 to the count
            norms = [torch.linalg.vector_norm(g.float()) for g in grads if g is not None]
            total = torch.stack(norms).sum().item() if norms else 0.0
        value = total / len(self.params) / grad_scale
        return value if math.isfinite(value) else None

    def end_epoch(self) -> dict[str, float]:
        """Close the epoch: append each task's mean (NaN if it had no sample) and reset."""
        if not any(self._counts.values()):
            raise RuntimeError("end_epoch() called with no sample recorded in this epoch")
        means = {}
        for task in self.tasks:
            count = self._counts[task]
            means[task] = self._sums[task] / count if count else math.nan
            self._magnitudes[task].append(means[task])
        self._sums = dict.fromkeys(self.tasks, 0.0)
        self._counts = dict.fromkeys(self.tasks, 0)
        return means

    @property
    def magnitudes(self) -> dict[str, list[float]]:
        """Per task, one mean magnitude per finished epoch."""
        return {task: list(values) for task, values in self._magnitudes.items()}

    def history(self) -> GradientHistory:
        """The finished epochs as a GradientHistory (needs ``kinds``)."""
        if self.kinds is None:
            raise ValueError("the probe was built without kinds; gradients.json needs them")
        return GradientHistory(dict(self.kinds), self.magnitudes)

    def state_dict(self) -> dict:
        """Plain-Python state, so a probe run can resume from a checkpoint mid-epoch."""
        return {
            "sums": dict(self._sums),
            "counts": dict(self._counts),
            "magnitudes": self.magnitudes,
        }

    def load_state_dict(self, state: Mapping) -> None:
        if set(state["magnitudes"]) != set(self.tasks):
            raise ValueError("probe state was saved for different tasks")
        self._sums = dict(state["sums"])
        self._counts = dict(state["counts"])
        self._magnitudes = {task: list(v) for task, v in state["magnitudes"].items()}
