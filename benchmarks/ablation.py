"""GALW against its baselines on one dataset: the paper's Tables 3 and 5 in miniature.

Every variant trains with ``python -m training.galw`` on the same data, recipe, iterations and
seeds, and differs only in how the losses are weighted and grouped:

- ``fixed``: the reference ROI-AlignPS* weights (Table 3, "fixed");
- ``ulwf`` / ``rulwf``: one learned sigma per task (Kendall et al. / its regularised form);
- ``galw``: RULWF over groups found by the gradient-magnitude slopes of a probe run (GALW);
- ``ulwf_slope``: ULWF over the same slope groups (Table 3, "ULWF + grouping"); it reuses the
  ``galw`` run's groups.json of the same seed instead of repeating the probe, which with the
  same seed would find the same groups;
- ``galw_branch`` / ``galw_random``: RULWF over groups by network branch / a random partition
  into as many groups (Table 5);
- ``galw_attr`` (with ``--attr``): GALW with the attribute task t11 added (Table 6).

Each run lives in OUT/seed<S>/<variant>; a run whose directory holds metrics.json is done and
skipped, one with a config.json but no metrics.json is continued with ``--resume``. When every
run is done (or with ``--summarise-only``), OUT/summary.json and OUT/summary.md tabulate the
metrics per variant (mean and spread over seeds), OUT/results.png draws them (mean and each
seed), OUT/sigmas.png draws the sigmas of every weighted variant, and ``--artefacts DIR``
copies each run's small files (no checkpoints or ONNX).

    python -m training.synth --out data/ablation --format prw --frames 300 --identities 80 \\
        --cameras 6 --seed 7 --size 640x360 --test-fraction 0.5
    python -m benchmarks.ablation --data-root data/ablation --budget cpu --seeds 0,1 \\
        --out runs/ablation --jobs 2 --attr --artefacts docs/ablation
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: the training options that make it what it is."""

    name: str
    label: str
    options: tuple[str, ...]
    groups_from: str | None = None  # the variant whose groups.json (same seed) this one reuses
    needs_attributes: bool = False


VARIANTS: tuple[Variant, ...] = (
    # galw first: its probe's groups.json is what ulwf_slope waits for
    Variant("galw", "GALW (RULWF + slope groups)", ("--weighting", "galw", "--grouping", "slope")),
    Variant("fixed", "fixed weights (reference)", ("--weighting", "fixed")),
    Variant("ulwf", "ULWF", ("--weighting", "ulwf")),
    Variant("rulwf", "RULWF", ("--weighting", "rulwf")),
    Variant("ulwf_slope", "ULWF + slope groups", ("--weighting", "ulwf"), groups_from="galw"),
    Variant(
        "galw_branch", "RULWF + branch groups", ("--weighting", "galw", "--grouping", "branch")
    ),
    Variant(
        "galw_random", "RULWF + random groups", ("--weighting", "galw", "--grouping", "random")
    ),
    Variant(
        "galw_attr",
        "GALW + attribute task t11",
        ("--weighting", "galw", "--grouping", "slope", "--attr"),
        needs_attributes=True,
    ),
)
VARIANT_NAMES = tuple(variant.name for variant in VARIANTS)


@dataclass(frozen=True)
class Budget:
    """How much training each run gets; the recipe is the demo model's (models/demo/README.md)
    with smaller frames and fewer epochs."""

    epochs: int
    probe_epochs: int
    probe_samples: int
    max_size: str
    train_sizes: str
    warmup_iters: int


BUDGETS: dict[str, Budget] = {
    # for tests and a first look: minutes for the whole set on a tiny dataset
    "smoke": Budget(1, 2, 1, "320,180", "96,128", 10),
    # the CPU set of docs/RESULTS.md (about two hours for 2 seeds on 2 free cores, two 1-thread
    # runs at a time): 640x360 frames (persons about 3 stride-8 cells wide; at 384x216 they are
    # under 2 and a 90-iteration set learned nothing), the training long side scaled from the
    # demo's 800..1120 for 960x540, 14 epochs of 150 frames (1050 iterations, the demo's
    # embeddings had separated by its step 1000), the demo's 8 probed batches
    "cpu": Budget(14, 2, 8, "640,360", "544,736", 50),
    # the demo model's own budget (models/demo/README.md: its 960x540 data of 500 training
    # frames; about 45 CPU minutes per run on 2 free cores, so meant for a GPU or a long night)
    "demo": Budget(24, 2, 8, "960,540", "800,1120", 100),
}
# The demo model's recipe (models/demo/model.json, training.command) apart from the budget.
RECIPE: tuple[str, ...] = (
    "--dataset", "prw", "--config", "tiny", "--batch-size", "2", "--optimizer", "adamw",
    "--lr", "0.002", "--weight-decay", "0.0001", "--workers", "0", "--no-progress",
    "--no-export", "--groups", "4", "--log-every", "5",
)  # fmt: skip
EMBEDDINGS = ("concat", "alignps", "roi")
REPORTED = ("mAP", "top1")


@dataclass(frozen=True)
class Job:
    variant: Variant
    seed: int
    run: Path

    @property
    def done(self) -> bool:
        return (self.run / "metrics.json").is_file()

    @property
    def started(self) -> bool:
        return (self.run / "config.json").is_file()


def plan(out: Path, variants: Sequence[Variant], seeds: Sequence[int]) -> list[Job]:
    """Every (variant, seed) run in the order they start: variant by variant, so that an
    unfinished set still compares whole variants over all seeds."""
    return [
        Job(variant, seed, out / f"seed{seed}" / variant.name)
        for variant in variants
        for seed in seeds
    ]


def dependency(job: Job, out: Path) -> Path | None:
    """The file a job waits for before it can start (None: none)."""
    if job.variant.groups_from is None:
        return None
    return out / f"seed{job.seed}" / job.variant.groups_from / "groups.json"


def command(job: Job, data_root: Path, budget: Budget, out: Path, device: str = "cpu") -> list[str]:
    """The training command line of a job (continuing it when it has started)."""
    base = [sys.executable, "-m", "training.galw", "--out", str(job.run)]
    if job.started:
        return [*base, "--resume", "--workers", "0", "--no-progress", "--device", device]
    options = list(job.variant.options)
    source = dependency(job, out)
    if source is not None:
        options += ["--grouping", str(source)]
    return [
        *base,
        "--data-root", str(data_root), *RECIPE, *options,
        "--epochs", str(budget.epochs), "--probe-epochs", str(budget.probe_epochs),
        "--probe-samples", str(budget.probe_samples), "--max-size", budget.max_size,
        "--train-sizes", budget.train_sizes, "--warmup-iters", str(budget.warmup_iters),
        "--seed", str(job.seed), "--device", device,
    ]  # fmt: skip


def run_all(
    jobs: Sequence[Job],
    data_root: Path,
    budget: Budget,
    out: Path,
    parallel: int,
    threads: int,
    device: str = "cpu",
) -> list[Job]:
    """Run the jobs that are not done, ``parallel`` at a time, each with ``threads`` CPU
    threads, starting a job only once its dependency exists; returns the jobs that failed."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    pending = [job for job in jobs if not job.done]
    for job in jobs:
        if job.done:
            print(f"[ablation] {job.run}: done, skipped", flush=True)
    running: dict[subprocess.Popen, tuple[Job, float]] = {}
    failed: list[Job] = []
    while pending or running:
        for job in list(pending):
            if len(running) >= parallel:
                break
            source = dependency(job, out)
            if source is not None and not source.is_file():
                if not any(
                    j.run == source.parent for j in pending + [r[0] for r in running.values()]
                ):
                    print(f"[ablation] {job.run}: {source} will never appear; skipped", flush=True)
                    pending.remove(job)
                    failed.append(job)
                continue
            pending.remove(job)
            job.run.mkdir(parents=True, exist_ok=True)
            line = command(job, data_root, budget, out, device)
            print(f"[ablation] start {job.run}: {' '.join(line[1:])}", flush=True)
            with open(job.run / "ablation.log", "a", encoding="utf-8") as log:
                process = subprocess.Popen(line, cwd=REPO, env=env, stdout=log, stderr=log)
            running[process] = (job, time.monotonic())
        for process in list(running):
            if process.poll() is None:
                continue
            job, started = running.pop(process)
            state = "done" if process.returncode == 0 and job.done else "FAILED"
            if state == "FAILED":
                failed.append(job)
            print(
                f"[ablation] {state} {job.run} (exit {process.returncode}, "
                f"{time.monotonic() - started:.0f} s; log {job.run / 'ablation.log'})",
                flush=True,
            )
        if pending or running:
            time.sleep(2)
    return failed


def read_metrics(run: Path) -> dict[str, float] | None:
    """The reported figures of a finished run: <embedding>_<figure> for all cameras, and the
    detection AP and recall."""
    path = run / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text(encoding="utf-8"))
    figures = {
        f"{embedding}_{name}": metrics[embedding]["all_cameras"][name]
        for embedding in EMBEDDINGS
        for name in REPORTED
    }
    figures["det_ap"] = metrics["concat"]["all_cameras"]["det_ap"]
    figures["det_recall"] = metrics["concat"]["all_cameras"]["det_recall"]
    return figures


def summarise(out: Path, jobs: Sequence[Job]) -> dict:
    """Per variant: every seed's figures with its metrics.json path, and their mean, standard
    deviation and range (min, max)."""
    rows = {}
    for variant in dict.fromkeys(job.variant for job in jobs):
        runs: dict[str, dict[str, Any]] = {}  # figures, and the metrics path and losses
        for job in (j for j in jobs if j.variant == variant):
            figures = read_metrics(job.run)
            if figures is not None:
                runs[str(job.seed)] = {
                    "metrics": str(job.run.relative_to(out) / "metrics.json"),
                    **figures,
                }
                losses = last_epoch_losses(job.run)
                if losses:
                    runs[str(job.seed)]["last_epoch_losses"] = losses
                sigmas = sigma_series(job.run)
                if sigmas:
                    runs[str(job.seed)]["final_sigmas"] = {
                        group: values[-1] for group, (_, values) in sigmas.items()
                    }
        stats = {}
        if runs:
            for key in next(iter(runs.values())):
                if key in ("metrics", "final_sigmas", "last_epoch_losses"):
                    continue
                values = [run[key] for run in runs.values()]
                stats[key] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "min": min(values),
                    "max": max(values),
                }
        groups = {}
        for job in (j for j in jobs if j.variant == variant):
            path = job.run / "groups.json"
            if path.is_file():
                groups[str(job.seed)] = json.loads(path.read_text(encoding="utf-8"))["groups"]
        rows[variant.name] = {"label": variant.label, "seeds": runs, "stats": stats}
        if groups:
            rows[variant.name]["groups"] = groups
    return rows


def markdown_table(rows: Mapping[str, Mapping]) -> str:
    """concat mAP / top-1 (and AlignPS / ROI mAP) per variant: mean over the seeds with the
    seeds' own values in brackets."""
    header = (
        "| variant | seeds | concat mAP | concat top-1 | alignps mAP | roi mAP | det recall |\n"
        "|---|---:|---|---|---|---|---|\n"
    )
    lines = []
    for name, row in rows.items():
        stats, seeds = row["stats"], row["seeds"]
        if not seeds:
            lines.append(f"| {row['label']} (`{name}`) | 0 | – | – | – | – | – |")
            continue

        def cell(key: str, stats=stats, seeds=seeds) -> str:
            each = ", ".join(f"{seeds[s][key]:.3f}" for s in seeds)
            return f"{stats[key]['mean']:.3f} ({each})"

        keys = ("concat_mAP", "concat_top1", "alignps_mAP", "roi_mAP", "det_recall")
        cells = " | ".join(cell(key) for key in keys)
        lines.append(f"| {row['label']} (`{name}`) | {len(seeds)} | {cells} |")
    return header + "\n".join(lines) + "\n"


def sigma_series(run: Path) -> dict[str, tuple[list[int], list[float]]]:
    """group name -> (steps, sigmas) of a run's main phase, from its train_log.jsonl."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    path = run / "train_log.jsonl"
    if not path.is_file():
        return series
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("phase") != "main" or record.get("event") != "step":
            continue
        for name, sigma in (record.get("sigmas") or {}).items():
            steps, values = series.setdefault(name, ([], []))
            steps.append(record["step"])
            values.append(sigma)
    return series


def last_epoch_losses(run: Path) -> dict[str, float]:
    """Each task's unweighted loss averaged over the logged steps of the main run's last epoch:
    what each weighting made of the tasks, even where the search figures are all near zero."""
    path = run / "train_log.jsonl"
    if not path.is_file():
        return {}
    steps = [
        record
        for record in map(json.loads, path.read_text(encoding="utf-8").splitlines())
        if record.get("phase") == "main" and record.get("event") == "step"
    ]
    if not steps:
        return {}
    last = [record for record in steps if record["epoch"] == steps[-1]["epoch"]]
    return {task: statistics.fmean(r["losses"][task] for r in last) for task in last[0]["losses"]}


def plot_sigmas(jobs: Sequence[Job], path: Path) -> bool:
    """One panel per weighted variant, one line per sigma, solid for the first seed and dashed
    for the others; False when no run has sigmas."""
    from matplotlib.figure import Figure

    from galw.plots import save_figure

    panels: dict[str, list[tuple[int, dict[str, tuple[list[int], list[float]]]]]] = {}
    for job in jobs:
        series = sigma_series(job.run)
        if series:
            panels.setdefault(job.variant.name, []).append((job.seed, series))
    if not panels:
        return False
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(5 * columns, 3.6 * rows))
    for index, (name, runs) in enumerate(panels.items()):
        axes = figure.add_subplot(rows, columns, index + 1)
        colours: dict[str, str] = {}  # one colour and one legend entry per group name
        for number, (_, series) in enumerate(sorted(runs, key=lambda run: run[0])):
            for group, (steps, values) in sorted(series.items()):
                new = group not in colours
                colour = colours.setdefault(group, f"C{len(colours) % 10}")
                axes.plot(
                    steps,
                    values,
                    color=colour,
                    linestyle="-" if number == 0 else "--",
                    linewidth=1,
                    label=group if new else None,
                )
        axes.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
        seeds = ", ".join(str(seed) for seed in sorted(seed for seed, _ in runs))
        axes.set_title(f"{name} (seeds {seeds}; first solid)")
        axes.set_xlabel("step")
        axes.set_ylabel("sigma")
        axes.legend(fontsize="xx-small", ncol=2)
        axes.grid(alpha=0.3)
    save_figure(figure, path)
    return True


PLOTTED = (
    ("concat_mAP", "concat mAP"),
    ("concat_top1", "concat top-1"),
    ("det_recall", "detection recall"),
)


def plot_results(rows: Mapping[str, Mapping], path: Path) -> bool:
    """One panel per figure of ``PLOTTED``: a bar per variant at its mean over the seeds, a
    dot per seed; False when no run has finished."""
    from matplotlib.figure import Figure

    from galw.plots import save_figure

    done = {name: row for name, row in rows.items() if row["seeds"]}
    if not done:
        return False
    figure = Figure(figsize=(5 * len(PLOTTED), 0.45 * len(done) + 1.6))
    for index, (key, title) in enumerate(PLOTTED):
        axes = figure.add_subplot(1, len(PLOTTED), index + 1)
        for position, row in enumerate(reversed(done.values())):
            values = [seed[key] for seed in row["seeds"].values()]
            axes.barh(position, statistics.fmean(values), color="C0", alpha=0.35)
            axes.plot(values, [position] * len(values), "o", color="C0", markersize=4)
        axes.set_yticks(range(len(done)))
        axes.set_yticklabels(reversed(list(done)) if index == 0 else [])
        axes.set_title(f"{title} (bar: mean, dots: seeds)", fontsize="small")
        axes.grid(axis="x", alpha=0.3)
    save_figure(figure, path)
    return True


def regroupings(jobs: Sequence[Job], counts: Sequence[int]) -> dict[str, dict[str, list]]:
    """The slope groups each recorded probe gives for several group counts (Table 4's
    partitions, without training them)."""
    from galw.grouping import group_tasks
    from galw.probe import GradientHistory

    found: dict[str, dict[str, list]] = {}
    for job in jobs:
        path = job.run / "gradients.json"
        if path.is_file():
            magnitudes = GradientHistory.load(path).magnitudes
            found[f"{job.variant.name}/seed{job.seed}"] = {
                str(count): group_tasks(magnitudes, count).groups for count in counts
            }
    return found


# each run's sigmas are in its train_log.jsonl and in the summary's one sigmas.png
ARTEFACTS = (
    "metrics.json", "groups.json", "gradients.json", "config.json", "train_log.jsonl",
    "gradient_magnitudes.png",
)  # fmt: skip


def copy_artefacts(out: Path, jobs: Sequence[Job], target: Path) -> None:
    """The small files of every run and the summary, under ``target`` with the same layout."""
    for job in jobs:
        for name in ARTEFACTS:
            source = job.run / name
            if source.is_file():
                destination = target / job.run.relative_to(out) / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, destination)
    for name in ("summary.json", "summary.md", "sigmas.png", "results.png"):
        if (out / name).is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / name, target / name)


def write_summary(out: Path, jobs: Sequence[Job], header: Mapping) -> dict:
    rows = summarise(out, jobs)
    summary = {
        **header,
        "variants": rows,
        "regroupings": regroupings(jobs, (2, 3, 4, 5, 6)),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    table = markdown_table(rows)
    (out / "summary.md").write_text(table, encoding="utf-8")
    plot_sigmas(jobs, out / "sigmas.png")
    plot_results(rows, out / "results.png")
    print(table)
    return summary


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds: comma-separated integers, got {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds: distinct integers, got {text!r}")
    return seeds


def select_variants(text: str, with_attributes: bool) -> list[Variant]:
    if text == "all":
        return [v for v in VARIANTS if with_attributes or not v.needs_attributes]
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in VARIANT_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"--variants: unknown {unknown}; known {VARIANT_NAMES}")
    chosen = [v for v in VARIANTS if v.name in names]  # in VARIANTS' (dependency) order
    for variant in chosen:
        if variant.groups_from is not None and variant.groups_from not in names:
            raise argparse.ArgumentTypeError(
                f"--variants: {variant.name} reuses the groups of {variant.groups_from}; add it"
            )
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ablation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data-root", type=Path, required=True, help="PRW-layout dataset")
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="cpu")
    parser.add_argument("--seeds", type=parse_seeds, default=[0, 1], help="e.g. 0,1")
    parser.add_argument("--out", type=Path, required=True, help="directory of every run")
    parser.add_argument("--variants", default="all", help=f"all, or some of {VARIANT_NAMES}")
    parser.add_argument(
        "--attr", action="store_true", help="add galw_attr (needs DATA_ROOT/attributes.json)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    parser.add_argument("--device", default="cpu", help="training device of every run (cuda)")
    parser.add_argument("--summarise-only", action="store_true", help="train nothing")
    parser.add_argument("--artefacts", type=Path, help="copy the runs' small files here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        variants = select_variants(args.variants, args.attr)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if not args.data_root.is_dir():
        parser.error(f"--data-root {args.data_root}: no such directory")
    if args.attr and not (args.data_root / "attributes.json").is_file():
        parser.error(f"--attr: {args.data_root / 'attributes.json'} not found")
    budget = BUDGETS[args.budget]
    jobs = plan(args.out, variants, args.seeds)
    failed: list[Job] = []
    started = time.monotonic()
    if not args.summarise_only:
        failed = run_all(
            jobs, args.data_root, budget, args.out, args.jobs, args.threads, args.device
        )
    header = {
        "data_root": str(args.data_root),
        "budget": {"name": args.budget, **budget.__dict__},
        "recipe": list(RECIPE),
        "seeds": args.seeds,
        "device": args.device,
        "failed": [str(job.run) for job in failed],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_summary(args.out, jobs, header)
    if args.artefacts is not None:
        copy_artefacts(args.out, jobs, args.artefacts)
    print(f"[ablation] {time.monotonic() - started:.0f} s; failed: {len(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
