"""The processes of one training run: one, or several started by ``torchrun``.

``torchrun --nproc_per_node N -m training.galw ...`` starts N copies of the training command
with RANK, WORLD_SIZE and LOCAL_RANK in their environment; ``TrainingProcesses`` reads them,
joins the process group (gloo on the CPU, NCCL on CUDA, one GPU per process) and offers the
few collective operations the training loop needs. A run without those variables is one process
and every operation is the identity. docs/ARCHITECTURE.md, "Training on several processes",
has the design.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from training.model.collectives import LocalBatch, ProcessGroupBatch

# Collectives wait this long for a process that lags (rank 0 drawing a plot, the embedding
# spread at an epoch's end, a slow checkpoint write) before the run fails.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


class TrainingProcesses:
    """This process's place among the run's processes, and their collective operations."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self._batch_group: Any = None

    @classmethod
    def from_environment(cls) -> TrainingProcesses:
        """The processes torchrun describes in the environment (one process without it)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        return cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, plots, checkpoints, metrics and the export."""
        return self.rank == 0

    def device(self, name: str) -> torch.device:
        """The device of this process: with several processes on CUDA, GPU ``LOCAL_RANK``."""
        device = torch.device(name)
        if self.distributed and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device) -> None:
        """Join the process group (several processes only)."""
        if not self.distributed or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            rank=self.rank,
            world_size=self.world_size,
            timeout=COLLECTIVE_TIMEOUT,
            device_id=device if device.type == "cuda" else None,
        )
        # a group of its own for the losses' gathers, whose backward runs while DDP's
        # gradient all-reduce is in flight on the default group
        self._batch_group = dist.new_group(backend=backend)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def batch_collectives(self) -> LocalBatch:
        """What the model's losses use to see the global batch."""
        if not self.distributed:
            return LocalBatch()
        return ProcessGroupBatch(self._batch_group)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module a training step calls: DDP over ``model`` with several processes.

        Buffers are not broadcast from rank 0 at each forward: the OIM memories are kept
        identical by applying the same gathered update everywhere (a broadcast of tens of MB per
        step would only hide a bug), and BatchNorm statistics are rank 0's or synchronised."""
        if not self.distributed:
            return model
        device = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            forward_sync_buffers=False,
        )

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``values`` over the processes."""
        if not self.distributed:
            return values
        total = values.detach().clone()
        dist.all_reduce(total)
        return total

    def average_gradients(self, parameters: Iterable[torch.Tensor]) -> None:
        """Average ``.grad`` over the processes (for parameters outside DDP's module)."""
        if not self.distributed:
            return
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad)
            parameter.grad /= self.world_size

    def average_tensors(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """The element-wise mean over the processes of each tensor (one collective)."""
        if not self.distributed or not tensors:
            return tensors
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world_size
        parts = flat.split([t.numel() for t in tensors])
        return [part.view_as(t) for part, t in zip(parts, tensors, strict=True)]

    def max_int(self, value: int, device: torch.device) -> int:
        """The largest ``value`` of any process."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def gather_objects(self, value: Any) -> list[Any]:
        """Every process's ``value`` (picklable), in rank order."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


SINGLE_PROCESS = TrainingProcesses()
