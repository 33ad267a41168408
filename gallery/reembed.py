"""Re-embedding a gallery with the model now served: each stored frame embedded by another model
is decoded from its stored image, detected and embedded again, and its detections replaced.

The service does this by itself in the background after a model change (PS_REEMBED, on by
default), while it serves; ``python -m gallery.reembed`` does it with the service stopped, e.g.
before switching a large gallery over. Either is resumable: each batch commits on its own, and
what is left is exactly the frames still embedded by another model.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gallery.store import GalleryStore
from inference.engine import Detections
from inference.imaging import DecodedImage, ImageRejected, decode_image

log = logging.getLogger(__name__)
BATCH = 8


@dataclass
class ReembedSummary:
    """What a run did; `unreadable` lists frames whose stored image is missing or damaged
    (they keep their old detections and are tried again by the next run)."""

    reembedded: int = 0
    detections: int = 0
    unreadable: list[str] = field(default_factory=list)


Detect = Callable[[Sequence[DecodedImage]], list[Detections]]


def reembed(
    store: GalleryStore,
    detect: Detect,
    fit: tuple[int, int],
    max_pixels: int,
    batch: int = BATCH,
    stop: threading.Event | None = None,
    on_batch: Callable[[ReembedSummary], None] | None = None,
) -> ReembedSummary:
    """Re-embed every frame of ``store`` embedded by another model with ``detect`` (the
    engine's ``detect_batch``, or the service's way to run it), batch by batch, until none
    is left or ``stop`` is set."""
    summary = ReembedSummary()
    after: str | None = None
    while stop is None or not stop.is_set():
        records = store.frames_to_reembed(batch, after)
        if not records:
            break
        after = records[-1].frame_id
        decoded: list[tuple[str, DecodedImage]] = []
        for record in records:
            data = store.read_image(record)
            try:
                if data is None:
                    raise ImageRejected("the image file is missing")
                name = f"frame {record.frame_id!r}"
                decoded.append((record.frame_id, decode_image(data, name, max_pixels, fit)))
            except ImageRejected as exc:
                log.warning("cannot re-embed frame %r: %s", record.frame_id, exc.detail)
                summary.unreadable.append(record.frame_id)
        found = detect([image for _, image in decoded]) if decoded else []
        replaced = [
            (frame_id, list(zip(people.boxes, people.scores, people.embeddings, strict=True)))
            for (frame_id, _), people in zip(decoded, found, strict=True)
        ]
        summary.reembedded += store.reembed_frames(replaced)
        summary.detections += sum(len(people.boxes) for people in found)
        if on_batch is not None:
            on_batch(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from gallery.records import StoreLocked
    from gallery.settings import GallerySettings
    from inference.card import ModelError
    from inference.engine import Engine, chosen_providers

    settings = GallerySettings()
    parser = argparse.ArgumentParser(
        prog="python -m gallery.reembed",
        description="Re-embed the stored frames with the model the service will serve (stop "
        "the service first; it also does this by itself in the background when PS_REEMBED=on).",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=settings.data_dir, help="default $PS_DATA_DIR"
    )
    parser.add_argument("--model", type=Path, default=settings.model, help="default $PS_MODEL")
    parser.add_argument("--batch", type=int, default=BATCH, help="frames per transaction")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        engine = Engine(
            args.model,
            chosen_providers(settings.provider_list),
            settings.min_detection_score,
        )
        store = GalleryStore(
            args.data_dir, engine.model.model_id, engine.embedding_dim, milvus=settings.milvus
        )
    except (ModelError, StoreLocked) as exc:
        print(f"cannot re-embed: {exc}", file=sys.stderr)
        return 3
    with store:
        left = sum(counts["frames"] for counts in store.stats().other_models.values())
        with tqdm(total=left, unit="frame", disable=None) as bar:
            summary = reembed(
                store,
                engine.detect_batch,
                engine.card.max_size,
                settings.max_pixels,
                args.batch,
                on_batch=lambda done: bar.update(done.reembedded + len(done.unreadable) - bar.n),
            )
    print(
        f"re-embedded {summary.reembedded} frames ({summary.detections} people detected) with "
        f"{engine.model.model_id}; {len(summary.unreadable)} unreadable"
    )
    return 1 if summary.unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
