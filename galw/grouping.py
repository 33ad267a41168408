"""Task grouping: by gradient-magnitude slopes (GALW), by hand, by branch, or at random.

Slope strategy (Algorithm 1 of Tian et al.):
  s_t  = mean over n of (Gamma_{n+1}^t - Gamma_n^t)   (per-epoch magnitudes Gamma),
  s*_t = sign(s_t) * sigmoid(log |s_t|)   (the paper's Eq. 8),
then agglomerative clustering of the 1-D scores (Ward linkage by default: in 1-D it minimises
the within-group variance of the scores) cut into G groups. With G = "auto" the dendrogram is
cut where the groups are best separated: the G in 2..n-1 with the highest mean silhouette
(Rousseeuw 1987); merge-height gaps are not used because Ward heights grow with group size,
which biases a largest-gap rule towards too few groups.

Two readings of Eq. 8 (``SCORINGS``):
- "literal": the natural log as written, sign(s) * sigmoid(log|s|) = s / (1 + |s|). For real
  slopes (~1e-3) that is s itself, so the partition depends on the units of Gamma (scaling all
  magnitudes by 100 changes it).
- "log-standardised" (default): sign(s) * sigmoid(z), z = log|s| standardised over the tasks.
  It separates tasks by sign and by order of magnitude, which is what Eq. 8 is for, and the
  partition is the same whatever the units of Gamma (docs/ARCHITECTURE.md, "Task grouping").

groups.json: ``{"groups": [["task", ...], ...], "slopes": {...}, "scores": {...},
"scoring": "...", "all_scores": {scoring: {...}}, "strategy": "..."}``; slopes and scores are
empty for strategies that do not use them.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path

import numpy as np
from scipy.cluster import hierarchy

from galw.probe import GalwFileError, read_json
from galw.weighting import check_partition

LINKAGES = ("ward", "average", "complete", "single")
SCORINGS = ("log-standardised", "literal")


@dataclass
class Grouping:
    """A partition of the tasks, with the slopes and scores it came from when there are any."""

    groups: list[list[str]]
    slopes: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    strategy: str = "given"
    scoring: str = ""  # which reading of Eq. 8 gave ``scores`` (slope groupings)
    all_scores: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_partition(self.groups)

    @property
    def tasks(self) -> list[str]:
        return [task for group in self.groups for task in group]

    def to_dict(self) -> dict:
        return {
            "groups": [list(group) for group in self.groups],
            "slopes": dict(self.slopes),
            "scores": dict(self.scores),
            "scoring": self.scoring,
            "all_scores": {name: dict(values) for name, values in self.all_scores.items()},
            "strategy": self.strategy,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def load_grouping(path: str | Path, tasks: Sequence[str] | None = None) -> Grouping:
    """Read a groups.json, or a bare JSON list of lists of task names (groups by hand).

    With ``tasks``, the groups must partition exactly those tasks.
    """
    data = read_json(path)
    if isinstance(data, list):
        data = {"groups": data}
    if not isinstance(data, dict):
        raise GalwFileError(f'{path}: expected {{"groups": [["task", ...], ...]}}')
    groups = data.get("groups")
    if not isinstance(groups, list) or not all(
        isinstance(g, list) and all(isinstance(t, str) for t in g) for g in groups
    ):
        raise GalwFileError(f'{path}: expected {{"groups": [["task", ...], ...]}}')
    try:
        check_partition(groups, tasks)
    except ValueError as error:
        raise GalwFileError(f"{path}: {error}") from error
    slopes, scores = data.get("slopes", {}), data.get("scores", {})
    if not isinstance(slopes, dict) or not isinstance(scores, dict):
        raise GalwFileError(f"{path}: 'slopes' and 'scores' must be objects")
    all_scores = data.get("all_scores", {})
    if not isinstance(all_scores, dict):
        raise GalwFileError(f"{path}: 'all_scores' must be an object")
    return Grouping(
        groups,
        slopes,
        scores,
        strategy=str(data.get("strategy", "given")),
        scoring=str(data.get("scoring", "")),
        all_scores=all_scores,
    )


def compute_slopes(magnitudes: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Mean epoch-to-epoch change of each task's magnitude (pairs with a NaN are left out)."""
    result = {}
    for task, values in magnitudes.items():
        steps = np.diff(np.asarray(values, dtype=float))
        steps = steps[np.isfinite(steps)]
        if steps.size == 0:
            raise ValueError(
                f"task {task!r} needs magnitudes for at least two consecutive epochs, got {values}"
            )
        result[task] = float(steps.mean())
    return result


def slope_score(slope: float) -> float:
    """The literal Eq. 8: s* = sign(s) * sigmoid(log|s|), written as s / (1 + |s|) so that
    s = 0 gives 0."""
    return slope / (1.0 + abs(slope))


def slope_scores(slopes: Mapping[str, float], scoring: str = "log-standardised") -> dict:
    """Eq. 8 score per task under one of ``SCORINGS`` (see the module docstring).

    "log-standardised": sign(s) * sigmoid((log|s| - mean) / std) over the tasks with s != 0
    (std 0: z = 0); a zero slope scores 0.
    """
    if scoring == "literal":
        return {task: slope_score(s) for task, s in slopes.items()}
    if scoring != "log-standardised":
        raise ValueError(f"unknown slope scoring {scoring!r}; expected one of {SCORINGS}")
    logs = {task: np.log(abs(s)) for task, s in slopes.items() if s != 0 and np.isfinite(s)}
    values = np.array(list(logs.values()), dtype=float)
    mean = float(values.mean()) if values.size else 0.0
    spread = float(values.std()) if values.size else 0.0
    scores = {}
    for task, s in slopes.items():
        if task not in logs:
            scores[task] = 0.0
            continue
        z = (logs[task] - mean) / spread if spread > 0 else 0.0
        scores[task] = float(np.sign(s) / (1.0 + np.exp(-z)))
    return scores


def cluster_scores(
    values: Sequence[float], n_groups: int | str, linkage: str = "ward"
) -> list[int]:
    """Cluster label per value (0..G-1) for a given G or G = "auto" (best silhouette)."""
    if linkage not in LINKAGES:
        raise ValueError(f"unknown linkage {linkage!r}; expected one of {LINKAGES}")
    points = np.asarray(values, dtype=float).reshape(-1, 1)
    count = len(points)
    if n_groups != "auto" and not (isinstance(n_groups, Integral) and 1 <= n_groups <= count):
        raise ValueError(f"number of groups must be 'auto' or 1..{count}, got {n_groups!r}")
    if count == 1:
        return [0]
    tree = hierarchy.linkage(points, method=linkage)
    if n_groups == "auto":
        n_groups = _silhouette_cut(points, tree)
    # cut_tree returns exactly n_groups clusters, unlike fcluster(maxclust) with tied heights
    return [int(label) for label in hierarchy.cut_tree(tree, n_clusters=n_groups)[:, 0]]


def _silhouette_cut(points: np.ndarray, tree: np.ndarray) -> int:
    """The G in 2..n-1 whose cut has the highest mean silhouette (ties: fewer groups).

    One group when no cut has a positive silhouette (e.g. all scores equal) or n < 3.
    """
    count = len(points)
    distances = np.abs(points - points.T)
    best_groups, best_score = 1, 0.0
    for n_groups in range(2, count):
        labels = hierarchy.cut_tree(tree, n_clusters=n_groups)[:, 0]
        score = _mean_silhouette(distances, labels)
        if score > best_score + 1e-12:
            best_groups, best_score = n_groups, score
    return best_groups


def _mean_silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean over points of (b - a) / max(a, b); a point alone in its group scores 0."""
    values = []
    for i, label in enumerate(labels):
        own = labels == label
        if own.sum() == 1:
            values.append(0.0)
            continue
        inside = distances[i, own].sum() / (own.sum() - 1)
        outside = min(distances[i, labels == other].mean() for other in set(labels) - {label})
        largest = max(inside, outside)
        values.append((outside - inside) / largest if largest > 0 else 0.0)
    return float(np.mean(values))


def group_tasks(
    magnitudes: Mapping[str, Sequence[float]],
    n_groups: int | str,
    linkage: str = "ward",
    scoring: str = "log-standardised",
) -> Grouping:
    """GALW grouping from per-epoch magnitudes; groups ordered by mean score, ascending."""
    task_slopes = compute_slopes(magnitudes)
    all_scores = {name: slope_scores(task_slopes, name) for name in SCORINGS}
    if scoring not in all_scores:
        raise ValueError(f"unknown slope scoring {scoring!r}; expected one of {SCORINGS}")
    scores = all_scores[scoring]
    tasks = list(scores)
    labels = cluster_scores([scores[t] for t in tasks], n_groups, linkage)
    groups = [
        [t for t, label in zip(tasks, labels, strict=True) if label == g] for g in set(labels)
    ]
    groups.sort(
        key=lambda group: (float(np.mean([scores[t] for t in group])), tasks.index(group[0]))
    )
    return Grouping(
        groups,
        task_slopes,
        scores,
        strategy=f"slope/{linkage}",
        scoring=scoring,
        all_scores=all_scores,
    )


def group_by_branch(tasks: Sequence[str], branches: Mapping[str, str]) -> Grouping:
    """One group per branch, in order of first appearance among ``tasks``."""
    missing = [task for task in tasks if task not in branches]
    if missing:
        raise ValueError(f"no branch given for tasks {missing}")
    by_branch: dict[str, list[str]] = {}
    for task in tasks:
        by_branch.setdefault(branches[task], []).append(task)
    return Grouping(list(by_branch.values()), strategy="branch")


def group_randomly(tasks: Sequence[str], n_groups: int, seed: int = 0) -> Grouping:
    """A random partition into ``n_groups`` non-empty groups, the same for the same seed."""
    if not 1 <= n_groups <= len(tasks):
        raise ValueError(f"number of groups must be 1..{len(tasks)}, got {n_groups}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(tasks))
    # the first n_groups shuffled tasks seed one group each, so no group is empty
    labels = np.empty(len(tasks), dtype=int)
    labels[order[:n_groups]] = np.arange(n_groups)
    labels[order[n_groups:]] = rng.integers(0, n_groups, size=len(tasks) - n_groups)
    groups = [
        [t for t, label in zip(tasks, labels, strict=True) if label == g] for g in range(n_groups)
    ]
    groups.sort(key=lambda group: tasks.index(group[0]))
    return Grouping(groups, strategy=f"random/{seed}")


def build_grouping(
    strategy: str,
    tasks: Sequence[str],
    n_groups: int | str = 4,
    magnitudes: Mapping[str, Sequence[float]] | None = None,
    branches: Mapping[str, str] | None = None,
    seed: int = 0,
    linkage: str = "ward",
    scoring: str = "log-standardised",
) -> Grouping:
    """Dispatch on ``strategy``: "slope", "branch", "random", or else a path to a groups file.

    The result always partitions ``tasks``.
    """
    if strategy == "slope":
        if magnitudes is None:
            raise ValueError("the slope grouping needs the probe's magnitudes")
        missing = [task for task in tasks if task not in magnitudes]
        if missing:
            raise ValueError(f"no magnitudes recorded for tasks {missing}")
        grouping = group_tasks({t: magnitudes[t] for t in tasks}, n_groups, linkage, scoring)
    elif strategy == "branch":
        if branches is None:
            raise ValueError("the branch grouping needs a task -> branch mapping")
        grouping = group_by_branch(tasks, branches)
    elif strategy == "random":
        if n_groups == "auto":
            raise ValueError("the random grouping needs a number of groups, not 'auto'")
        grouping = group_randomly(tasks, int(n_groups), seed)
    else:
        grouping = load_grouping(strategy, tasks)
    check_partition(grouping.groups, tasks)
    return grouping
