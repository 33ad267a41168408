"""The options of one ``python -m training.galw`` run, checked once and then frozen.

``RunConfig.from_arguments`` turns the parsed command line into a config with every derived
default filled in (lr for the batch size, lr steps for the epochs, grouping for the weighting,
fixed weights); ``RunConfig.with_sizes`` fills the input sizes chosen from the data. The network's
configuration is held resolved (``model_config``: the named config with the ``--model-option``
overrides applied), with the overrides kept beside it (``model_options``) to say how it differs
from its name. The run saves ``to_record()`` as ``options`` in RUN/config.json and ``--resume``
rebuilds the same config from it (``from_record``), taking only the runtime options from the new
command line; the saved network is used as saved, even if the named config changed since.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from galw.grouping import SCORINGS
from training.evaluate.collect import QueryEmbedding
from training.model.config import CONFIGS, ModelConfig
from training.model.tasks import REFERENCE_FIXED_WEIGHTS, TASKS

Dataset = Literal["prw", "cuhk"]
Weighting = Literal["galw", "rulwf", "ulwf", "fixed"]
Optimizer = Literal["sgd", "adamw"]
Amp = Literal["auto", "bf16", "fp16", "off"]
SyncBn = Literal["auto", "on", "off"]
DATASETS: tuple[Dataset, ...] = get_args(Dataset)
WEIGHTINGS: tuple[Weighting, ...] = get_args(Weighting)
OPTIMIZERS: tuple[Optimizer, ...] = get_args(Optimizer)
AMP_MODES: tuple[Amp, ...] = get_args(Amp)
SYNC_BN: tuple[SyncBn, ...] = get_args(SyncBn)
GROUPINGS = ("slope", "branch", "random")  # or the path of a groups.json
# Options taken from the command line on --resume; everything else comes from config.json.
RUNTIME_OPTIONS = ("device", "workers", "stop_after_iters", "no_progress", "sync_bn")
# The reference schedule: 24 epochs, lr x0.1 at epochs 16 and 22, lr 0.0015 for batch 5.
REFERENCE_EPOCHS, REFERENCE_STEPS = 24, (16, 22)
REFERENCE_LR, REFERENCE_BATCH = 0.0015, 5
# AlignPS's search score thresholds (of cls x ctr scores) per dataset.
REFERENCE_SEARCH_THRESHOLDS = {"prw": 0.15, "cuhk": 0.2}


class OptionError(ValueError):
    """An impossible option or combination of options."""


@dataclass(frozen=True)
class RunConfig:
    """Every option of a run, with the derived defaults resolved."""

    dataset: Dataset
    data_root: Path
    out: Path
    # the network: the named config (--config) with the model options applied
    model_config: ModelConfig = CONFIGS["r50"]
    # the ModelConfig fields --model-option name=value changed from the named config's
    model_options: tuple[tuple[str, Any], ...] = ()
    backbone_weights: Path | None = None
    max_size: tuple[int, int] | None = None  # None until chosen from the data (with_sizes)
    train_sizes: tuple[int, int] | None = None
    # GALW
    weighting: Weighting = "galw"
    grouping: str | None = "slope"  # slope | branch | random | a groups.json path | None
    groups: int | str = 4  # a number or "auto"
    lam: float = 1.0
    probe_epochs: int = REFERENCE_EPOCHS
    probe_samples: int = 50
    linkage: str = "ward"
    slope_scoring: str = SCORINGS[0]  # the reading of Eq. 8 (galw.grouping.SCORINGS)
    attributes: Path | None = None  # attribute labels for the optional task t11 (--attr)
    fixed_weights: dict[str, float] | None = None  # --weighting fixed only
    # training
    epochs: int = REFERENCE_EPOCHS
    batch_size: int = REFERENCE_BATCH
    lr: float = REFERENCE_LR
    optimizer: Optimizer = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: tuple[int, ...] = REFERENCE_STEPS
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    clip_grad: float = 10.0
    amp: Amp = "auto"
    seed: int = 0
    # running (RUNTIME_OPTIONS may change on --resume)
    device: str = "cpu"
    sync_bn: SyncBn = "auto"  # SyncBatchNorm under torchrun: auto (on CUDA), on, off
    workers: int = 4
    log_every: int = 20
    checkpoint_every: int = 500
    stop_after_iters: int | None = None
    no_progress: bool = False
    # evaluation and export
    det_thresh: float = 0.5
    query_embedding: QueryEmbedding = "detection"
    gallery_size: int = 100
    no_eval: bool = False
    no_export: bool = False
    export_fp16: bool = False

    @property
    def config(self) -> str:
        """The name of the network configuration (--config)."""
        return self.model_config.name

    @property
    def phases(self) -> tuple[str, ...]:
        """The training phases of Algorithm 1 this run needs."""
        return ("probe", "main") if self.grouping == "slope" else ("main",)

    @property
    def sizes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(max_size, train_sizes), once chosen."""
        if self.max_size is None or self.train_sizes is None:
            raise RuntimeError("the input sizes have not been chosen yet (RunConfig.with_sizes)")
        return self.max_size, self.train_sizes

    def with_sizes(self, max_size: tuple[int, int], train_sizes: tuple[int, int]) -> RunConfig:
        return dataclasses.replace(self, max_size=max_size, train_sizes=train_sizes)

    def probe_lr_steps(self) -> tuple[int, ...]:
        """The main run's lr steps at the same fractions of the probe run."""
        return scaled_lr_steps(self.lr_steps, self.epochs, self.probe_epochs)

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> RunConfig:
        """Check a parsed command line and fill the derived defaults (OptionError if wrong)."""
        if args.dataset is None or args.data_root is None:
            raise OptionError("--dataset and --data-root are required (unless --resume)")
        if not args.data_root.is_dir():
            raise OptionError(f"--data-root {args.data_root}: no such directory")
        for name in ("epochs", "batch_size", "probe_samples", "log_every", "checkpoint_every"):
            if getattr(args, name) < 1:
                raise OptionError(f"--{name.replace('_', '-')} must be >= 1")
        if args.config not in CONFIGS:
            raise OptionError(f"--config {args.config}: choose one of {', '.join(CONFIGS)}")
        if args.backbone_weights is not None and not args.backbone_weights.is_file():
            raise OptionError(f"--backbone-weights {args.backbone_weights}: no such file")
        attributes = None
        if args.attr is not None:
            attributes = args.data_root / "attributes.json" if args.attr == "auto" else args.attr
            if not attributes.is_file():
                raise OptionError(f"--attr: {attributes}: no such file")
        probe_epochs = args.epochs if args.probe_epochs is None else args.probe_epochs
        groups = _parse_groups(args.groups)
        model_options = _model_options(args.model_option or [], CONFIGS[args.config])
        model_config = dataclasses.replace(CONFIGS[args.config], **dict(model_options))
        n_tasks = len(TASKS) + (attributes is not None) + (model_config.crop_queries > 0)
        grouping = _check_grouping(args.grouping, args.weighting, probe_epochs, groups, n_tasks)
        fixed_weights = _fixed_weights(args.fixed_weights, args.weighting)
        if args.backbone_weights is None and model_config.norm == "frozen_bn":
            raise OptionError(
                f"--config {args.config} has frozen batch norm, which cannot learn from random "
                "weights: give --backbone-weights (ImageNet) or choose a config with trainable "
                "norm layers (r18, tiny)"
            )
        lr_steps = (
            scaled_lr_steps(REFERENCE_STEPS, REFERENCE_EPOCHS, args.epochs)
            if args.lr_steps is None
            else tuple(_parse_ints(args.lr_steps, "--lr-steps"))
        )
        det_thresh = args.det_thresh
        if det_thresh is None:
            det_thresh = REFERENCE_SEARCH_THRESHOLDS[args.dataset]
        return cls(
            dataset=args.dataset,
            data_root=args.data_root,
            out=args.out,
            model_config=model_config,
            model_options=model_options,
            backbone_weights=args.backbone_weights,
            max_size=None if args.max_size == "auto" else _parse_pair(args.max_size, "--max-size"),
            train_sizes=(
                None
                if args.train_sizes == "auto"
                else _parse_pair(args.train_sizes, "--train-sizes")
            ),
            weighting=args.weighting,
            grouping=grouping,
            groups=groups,
            lam=args.lam,
            probe_epochs=probe_epochs,
            probe_samples=args.probe_samples,
            linkage=args.linkage,
            slope_scoring=args.scoring,
            attributes=attributes,
            fixed_weights=fixed_weights,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=REFERENCE_LR * args.batch_size / REFERENCE_BATCH if args.lr is None else args.lr,
            optimizer=args.optimizer,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            lr_steps=lr_steps,
            warmup_iters=args.warmup_iters,
            warmup_ratio=args.warmup_ratio,
            clip_grad=args.clip_grad,
            amp=args.amp,
            seed=args.seed,
            device=args.device,
            sync_bn=args.sync_bn,
            workers=args.workers,
            log_every=args.log_every,
            checkpoint_every=args.checkpoint_every,
            stop_after_iters=args.stop_after_iters,
            no_progress=args.no_progress,
            det_thresh=det_thresh,
            query_embedding=args.query_embedding,
            gallery_size=args.gallery_size,
            no_eval=args.no_eval,
            no_export=args.no_export,
            export_fp16=args.export_fp16,
        )

    def to_record(self) -> dict[str, Any]:
        """A JSON object of the options (paths as strings, tuples as lists)."""
        record = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, ModelConfig):
                value = value.to_dict()
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            record[item.name] = value
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RunConfig:
        """The config ``to_record`` saved; options unknown to this version are refused, and
        those it lacks (configs of older runs) take their defaults. Records saved before the
        resolved network was (``config``: a name) resolve it as their run did."""
        known = {item.name for item in dataclasses.fields(cls)}
        values = {key: value for key, value in record.items() if key in known}
        # older runs saved the --resume flag, and the config's name instead of the network
        unknown = set(record) - known - {"resume", "config"}
        if unknown:
            raise OptionError(f"saved options this version does not know: {sorted(unknown)}")
        for name in ("data_root", "out", "backbone_weights", "attributes"):
            if values.get(name) is not None:
                values[name] = Path(values[name])
        for name in ("max_size", "train_sizes", "lr_steps"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        values["model_options"] = tuple(
            (name, tuple(value) if isinstance(value, list) else value)
            for name, value in values.get("model_options", ())
        )
        if "model_config" in values:
            values["model_config"] = ModelConfig.from_dict(values["model_config"])
        else:
            name = record.get("config", "r50")
            if name not in CONFIGS:
                raise OptionError(f"saved config {name!r}: choose one of {', '.join(CONFIGS)}")
            values["model_config"] = dataclasses.replace(
                CONFIGS[name], **dict(values["model_options"])
            )
        return cls(**values)

    def with_runtime_options(self, args: argparse.Namespace) -> RunConfig:
        """This config with the RUNTIME_OPTIONS of a new command line (for --resume)."""
        return dataclasses.replace(self, **{name: getattr(args, name) for name in RUNTIME_OPTIONS})


def scaled_lr_steps(steps: tuple[int, ...], epochs: int, to_epochs: int) -> tuple[int, ...]:
    """lr-step epochs of a schedule of ``epochs`` moved to the same fractions of ``to_epochs``
    (each at least 1, duplicates merged)."""
    return tuple(sorted({max(1, round(step * to_epochs / epochs)) for step in steps}))


def _check_grouping(
    grouping: str | None, weighting: Weighting, probe_epochs: int, groups: int | str, n_tasks: int
) -> str | None:
    if grouping is None and weighting == "galw":
        grouping = "slope"
    if grouping is not None and weighting == "fixed":
        raise OptionError("--weighting fixed has no sigmas to group; drop --grouping")
    if grouping is not None and grouping not in GROUPINGS:
        path = Path(grouping)
        if not path.is_file():
            raise OptionError(f"--grouping {grouping}: not slope|branch|random nor a groups file")
        grouping = str(path.resolve())
    if grouping == "slope" and probe_epochs < 2:
        raise OptionError(
            "--grouping slope needs a probe run of at least 2 epochs (the slope is the mean "
            f"change between epochs); got --probe-epochs {probe_epochs}"
        )
    if grouping == "random" and groups == "auto":
        raise OptionError("--grouping random needs a number for --groups")
    if isinstance(groups, int) and not 1 <= groups <= n_tasks:
        raise OptionError(f"--groups must be between 1 and the {n_tasks} tasks, got {groups}")
    return grouping


def _fixed_weights(overrides: str | None, weighting: Weighting) -> dict[str, float] | None:
    """For --weighting fixed: the reference's weights with ``name=value,...`` overrides."""
    if weighting != "fixed":
        if overrides is not None:
            raise OptionError("--fixed-weights applies to --weighting fixed only")
        return None
    weights = dict(REFERENCE_FIXED_WEIGHTS)
    if overrides is None:
        return weights
    for part in filter(None, (p.strip() for p in overrides.split(","))):
        name, _, value = part.partition("=")
        if name.strip() not in weights:
            raise OptionError(f"--fixed-weights: unknown task {name.strip()!r}; tasks: {TASKS}")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise OptionError(f"--fixed-weights: {part!r} is not name=number") from None
    return weights


def _model_options(options: list[str], base: ModelConfig) -> tuple[tuple[str, Any], ...]:
    """``name=value`` overrides of ModelConfig fields, each value of its field's type."""
    defaults = base.to_dict()
    parsed: dict[str, Any] = {}
    for option in options:
        name, equals, text = (part.strip() for part in option.partition("="))
        if not equals or name not in defaults or name == "name":
            fields = ", ".join(sorted(set(defaults) - {"name"}))
            raise OptionError(f"--model-option {option!r}: give name=value, a name among {fields}")
        parsed[name] = _typed(text, defaults[name], f"--model-option {name}")
    try:
        dataclasses.replace(base, **parsed)
    except (TypeError, ValueError) as error:
        raise OptionError(f"--model-option: {error}") from None
    return tuple(sorted(parsed.items()))


def _typed(text: str, default: Any, option: str) -> Any:
    """``text`` as a value of ``default``'s type (bool, int, float, str or tuple of ints)."""
    try:
        if isinstance(default, bool):
            if text.lower() not in {"true", "false", "1", "0"}:
                raise ValueError
            return text.lower() in {"true", "1"}
        if isinstance(default, tuple):
            return tuple(int(part) for part in text.split(",") if part.strip())
        return type(default)(text)
    except ValueError:
        kind = "true/false" if isinstance(default, bool) else type(default).__name__
        raise OptionError(f"{option}: {text!r} is not a {kind}") from None


def _parse_groups(value: str | int) -> int | str:
    if value == "auto" or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise OptionError(f"--groups must be a number or 'auto', got {value!r}") from None


def _parse_ints(value: str, option: str) -> list[int]:
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise OptionError(f"{option} must be comma-separated integers, got {value!r}") from None


def _parse_pair(value: str, option: str) -> tuple[int, int]:
    pair = _parse_ints(value, option)
    if len(pair) != 2 or min(pair) < 32:
        raise OptionError(f"{option} must be two sizes >= 32 like 1500,900, got {value!r}")
    return pair[0], pair[1]
