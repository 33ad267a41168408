"""The exported model's contract: the graph's input/output names and the model card.

The card is ``model.json`` beside ``model.onnx``. ``ModelCard`` is its only definition: training
export builds one and writes it (``ModelCard.write``), the service and the evaluator read it
(``load_model_card``), and every key is a field of the dataclass below. A key that is not a field
but looks like a misspelt one is an error; any other (a note, or a key of an older exporter) is
named in an ``UnknownCardKeyWarning`` and kept in ``extra``, written back unchanged.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.files import file_sha256, write_bytes_atomic
from inference.preprocess import DEFAULT_MAX_SIZE, PAD_COLOUR, PIXEL_MEAN, PIXEL_STD, SIZE_DIVISOR

# The graph's inputs and outputs, in order (see docs/ARCHITECTURE.md, "The model artefact").
INPUT_NAMES = ("image", "boxes")
OUTPUT_NAMES = ("det_boxes", "det_scores", "det_embeddings", "box_embeddings")
# Graphs exported with a batch dimension (card field ``batch``) also say whose each detection is.
BATCH_OUTPUT = "det_images"
INPUT_DOCS = {
    "image": "uint8 [B,3,H,W] RGB (B=1 unless the card says batch), each resized to fit "
    "max_size and padded (bottom/right) with pad_colour to a multiple of size_divisor",
    "boxes": "float32 [Q,4] x1,y1,x2,y2 in input pixels of image 0 (Q may be 0)",
}
OUTPUT_DOCS = {
    "det_boxes": "float32 [K,4] x1,y1,x2,y2 in input pixels",
    "det_scores": "float32 [K] sigmoid(cls) * sigmoid(centerness)",
    "det_embeddings": "float32 [K,D] L2-normalised",
    "box_embeddings": "float32 [Q,D] L2-normalised",
}
BATCH_OUTPUT_DOC = "int64 [K] the image (0..B-1) of each detection; images in order"
CARD_NAME = "model.json"
# Detections below this are not worth storing when a card names no threshold (SeqNet's 0.5).
FALLBACK_SCORE_THRESHOLD = 0.5
# Cards written before the mean-colour padding were trained and exported with black padding.
LEGACY_PAD_COLOUR = (0, 0, 0)
# How alike (difflib ratio) an unknown key and a field are for the key to count as misspelt.
MISSPELLING_RATIO = 0.8


class ModelError(RuntimeError):
    """The model files are missing, inconsistent or unusable; the message says which and why."""


class UnknownCardKeyWarning(UserWarning):
    """A card holds keys that are not ``ModelCard`` fields (kept in ``extra``); names them."""


@dataclass(frozen=True)
class ModelCard:
    """Everything ``model.json`` says about an exported graph."""

    onnx_file: str = "model.onnx"
    onnx_sha256: str | None = None
    embedding: str = "concat"
    embedding_dim: int | None = None
    max_size: tuple[int, int] = DEFAULT_MAX_SIZE  # (long side, short side) of the input
    size_divisor: int = SIZE_DIVISOR
    pad_colour: tuple[int, ...] = PAD_COLOUR
    pixel_mean: tuple[float, ...] = PIXEL_MEAN
    pixel_std: tuple[float, ...] = PIXEL_STD
    # The detection score above which boxes are stored and searched: what the model was
    # evaluated at (cls x ctr scores).
    search_score_threshold: float | None = None
    score: str = "cls*ctr"
    format: str = "onnx"
    exporter: str | None = None
    opset: int | None = None
    precision: str = "fp32"
    # The graph takes B images of one padded size per run and returns det_images (graphs
    # exported before it was added take one image per run).
    batch: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    num_ids: int | None = None
    queue_size: int | None = None
    attr_dim: int = 0
    thresholds: dict[str, Any] = field(default_factory=dict)
    random_weights: bool = True
    dataset: str | None = None
    checkpoint: str | None = None
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    inputs: dict[str, str] = field(default_factory=lambda: dict(INPUT_DOCS))
    outputs: dict[str, str] = field(default_factory=lambda: dict(OUTPUT_DOCS))
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def score_threshold(self) -> float:
        """The card's search threshold, else the one its metrics were taken at, else 0.5."""
        if self.search_score_threshold is not None:
            return float(self.search_score_threshold)
        if isinstance(self.metrics, dict) and self.metrics.get("det_thresh") is not None:
            return float(self.metrics["det_thresh"])
        return FALLBACK_SCORE_THRESHOLD

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of model.json (tuples as lists, as JSON reads them back)."""
        record = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        del record["extra"]
        result: dict[str, Any] = json.loads(json.dumps({**record, **self.extra}))
        return result

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelCard:
        """A card from its JSON object; a malformed field, or an unknown key that looks like a
        misspelt field, raises ValueError or TypeError; other unknown keys are warned of."""
        known = {item.name for item in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(raw) - known)
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=MISSPELLING_RATIO)
            if close:
                raise ValueError(f"unknown card key {key!r}: a misspelling of {close[0]!r}?")
        if unknown:
            warnings.warn(
                UnknownCardKeyWarning(f"model card keys that are not ModelCard fields: {unknown}"),
                stacklevel=2,
            )
        values = {key: value for key, value in raw.items() if key in known}
        for key in ("max_size", "pad_colour", "pixel_mean", "pixel_std"):
            if key in values:
                values[key] = tuple(values[key])
        if "max_size" in values:
            long_side, short_side = (int(v) for v in values["max_size"])
            values["max_size"] = (long_side, short_side)
        if "pad_colour" not in raw:
            values["pad_colour"] = LEGACY_PAD_COLOUR
        if len(values.get("pad_colour", PAD_COLOUR)) != 3:
            raise ValueError("pad_colour must hold 3 values")
        for key in ("embedding_dim", "size_divisor"):
            if values.get(key) is not None:
                values[key] = int(values[key])
        if values.get("search_score_threshold") is not None:
            values["search_score_threshold"] = float(values["search_score_threshold"])
        extra = {key: value for key, value in raw.items() if key not in known}
        return cls(**values, extra=extra)

    def with_onnx(self, onnx_path: Path) -> ModelCard:
        """This card naming ``onnx_path`` and its checksum."""
        return dataclasses.replace(
            self, onnx_file=onnx_path.name, onnx_sha256=file_sha256(onnx_path)
        )

    def write(self, onnx_path: Path) -> Path:
        """Write the card beside ``onnx_path`` (atomically); returns its path."""
        path = Path(onnx_path).with_name(CARD_NAME)
        write_bytes_atomic(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())
        return path


def branch_slices(card: ModelCard) -> dict[str, slice]:
    """Where each branch's part lies in a concatenated embedding: the graph's concat vector is
    [alignps, roi] / sqrt(2) (both unit vectors), so each part, renormalised, is that branch's
    own embedding. Empty when the card's embedding is a single branch or its dims are unknown."""
    if card.embedding != "concat":
        return {}
    alignps = int(card.config.get("neck_channels", 0))
    roi = int(card.config.get("roi_emb_dim", 0))
    if alignps <= 0 or roi <= 0 or alignps + roi != card.embedding_dim:
        return {}
    return {"alignps": slice(0, alignps), "roi": slice(alignps, alignps + roi)}


@dataclass(frozen=True)
class LoadedModel:
    """A model file on disk, checked against its card."""

    path: Path
    sha256: str
    card: ModelCard

    @property
    def model_id(self) -> str:
        """Gallery key: vectors of different ONNX files never mix."""
        return f"sha256:{self.sha256[:16]}"


def load_model_card(model_path: str | Path) -> LoadedModel:
    """Read ``model.json`` beside ``model_path`` and check the ONNX file against its sha256."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} not found (set PS_MODEL to a model.onnx)")
    card_path = model_path.with_name(CARD_NAME)
    if not card_path.is_file():
        raise ModelError(f"model card {card_path} not found beside {model_path.name}")
    try:
        raw = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model card {card_path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"model card {card_path} must hold a JSON object")
    sha256 = file_sha256(model_path)
    expected = raw.get("onnx_sha256")
    if expected is not None and str(expected).lower() != sha256:
        raise ModelError(
            f"{model_path} has sha256 {sha256} but {card_path.name} says {expected}: "
            "the model and its card do not belong together"
        )
    try:
        card = ModelCard.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model card {card_path} has a malformed field: {exc}") from exc
    return LoadedModel(path=model_path, sha256=sha256, card=card)
