"""``python -m training.galw``: GALW's Algorithm 1 end to end.

1. probe run: train with plain weights for --probe-epochs epochs, recording each task's gradient
   magnitude on the backbone's shared blocks (gradients.json, gradient_magnitudes.png);
2. group the tasks by the slopes of their magnitudes into --groups groups (groups.json);
3. main run: train from scratch for --epochs epochs with grouped RULWF (or another --weighting);
4. evaluate with the dataset's protocol for each embedding (metrics.json);
5. export ONNX with its model card (model.onnx, model.json).

The probe is skipped when the grouping does not need it (--grouping branch|random|FILE, or an
ungrouped --weighting). Everything lands in --out; ``--out RUN --resume`` continues a stopped or
crashed run from its last checkpoint with the options saved in RUN/config.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from galw.grouping import LINKAGES
from training.model.config import CONFIGS
from training.model.tasks import TASKS

WEIGHTINGS = ("galw", "rulwf", "ulwf", "fixed")
GROUPINGS = ("slope", "branch", "random")
# Options taken from the command line on --resume; everything else comes from config.json.
RUNTIME_OPTIONS = ("device", "workers", "stop_after_iters", "no_progress")
# The reference schedule: 24 epochs, lr x0.1 at epochs 16 and 22, lr 0.0015 for batch 5.
REFERENCE_EPOCHS, REFERENCE_STEPS = 24, (16, 22)
REFERENCE_LR, REFERENCE_BATCH = 0.0015, 5


class OptionError(ValueError):
    """An impossible option or combination of options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.galw",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data and model")
    data.add_argument("--dataset", choices=("prw", "cuhk"), help="dataset layout of --data-root")
    data.add_argument("--data-root", type=Path, help="dataset directory (PRW or CUHK-SYSU layout)")
    data.add_argument("--config", default="r50", help="model configuration: r50, r18 or tiny")
    data.add_argument("--backbone-weights", type=Path, help="torchvision ResNet ImageNet weights")
    data.add_argument(
        "--max-size",
        default="auto",
        help="test size LONG,SHORT (auto: 1500,900, or the frames' own size for frames "
        "under 640 px such as small synthetic data)",
    )
    data.add_argument(
        "--train-sizes",
        default="auto",
        help="training long-side range MIN,MAX (auto: 667/1500..2000/1500 of the test long side)",
    )
    data.add_argument("--out", type=Path, required=True, help="run directory for every artefact")
    data.add_argument("--resume", action="store_true", help="continue the run in --out")

    method = parser.add_argument_group("GALW")
    method.add_argument("--weighting", choices=WEIGHTINGS, default="galw")
    method.add_argument(
        "--grouping",
        help="slope | branch | random | path to a groups.json (default: slope for galw, "
        "one sigma per task for ulwf/rulwf)",
    )
    method.add_argument("--groups", default="4", help="number of groups, or 'auto' (dendrogram)")
    method.add_argument("--lam", type=float, default=1.0, help="RULWF regulariser weight")
    method.add_argument("--probe-epochs", type=int, help="probe run epochs (default: --epochs)")
    method.add_argument(
        "--probe-samples", type=int, default=50, help="probed iterations per probe epoch"
    )
    method.add_argument("--linkage", choices=LINKAGES, default="ward", help="clustering linkage")

    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=REFERENCE_EPOCHS)
    train.add_argument("--batch-size", type=int, default=REFERENCE_BATCH)
    train.add_argument("--lr", type=float, help="base lr (default: 0.0015 x batch / 5)")
    train.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        default="sgd",
        help="SGD is the reference; AdamW trains small models from scratch faster",
    )
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    train.add_argument("--weight-decay", type=float, default=5e-4)
    train.add_argument(
        "--lr-steps", help="epochs at which lr drops x0.1, e.g. 16,22 (default: 16/24, 22/24 of it)"
    )
    train.add_argument(
        "--warmup-iters", type=int, default=500, help="linear warmup (capped at one epoch)"
    )
    train.add_argument("--warmup-ratio", type=float, default=0.001, help="lr factor at iteration 0")
    train.add_argument("--clip-grad", type=float, default=10.0, help="max gradient norm")
    train.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto")
    train.add_argument("--seed", type=int, default=0)

    run = parser.add_argument_group("running")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run.add_argument("--workers", type=int, default=4, help="data loader processes")
    run.add_argument("--log-every", type=int, default=20, help="iterations between log records")
    run.add_argument("--checkpoint-every", type=int, default=500, help="iterations between saves")
    run.add_argument(
        "--stop-after-iters", type=int, help="stop resumably after N iterations of this process"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    evaluation = parser.add_argument_group("evaluation and export")
    evaluation.add_argument("--det-thresh", type=float, default=0.5, help="search score threshold")
    evaluation.add_argument("--gallery-size", type=int, default=100, help="CUHK-SYSU gallery size")
    evaluation.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    evaluation.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    evaluation.add_argument("--export-fp16", action="store_true", help="export a half graph")
    return parser


def check_options(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the derived defaults and reject impossible combinations (OptionError)."""
    if args.dataset is None or args.data_root is None:
        raise OptionError("--dataset and --data-root are required (unless --resume)")
    if not args.data_root.is_dir():
        raise OptionError(f"--data-root {args.data_root}: no such directory")
    for name in ("epochs", "batch_size", "probe_samples", "log_every", "checkpoint_every"):
        if getattr(args, name) < 1:
            raise OptionError(f"--{name.replace('_', '-')} must be >= 1")
    if args.config not in CONFIGS:
        raise OptionError(f"--config {args.config}: choose one of {', '.join(CONFIGS)}")
    if args.probe_epochs is None:
        args.probe_epochs = args.epochs
    if args.lr is None:
        args.lr = REFERENCE_LR * args.batch_size / REFERENCE_BATCH
    args.groups = _parse_groups(args.groups)
    args.grouping = _check_grouping(args)
    if args.lr_steps is None:
        args.lr_steps = scaled_steps(args.epochs)
    else:
        args.lr_steps = _parse_ints(args.lr_steps, "--lr-steps")
    args.max_size = None if args.max_size == "auto" else _parse_pair(args.max_size, "--max-size")
    if args.train_sizes == "auto":
        args.train_sizes = None
    else:
        args.train_sizes = _parse_pair(args.train_sizes, "--train-sizes")
    if args.backbone_weights is not None and not args.backbone_weights.is_file():
        raise OptionError(f"--backbone-weights {args.backbone_weights}: no such file")
    return args


def _check_grouping(args: argparse.Namespace) -> str | None:
    grouping = args.grouping
    if grouping is None and args.weighting == "galw":
        grouping = "slope"
    if grouping is not None and args.weighting == "fixed":
        raise OptionError("--weighting fixed has no sigmas to group; drop --grouping")
    if grouping is not None and grouping not in GROUPINGS:
        path = Path(grouping)
        if not path.is_file():
            raise OptionError(f"--grouping {grouping}: not slope|branch|random nor a groups file")
        grouping = str(path.resolve())
    if grouping == "slope" and args.probe_epochs < 2:
        raise OptionError(
            "--grouping slope needs a probe run of at least 2 epochs (the slope is the mean "
            f"change between epochs); got --probe-epochs {args.probe_epochs}"
        )
    if grouping == "random" and args.groups == "auto":
        raise OptionError("--grouping random needs a number for --groups")
    if isinstance(args.groups, int) and not 1 <= args.groups <= len(TASKS):
        raise OptionError(
            f"--groups must be between 1 and the {len(TASKS)} tasks, got {args.groups}"
        )
    return grouping


def scaled_steps(epochs: int) -> list[int]:
    """The reference's lr steps (16, 22 of 24 epochs) scaled to ``epochs``."""
    return sorted({max(1, round(epochs * step / REFERENCE_EPOCHS)) for step in REFERENCE_STEPS})


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


def _parse_pair(value: str, option: str) -> list[int]:
    pair = _parse_ints(value, option)
    if len(pair) != 2 or min(pair) < 32:
        raise OptionError(f"{option} must be two sizes >= 32 like 1500,900, got {value!r}")
    return pair


def resume_options(args: argparse.Namespace) -> argparse.Namespace:
    """The saved options of the run in --out, with the runtime options of this command line."""
    config_path = args.out / "config.json"
    if not config_path.is_file():
        raise OptionError(f"--resume: {config_path} not found; is {args.out} a training run?")
    saved = json.loads(config_path.read_text())["options"]
    merged = argparse.Namespace(**saved)
    for name in RUNTIME_OPTIONS:
        setattr(merged, name, getattr(args, name))
    merged.resume = True
    kept = ", ".join(f"--{name.replace('_', '-')}" for name in RUNTIME_OPTIONS)
    print(
        f"[galw] resuming with the options in {config_path} (this command sets {kept})",
        file=sys.stderr,
    )
    for name in ("data_root", "out", "backbone_weights"):
        if getattr(merged, name) is not None:
            setattr(merged, name, Path(getattr(merged, name)))
    return merged


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # imported here so that --help answers without loading the model code
    from training.pipeline import RunError, run_algorithm

    try:
        if args.resume:
            args = resume_options(args)
            if not args.data_root.is_dir():
                raise OptionError(f"saved --data-root {args.data_root}: no such directory")
        else:
            args = check_options(args)
        return run_algorithm(args)
    except (OptionError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
