"""The same decode, detect and store pipeline on Ray Data, for archives one machine is too
slow for.

Decoding and sampling run as Ray tasks (one block per source file, so files decode in
parallel); detection runs in a pool of actors, each holding one ONNX Runtime session
(`inference.Engine`); the driver writes the results straight into the gallery store.

Why the store and not the HTTP API: POST /gallery takes images and runs the detector itself,
so sending frames the actors have already detected would run the model twice, and the
service is one process per data directory, which would make it the bottleneck the actors are
meant to remove. The store locks its data directory, so the service must be stopped (or serve
another directory) while this runs; when it starts again it reads what was written, because
both decode with `inference.imaging` and store through `GalleryStore.add_frames` (image files,
then one transaction per batch) with the model id and embedding size of the model it serves.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data

from gallery.records import FrameImage, FrameInput
from gallery.store import GalleryStore
from gallery.vectors import MilvusConfig
from inference.card import load_model_card
from inference.engine import Detections, Engine
from inference.imaging import DecodedImage, ImageRejected, decode_image
from ingest.client import Refusal, Summary
from ingest.sources import Source, SourceFrame, Unreadable, read_frames

# How a refused frame is reported (the service answers these with their HTTP status).
REFUSED_TITLE = "Not a usable image"
# Sources per decoding block: one each (videos decode in parallel) up to this many blocks; a
# folder of a million images then makes blocks of a thousand files, not a million tasks.
MAX_BLOCKS = 1024


@dataclass(frozen=True)
class RayOptions:
    """How the dataset runs: `actors` detector actors of `actor_cpus` CPUs and `actor_gpus`
    GPUs each, decoding tasks of `decode_cpus` CPUs, `batch_size` frames per detector call
    and per store transaction."""

    actors: int = 2
    actor_cpus: float = 1.0
    actor_gpus: float = 0.0
    decode_cpus: float = 1.0
    batch_size: int = 16


@dataclass(frozen=True)
class ModelOptions:
    """What the detector actors load: the service's model, providers and thresholds."""

    model: Path
    providers: tuple[str, ...] = ("cpu",)
    min_score: float | None = None  # None: the model card's threshold, as the service
    max_pixels: int = 40_000_000
    milvus: MilvusConfig | None = None  # the service's vector backend, if Milvus


def ingest_on_ray(
    sources: Sequence[Source],
    data_dir: Path,
    model: ModelOptions,
    every: float = 1.0,
    start: float | None = None,
    options: RayOptions = RayOptions(),
    on_batch: Callable[[Summary], None] | None = None,
    summary: Summary | None = None,
) -> Summary:
    """Decode, detect and store `sources` into the gallery under `data_dir`.

    Ray must be initialised (`ray.init`). Frames already stored go no further than decoding
    (an image already stored is not even read), so a rerun after an interruption only detects
    and writes what is left. `on_batch` sees the summary after each written batch; `summary`
    (default a new one) is filled as the run goes, so an interrupted run can still report.
    """
    loaded = load_model_card(model.model)
    dim = loaded.card.embedding_dim
    if dim is None:  # an old card: the graph knows
        dim = Engine(model.model, ("cpu",)).embedding_dim
    summary = Summary() if summary is None else summary
    with GalleryStore(data_dir, loaded.model_id, dim, milvus=model.milvus) as store:
        rows = []
        for source in sources:
            if source.kind == "image":
                if store.get_frame(source.frame_id) is not None:
                    summary.skipped += 1
                    continue
                stored: list[str] = []
            else:
                stored = sorted(store.frame_ids(source.frame_id_prefix))
            rows.append(
                {
                    "path": str(source.path),
                    "kind": source.kind,
                    "camera": source.camera or "",
                    "stored": stored,
                }
            )
        if rows:
            for batch in _dataset(rows, model, every, start, options).iter_batches(
                batch_size=options.batch_size, batch_format="numpy"
            ):
                _write(store, batch, summary)
                if on_batch is not None:
                    on_batch(summary)
    return summary


def _dataset(
    rows: list[dict[str, Any]],
    model: ModelOptions,
    every: float,
    start: float | None,
    options: RayOptions,
) -> ray.data.Dataset:
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command shows its own
    return (
        ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
        .flat_map(partial(_decode, every=every, start=start), num_cpus=options.decode_cpus)
        .map_batches(
            Detector,
            fn_constructor_kwargs={"model": model},
            batch_size=options.batch_size,
            compute=ray.data.ActorPoolStrategy(size=options.actors),
            num_cpus=options.actor_cpus,
            num_gpus=options.actor_gpus,
        )
    )


def _decode(row: dict[str, Any], every: float, start: float | None) -> Iterator[dict[str, Any]]:
    """One source's frames as rows: those already stored with `stored` set and no image, an
    unreadable file as a row with `refused` set."""
    source = Source(Path(row["path"]), row["kind"], row["camera"] or None)
    stored = set(row["stored"])
    for item in read_frames(source, every, start):
        if isinstance(item, Unreadable):
            yield _row(item.name, refused=Refusal(item.name, None, "Unreadable", item.detail))
        elif item.frame_id in stored:
            yield _row(item.name, stored=True)
        else:
            yield _row(item.name, item)


def _row(
    name: str,
    frame: SourceFrame | None = None,
    refused: Refusal | None = None,
    stored: bool = False,
) -> dict[str, Any]:
    # Plain values only: Ray turns None into NaN in numpy batches, so "" and NaN stand in.
    return {
        "frame_id": frame.frame_id if frame else "",
        "name": name,
        "data": frame.data if frame else b"",
        "camera": (frame.camera or "") if frame else "",
        "timestamp": math.nan if frame is None or frame.timestamp is None else frame.timestamp,
        "refused": json.dumps(asdict(refused)) if refused else "",
        "stored": stored,
    }


class Detector:
    """A Ray actor: one ONNX Runtime session; detects the people in a batch of frames."""

    def __init__(self, model: ModelOptions) -> None:
        self.engine = Engine(model.model, model.providers, model.min_score)
        self.max_pixels = model.max_pixels
        self.nobody = Detections(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros((0, self.engine.embedding_dim), np.float32),
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        refusals = list(batch["refused"])
        decoded: dict[int, DecodedImage] = {}
        for position, (name, data) in enumerate(zip(batch["name"], batch["data"], strict=True)):
            if refusals[position] or batch["stored"][position]:
                continue
            try:
                # as the service decodes an upload: at most the model's input size
                decoded[position] = decode_image(
                    data, name, self.max_pixels, self.engine.card.max_size
                )
            except ImageRejected as rejected:  # what the service refuses too
                refused = Refusal(name, None, REFUSED_TITLE, rejected.detail, rejected.kind)
                refusals[position] = json.dumps(asdict(refused))
        # one call for the batch: a graph with a batch dimension runs same-size frames together;
        # boxes come back in each upload's own pixels
        found = self.engine.detect_batch(list(decoded.values()))
        detections = dict(zip(decoded, found, strict=True))
        columns: dict[str, list[Any]] = {
            key: [] for key in ("suffix", "width", "height", "boxes", "scores", "embeddings")
        }
        for position in range(len(refusals)):
            image, people = decoded.get(position), detections.get(position, self.nobody)
            columns["suffix"].append(image.suffix if image else "")
            columns["width"].append(image.width if image else 0)
            columns["height"].append(image.height if image else 0)
            columns["boxes"].append(people.boxes)
            columns["scores"].append(people.scores)
            columns["embeddings"].append(people.embeddings)
        out = {key: _objects(values) for key, values in columns.items()}
        return {**batch, **out, "refused": _objects(refusals)}


def _objects(values: list[Any]) -> np.ndarray:
    """A column of one object per row: arrays stay whole (rows hold different numbers of
    detections), where np.array would try to stack them."""
    column = np.empty(len(values), dtype=object)
    for position, value in enumerate(values):
        column[position] = value
    return column


def _write(store: GalleryStore, batch: dict[str, np.ndarray], summary: Summary) -> None:
    """One `add_frames` for the batch, as the service stores an upload (image files, then one
    transaction; a crash in between leaves files the store sweeps when it next opens)."""
    frames = []
    for position in range(len(batch["frame_id"])):
        refused = str(batch["refused"][position])
        if refused:
            summary.refused.append(Refusal(**json.loads(refused)))
            continue
        if batch["stored"][position]:
            summary.skipped += 1
            continue
        frame_id = str(batch["frame_id"][position])
        image = FrameImage(bytes(batch["data"][position]), str(batch["suffix"][position]))
        timestamp = float(batch["timestamp"][position])
        detections = list(
            zip(
                batch["boxes"][position].reshape(-1, 4),
                batch["scores"][position].reshape(-1),
                batch["embeddings"][position],
                strict=True,
            )
        )
        frames.append(
            FrameInput(
                width=int(batch["width"][position]),
                height=int(batch["height"][position]),
                detections=detections,
                frame_id=frame_id,
                camera=str(batch["camera"][position]) or None,
                timestamp=None if math.isnan(timestamp) else timestamp,
                image=image,
            )
        )
    if frames:
        records = store.add_frames(frames)
        summary.ingested += len(records)
        summary.detections += sum(len(record.detections) for record in records)
