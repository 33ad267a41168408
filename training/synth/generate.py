"""`generate`: plan, render and write a synthetic person-search dataset."""

from __future__ import annotations

import json
from pathlib import Path

from training.synth.appearance import ATTRIBUTE_NAMES, attribute_vector
from training.synth.cuhk_layout import CUHKWriter
from training.synth.prw_layout import PRWWriter
from training.synth.render import render_frame
from training.synth.scenes import DatasetPlan, plan_dataset
from training.synth.sizes import FrameSize, SizeMix, format_size

WRITERS: dict[str, type[PRWWriter] | type[CUHKWriter]] = {"prw": PRWWriter, "cuhk": CUHKWriter}


def generate(
    out: Path | str,
    fmt: str = "prw",
    frames: int = 200,
    identities: int = 50,
    cameras: int = 6,
    seed: int = 0,
    size: FrameSize | SizeMix | str = (640, 360),
    test_fraction: float = 0.5,
    progress: bool = False,
) -> Path:
    """Write a dataset of `frames` frames in the PRW or CUHK-SYSU layout under `out`.

    Half of the identities (rounded down) are test identities, the rest train identities;
    `test_fraction` of the frames form the test split. `size` is one (width, height) for every
    camera, or a mix such as "prw" or "prw-scaled" (see training.synth.sizes) giving each
    camera one size, in the mix's proportions of the frames. `out` must be empty or not exist.
    Returns `out` as a Path.
    """
    if fmt not in WRITERS:
        raise ValueError(f"format must be one of {sorted(WRITERS)}, got {fmt!r}")
    if fmt == "prw" and cameras > 9:
        raise ValueError("PRW frame names hold one camera digit: use at most 9 cameras")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; generate into a new folder")
    plan = plan_dataset(frames, identities, cameras, seed, size, test_fraction)
    writer = WRITERS[fmt](out, plan)
    for frame in _progress(plan.frames, progress):
        writer.add(frame, render_frame(frame))
    writer.finish()
    write_attributes(out / "attributes.json", plan, writer.id_name)
    options = {
        "format": fmt,
        "frames": frames,
        "identities": identities,
        "cameras": cameras,
        "seed": seed,
        "size": format_size(plan.sizes),
        "test_fraction": test_fraction,
    }
    write_recipe(out / RECIPE_FILE, options)
    return out


RECIPE_FILE = "synth.json"


def synth_command(options: dict, out: str = "DIR") -> str:
    """The `python -m training.synth` command line that writes a dataset like this one."""
    flags = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in options.items())
    return f"python -m training.synth --out {out} {flags}"


def write_recipe(path: Path, options: dict) -> None:
    """synth.json: the generator's options and the command that makes more frames like these
    (change --seed for new ones); training copies it into the model card."""
    document = {
        "generator": "training.synth",
        "options": options,
        "command": synth_command(options),
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


def write_attributes(path: Path, plan: DatasetPlan, id_name) -> None:
    """attributes.json: per identity (keyed by its dataset id) its split, appearance, vector."""
    identities = {
        id_name(pid): {
            "split": "test" if pid in plan.test_pids else "train",
            **appearance.attributes(),
            "vector": attribute_vector(appearance),
        }
        for pid, appearance in sorted(plan.identities.items())
    }
    document = {"vector_names": list(ATTRIBUTE_NAMES), "identities": identities}
    path.write_text(json.dumps(document, indent=1))


def _progress(frames, enabled: bool):
    if not enabled:
        return frames
    from tqdm import tqdm  # only the command line shows progress

    return tqdm(frames, desc="frames", unit="frame")
