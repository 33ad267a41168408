"""Response bodies (what /docs shows)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Box = tuple[float, float, float, float]
BOX_DOC = "x1, y1, x2, y2 in original image pixels"


class DetectionOut(BaseModel):
    id: int = Field(description="detection id, stable for the life of the frame")
    box: Box = Field(description=BOX_DOC)
    score: float = Field(description="detector confidence")


class FrameOut(BaseModel):
    frame_id: str
    filename: str | None = Field(description="the uploaded file's name, as the client sent it")
    camera: str | None
    timestamp: float | None = Field(description="seconds since the Unix epoch")
    width: int
    height: int
    model_id: str
    searchable: bool = Field(
        description="embedded by the model this service searches with; false until a frame "
        "another model embedded is re-embedded (GET /gallery/stats: reembed_pending)"
    )
    created_at: float
    image_url: str
    detections: list[DetectionOut]


class IngestOut(BaseModel):
    frames: list[FrameOut]


class FramePageOut(BaseModel):
    frames: list[FrameOut] = Field(description="newest first: by timestamp, else by ingest time")
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next (older) page; null on the last page"
    )


class SearchHitOut(BaseModel):
    frame_id: str
    detection_id: int
    box: Box = Field(description=BOX_DOC)
    similarity: float = Field(description="cosine similarity to the query, -1..1")
    score: float = Field(description="detector confidence of this gallery box")
    camera: str | None
    timestamp: float | None
    filename: str | None


class QueryOut(BaseModel):
    box: Box = Field(
        description="the box whose embedding was searched: query image pixels, or the stored "
        "frame's pixels for a detection_id"
    )
    source: Literal["detection", "box", "stored", "scenes"] = Field(
        description="detection: the detector found the person (IoU >= 0.5 with the asked box); "
        "box: the asked box was embedded directly; stored: the stored detection_id's embedding; "
        "scenes: the crop was placed into stored frames (PS_QUERY_SCENES) and embedded there"
    )
    iou: float | None = Field(description="IoU of the chosen detection with the asked box")
    clipped: bool = Field(
        False, description="the asked box reached outside the query image and was clipped to it"
    )
    detection_id: int | None = Field(None, description="the stored detection searched from")
    frame_id: str | None = Field(None, description="the frame of that stored detection")


class SearchOut(BaseModel):
    results: list[SearchHitOut]
    query: QueryOut
    took_ms: float = Field(description="server time for this search, inference included")


class StatsOut(BaseModel):
    model_id: str
    dim: int
    frames: int = Field(description="frames stored, as GET /gallery/frames lists them")
    detections: int = Field(description="detections stored")
    searchable_frames: int = Field(description="frames embedded by this model, searched")
    reembed_pending: int = Field(
        description="frames another model embedded, not searched until re-embedded (the "
        "service does it in the background when PS_REEMBED is on)"
    )
    index_type: str
    index_size: int
    index_origin: str
    other_models: dict[str, dict[str, int]] = Field(
        description="rows embedded by other models: kept, never searched"
    )


class ModelOut(BaseModel):
    model_id: str
    path: str
    sha256: str
    embedding_dim: int
    min_detection_score: float
    providers: list[str]
    card: dict[str, Any] = Field(description="model.json, an inference.card.ModelCard")


class Status(BaseModel):
    status: str


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="where: the request part, then the field")
    msg: str
    type: str | None


class ProblemOut(BaseModel):
    """An RFC 9457 problem: every error answer, as application/problem+json."""

    type: str = Field(
        description="urn:person-search:problem:<kind> (kinds in server/README.md), "
        "or about:blank for a bare HTTP error"
    )
    title: str = Field(description="the HTTP status phrase")
    status: int
    detail: str = Field(description="what was wrong, naming the field or upload")
    errors: list[ValidationIssue] | None = Field(
        None, description="kind `validation` only: one entry per invalid field"
    )
