"""The model card (model.json beside model.onnx): what the server needs from it, checked."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.preprocess import DEFAULT_MAX_SIZE, SIZE_DIVISOR

# The detection score above which boxes are worth storing and searching: the card's own
# recommendation, else the threshold its evaluation used (metrics.det_thresh, written by
# `python -m training.galw`), else 0.5 as in SeqNet-style evaluation.
SCORE_THRESHOLD_KEY = "search_score_threshold"


class ModelError(RuntimeError):
    """The model files are missing, inconsistent or unusable; the message says which and why."""


@dataclass(frozen=True)
class ModelCard:
    """The fields serving relies on, plus the whole card as written (`raw`, served at /model)."""

    path: Path
    sha256: str
    embedding_dim: int | None
    max_size: tuple[int, int]
    divisor: int
    score_threshold: float
    raw: dict[str, Any]

    @property
    def model_id(self) -> str:
        """Gallery key: vectors of different ONNX files never mix."""
        return f"sha256:{self.sha256[:16]}"


def load_model_card(model_path: Path, default_score_threshold: float = 0.5) -> ModelCard:
    """Read `model.json` beside `model_path` and check the ONNX file against its sha256."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} not found (set PS_MODEL to a model.onnx)")
    card_path = model_path.with_name("model.json")
    if not card_path.is_file():
        raise ModelError(f"model card {card_path} not found beside {model_path.name}")
    try:
        raw = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model card {card_path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"model card {card_path} must hold a JSON object")
    sha256 = _file_sha256(model_path)
    expected = raw.get("onnx_sha256")
    if expected is not None and str(expected).lower() != sha256:
        raise ModelError(
            f"{model_path} has sha256 {sha256} but {card_path.name} says {expected}: "
            "the model and its card do not belong together"
        )
    try:
        return ModelCard(
            path=model_path,
            sha256=sha256,
            embedding_dim=None if raw.get("embedding_dim") is None else int(raw["embedding_dim"]),
            max_size=_max_size(raw.get("max_size")),
            divisor=int(raw.get("size_divisor", SIZE_DIVISOR)),
            score_threshold=_score_threshold(raw, default_score_threshold),
            raw=raw,
        )
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model card {card_path} has a malformed field: {exc}") from exc


def _score_threshold(raw: dict[str, Any], default: float) -> float:
    if raw.get(SCORE_THRESHOLD_KEY) is not None:
        return float(raw[SCORE_THRESHOLD_KEY])
    metrics = raw.get("metrics")
    if isinstance(metrics, dict) and metrics.get("det_thresh") is not None:
        return float(metrics["det_thresh"])
    return default


def _max_size(value: Any) -> tuple[int, int]:
    if value is None:
        return DEFAULT_MAX_SIZE
    long_side, short_side = (int(v) for v in value)
    return long_side, short_side


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
