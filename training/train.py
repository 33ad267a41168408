"""The training command, ``python -m training.galw``: GALW's Algorithm 1 end to end.

1. probe run: train with plain weights for --probe-epochs epochs, recording each task's gradient
   magnitude on the backbone's shared blocks (gradients.json, gradient_magnitudes.png);
2. group the tasks by the slopes of their magnitudes into --groups groups (groups.json);
3. main run: train from scratch for --epochs epochs with grouped RULWF (or another --weighting);
4. evaluate with the dataset's protocol for each embedding (metrics.json);
5. export ONNX with its model card (model.onnx, model.json).

The probe is skipped when the grouping does not need it (--grouping branch|random|FILE, or an
ungrouped --weighting). Everything lands in --out; ``--out RUN --resume`` continues a stopped or
crashed run from its last checkpoint with the options saved in RUN/config.json.

``torchrun --nproc_per_node N -m training.galw ...`` trains on N processes (CPU: gloo; CUDA: one
GPU each, NCCL) with one model and one set of OIM memories; --batch-size is then the global batch.

This module parses the command line into a ``training.run_config.RunConfig``;
``training.pipeline`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import torch

from galw.grouping import LINKAGES, SCORINGS
from training.evaluate.collect import QUERY_EMBEDDINGS
from training.run_config import (
    AMP_MODES,
    DATASETS,
    OPTIMIZERS,
    REFERENCE_BATCH,
    REFERENCE_EPOCHS,
    REFERENCE_SEARCH_THRESHOLDS,
    RUNTIME_OPTIONS,
    SYNC_BN,
    WEIGHTINGS,
    OptionError,
    RunConfig,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.galw",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data and model")
    data.add_argument("--dataset", choices=DATASETS, help="dataset layout of --data-root")
    data.add_argument("--data-root", type=Path, help="dataset directory (PRW or CUHK-SYSU layout)")
    data.add_argument("--config", default="r50", help="model configuration: r50, r18 or tiny")
    data.add_argument(
        "--model-option",
        action="append",
        metavar="NAME=VALUE",
        help="change a field of the model configuration (training.model.config.ModelConfig), "
        "e.g. crop_queries=8; repeatable",
    )
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
    method.add_argument(
        "--scoring",
        choices=SCORINGS,
        default=SCORINGS[0],
        help="reading of Eq. 8 for the slope grouping: log-standardised (sign x sigmoid of the "
        "standardised log|slope|, independent of the gradients' units) or literal "
        "(s / (1 + |s|))",
    )
    method.add_argument(
        "--attr",
        nargs="?",
        const="auto",
        type=lambda text: text if text == "auto" else Path(text),
        help="add the attribute task t11 with labels from FILE (default: DATA_ROOT/"
        "attributes.json, the generator's true attributes)",
        metavar="FILE",
    )
    method.add_argument(
        "--fixed-weights",
        help="--weighting fixed: NAME=VALUE,... overriding the reference ROI-AlignPS* weights "
        "(t3, t5..t9 x10, roi_reg x10 as the reference's box loss)",
    )

    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=REFERENCE_EPOCHS)
    train.add_argument(
        "--batch-size",
        type=int,
        default=REFERENCE_BATCH,
        help="images per iteration; under torchrun the global batch, shared by the processes",
    )
    train.add_argument("--lr", type=float, help="base lr (default: 0.0015 x batch / 5)")
    train.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
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
    train.add_argument("--amp", choices=AMP_MODES, default="auto")
    train.add_argument("--seed", type=int, default=0)

    run = parser.add_argument_group("running")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run.add_argument(
        "--sync-bn",
        choices=SYNC_BN,
        default="auto",
        help="under torchrun, turn BatchNorm layers into SyncBatchNorm (auto: on CUDA; torch "
        "has none for the CPU); GroupNorm and frozen BatchNorm need nothing",
    )
    run.add_argument("--workers", type=int, default=4, help="data loader processes")
    run.add_argument("--log-every", type=int, default=20, help="iterations between log records")
    run.add_argument("--checkpoint-every", type=int, default=500, help="iterations between saves")
    run.add_argument(
        "--stop-after-iters", type=int, help="stop resumably after N iterations of this process"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    evaluation = parser.add_argument_group("evaluation and export")
    thresholds = ", ".join(f"{k} {v}" for k, v in REFERENCE_SEARCH_THRESHOLDS.items())
    evaluation.add_argument(
        "--det-thresh",
        type=float,
        help=f"search score threshold of cls x ctr (default as the reference: {thresholds})",
    )
    evaluation.add_argument(
        "--query-embedding",
        choices=QUERY_EMBEDDINGS,
        default="detection",
        help="embed each query from the detection overlapping its box most (the reference), "
        "or from the given box through the ROI branch",
    )
    evaluation.add_argument("--gallery-size", type=int, default=100, help="CUHK-SYSU gallery size")
    evaluation.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    evaluation.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    evaluation.add_argument("--export-fp16", action="store_true", help="export a half graph")
    return parser


def resume_config(args: argparse.Namespace) -> RunConfig:
    """The saved config of the run in --out, with the runtime options of this command line."""
    config_path = args.out / "config.json"
    if not config_path.is_file():
        raise OptionError(f"--resume: {config_path} not found; is {args.out} a training run?")
    saved = json.loads(config_path.read_text())["options"]
    config = RunConfig.from_record(saved).with_runtime_options(args)
    kept = ", ".join(f"--{name.replace('_', '-')}" for name in RUNTIME_OPTIONS)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(
            f"[galw] resuming with the options in {config_path} (this command sets {kept})",
            file=sys.stderr,
        )
    if not config.data_root.is_dir():
        raise OptionError(f"saved --data-root {config.data_root}: no such directory")
    return config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # imported here so that --help answers without loading the model code
    from training.pipeline import RunError, run_algorithm

    try:
        config = resume_config(args) if args.resume else RunConfig.from_arguments(args)
        words = sys.argv[1:] if argv is None else argv
        command = " ".join(["python -m training.galw", *map(shlex.quote, words)])
        return run_algorithm(config, resume=args.resume, command=command)
    except (OptionError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
