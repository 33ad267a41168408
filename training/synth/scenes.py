"""Planning a synthetic dataset: cameras, frames, who appears where, and where they stand.

Everything here is plain data drawn from one seeded generator, so a plan is a pure function of
its arguments; rendering and writing follow from it. Statistics follow PRW's test set
(docs/ARCHITECTURE.md, "Synthetic data"): person heights 5/50/95th percentile at 8%/15%/46%
of the frame height, 1..19 people per frame (median 3), about 76% of them labelled. Each camera
records at one frame size; with a size mix (training.synth.sizes) the frames are shared among
the sizes in its proportions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.synth.appearance import BUILD_ASPECT, Appearance, sample_appearance, sample_identities
from training.synth.sizes import FrameSize, SizeMix, apportion, as_mix, cameras_per_size

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels
FACINGS = ("front", "back", "left", "right")
PROP_KINDS = ("lamp", "tree", "bin", "bench", "sign", "statue")
# Prop box (width, height) in units of the height of a person standing at the same depth.
PROP_SHAPE = {
    "lamp": (0.22, 1.7),
    "tree": (0.9, 2.2),
    "bin": (0.3, 0.45),
    "bench": (1.1, 0.4),
    "sign": (0.45, 1.2),
    "statue": (0.38, 1.2),
}
MAX_PEOPLE = 19
LABELLED_FRACTION = 0.76
MAX_COVERAGE = 0.45  # at most this share of a person may be hidden behind nearer things
MIN_PERSON_PX = 30


@dataclass(frozen=True)
class Camera:
    index: int  # 1-based, as in PRW's c1..c6
    size: FrameSize  # frame width, height
    horizon: float  # y of the horizon as a fraction of the frame height
    near: float  # height of a person standing on the bottom row, as a fraction of the frame's
    far: float  # height of a person standing on the horizon, as a fraction of the frame's
    gains: tuple[float, float, float]  # per-channel colour cast
    blur: float  # Gaussian blur radius in pixels
    noise: float  # sensor noise standard deviation in grey levels
    jpeg_quality: int
    scene_seed: int  # seeds the camera's fixed background


@dataclass(frozen=True)
class Person:
    appearance: Appearance
    pid: int | None  # dataset identity, None for an unlabelled passer-by
    box: Box  # whole body; may reach past the left or right frame edge
    facing: str
    stride: float  # leg spread 0..1
    shade: float  # illumination of this sighting


@dataclass(frozen=True)
class Prop:
    kind: str
    box: Box
    seed: int  # colour and detail variation


@dataclass(frozen=True)
class FramePlan:
    index: int
    camera: Camera
    split: str  # "train" | "test"
    people: tuple[Person, ...]
    props: tuple[Prop, ...]


@dataclass(frozen=True)
class DatasetPlan:
    seed: int
    sizes: SizeMix  # frame sizes and their shares of the frames
    cameras: tuple[Camera, ...]
    frames: tuple[FramePlan, ...]
    identities: dict[int, Appearance]  # pid -> appearance
    train_pids: tuple[int, ...]
    test_pids: tuple[int, ...]


def plan_dataset(
    frames: int,
    identities: int,
    cameras: int,
    seed: int,
    size: FrameSize | SizeMix | str,
    test_fraction: float = 0.5,
) -> DatasetPlan:
    """Plan a dataset; train and test identities are disjoint, test ones seen by >= 2 cameras.

    size is one (width, height), a mix of sizes with their shares of the frames, or a spec
    `training.synth.sizes.parse_size` reads (`640x360`, `prw-scaled`, ...).
    """
    _validate(frames, identities, cameras, test_fraction)
    sizes = as_mix(size)
    groups = cameras_per_size(sizes, cameras, seed)
    size_of = {
        cam: frame_size
        for group, (frame_size, _) in zip(groups, sizes, strict=True)
        for cam in group
    }
    rng = np.random.default_rng(seed)
    cams = tuple(_sample_camera(rng, index + 1, size_of[index]) for index in range(cameras))
    appearances, spare_signatures = sample_identities(rng, identities)
    pids = [int(pid) for pid in rng.permutation(identities) + 1]
    n_test_ids = identities // 2
    test_pids, train_pids = sorted(pids[:n_test_ids]), sorted(pids[n_test_ids:])
    camera_of, split_of = _assign_frames(frames, groups, [s for _, s in sizes], test_fraction)
    labelled, n_unlabelled = _assign_identities(rng, camera_of, split_of, train_pids, test_pids)
    static_props = {cam.index: _sample_props(rng, cam, int(rng.integers(1, 5))) for cam in cams}
    identity_of = dict(zip(pids, appearances, strict=True))
    planned = []
    for index in range(frames):
        camera = cams[camera_of[index]]
        props = static_props[camera.index] + _sample_props(rng, camera, int(rng.integers(0, 3)))
        walkers: list[tuple[int | None, Appearance]] = [
            (pid, identity_of[pid]) for pid in labelled[index]
        ]
        walkers += [
            (None, sample_appearance(rng, spare_signatures[rng.integers(len(spare_signatures))]))
            for _ in range(n_unlabelled[index])
        ]
        people = _place_people(rng, camera, walkers, props)
        planned.append(FramePlan(index, camera, split_of[index], people, props))
    missing = _test_pids_seen_once(planned, test_pids)
    if missing:
        raise ValueError(f"test identities {missing} fit in fewer than 2 cameras; use more frames")
    return DatasetPlan(
        seed, sizes, cams, tuple(planned), identity_of, tuple(train_pids), tuple(test_pids)
    )


def visible_box(box: Box, size: FrameSize) -> Box:
    """The part of a body box inside the frame: what the loaders read back."""
    width, height = size
    return (max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height))


def _validate(frames: int, identities: int, cameras: int, test_fraction: float) -> None:
    if cameras < 2:
        raise ValueError("need at least 2 cameras (test identities must be seen by two)")
    if frames < 3:
        raise ValueError("need at least 3 frames (1 train, 2 test)")
    if identities < 2:
        raise ValueError("need at least 2 identities (1 train, 1 test)")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")


def _sample_camera(rng: np.random.Generator, index: int, size: FrameSize) -> Camera:
    horizon, near, far = rng.uniform(0.1, 0.3), rng.uniform(0.45, 0.95), rng.uniform(0.04, 0.08)
    red, green, blue = rng.uniform(0.85, 1.15, size=3)
    return Camera(
        index=index,
        size=size,
        horizon=float(horizon),
        near=float(near),
        far=float(far),
        gains=(float(red), float(green), float(blue)),
        blur=float(rng.uniform(0.0, 0.9)),
        noise=float(rng.uniform(1.0, 5.0)),
        jpeg_quality=int(rng.integers(75, 96)),
        scene_seed=int(rng.integers(2**31)),
    )


def _assign_frames(
    frames: int, groups: list[list[int]], shares: list[float], test_fraction: float
) -> tuple[list[int], list[str]]:
    """Cameras and splits of the frames; groups are the cameras of each frame size.

    The next frame goes to the size furthest behind its share, round-robin over that size's
    cameras. Each size gets its share of the test frames, taken camera by camera (latest first)
    to spread them.
    """
    per_size = [0] * len(groups)
    camera_of = []
    for index in range(frames):
        behind = max(range(len(groups)), key=lambda k: (index + 1) * shares[k] - per_size[k])
        camera_of.append(groups[behind][per_size[behind] % len(groups[behind])])
        per_size[behind] += 1
    n_test = min(max(round(frames * test_fraction), 2), frames - 1)
    split_of = ["train"] * frames
    for cameras, n_size_test in zip(groups, apportion(n_test, per_size), strict=True):
        _take_test_frames(cameras, int(n_size_test), camera_of, split_of)
    return camera_of, split_of


def _take_test_frames(
    cameras: list[int], count: int, camera_of: list[int], split_of: list[str]
) -> None:
    per_camera = [[i for i, c in enumerate(camera_of) if c == cam][::-1] for cam in cameras]
    taken, turn = 0, 0
    while taken < count:
        queue = per_camera[turn % len(cameras)]
        if queue:
            split_of[queue.pop(0)] = "test"
            taken += 1
        turn += 1


def _assign_identities(
    rng: np.random.Generator,
    camera_of: list[int],
    split_of: list[str],
    train_pids: list[int],
    test_pids: list[int],
) -> tuple[list[list[int]], list[int]]:
    """Labelled pids per frame (required sightings first) and the number of unlabelled people."""
    frames = len(camera_of)
    totals = np.minimum(1 + rng.negative_binomial(2, 2 / (2 + 2.4), size=frames), MAX_PEOPLE)
    n_unlabelled = [int(rng.binomial(total, 1 - LABELLED_FRACTION)) for total in totals]
    labelled: list[list[int]] = [[] for _ in range(frames)]
    test_frames = [i for i in range(frames) if split_of[i] == "test"]
    train_frames = [i for i in range(frames) if split_of[i] == "train"]
    for pid in test_pids:  # two sightings in two different cameras
        test_cameras = sorted({camera_of[i] for i in test_frames})
        for cam in rng.choice(test_cameras, size=2, replace=False):
            options = [i for i in test_frames if camera_of[i] == cam]
            labelled[_least_busy(rng, options, labelled)].append(pid)
    for pid in train_pids:
        labelled[_least_busy(rng, train_frames, labelled)].append(pid)
    for index in range(frames):
        pool = test_pids if split_of[index] == "test" else train_pids
        free = [pid for pid in pool if pid not in labelled[index]]
        extra = max(0, int(totals[index]) - n_unlabelled[index] - len(labelled[index]))
        picks = rng.permutation(free)[:extra]
        labelled[index] += [int(pid) for pid in picks]
    return labelled, n_unlabelled


def _least_busy(rng: np.random.Generator, options: list[int], labelled: list[list[int]]) -> int:
    load = np.array([len(labelled[i]) for i in options])
    candidates = [options[i] for i in np.flatnonzero(load == load.min())]
    return int(rng.choice(candidates))


def _sample_height(
    rng: np.random.Generator, camera: Camera, frame_height: int, scale: float = 1.0
) -> float:
    """Person height in pixels: PRW's skewed height distribution, floored at a visible size.

    Heights the camera cannot show (taller than a person on its bottom row) are drawn again.
    """
    ceiling = camera.near * frame_height
    for _ in range(8):
        z = rng.standard_normal()
        height = scale * frame_height * 0.155 * np.exp(z * (0.37 if z < 0 else 0.66))
        if height <= ceiling:
            break
    height = min(height, ceiling)
    floor = max(MIN_PERSON_PX, 0.04 * frame_height)
    if height < floor:
        height = floor * rng.uniform(1.0, 1.3)
    return float(height)


def _feet_y(rng: np.random.Generator, camera: Camera, frame_height: int, height: float) -> float:
    """Ground contact for a person of this height: taller means nearer means lower in frame.

    Height grows linearly from `far` on the horizon to `near` on the bottom row (a flat ground
    plane seen by a pinhole camera).
    """
    horizon = camera.horizon * frame_height
    gain = (camera.near - camera.far) * frame_height / (frame_height - horizon)
    feet = horizon + (height - camera.far * frame_height) / gain + rng.normal(0, 0.03 * height)
    return float(min(max(feet, horizon + 0.02 * height, height), frame_height))


def _sample_props(rng: np.random.Generator, camera: Camera, count: int) -> tuple[Prop, ...]:
    width, height = camera.size
    props = []
    for _ in range(int(count)):
        kind = str(rng.choice(PROP_KINDS))
        person_h = _sample_height(rng, camera, height)
        feet = _feet_y(rng, camera, height, person_h)
        box_w, box_h = (s * person_h for s in PROP_SHAPE[kind])
        x1 = rng.uniform(-0.3 * box_w, width - 0.7 * box_w)
        box = (round(x1), round(feet - box_h), round(x1 + box_w), round(feet))
        props.append(Prop(kind, box, int(rng.integers(2**31))))
    return tuple(props)


def _place_people(
    rng: np.random.Generator,
    camera: Camera,
    walkers: list[tuple[int | None, Appearance]],
    props: tuple[Prop, ...],
) -> tuple[Person, ...]:
    """Place labelled walkers always (least-hidden spot if crowded), others only where they fit.

    Spots are drawn until one hides no one too much (rejection sampling, 12 tries).
    """
    occluders = [prop.box for prop in props]
    people: list[Person] = []
    for pid, appearance in walkers:
        best, best_cost = None, float("inf")
        for _ in range(12):
            candidate = _sample_person(rng, camera, pid, appearance)
            cost = _crowding(candidate.box, [p.box for p in people], occluders)
            if cost < best_cost:
                best, best_cost = candidate, cost
            if cost <= MAX_COVERAGE:
                break
        assert best is not None  # the first candidate's cost is finite
        if best_cost <= MAX_COVERAGE or pid is not None:
            people.append(best)
    return tuple(people)


def _sample_person(
    rng: np.random.Generator, camera: Camera, pid: int | None, appearance: Appearance
) -> Person:
    width, height = camera.size
    body_h = _sample_height(rng, camera, height, appearance.height_scale)
    feet = _feet_y(rng, camera, height, body_h)
    body_w = body_h * BUILD_ASPECT[appearance.build] * rng.uniform(0.93, 1.07)
    x1 = rng.uniform(-0.25 * body_w, width - 0.75 * body_w)
    box = (round(x1), round(feet - body_h), round(x1 + body_w), round(feet))
    return Person(
        appearance=appearance,
        pid=pid,
        box=box,
        facing=FACINGS[rng.integers(len(FACINGS))],
        stride=float(rng.uniform(0, 1)),
        shade=float(rng.uniform(0.85, 1.1)),
    )


def _crowding(box: Box, people: list[Box], props: list[Box]) -> float:
    """Worst hidden share among the new box and the people it would stand in front of."""
    others = people + props + [box]
    hidden = _hidden_share(box, [o for o in others[:-1] if o[3] > box[3]])
    for index, person in enumerate(people):
        if person[3] < box[3]:  # the new box would be drawn over this person
            nearer = [o for j, o in enumerate(others) if j != index and o[3] > person[3]]
            hidden = max(hidden, _hidden_share(person, nearer))
    return hidden


def _hidden_share(box: Box, nearer: list[Box]) -> float:
    """Upper bound of the share of `box` covered by boxes drawn over it."""
    area = max(1, (box[2] - box[0]) * (box[3] - box[1]))
    covered = 0
    for other in nearer:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        covered += max(0, iw) * max(0, ih)
    return covered / area


def _test_pids_seen_once(frames: list[FramePlan], test_pids: list[int]) -> list[int]:
    cameras: dict[int, set[int]] = {pid: set() for pid in test_pids}
    for frame in frames:
        for person in frame.people:
            if person.pid in cameras:
                cameras[person.pid].add(frame.camera.index)
    return [pid for pid, seen in cameras.items() if len(seen) < 2]
