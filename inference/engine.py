"""ONNX Runtime inference: detect people in a frame, embed a query person.

The graph (exported by ``training.export``; names and card in ``inference.card``) takes a padded
uint8 RGB image [1,3,H,W] and query boxes [Q,4] in input pixels, and returns detections
(det_boxes, det_scores, det_embeddings) plus the embeddings of the given boxes (box_embeddings),
all L2-normalised. This module owns the mapping between an image's own pixels and the network's
input pixels: it takes an array, or a ``DecodedImage`` that decoding already shrank to the model's
size, and answers boxes in the image's own pixels (for an upload, the upload's), so no caller
converts coordinates. The service, the bulk ingest and ``python -m training.evaluate --model``
all run models through it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.card import (
    BATCH_OUTPUT,
    INPUT_NAMES,
    OUTPUT_NAMES,
    LoadedModel,
    ModelCard,
    ModelError,
    load_model_card,
)
from inference.imaging import DecodedImage
from inference.outputs import (
    Detections,
    FrameOutputs,
    QueryEmbedding,
    choose_query_embedding,
    unit_rows,
)
from inference.preprocess import Prepared, fit_scale, resize_and_pad

__all__ = [
    "Detections",
    "Engine",
    "FrameOutputs",
    "Image",
    "QueryEmbedding",
    "choose_query_embedding",
]

# An HxWx3 uint8 RGB array, or a decoded upload (its pixels possibly shrunk; boxes are in the
# upload's own pixels either way).
Image = np.ndarray | DecodedImage

log = logging.getLogger(__name__)

# The service takes a detection for the asked person when it overlaps the asked box this much
# (docs/ARCHITECTURE.md, "Queries").
QUERY_MATCH_IOU = 0.5
# TensorRT cannot build these ops; they stay on CUDA (docs/ARCHITECTURE.md, "The model artefact").
TRT_EXCLUDED_OPS = "NonMaxSuppression,NonZero,RoiAlign"
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
# Tried in this order when none are asked for, each only if this onnxruntime has it.
DEFAULT_PROVIDERS = ("cuda", "cpu")


def chosen_providers(asked: Sequence[str] = ()) -> tuple[str, ...]:
    """The providers asked for, as given (the engine warns about any this onnxruntime lacks);
    none asked: the defaults this onnxruntime has, without a warning for those it lacks."""
    if asked:
        return tuple(asked)
    installed = set(ort.get_available_providers())
    return tuple(name for name in DEFAULT_PROVIDERS if PROVIDERS[name] in installed)


class Engine:
    """One ONNX Runtime session over the exported model; thread-safe for concurrent runs."""

    def __init__(
        self,
        model_path: Path,
        providers: Sequence[str] = ("cuda", "cpu"),
        min_score: float | None = None,
        cache_dir: Path | None = None,
        threads: int | None = None,
        max_batch: int = 8,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.model: LoadedModel = load_model_card(model_path)
        self.card: ModelCard = self.model.card
        self.min_score = self.card.score_threshold if min_score is None else min_score
        self.session = _open_session(Path(model_path), providers, cache_dir, threads)
        self.embedding_dim = self._check_interface()

    @property
    def providers(self) -> list[str]:
        """Providers ONNX Runtime actually uses, best first."""
        return self.session.get_providers()

    def warm_up(self) -> None:
        """One full run, so the first request pays no lazy initialisation (CUDA, TensorRT)."""
        height, width = self.card.size_divisor * 4, self.card.size_divisor * 3
        blank = np.zeros((height, width, 3), dtype=np.uint8)
        self.embed_query(blank)

    def detect(self, image: Image) -> Detections:
        """Detect people in an image; keep those scoring >= min_score."""
        return self._kept(self.run_frame(image).detections)

    def detect_batch(self, images: Sequence[Image]) -> list[Detections]:
        """``detect`` on each image, the same result. A graph exported with a batch dimension
        (card ``batch``) runs the images that pad to the same size together, at most
        ``max_batch`` per run; an older graph runs them one by one."""
        if not self.card.batch:
            return [self.detect(image) for image in images]
        views = [_view(image) for image in images]
        prepared = [self._prepare(view.pixels) for view in views]
        buckets: dict[tuple[int, ...], list[int]] = {}
        for position, item in enumerate(prepared):
            buckets.setdefault(item.image.shape, []).append(position)
        results: list[Detections | None] = [None] * len(images)
        for positions in buckets.values():
            for start in range(0, len(positions), self.max_batch):
                chunk = positions[start : start + self.max_batch]
                feeds = {
                    "image": np.stack([prepared[i].image for i in chunk]),
                    "boxes": np.zeros((0, 4), np.float32),
                }
                boxes, scores, embeddings, _, owners = self.session.run(
                    [*OUTPUT_NAMES, BATCH_OUTPUT], feeds
                )
                for slot, position in enumerate(chunk):
                    mine = owners == slot
                    found = self._to_frame(
                        boxes[mine], scores[mine], embeddings[mine], prepared[position],
                        views[position],
                    )  # fmt: skip
                    results[position] = self._kept(found)
        return [found for found in results if found is not None]

    def embed_query(self, image: Image, box: Sequence[float] | None = None) -> QueryEmbedding:
        """Embed the person in `box` (the image's own pixels; default the whole image) of a
        crop; the answer's box is in the image's own pixels too."""
        width, height = _view(image).size
        asked = np.asarray(box if box is not None else (0, 0, width, height), dtype=np.float32)
        # A crop is already at camera resolution: enlarging it to the frame size would show the
        # network a person several times larger than any it saw in frames (measured on the demo
        # model: 92% vs 79% of synthetic queries find their person's frame in the top 10).
        outputs = self.run_frame(image, asked[None], upscale=False)
        return choose_query_embedding(
            asked, outputs.detections, outputs.box_embeddings[0], self.min_score, QUERY_MATCH_IOU
        )

    def embed_query_in_scenes(
        self, person: np.ndarray, scenes: Sequence[np.ndarray], seed: int = 0
    ) -> QueryEmbedding:
        """Embed a person crop (all of ``person``) pasted at a random place into each of
        ``scenes`` (stored frames at the crop's scale), as a frame query there; the mean of the
        placements' embeddings, renormalised (docs/ARCHITECTURE.md, "Crop queries"). Scenes the
        person does not fit in are skipped; with none left, ``embed_query`` of the crop alone."""
        rng = np.random.default_rng(seed)
        vectors = []
        for scene in scenes:
            placed = place_at_random(scene, person, rng)
            if placed is None:
                continue
            composed, box = placed
            outputs = self.run_frame(composed, box[None])
            chosen = choose_query_embedding(
                box, outputs.detections, outputs.box_embeddings[0], self.min_score, QUERY_MATCH_IOU
            )
            vectors.append(chosen.embedding)
        if not vectors:
            return self.embed_query(person)
        height, width = person.shape[:2]
        return QueryEmbedding(
            embedding=unit_rows(np.mean(vectors, axis=0)[None])[0],
            box=np.array([0.0, 0.0, width, height], np.float32),
            source="scenes",
            iou=None,
        )

    def run_frame(
        self, image: Image, boxes: np.ndarray | None = None, upscale: bool = True
    ) -> FrameOutputs:
        """Run the graph on an image with query ``boxes`` [Q,4] (the image's own pixels); the
        image is resized to the card's size (never enlarged if not ``upscale``)."""
        view = _view(image)
        prepared = self._prepare(view.pixels, upscale)
        given = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32)
        feeds = {
            "image": prepared.image[None],
            "boxes": (given.reshape(-1, 4) / view.ratios * prepared.scale).astype(np.float32),
        }
        det_boxes, scores, det_embeddings, box_embeddings = self.session.run(
            list(OUTPUT_NAMES), feeds
        )
        detections = self._to_frame(det_boxes, scores, det_embeddings, prepared, view)
        return FrameOutputs(detections, box_embeddings)

    def _prepare(self, image: np.ndarray, upscale: bool = True) -> Prepared:
        height, width = image.shape[:2]
        scale = fit_scale(width, height, self.card.max_size)
        return resize_and_pad(
            image,
            divisor=self.card.size_divisor,
            scale=scale if upscale else min(scale, 1.0),
            pad_colour=self.card.pad_colour,
        )

    @staticmethod
    def _to_frame(
        boxes: np.ndarray,
        scores: np.ndarray,
        embeddings: np.ndarray,
        prepared: Prepared,
        view: _View,
    ) -> Detections:
        """Detections with their boxes back in the image's own pixels."""
        width, height = view.size
        boxes = boxes.astype(np.float32) / prepared.scale * view.ratios
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
        return Detections(boxes, scores.astype(np.float32), embeddings)

    def _kept(self, found: Detections) -> Detections:
        keep = found.scores >= self.min_score
        return Detections(found.boxes[keep], found.scores[keep], found.embeddings[keep])

    def _check_interface(self) -> int:
        inputs = {node.name for node in self.session.get_inputs()}
        outputs = {node.name: node for node in self.session.get_outputs()}
        missing = [n for n in INPUT_NAMES if n not in inputs]
        missing += [n for n in OUTPUT_NAMES if n not in outputs]
        if self.card.batch and BATCH_OUTPUT not in outputs:
            missing.append(BATCH_OUTPUT)
        if missing:
            raise ModelError(f"{self.model.path} lacks the inputs/outputs {missing}")
        graph_dim = outputs["det_embeddings"].shape[-1]
        card_dim = self.card.embedding_dim
        if isinstance(graph_dim, int) and card_dim is not None and graph_dim != card_dim:
            raise ModelError(f"graph embeds {graph_dim}-d vectors, the card says {card_dim}")
        dim = card_dim if card_dim is not None else graph_dim
        if not isinstance(dim, int):
            raise ModelError("embedding dimension unknown: set embedding_dim in the model card")
        return dim


@dataclass(frozen=True)
class _View:
    """What the network is given (`pixels`), the image's own size, and the (x, y, x, y)
    factors from `pixels` coordinates to the image's own."""

    pixels: np.ndarray
    size: tuple[int, int]  # width, height
    ratios: np.ndarray


def _view(image: Image) -> _View:
    if isinstance(image, DecodedImage):
        return _View(image.pixels, (image.width, image.height), image.ratios())
    height, width = image.shape[:2]
    return _View(image, (width, height), np.ones(4, np.float32))


def place_at_random(
    scene: np.ndarray, person: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """A copy of ``scene`` with ``person`` pasted at a random place wholly inside it, and the
    pasted box (x1, y1, x2, y2); None if the person is larger than the scene."""
    height, width = person.shape[:2]
    if height > scene.shape[0] or width > scene.shape[1]:
        return None
    x = int(rng.integers(0, scene.shape[1] - width + 1))
    y = int(rng.integers(0, scene.shape[0] - height + 1))
    composed = scene.copy()
    composed[y : y + height, x : x + width] = person
    return composed, np.array([x, y, x + width, y + height], np.float32)


def _open_session(
    model_path: Path, names: Sequence[str], cache_dir: Path | None, threads: int | None
) -> ort.InferenceSession:
    available = set(ort.get_available_providers())
    chosen: list[str | tuple[str, dict[str, str]]] = []
    for name in names:
        provider = PROVIDERS[name]
        if provider not in available:
            log.warning("provider %s asked for but not available in this onnxruntime", provider)
            continue
        chosen.append((provider, _provider_options(name, cache_dir)))
    if not chosen:
        raise ModelError(f"none of the providers {list(names)} is available; have {available}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:  # else ONNX Runtime's default: one thread per physical core
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(model_path), options, providers=chosen)
    except Exception as exc:  # ORT raises its own exception types for bad graphs
        raise ModelError(f"ONNX Runtime cannot load {model_path}: {exc}") from exc


def _provider_options(name: str, cache_dir: Path | None) -> dict[str, str]:
    if name != "tensorrt":
        return {}
    options = {"trt_op_types_to_exclude": TRT_EXCLUDED_OPS}
    if cache_dir is not None:
        # Building TensorRT engines takes minutes; cache them across restarts.
        cache_dir.mkdir(parents=True, exist_ok=True)
        options |= {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache_dir)}
    return options
