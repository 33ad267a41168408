"""One training phase (the probe run or the main run) of Algorithm 1: SGD with warmup and step
decay, gradient clipping, mixed precision on CUDA, a weighting of the named losses, an optional
gradient probe, JSON-lines logging and resumable checkpoints.

The phase's position (epoch, next batch, iterations done) plus the model, optimiser, scaler,
weighting, probe and RNG states make up its checkpoint; with the deterministic batch order of
``training.data.torch_dataset`` a run resumed from it repeats the uninterrupted run.

With several processes (``training.distributed``) each trains on its share of every batch
through DDP; they agree on every stop, and rank 0 alone logs and saves.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from galw.probe import GradientProbe
from galw.weighting import LossWeighting
from training.checkpoint import rng_state, save_checkpoint, set_rng_state, split_rng_by_rank
from training.data.torch_dataset import EpochBatches, TrainImages, epoch_loader
from training.distributed import SINGLE_PROCESS, TrainingProcesses
from training.model.network import PersonSearchModel


def log(message: str) -> None:
    """A progress message on stderr, beside the progress bar (stdout stays free); with several
    processes, rank 0's only."""
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    tqdm.write(f"[galw] {message}", file=sys.stderr)


class TrainingStopped(Exception):
    """Training stopped on request (Ctrl-C or --stop-after-iters) after saving a checkpoint."""

    def __init__(self, reason: str, checkpoint: Path) -> None:
        super().__init__(reason)
        self.reason, self.checkpoint = reason, checkpoint


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass(frozen=True)
class Schedule:
    """Optimiser hyper-parameters and the learning-rate schedule of one phase."""

    lr: float
    epochs: int
    lr_steps: tuple[int, ...]  # epochs (0-based starts) at which lr is multiplied by 0.1
    warmup_iters: int
    warmup_ratio: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip_grad: float = 10.0
    optimizer: str = "sgd"  # the reference's SGD; "adamw" converges faster from scratch

    def lr_at(self, epoch: int, iteration: int) -> float:
        """Learning rate for a phase iteration (0-based) that falls in ``epoch``."""
        decay = 0.1 ** sum(epoch >= step for step in self.lr_steps)
        if iteration < self.warmup_iters:
            progress = iteration / self.warmup_iters
            decay *= self.warmup_ratio + (1.0 - self.warmup_ratio) * progress
        return self.lr * decay


def build_optimizer(
    model: nn.Module, weighting: LossWeighting, schedule: Schedule
) -> torch.optim.Optimizer:
    """SGD (the reference) or AdamW over the model and the weighting's sigmas."""
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if p.requires_grad]},
        # sigmas: no weight decay, which would pull them off their learned values
        {"params": list(weighting.parameters()), "weight_decay": 0.0},
    ]
    if schedule.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=schedule.lr, weight_decay=schedule.weight_decay)
    if schedule.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=schedule.lr, momentum=schedule.momentum, weight_decay=schedule.weight_decay
        )
    raise ValueError(f"unknown optimizer {schedule.optimizer!r}")


@dataclass
class Progress:
    """Where a phase stands: the epoch being trained, its next batch, iterations done."""

    epoch: int = 0
    batch: int = 0
    iteration: int = 0


@dataclass(frozen=True)
class EpochEnd:
    """What an epoch-end callback is told: the phase, and the epoch (0-based) just trained."""

    phase: Phase
    epoch: int


# Called after each epoch, before the epoch-end checkpoint. A returned dict is appended to
# train_log.jsonl, with "phase", "epoch" and "step" (iterations done) filled in when absent.
EpochEndCallback = Callable[[EpochEnd], dict[str, Any] | None]


@dataclass
class PhaseEnvironment:
    """What a phase needs from the run around it: where to save and log, when to stop, and
    what to do at each epoch's end."""

    checkpoint_path: Path
    log_path: Path
    extra_state: Callable[[], dict[str, Any]]  # merged into every checkpoint
    stop: StopRequest
    log_every: int = 20
    checkpoint_every: int = 500
    workers: int = 0
    show_progress: bool = True
    epoch_end: tuple[EpochEndCallback, ...] = ()


BUDGET_SPENT = "iteration budget (--stop-after-iters) spent"
INTERRUPTED = "interrupted (Ctrl-C)"
STOP_REASONS = (None, BUDGET_SPENT, INTERRUPTED)  # in increasing precedence


@dataclass
class StopRequest:
    """A stop asked for by Ctrl-C or by an iteration budget; checked between iterations."""

    budget: int | None = None  # iterations this process may still run (None: unlimited)
    reason: str | None = None
    _interrupts: int = field(default=0, repr=False)

    def spend_iteration(self) -> None:
        if self.budget is not None:
            self.budget -= 1
            if self.budget <= 0 and self.reason is None:
                self.reason = BUDGET_SPENT

    def agree(self, processes: TrainingProcesses, device: torch.device) -> str | None:
        """The reason to stop if any process asked for a stop (else None): every process takes
        the reason of highest precedence (a Ctrl-C on any rank stops them all as interrupted)."""
        code = processes.max_int(STOP_REASONS.index(self.reason), device)
        if code > 0:
            self.reason = STOP_REASONS[code]
        return self.reason if code > 0 else None

    @contextmanager
    def handling_sigint(self) -> Iterator[None]:
        """The first Ctrl-C asks for a stop at the next iteration; a second one aborts."""

        def on_sigint(signum: int, frame: object) -> None:
            self._interrupts += 1
            if self._interrupts > 1:
                raise KeyboardInterrupt
            self.reason = INTERRUPTED

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for --amp (auto: bf16 where CUDA supports it, else fp16; off on CPU)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


@dataclass(frozen=True)
class LastStep:
    """The latest iteration's figures, for the next log record (means over the processes)."""

    total: torch.Tensor
    losses: dict[str, torch.Tensor]
    grad_norm: torch.Tensor
    lr: float


class Phase:
    """Trains ``model`` with ``weighting`` for ``schedule.epochs`` epochs over ``images``."""

    def __init__(
        self,
        name: str,
        model: PersonSearchModel,
        weighting: LossWeighting,
        images: TrainImages,
        batch_size: int,
        schedule: Schedule,
        device: torch.device,
        amp: str = "auto",
        probe: GradientProbe | None = None,
        processes: TrainingProcesses = SINGLE_PROCESS,
    ) -> None:
        """With several ``processes``, ``batch_size`` is the global batch (each process trains
        on its share) and the model is trained through DDP."""
        self.name, self.model, self.weighting, self.images = name, model, weighting, images
        self.batch_size, self.schedule, self.device, self.probe = (
            batch_size,
            schedule,
            device,
            probe,
        )
        self.processes = processes
        self.trainer = processes.wrap(model)  # what a step calls; model itself is saved
        self.amp_dtype = autocast_dtype(device, amp)
        self.progress = Progress()
        self.optimizer = build_optimizer(model, weighting, schedule)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)

    @property
    def batches_per_epoch(self) -> int:
        return EpochBatches.count(len(self.images), self.batch_size)

    @property
    def finished(self) -> bool:
        return self.progress.epoch >= self.schedule.epochs

    def state_dict(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "progress": asdict(self.progress),
            "model": self.model.state_dict(),
            "weighting": self.weighting.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "probe": self.probe.state_dict() if self.probe is not None else None,
            "schedule": asdict(self.schedule),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint of this phase (its RNG state last, as it was at saving)."""
        if state["phase"] != self.name:
            raise ValueError(f"checkpoint is of phase {state['phase']!r}, not {self.name!r}")
        self.progress = Progress(**state["progress"])
        self.model.load_state_dict(state["model"])
        self.weighting.load_state_dict(state["weighting"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.probe is not None:
            self.probe.load_state_dict(state["probe"])
        saved = state.get("rng_ranks") or [state["rng"]]
        rank, world_size = self.processes.rank, self.processes.world_size
        if len(saved) == world_size:
            set_rng_state(saved[rank])
            return
        log(
            f"the checkpoint holds the random state of {len(saved)} process(es), this run has "
            f"{world_size}: each process continues with a random state of its own, and the run "
            "will not repeat an uninterrupted one exactly"
        )
        set_rng_state(saved[0])
        split_rng_by_rank(rank)

    def run(self, env: PhaseEnvironment) -> None:
        """Train to the end of the schedule, or raise TrainingStopped after checkpointing."""
        total = self.schedule.epochs * self.batches_per_epoch
        bar = tqdm(
            total=total,
            initial=self.progress.iteration,
            desc=self.name,
            unit="it",
            dynamic_ncols=True,
            disable=not (env.show_progress and self.processes.is_main),
        )
        self._interval = (time.monotonic(), 0)  # throughput since the last log record
        self.model.train()
        with bar, env.stop.handling_sigint():
            while not self.finished:
                self._run_epoch(env, bar)
                self._end_epoch(env)
                self.progress.epoch += 1
                self.progress.batch = 0
                self._save(env)
                self._stop_if_asked(env)

    def _end_epoch(self, env: PhaseEnvironment) -> None:
        """Run the epoch-end callbacks; log the records they return."""
        for callback in env.epoch_end:
            record = callback(EpochEnd(self, self.progress.epoch))
            if record is not None and self.processes.is_main:
                defaults = {"phase": self.name, "epoch": self.progress.epoch}
                _append_jsonl(env.log_path, {**defaults, "step": self.progress.iteration, **record})

    def _run_epoch(self, env: PhaseEnvironment, bar: tqdm) -> None:
        epoch = self.progress.epoch
        loader = epoch_loader(
            self.images,
            self.batch_size,
            epoch,
            start=self.progress.batch,
            workers=env.workers,
            rank=self.processes.rank,
            world_size=self.processes.world_size,
        )
        for images, targets in loader:
            self._step(images, targets)
            self.progress.batch += 1
            self.progress.iteration += 1
            env.stop.spend_iteration()
            bar.update(1)
            last_batch = self.progress.batch == self.batches_per_epoch
            if self.progress.iteration % env.log_every == 0 or last_batch:
                record = self._log_record()
                if self.processes.is_main:
                    _append_jsonl(env.log_path, record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}")
            if self.progress.iteration % env.checkpoint_every == 0 and not last_batch:
                self._save(env)
            if not last_batch:
                self._stop_if_asked(env)

    def _step(self, images: torch.Tensor, targets: list[dict]) -> None:
        """One SGD step (probing the task gradients first on the probe's iterations)."""
        epoch, iteration = self.progress.epoch, self.progress.iteration
        lr = self.schedule.lr_at(epoch, iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        images = images.to(self.device, non_blocking=True)
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        with autocast:
            losses = self.trainer(images, targets)
        if self.probe is not None and self.probe.should_sample(self.progress.batch):
            scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
            self.probe.record(losses, grad_scale=scale)
        total = self.weighting(losses)
        # the global batch's losses (every process's mean) and size, for the log and the
        # divergence check, which every process must then decide alike
        shard = torch.stack(
            [total.detach().float(), *(v.detach().float() for v in losses.values())]
        )
        summed = self.processes.sum(
            torch.cat([shard / self.processes.world_size, shard.new_tensor([len(images)])])
        )
        total_mean = summed[0]
        mean_losses = dict(zip(losses, summed[1:-1], strict=True))
        if not self.scaler.is_enabled() and not torch.isfinite(total_mean):
            raise TrainingDiverged(
                f"{self.name}: the loss became {total_mean.item()} at epoch {epoch} iteration "
                f"{iteration} ({_loss_values(mean_losses)}); try a lower --lr"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        # DDP averaged the network's gradients; the weighting's sigmas are outside its module
        self.processes.average_gradients(self.weighting.parameters())
        self.scaler.unscale_(self.optimizer)
        # Only the network's gradients are clipped: the weighting's sigmas are not part of it.
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.requires_grad], self.schedule.clip_grad
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._last = LastStep(total_mean, mean_losses, grad_norm, lr)
        started, images_done = self._interval
        self._interval = (started, images_done + int(summed[-1].item()))

    def _log_record(self) -> dict[str, Any]:
        last = self._last
        started, images_done = self._interval
        now = time.monotonic()
        self._interval = (now, 0)
        return {
            "event": "step",
            "phase": self.name,
            "epoch": self.progress.epoch,
            "step": self.progress.iteration,
            "time": time.time(),
            "lr": last.lr,
            "loss": float(last.total),
            "losses": _loss_values(last.losses),
            "grad_norm": float(last.grad_norm),
            "weights": self.weighting.weights(),
            "sigmas": self.weighting.sigmas(),
            # global batch images per second since the previous record (or this process's start)
            "images_per_second": images_done / max(now - started, 1e-9),
        }

    def _save(self, env: PhaseEnvironment) -> None:
        """Rank 0 writes the checkpoint, with every process's random state."""
        rng_states = self.processes.gather_objects(rng_state())
        if not self.processes.is_main:
            return
        state = {**env.extra_state(), **self.state_dict()}
        if self.processes.distributed:
            state["rng_ranks"] = rng_states
        save_checkpoint(state, env.checkpoint_path)

    def _stop_if_asked(self, env: PhaseEnvironment) -> None:
        reason = env.stop.agree(self.processes, self.device)
        if reason is None:
            return
        self._save(env)
        raise TrainingStopped(reason, env.checkpoint_path)


def _loss_values(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(value.detach()) for name, value in losses.items()}


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, allow_nan=True) + "\n")


def truncate_log(path: Path, phase: str, iteration: int, phases: tuple[str, ...]) -> None:
    """Drop log records written after a checkpoint (they will be written again on resume)."""
    if not path.is_file():
        return
    order = {name: index for index, name in enumerate(phases)}
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        later_phase = order.get(record.get("phase"), -1) > order[phase]
        later_step = record.get("phase") == phase and record.get("step", 0) > iteration
        if not (later_phase or later_step):
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
