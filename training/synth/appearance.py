"""What a synthetic person looks like, and the same parameters as attribute labels (task t11).

An identity is an `Appearance`; every sighting of it in any camera is drawn from the same one,
so clothing, hair, build and accessories stay consistent across cameras. Identities get
distinct (upper colour, upper pattern, lower colour) triples so that a small network can tell
them apart; unlabelled passers-by take triples no identity uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product

import numpy as np

RGB = tuple[int, int, int]

COLOURS: dict[str, RGB] = {
    "red": (205, 30, 35),
    "orange": (240, 135, 20),
    "yellow": (240, 220, 40),
    "green": (35, 150, 55),
    "cyan": (40, 195, 210),
    "blue": (30, 60, 195),
    "purple": (125, 45, 165),
    "pink": (245, 140, 185),
    "white": (238, 238, 238),
    "black": (22, 22, 26),
    "grey": (128, 128, 128),
    "brown": (110, 68, 32),
}
PATTERNS = ("solid", "hstripes", "vstripes", "checks", "logo")
LOWER_KINDS = ("trousers", "shorts", "skirt")
HAIR_COLOURS: dict[str, RGB] = {
    "black": (25, 20, 18),
    "brown": (95, 55, 25),
    "blond": (215, 185, 110),
    "grey": (165, 165, 160),
}
SKIN_TONES: dict[str, RGB] = {
    "light": (238, 200, 170),
    "medium": (200, 150, 110),
    "dark": (120, 80, 55),
}
SHOE_COLOURS: dict[str, RGB] = {
    "black": (20, 20, 20),
    "white": (235, 235, 235),
    "brown": (90, 50, 25),
}
BUILDS = ("slim", "medium", "broad")
# Box width / height of a standing person per build (PRW's median box aspect is 0.35).
BUILD_ASPECT = {"slim": 0.32, "medium": 0.36, "broad": 0.41}

CATEGORICAL: dict[str, tuple[str, ...]] = {
    "upper_color": tuple(COLOURS),
    "upper_pattern": PATTERNS,
    "lower_color": tuple(COLOURS),
    "lower_kind": LOWER_KINDS,
    "hair_color": tuple(HAIR_COLOURS),
    "skin_tone": tuple(SKIN_TONES),
    "shoe_color": tuple(SHOE_COLOURS),
    "build": BUILDS,
}
BINARY = ("long_hair", "hat", "backpack", "handbag", "short_sleeves")
# One name per entry of `attribute_vector`: one-hot "<attribute>=<value>" then the binary ones.
ATTRIBUTE_NAMES: tuple[str, ...] = (
    tuple(f"{key}={value}" for key, values in CATEGORICAL.items() for value in values) + BINARY
)


@dataclass(frozen=True)
class Appearance:
    upper_color: str
    upper_pattern: str
    lower_color: str
    lower_kind: str
    hair_color: str
    skin_tone: str
    shoe_color: str
    build: str
    long_hair: bool
    hat: bool
    backpack: bool
    handbag: bool
    short_sleeves: bool
    hat_color: str
    bag_color: str
    height_scale: float  # body height relative to the average person, about 0.9..1.1

    @property
    def signature(self) -> tuple[str, str, str]:
        """The triple kept distinct between identities."""
        return (self.upper_color, self.upper_pattern, self.lower_color)

    @property
    def pattern_rgb(self) -> RGB:
        """Second colour of a patterned top: black on light colours, white on dark ones."""
        return (20, 20, 20) if sum(COLOURS[self.upper_color]) > 360 else (240, 240, 240)

    def attributes(self) -> dict[str, str | bool | float]:
        """The appearance parameters as a JSON-ready dict of attribute labels."""
        return asdict(self)


def attribute_vector(appearance: Appearance) -> list[int]:
    """Binary attribute vector in ATTRIBUTE_NAMES order."""
    values = appearance.attributes()
    one_hot = [
        int(values[key] == value) for key, options in CATEGORICAL.items() for value in options
    ]
    return one_hot + [int(values[key]) for key in BINARY]


def all_signatures() -> list[tuple[str, str, str]]:
    return list(product(COLOURS, PATTERNS, COLOURS))


def sample_appearance(rng: np.random.Generator, signature: tuple[str, str, str]) -> Appearance:
    """An appearance with the given clothing triple and random everything else."""
    upper_color, upper_pattern, lower_color = signature
    return Appearance(
        upper_color=upper_color,
        upper_pattern=upper_pattern,
        lower_color=lower_color,
        lower_kind=str(rng.choice(LOWER_KINDS, p=[0.6, 0.2, 0.2])),
        hair_color=str(rng.choice(tuple(HAIR_COLOURS))),
        skin_tone=str(rng.choice(tuple(SKIN_TONES))),
        shoe_color=str(rng.choice(tuple(SHOE_COLOURS))),
        build=str(rng.choice(BUILDS)),
        long_hair=bool(rng.random() < 0.35),
        hat=bool(rng.random() < 0.2),
        backpack=bool(rng.random() < 0.3),
        handbag=bool(rng.random() < 0.2),
        short_sleeves=bool(rng.random() < 0.35),
        hat_color=str(rng.choice(tuple(COLOURS))),
        bag_color=str(rng.choice(tuple(COLOURS))),
        height_scale=float(rng.uniform(0.9, 1.1)),
    )


def sample_identities(rng: np.random.Generator, count: int) -> tuple[list[Appearance], list]:
    """`count` identities with pairwise distinct clothing triples, and the unused triples.

    Beyond the 720 triples, further identities reuse triples (they still differ in the rest).
    """
    signatures = all_signatures()
    order = rng.permutation(len(signatures))
    shuffled = [signatures[i] for i in order]
    chosen = [shuffled[i % len(shuffled)] for i in range(count)]
    unused = shuffled[count:] or shuffled
    return [sample_appearance(rng, signature) for signature in chosen], unused
