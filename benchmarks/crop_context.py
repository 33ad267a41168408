"""How much a crop query's embedding depends on the scene around the person.

    python -m benchmarks.crop_context --model models/demo/model.onnx --dataset prw \
        --data-root /tmp/heldout [--placements 4] [--seed 0]

Each query's crop (``training.evaluate.query_modes.query_crop``) is embedded by the service's
engine (``Engine.embed_query``) in several surroundings, and every variant is scored with the
protocol against the same gallery (the test frames run through the engine):

- ``alone``: the crop by itself, as ``POST /search`` embeds an upload;
- ``pad canvas``: pasted at its own place into a frame-sized canvas of the pad colour;
- ``stored frame``: pasted at a random place into a random other test frame (a stored frame);
- ``mean of N``: the mean of N such random placements, renormalised;
- ``frame``: the protocol's query (the person inside its own frame), for reference.

It answers whether the service should place crops into stored scenes before embedding them
(docs/ARCHITECTURE.md, "Crop queries").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from inference.engine import Engine
from inference.preprocess import load_rgb
from training.data import load_dataset
from training.evaluate.collect import collect_results
from training.evaluate.protocol import SearchDataset, evaluate_dataset
from training.evaluate.query_modes import query_crop

THRESHOLDS = {"prw": 0.15, "cuhk": 0.2}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.crop_context")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--dataset", choices=("prw", "cuhk"), default="prw")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--placements", type=int, default=4, help="N of 'mean of N'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gallery-size", type=int, default=100, help="CUHK-SYSU only")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def paste(scene: np.ndarray, crop: np.ndarray, x: int, y: int) -> tuple[np.ndarray, list[float]]:
    """``scene`` with ``crop`` pasted at (x, y) (cut to fit), and the pasted box."""
    out = scene.copy()
    height = min(crop.shape[0], scene.shape[0] - y)
    width = min(crop.shape[1], scene.shape[1] - x)
    out[y : y + height, x : x + width] = crop[:height, :width]
    return out, [float(x), float(y), float(x + width), float(y + height)]


def variants(
    engine: Engine,
    dataset: SearchDataset,
    placements: int,
    seed: int,
    show_progress: bool,
) -> dict[str, list[np.ndarray]]:
    """Per variant, one query embedding per query."""
    rng = np.random.default_rng(seed)
    images = [record.name for record in dataset.images]
    pad = np.asarray(engine.card.pad_colour, np.uint8)

    def embed(image: np.ndarray, box: list[float] | None = None) -> np.ndarray:
        return engine.embed_query(image, box).embedding

    found: dict[str, list[np.ndarray]] = {
        "alone": [],
        "pad canvas": [],
        "stored frame": [],
        f"mean of {placements}": [],
    }
    queries = tqdm(
        range(len(dataset.queries)), desc="crops", unit="query", disable=not show_progress
    )
    for index in queries:
        query = dataset.queries[index]
        crop = query_crop(dataset, index)
        found["alone"].append(embed(crop))
        frame = load_rgb(dataset.image(query.image).path)
        canvas = np.empty_like(frame)
        canvas[:] = pad
        x, y = max(0, int(query.box[0])), max(0, int(query.box[1]))
        found["pad canvas"].append(embed(*paste(canvas, crop, x, y)))
        others = [name for name in images if name != query.image]
        scenes = [
            load_rgb(dataset.image(others[int(rng.integers(len(others)))]).path)
            for _ in range(placements)
        ]
        seed_of_query = int(rng.integers(2**31))
        # the service's own rule (PS_QUERY_SCENES): Engine.embed_query_in_scenes
        found["stored frame"].append(
            engine.embed_query_in_scenes(crop, scenes[:1], seed_of_query).embedding
        )
        found[f"mean of {placements}"].append(
            engine.embed_query_in_scenes(crop, scenes, seed_of_query).embedding
        )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    dataset = load_dataset(args.dataset, args.data_root, "test")
    threshold = THRESHOLDS[args.dataset]
    engine = Engine(args.model, ["cpu"], min_score=threshold)
    gallery_size = None if args.dataset == "prw" else args.gallery_size
    collected, _ = collect_results(
        dataset,
        lambda image, boxes: {"model": engine.run_frame(image, boxes)},
        ["model"],
        min_score=threshold,
        show_progress=not args.no_progress,
    )
    frame = collected["model"]
    scored: dict[str, dict[str, Any]] = {}
    for name, embeddings in variants(
        engine, dataset, args.placements, args.seed, not args.no_progress
    ).items():
        results = {"gallery": frame["gallery"], "queries": [{"embedding": e} for e in embeddings]}
        scored[name] = evaluate_dataset(dataset, results, gallery_size, det_thresh=threshold)
    scored["frame"] = evaluate_dataset(dataset, frame, gallery_size, det_thresh=threshold)
    print(f"{args.model} on {args.data_root}: {len(dataset.queries)} queries")
    print(f"  {'the crop, embedded':20s} {'mAP':>7s} {'top-1':>7s}")
    for name, metrics in scored.items():
        print(f"  {name:20s} {metrics['mAP']:7.3f} {metrics['top1']:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
