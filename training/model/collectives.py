"""What the losses need to see the global batch when training runs in several processes.

A step of data-parallel training sees one shard of the global batch per process. Three things
in the losses must nevertheless be those of the global batch (docs/ARCHITECTURE.md, "Training
on several processes"):

- normalisers (the number of FCOS positives, the centerness sum, the known attributes): each
  process divides its sum by the global count over the number of processes, so that the mean
  of the processes' losses, which DDP's gradient averaging takes, is the global batch's loss;
- the positive re-id features of OIM and the triplet loss: gathered from every process, with
  gradients flowing back to their own process, so every process computes the loss the single
  process would compute on the global batch;
- the memory updates: every process applies the same gathered features in the same order
  (process 0's first), so the lookup tables and queues stay identical everywhere.

``LocalBatch`` is the one-process case (every operation the identity); ``ProcessGroupBatch``
does it over a ``torch.distributed`` process group of its own, so that these collectives never
interleave with DDP's gradient all-reduce on the default group.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class LocalBatch:
    """One process holds the whole batch: nothing to combine."""

    world_size = 1

    def mean_count(self, value: Tensor) -> Tensor:
        """The global sum of ``value`` over the number of processes (here: ``value``)."""
        return value.detach()

    def gather(self, tensor: Tensor) -> Tensor:
        """The rows of every process, process 0's first (here: ``tensor``); differentiable."""
        return tensor

    def gather_detached(self, tensor: Tensor) -> Tensor:
        """As ``gather``, without gradient."""
        return tensor.detach()


class ProcessGroupBatch(LocalBatch):
    """The global batch spread over the processes of ``group`` (one shard each)."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def mean_count(self, value: Tensor) -> Tensor:
        total = value.detach().clone()
        dist.all_reduce(total, group=self.group)
        return total / self.world_size

    def gather(self, tensor: Tensor) -> Tensor:
        return _GatherRows.apply(tensor, self)

    def gather_detached(self, tensor: Tensor) -> Tensor:
        return self._gather(tensor.detach())[0]

    def _gather(self, tensor: Tensor) -> tuple[Tensor, list[int]]:
        """All processes' rows concatenated (shards may differ in length), and the lengths."""
        count = torch.tensor([len(tensor)], device=tensor.device)
        counts = [torch.zeros_like(count) for _ in range(self.world_size)]
        dist.all_gather(counts, count, group=self.group)
        lengths = [int(c) for c in counts]
        longest = max(lengths)
        if longest == 0:  # every shard is empty (all processes know it): nothing to send
            return tensor.new_zeros((0, *tensor.shape[1:])), lengths
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))
        padded[: len(tensor)] = tensor
        slots = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(slots, padded.contiguous(), group=self.group)
        return torch.cat([slot[:n] for slot, n in zip(slots, lengths, strict=True)]), lengths


class _GatherRows(torch.autograd.Function):
    """Concatenate every process's rows; backward sums each row's gradient over the processes
    (each computed the same loss on the gathered rows) and keeps this process's rows."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, batch: ProcessGroupBatch) -> Tensor:
        gathered, lengths = batch._gather(tensor)
        ctx.batch, ctx.lengths = batch, lengths
        return gathered

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        batch, lengths = ctx.batch, ctx.lengths
        if sum(lengths) == 0:
            return grad.new_zeros((0, *grad.shape[1:])), None
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=batch.group)
        start = sum(lengths[: batch.rank])
        return grad[start : start + lengths[batch.rank]], None
