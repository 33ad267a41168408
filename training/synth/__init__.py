"""SynthPS: synthetic person-search datasets in the real PRW and CUHK-SYSU layouts.

`generate(out, fmt, frames, identities, cameras, seed, size)` writes one; `plan_dataset` gives
the same scenes as data (who stands where) without drawing them. `size` is one (width, height)
or a mix of sizes, one per camera (`parse_size("prw-scaled")`).
See docs/ARCHITECTURE.md, "Synthetic data".
"""

from training.synth.appearance import ATTRIBUTE_NAMES, Appearance
from training.synth.generate import generate
from training.synth.scenes import DatasetPlan, FramePlan, Person, plan_dataset, visible_box
from training.synth.sizes import PRESETS, parse_size

__all__ = [
    "ATTRIBUTE_NAMES",
    "Appearance",
    "DatasetPlan",
    "FramePlan",
    "PRESETS",
    "Person",
    "generate",
    "parse_size",
    "plan_dataset",
    "visible_box",
]
