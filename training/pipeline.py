"""Algorithm 1 as a resumable sequence: probe run, grouping, main run, evaluation, export.

Each step leaves its artefacts in the run directory; RUN/checkpoints/last.pth always holds the
latest state of the phase being trained, so ``--resume`` picks up where a run stopped.

Under ``torchrun`` every process runs this sequence on its share of each batch; rank 0 alone
writes the artefacts, evaluates and exports (docs/ARCHITECTURE.md, "Training on several
processes").
"""

from __future__ import annotations

import dataclasses
import functools
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from galw.grouping import Grouping, build_grouping
from galw.probe import GalwFileError, GradientHistory, GradientProbe
from galw.weighting import build_weighting
from inference.files import write_bytes_atomic
from training.checkpoint import (
    CheckpointError,
    CheckpointHeader,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    split_rng_by_rank,
)
from training.data import load_dataset
from training.data.attributes import load_attribute_labels
from training.data.base import DatasetError
from training.data.torch_dataset import EpochBatches, ScaleRange, TrainImages, collate
from training.distributed import SINGLE_PROCESS, TrainingProcesses
from training.evaluate.query_modes import QUERY_MODES, engine_query_modes, record_in_card
from training.evaluate_and_export import card_fields, evaluate_model, export_model
from training.model import build_model
from training.model.diagnostics import COLLAPSE_COSINE, collapsed_branches, embedding_spread
from training.model.network import PersonSearchModel
from training.model.tasks import (
    ATTR_KIND,
    ATTR_TASK,
    CROP_KIND,
    CROP_TASK,
    TASK_BRANCHES,
    TASK_KINDS,
    TASKS,
)
from training.plots import plot_embedding_spread
from training.run_config import RunConfig
from training.synth.generate import RECIPE_FILE
from training.train_loop import (
    INTERRUPTED,
    EpochEnd,
    Phase,
    PhaseEnvironment,
    Schedule,
    StopRequest,
    TrainingStopped,
    log,
    truncate_log,
)

REFERENCE_TEST_SIZE = (1500, 900)
REFERENCE_TRAIN_LONG = (667, 2000)  # for the reference test long side of 1500
SMALL_FRAME_LONG_SIDE = 640  # below this, frames are not upsampled to the reference size
SIZE_SAMPLE = 200  # frames whose size is read to choose the sizes
SPREAD_FRAMES = 8  # training frames on which the embedding spread is measured every epoch


class RunError(RuntimeError):
    """The run cannot go on (bad data, a run directory in the way, ...); the message says why."""


def run_algorithm(config: RunConfig, resume: bool = False, command: str | None = None) -> int:
    """Run (or resume) Algorithm 1 with a checked config; returns the process exit code.
    ``command`` (the command line that started the run) is kept in config.json and the card.
    Under torchrun, this process is one of several (training.distributed)."""
    processes = TrainingProcesses.from_environment()
    device = _device(config.device, processes)
    processes.start(device)
    try:
        return _run(config, resume, command, processes, device)
    finally:
        processes.close()


def _run(
    config: RunConfig,
    resume: bool,
    command: str | None,
    processes: TrainingProcesses,
    device: torch.device,
) -> int:
    run = RunDir(config.out)
    if not resume and run.config.exists():
        raise RunError(f"{config.out} already holds a run; add --resume or choose another --out")
    train = _load(config.dataset, config.data_root, "train")
    if config.batch_size < processes.world_size:
        raise RunError(
            f"--batch-size {config.batch_size} is the global batch: it needs at least one image "
            f"for each of the {processes.world_size} processes"
        )
    processes.barrier()  # every process has looked for an earlier run before rank 0 writes
    if not resume:
        config = _choose_sizes(config, train.images)
        if processes.is_main:
            run.root.mkdir(parents=True, exist_ok=True)
            _write_json(run.config, _config_record(config, train, command))
    phases = config.phases
    _explain_plan(config)
    state = _resume_state(run, phases, processes) if resume else None
    training = TrainingRun(config, run, train, device, processes)
    stop = StopRequest(budget=config.stop_after_iters)
    try:
        if "probe" in phases and (state is None or state["phase"] == "probe"):
            training.run_probe(state, stop)
            state = None
        grouping = training.choose_grouping(state)
        model = training.run_main(grouping, state, stop)
    except TrainingStopped as stopped:
        log(
            f"{stopped.reason}: checkpoint saved to {stopped.checkpoint}\n"
            f"resume with: {_resume_command(config, processes)}"
        )
        return 130 if stopped.reason == INTERRUPTED else 0
    except KeyboardInterrupt:
        log("aborted by a second Ctrl-C; the last periodic checkpoint is in " + str(run.last))
        return 130
    if not processes.is_main:
        return 0  # rank 0 evaluates and exports
    return training.finish(model, grouping)


def _resume_command(config: RunConfig, processes: TrainingProcesses) -> str:
    command = f"-m training.galw --out {config.out} --resume"
    if processes.distributed:
        return f"torchrun --nproc_per_node {processes.world_size} {command}"
    return f"python {command}"


class RunDir:
    """The paths of a run's artefacts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.json"
        self.log = root / "train_log.jsonl"
        self.gradients = root / "gradients.json"
        self.gradient_plot = root / "gradient_magnitudes.png"
        self.groups = root / "groups.json"
        self.sigma_plot = root / "sigmas.png"
        self.spread_plot = root / "embedding_spread.png"
        self.metrics = root / "metrics.json"
        self.onnx = root / "model.onnx"
        self.last = root / "checkpoints" / "last.pth"
        self.final = root / "checkpoints" / "final.pth"


class TrainingRun:
    """One run of Algorithm 1: its config, data, device and directory, and its steps (probe,
    grouping, main run, finish)."""

    def __init__(
        self,
        config: RunConfig,
        run: RunDir,
        train,
        device: torch.device,
        processes: TrainingProcesses = SINGLE_PROCESS,
    ) -> None:
        self.config, self.run, self.train, self.device = config, run, train, device
        self.processes = processes
        self.sync_batch_norm = _use_sync_batch_norm(config.sync_bn, processes, device)
        self.tasks, self.kinds = list(TASKS), dict(TASK_KINDS)
        attributes = None
        if config.attributes is not None:
            try:
                attributes, _ = load_attribute_labels(config.attributes, train.train_id_names)
            except DatasetError as error:
                raise RunError(f"--attr: {error}") from error
            self.tasks.append(ATTR_TASK)
            self.kinds[ATTR_TASK] = ATTR_KIND
        if config.model_config.crop_queries > 0:
            self.tasks.append(CROP_TASK)
            self.kinds[CROP_TASK] = CROP_KIND
        self.attr_dim = 0 if attributes is None else attributes.shape[1]
        max_size, train_sizes = config.sizes
        scales = ScaleRange(*train_sizes, short_ratio=max_size[1] / max_size[0])
        try:
            self.images = TrainImages(train.images, scales, seed=config.seed, attributes=attributes)
        except ValueError as error:
            raise RunError(f"{config.data_root}: {error}") from error

    def _model(self) -> PersonSearchModel:
        seed_everything(self.config.seed)  # both phases start from the same initial weights
        model = build_model(
            self.config.model_config,
            num_ids=self.train.num_ids,
            queue_size=self.train.queue_size,
            attr_dim=self.attr_dim,
            backbone_weights=self.config.backbone_weights,
        )
        split_rng_by_rank(self.processes.rank)  # own sampler draws per process, after the init
        if self.sync_batch_norm:
            # converts the BatchNorm layers below the root in place and returns the root
            converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            assert converted is model
        model.collectives = self.processes.batch_collectives()
        return model.to(self.device)

    def _schedule(self, epochs: int, lr_steps: tuple[int, ...]) -> Schedule:
        batches = EpochBatches.count(len(self.images), self.config.batch_size)
        return Schedule(
            lr=self.config.lr,
            epochs=epochs,
            lr_steps=tuple(lr_steps),
            warmup_iters=min(self.config.warmup_iters, batches),
            warmup_ratio=self.config.warmup_ratio,
            momentum=self.config.momentum,
            weight_decay=self.config.weight_decay,
            clip_grad=self.config.clip_grad,
            optimizer=self.config.optimizer,
        )

    def _phase(self, name, model, weighting, schedule, probe=None) -> Phase:
        return Phase(
            name,
            model,
            weighting.to(self.device),
            self.images,
            self.config.batch_size,
            schedule,
            self.device,
            amp=self.config.amp,
            probe=probe,
            processes=self.processes,
        )

    def _environment(
        self, stop: StopRequest, extra: dict[str, Any], epoch_end=()
    ) -> PhaseEnvironment:
        return PhaseEnvironment(
            checkpoint_path=self.run.last,
            log_path=self.run.log,
            extra_state=lambda: {**self._header().to_state(), **extra},
            stop=stop,
            log_every=self.config.log_every,
            checkpoint_every=self.config.checkpoint_every,
            workers=self.config.workers,
            show_progress=not self.config.no_progress,
            epoch_end=tuple(epoch_end),
        )

    def _header(self) -> CheckpointHeader:
        """What every checkpoint of this run says besides its weights."""
        max_size, _ = self.config.sizes
        return CheckpointHeader(
            config=self.config.model_config,
            num_ids=self.train.num_ids,
            queue_size=self.train.queue_size,
            attr_dim=self.attr_dim,
            dataset=self.config.dataset,
            max_size=max_size,
        )

    def run_probe(self, state: dict | None, stop: StopRequest) -> GradientHistory:
        """First training with plain weights, recording the per-task gradient magnitudes
        (of the global batch: each task's gradients are averaged over the processes first)."""
        model = self._model()
        weighting = build_weighting("fixed", self.tasks, self.kinds)
        batches = EpochBatches.count(len(self.images), self.config.batch_size)
        probe = GradientProbe(
            model.shared_parameters(),
            self.tasks,
            self.kinds,
            every=max(1, batches // self.config.probe_samples),
            reduce_gradients=(
                self.processes.average_tensors if self.processes.distributed else None
            ),
        )
        schedule = self._schedule(self.config.probe_epochs, self.config.probe_lr_steps())
        phase = self._phase("probe", model, weighting, schedule, probe)
        if state is not None:
            phase.load_state_dict(state)

        def probe_magnitudes(end: EpochEnd) -> dict[str, Any]:
            return {"event": "probe_epoch", "magnitudes": probe.end_epoch()}

        started = time.monotonic()
        phase.run(self._environment(stop, {}, epoch_end=[probe_magnitudes]))
        log(f"probe run finished ({time.monotonic() - started:.1f} s in this process)")
        history = probe.history()
        if self.processes.is_main:
            history.save(self.run.gradients)
            _plot(
                "gradient magnitudes",
                "plot_gradient_magnitudes",
                history.magnitudes,
                self.run.gradient_plot,
            )
        log(f"probe done: gradient magnitudes in {self.run.gradients}")
        return history

    def choose_grouping(self, state: dict | None) -> Grouping | None:
        """The task groups of the main run (None for fixed weights), written to groups.json;
        rank 0 chooses them and tells the other processes."""
        if state is not None and state.get("grouping") is not None:
            return Grouping(**state["grouping"])
        if self.config.weighting == "fixed":
            return None
        chosen: tuple[dict | None, str | None] = (None, None)
        if self.processes.is_main:
            try:
                chosen = (self._group_tasks().to_dict(), None)
            except RunError as error:
                chosen = (None, str(error))
        grouping, failure = self.processes.broadcast_object(chosen)
        if failure is not None:
            raise RunError(failure)
        return Grouping(**grouping)

    def _group_tasks(self) -> Grouping:
        """Group the tasks as the config says; save groups.json."""
        strategy = self.config.grouping
        try:
            if strategy is None:
                grouping = Grouping([[t] for t in self.tasks], strategy="per-task")
            else:
                magnitudes = None
                if strategy == "slope":
                    magnitudes = GradientHistory.load(self.run.gradients).magnitudes
                grouping = build_grouping(
                    strategy,
                    self.tasks,
                    n_groups=self.config.groups,
                    magnitudes=magnitudes,
                    branches=TASK_BRANCHES,
                    seed=self.config.seed,
                    linkage=self.config.linkage,
                    scoring=self.config.slope_scoring,
                )
        except (ValueError, GalwFileError) as error:
            raise RunError(f"cannot group the tasks: {error}") from error
        grouping.save(self.run.groups)
        log(f"groups ({grouping.strategy}): {grouping.groups}")
        return grouping

    def run_main(
        self, grouping: Grouping | None, state: dict | None, stop: StopRequest
    ) -> PersonSearchModel:
        """Second training with the chosen weighting over the groups; returns the model."""
        model = self._model()
        groups = grouping.groups if grouping is not None else None
        fixed = self.config.fixed_weights
        if fixed is not None and ATTR_TASK in self.tasks:
            fixed = {ATTR_TASK: 1.0, **fixed}  # the paper's Table 6 adds t11 at weight 1
        if fixed is not None and CROP_TASK in self.tasks:
            fixed = {CROP_TASK: 1.0, **fixed}  # an auxiliary task, added as t11 is
        weighting = build_weighting(
            self.config.weighting,
            self.tasks,
            self.kinds,
            groups=groups,
            lam=self.config.lam,
            fixed=fixed,
        )
        schedule = self._schedule(self.config.epochs, self.config.lr_steps)
        phase = self._phase("main", model, weighting, schedule)
        if state is not None:
            phase.load_state_dict(state)
        extra = {"grouping": grouping.to_dict() if grouping is not None else None}
        started = time.monotonic()
        phase.run(self._environment(stop, extra, epoch_end=[self._embedding_spread]))
        log(f"main run finished ({time.monotonic() - started:.1f} s in this process)")
        self.weighting = weighting
        return model

    def _provenance(self) -> dict[str, str]:
        """The commands that made this model: training, and the data when it is synthetic."""
        provenance = {}
        command = json.loads(self.run.config.read_text(encoding="utf-8")).get("command")
        if command:
            provenance["command"] = command
        recipe = self.config.data_root / RECIPE_FILE
        if recipe.is_file():
            provenance["synth_command"] = json.loads(recipe.read_text(encoding="utf-8"))["command"]
        return provenance

    @functools.cached_property
    def _spread_frames(self) -> tuple[list[torch.Tensor], list[dict]]:
        """The training frames (epoch 0's augmentation) the spread is measured on, loaded once."""
        count = min(SPREAD_FRAMES, len(self.images))
        samples = [collate([self.images[(0, index)]]) for index in range(count)]
        images = [batch.to(self.device) for batch, _ in samples]
        targets = [{k: v.to(self.device) for k, v in t[0].items()} for _, t in samples]
        return images, targets

    def _embedding_spread(self, end: EpochEnd) -> dict[str, Any] | None:
        """Per epoch: how far apart different people's embeddings are in each branch (on the
        same few training frames every epoch), with a warning when a branch collapses. Measured
        by rank 0 (the processes hold the same model)."""
        if not self.processes.is_main:
            return None
        images, targets = self._spread_frames
        spread = embedding_spread(end.phase.model, images, targets)
        log(
            f"epoch {end.epoch}: mean cosine between different people "
            f"alignps {spread['alignps_cosine_between_people']:.3f}, "
            f"roi {spread['roi_cosine_between_people']:.3f}; between lookup rows "
            f"alignps {spread['alignps_lut_cosine']:.3f}, roi {spread['roi_lut_cosine']:.3f}"
        )
        collapsed = collapsed_branches(spread)
        if collapsed:
            log(
                f"WARNING: the {' and '.join(collapsed)} re-id branch has collapsed (different "
                f"people's embeddings at mean cosine > {COLLAPSE_COSINE}): its embeddings cannot "
                "tell people apart; see docs/ARCHITECTURE.md, 'Re-id collapse'"
            )
        return {"event": "embedding_spread", **spread, "collapsed": collapsed}

    def finish(self, model: PersonSearchModel, grouping: Grouping | None) -> int:
        """Plots, final checkpoint, evaluation and export of a finished main run."""
        if self.sync_batch_norm:
            model = self._without_sync_batch_norm(model)
        if self.weighting.sigmas():
            _plot("sigmas", "plot_sigmas", _main_steps(self.run.log), self.run.sigma_plot)
        try:
            plot_embedding_spread(_main_records(self.run.log), self.run.spread_plot)
        except Exception as error:  # a figure must not cost a finished training
            log(f"could not draw the embedding spread plot {self.run.spread_plot.name}: {error}")
        trained = {
            "model": model.state_dict(),
            "weighting": self.weighting.state_dict(),
            "grouping": grouping.to_dict() if grouping is not None else None,
        }
        metrics = None
        if not self.config.no_eval:
            started = time.monotonic()
            metrics = evaluate_model(model, self.config, self.device)
            log(f"evaluation took {time.monotonic() - started:.1f} s")
            _write_json(self.run.metrics, metrics)
        checkpoint = str(self.run.final.relative_to(self.run.root))
        fields = card_fields(self.config, checkpoint, metrics, grouping, self._provenance())
        header = dataclasses.replace(self._header(), metrics=metrics, card=fields)
        save_checkpoint({**header.to_state(), **trained}, self.run.final)
        log(f"final checkpoint: {self.run.final}")
        if not self.config.no_export:
            started = time.monotonic()
            try:
                export_model(model, self.run.onnx, fields, fp16=self.config.export_fp16)
            except Exception as error:  # the trained weights are safe in the final checkpoint
                log(
                    f"ONNX export failed: {error}\nthe trained model is in {self.run.final}; "
                    f"retry with: python -m training.export --checkpoint {self.run.final} "
                    f"--out {self.run.onnx}"
                )
                return 1
            log(f"export took {time.monotonic() - started:.1f} s")
            if metrics is not None:
                # the card and the final checkpoint's card fields stay the same card
                metrics = {**metrics, "query_modes": self._query_modes_in_card()}
                header = dataclasses.replace(
                    header, metrics=metrics, card={**fields, "metrics": dict(metrics)}
                )
                _write_json(self.run.metrics, metrics)
                save_checkpoint({**header.to_state(), **trained}, self.run.final)
        return 0

    def _query_modes_in_card(self) -> dict[str, Any]:
        """The exported graph asked the three ways the service is asked (frame, crop, stored),
        through the service's engine, on the test split; the figures go into the card."""
        from inference.engine import Engine  # ONNX Runtime only once there is a graph

        started = time.monotonic()
        test = load_dataset(self.config.dataset, self.config.data_root, "test")
        providers = ["cuda", "cpu"] if self.device.type == "cuda" else ["cpu"]
        engine = Engine(self.run.onnx, providers, min_score=self.config.det_thresh)
        by_mode, _ = engine_query_modes(
            engine,
            test,
            self.config.det_thresh,
            QUERY_MODES,
            show_progress=not self.config.no_progress,
        )
        gallery_size = self.config.gallery_size if self.config.dataset == "cuhk" else None
        record = record_in_card(
            self.run.onnx, engine.card, test, by_mode, self.config.det_thresh,
            self.config.data_root, gallery_size,
        )  # fmt: skip
        log(
            "exported graph through the engine: "
            + ", ".join(
                f"{m} mAP {record[m]['mAP']:.4f} top-1 {record[m]['top1']:.4f}" for m in QUERY_MODES
            )
            + f" ({time.monotonic() - started:.1f} s)"
        )
        return record

    def _without_sync_batch_norm(self, model: PersonSearchModel) -> PersonSearchModel:
        """The trained weights in the plain network (BatchNorm, not SyncBatchNorm), which
        evaluation and the exporter know; the state dicts of the two are the same."""
        plain = build_model(
            self.config.model_config,
            num_ids=self.train.num_ids,
            queue_size=self.train.queue_size,
            attr_dim=self.attr_dim,
        )
        plain.load_state_dict(model.state_dict())
        return plain.to(self.device)


def _use_sync_batch_norm(option: str, processes: TrainingProcesses, device: torch.device) -> bool:
    """--sync-bn auto: SyncBatchNorm when several processes train on CUDA; torch's
    SyncBatchNorm has no CPU implementation, so on the CPU each process keeps its statistics."""
    if option == "off" or not processes.distributed:
        return False
    if device.type != "cuda":
        if option == "on":
            raise RunError(
                "--sync-bn on: torch's SyncBatchNorm runs on CUDA only; this run is on the CPU "
                "(--sync-bn auto lets each process normalise its own shard)"
            )
        return False
    return True


def _main_records(log_path: Path) -> list[dict]:
    records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()]
    return [r for r in records if r.get("phase") == "main"]


def _main_steps(log_path: Path) -> list[dict]:
    return [r for r in _main_records(log_path) if r.get("event") == "step"]


def _device(name: str, processes: TrainingProcesses = SINGLE_PROCESS) -> torch.device:
    try:
        device = processes.device(name)
    except RuntimeError as error:
        raise RunError(f"--device {name}: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda: no CUDA device is available here (use --device cpu)")
    return device


def _load(name: str, root: Path, split: str):
    try:
        dataset = load_dataset(name, root, split)
    except (DatasetError, OSError) as error:
        raise RunError(f"cannot read the {name} {split} split under {root}: {error}") from error
    if not dataset.images:
        raise RunError(f"the {name} {split} split under {root} has no images")
    return dataset


def _choose_sizes(config: RunConfig, records) -> RunConfig:
    """Resolve --max-size / --train-sizes "auto" from the frames' sizes (logged, saved)."""
    max_size, train_sizes = config.max_size, config.train_sizes
    if max_size is None:
        sizes = []
        for record in records[:: max(1, len(records) // SIZE_SAMPLE)]:
            with Image.open(record.path) as image:
                sizes.append(image.size)
        longest = max(max(w, h) for w, h in sizes)
        if longest >= SMALL_FRAME_LONG_SIDE:
            max_size = REFERENCE_TEST_SIZE
        else:
            max_size = (longest, max(min(w, h) for w, h in sizes))
    if train_sizes is None:
        ratio = max_size[0] / REFERENCE_TEST_SIZE[0]
        low, high = (round(side * ratio) for side in REFERENCE_TRAIN_LONG)
        train_sizes = (low, high)
    log(f"test size {max_size[0]}x{max_size[1]}, training long side {list(train_sizes)}")
    return config.with_sizes(max_size, train_sizes)


def _explain_plan(config: RunConfig) -> None:
    if "probe" in config.phases:
        log(f"probe run of {config.probe_epochs} epochs, then {config.groups} groups by slope")
        return
    why = (
        f"--grouping {config.grouping} needs no gradient magnitudes"
        if config.grouping is not None
        else f"--weighting {config.weighting} trains without groups"
    )
    log(f"probe run skipped: {why}")


def _resume_state(
    run: RunDir, phases: tuple[str, ...], processes: TrainingProcesses = SINGLE_PROCESS
) -> dict | None:
    """The last checkpoint (None when the run stopped before its first one); every process
    reads it, rank 0 drops the log records written after it."""
    if not run.last.exists():
        log("no checkpoint yet: starting the run from the beginning")
        if processes.is_main:
            run.log.unlink(missing_ok=True)
        return None
    try:
        state = load_checkpoint(run.last)
    except CheckpointError as error:
        raise RunError(str(error)) from error
    progress = state["progress"]
    if processes.is_main:
        truncate_log(run.log, state["phase"], progress["iteration"], phases)
    log(
        f"resuming the {state['phase']} run at epoch {progress['epoch']}, "
        f"batch {progress['batch']} (iteration {progress['iteration']})"
    )
    return state


def _config_record(config: RunConfig, train, command: str | None) -> dict[str, Any]:
    return {
        "command": command,
        "options": config.to_record(),  # with the network's config (model_config)
        "tasks": {task: TASK_KINDS[task] for task in TASKS},
        "train_images": len(train.images),
        "num_ids": train.num_ids,
        "queue_size": train.queue_size,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _plot(what: str, function: str, source, path: Path) -> None:
    """Draw a plot with galw.plots; a plotting failure is reported, never fatal."""
    try:
        from galw import plots

        getattr(plots, function)(source, path)
    except Exception as error:  # a figure must not cost a finished training
        log(f"could not draw the {what} plot {path.name}: {error}")


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
