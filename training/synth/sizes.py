"""Frame sizes: one size for every camera, or a mix of sizes shared out among the cameras.

PRW's test set has 73% of its frames at 1920x1080 and 27% at 720x576, each camera recording at
one size (docs/ARCHITECTURE.md, "Synthetic data"). A mix is written
`1920x1080:0.73,720x576:0.27`, or by preset name: `prw` is that mix, `prw-scaled` the same
shares at CI-friendly sizes (the same aspect ratios).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from typing_extensions import TypeIs

FrameSize = tuple[int, int]  # width, height in pixels
SizeMix = tuple[tuple[FrameSize, float], ...]  # (size, share of the frames); shares sum to 1

PRESETS: dict[str, SizeMix] = {
    "prw": (((1920, 1080), 0.73), ((720, 576), 0.27)),
    "prw-scaled": (((640, 360), 0.73), ((320, 256), 0.27)),
}
MIN_SIDE = 64
SPEC_HELP = "WxH such as 640x360, a mix such as 640x360:0.73,320x256:0.27, or " + " / ".join(
    PRESETS
)


def parse_size(text: str) -> SizeMix:
    """A size mix from `WxH`, `WxH:share,WxH:share,...` or a preset name; ValueError if bad."""
    text = text.strip().lower()
    if text in PRESETS:
        return PRESETS[text]
    parts = [part.split(":") for part in text.split(",")]
    if len(parts) == 1 and len(parts[0]) == 1:
        return as_mix(_parse_wxh(parts[0][0]))
    if any(len(part) != 2 for part in parts):
        raise ValueError(f"expected {SPEC_HELP}; got {text!r}")
    try:
        shares = [float(share) for _, share in parts]
    except ValueError as error:
        raise ValueError(f"expected {SPEC_HELP}; got {text!r}") from error
    sizes = [_parse_wxh(size) for size, _ in parts]
    return as_mix(tuple(zip(sizes, shares, strict=True)))


def format_size(mix: SizeMix) -> str:
    """The spec `parse_size` reads back as ``mix``: a preset name where one matches."""
    for name, preset in PRESETS.items():
        if preset == mix:
            return name
    if len(mix) == 1:
        (width, height), _ = mix[0]
        return f"{width}x{height}"
    return ",".join(f"{width}x{height}:{share:g}" for (width, height), share in mix)


def _is_frame_size(size: FrameSize | SizeMix) -> TypeIs[FrameSize]:
    return len(size) == 2 and all(isinstance(side, int | np.integer) for side in size)


def as_mix(size: FrameSize | SizeMix | str) -> SizeMix:
    """Normalise a single (width, height), a mix or a text spec to a validated mix."""
    if isinstance(size, str):
        return parse_size(size)
    if _is_frame_size(size):
        pairs: SizeMix = (((int(size[0]), int(size[1])), 1.0),)
    else:
        pairs = tuple(((int(w), int(h)), float(share)) for (w, h), share in size)
    if not pairs:
        raise ValueError("a size mix needs at least one size")
    if any(not share > 0 for _, share in pairs):
        raise ValueError(f"size shares must be positive, got {[s for _, s in pairs]}")
    if len({frame_size for frame_size, _ in pairs}) < len(pairs):
        raise ValueError("a size mix lists a size twice")
    for width, height in (frame_size for frame_size, _ in pairs):
        if width < MIN_SIDE or height < MIN_SIDE:
            raise ValueError(f"frames must be at least {MIN_SIDE}x{MIN_SIDE}, got {width}x{height}")
    total = sum(share for _, share in pairs)
    return tuple((frame_size, share / total) for frame_size, share in pairs)


def cameras_per_size(mix: SizeMix, cameras: int, seed: int) -> list[list[int]]:
    """0-based camera indices of each size of the mix, in the mix's order.

    Every size gets at least one camera, else in proportion to its share; which cameras get
    which size is drawn from the seed (its own stream: the rest of the plan is unaffected).
    """
    if cameras < len(mix):
        raise ValueError(f"{len(mix)} frame sizes need at least as many cameras, got {cameras}")
    counts = apportion(cameras, [share for _, share in mix])
    for index in np.flatnonzero(counts == 0):  # a rare size still gets one camera
        counts[np.argmax(counts)] -= 1
        counts[index] = 1
    order = np.random.default_rng([seed, 4]).permutation(cameras)
    ends = np.cumsum(counts)
    return [
        sorted(int(c) for c in order[end - n : end]) for n, end in zip(counts, ends, strict=True)
    ]


def apportion(total: int, weights: Sequence[float]) -> np.ndarray:
    """Integers summing to total in proportion to weights (largest remainders; ties: first)."""
    exact = total * np.asarray(weights, dtype=np.float64) / np.sum(weights)
    counts = np.floor(exact).astype(np.int64)
    remainders = exact - counts
    for index in np.argsort(-remainders, kind="stable")[: total - counts.sum()]:
        counts[index] += 1
    return counts


def _parse_wxh(text: str) -> FrameSize:
    try:
        width, height = (int(side) for side in text.strip().split("x"))
    except ValueError as error:
        raise ValueError(f"expected {SPEC_HELP}; got {text!r}") from error
    return width, height
