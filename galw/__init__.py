"""GALW: grouped adaptive loss weighting for any multi-task model (Tian et al., ACM MM 2022).

- :mod:`galw.weighting`: fixed, ULWF, RULWF and grouped uncertainty weighting of named losses;
- :mod:`galw.probe`: per-task gradient magnitudes on shared parameters, per epoch;
- :mod:`galw.grouping`: groups from magnitude slopes, by hand, by branch, or at random;
- :mod:`galw.plots`: figures (needs matplotlib; not imported here);
- ``python -m galw group``: group tasks from a recorded gradients.json.
"""

from galw.grouping import (
    Grouping,
    build_grouping,
    compute_slopes,
    group_by_branch,
    group_randomly,
    group_tasks,
    load_grouping,
    slope_score,
    slope_scores,
)
from galw.probe import GalwFileError, GradientHistory, GradientProbe
from galw.weighting import (
    KIND_FACTORS,
    RULWF,
    ULWF,
    FixedWeighting,
    GroupedUncertainty,
    LossWeighting,
    build_weighting,
)

__all__ = [
    "KIND_FACTORS",
    "RULWF",
    "ULWF",
    "FixedWeighting",
    "GalwFileError",
    "GradientHistory",
    "GradientProbe",
    "GroupedUncertainty",
    "Grouping",
    "LossWeighting",
    "build_grouping",
    "build_weighting",
    "compute_slopes",
    "group_by_branch",
    "group_randomly",
    "group_tasks",
    "load_grouping",
    "slope_score",
    "slope_scores",
]
