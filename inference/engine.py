"""ONNX Runtime inference: detect people in a frame, embed a query person.

The graph (training/export.py) takes a padded uint8 RGB image [1,3,H,W] and query boxes [Q,4]
in input pixels, and returns detections (det_boxes, det_scores, det_embeddings) plus the
embeddings of the given boxes (box_embeddings), all L2-normalised. This module owns the
mapping between original image pixels and network input pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from server.model_card import ModelCard, ModelError, load_model_card
from training.boxes import box_iou
from training.preprocess import fit_scale, resize_and_pad

log = logging.getLogger(__name__)

INPUTS = ("image", "boxes")
OUTPUTS = ("det_boxes", "det_scores", "det_embeddings", "box_embeddings")
# A query box and a detection are the same person when they overlap this much (DESIGN 3).
QUERY_MATCH_IOU = 0.5
# TensorRT cannot build these ops; they stay on CUDA (DESIGN 3, measured).
TRT_EXCLUDED_OPS = "NonMaxSuppression,NonZero,RoiAlign"
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@dataclass(frozen=True)
class Detections:
    """People found in one image; boxes (x1, y1, x2, y2) in original image pixels."""

    boxes: np.ndarray  # float32 [K, 4]
    scores: np.ndarray  # float32 [K]
    embeddings: np.ndarray  # float32 [K, D], unit rows


@dataclass(frozen=True)
class QueryEmbedding:
    """The vector a search uses, and where it came from.

    source "detection": the detector found the person (IoU with the asked box >= 0.5) and its
    detection embedding is used, as the gallery's own vectors are; "box": nothing matched, so
    the asked box was embedded directly through the ROI branch.
    """

    embedding: np.ndarray  # float32 [D], unit norm
    box: np.ndarray  # float32 [4], original pixels: the detection's or the asked box
    source: Literal["detection", "box"]
    iou: float | None  # IoU of the chosen detection with the asked box


class Engine:
    """One ONNX Runtime session over the exported model; thread-safe for concurrent runs."""

    def __init__(
        self,
        model_path: Path,
        providers: Sequence[str] = ("cuda", "cpu"),
        min_score: float | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.card: ModelCard = load_model_card(model_path)
        self.min_score = self.card.score_threshold if min_score is None else min_score
        self.session = _open_session(Path(model_path), providers, cache_dir)
        self.embedding_dim = self._check_interface()

    @property
    def providers(self) -> list[str]:
        """Providers ONNX Runtime actually uses, best first."""
        return self.session.get_providers()

    def warm_up(self) -> None:
        """One full run, so the first request pays no lazy initialisation (CUDA, TensorRT)."""
        height, width = self.card.divisor * 4, self.card.divisor * 3
        blank = np.zeros((height, width, 3), dtype=np.uint8)
        self.embed_query(blank)

    def detect(self, image: np.ndarray) -> Detections:
        """Detect people in an HxWx3 uint8 RGB image; keep those scoring >= min_score."""
        boxes, scores, embeddings, _ = self._run(image, np.zeros((0, 4), np.float32))
        keep = scores >= self.min_score
        return Detections(boxes[keep], scores[keep], embeddings[keep])

    def embed_query(self, image: np.ndarray, box: Sequence[float] | None = None) -> QueryEmbedding:
        """Embed the person in `box` (original pixels; default the whole image)."""
        height, width = image.shape[:2]
        asked = np.asarray(box if box is not None else (0, 0, width, height), dtype=np.float32)
        # A crop is already at camera resolution: enlarging it to the frame size would show the
        # network a person several times larger than any it saw in frames (measured on the demo
        # model: 92% vs 79% of synthetic queries find their person's frame in the top 10).
        det_boxes, scores, det_embeddings, box_embeddings = self._run(
            image, asked[None], upscale=False
        )
        candidates = scores >= self.min_score
        if candidates.any():
            overlaps = box_iou(asked[None], det_boxes[candidates])[0]
            best = int(np.argmax(overlaps))
            if overlaps[best] >= QUERY_MATCH_IOU:
                return QueryEmbedding(
                    embedding=det_embeddings[candidates][best],
                    box=det_boxes[candidates][best],
                    source="detection",
                    iou=float(overlaps[best]),
                )
        return QueryEmbedding(embedding=box_embeddings[0], box=asked, source="box", iou=None)

    def _run(
        self, image: np.ndarray, boxes: np.ndarray, upscale: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Run the graph; boxes in and out are in original pixels."""
        height, width = image.shape[:2]
        scale = fit_scale(width, height, self.card.max_size)
        prepared = resize_and_pad(
            image, divisor=self.card.divisor, scale=scale if upscale else min(scale, 1.0)
        )
        feeds = {
            "image": prepared.image[None],
            "boxes": (boxes * prepared.scale).astype(np.float32),
        }
        det_boxes, scores, det_embeddings, box_embeddings = self.session.run(OUTPUTS, feeds)
        det_boxes = det_boxes.astype(np.float32) / prepared.scale
        det_boxes = np.clip(det_boxes, 0, [width, height, width, height]).astype(np.float32)
        return det_boxes, scores.astype(np.float32), det_embeddings, box_embeddings

    def _check_interface(self) -> int:
        inputs = {node.name for node in self.session.get_inputs()}
        outputs = {node.name: node for node in self.session.get_outputs()}
        missing = [n for n in INPUTS if n not in inputs] + [n for n in OUTPUTS if n not in outputs]
        if missing:
            raise ModelError(f"{self.card.path} lacks the inputs/outputs {missing}")
        graph_dim = outputs["det_embeddings"].shape[-1]
        card_dim = self.card.embedding_dim
        if isinstance(graph_dim, int) and card_dim is not None and graph_dim != card_dim:
            raise ModelError(f"graph embeds {graph_dim}-d vectors, the card says {card_dim}")
        dim = card_dim if card_dim is not None else graph_dim
        if not isinstance(dim, int):
            raise ModelError("embedding dimension unknown: set embedding_dim in the model card")
        return dim


def _open_session(
    model_path: Path, names: Sequence[str], cache_dir: Path | None
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
