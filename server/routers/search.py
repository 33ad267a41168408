"""POST /search: find a person, given as a crop, in the stored frames."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from inference.engine import QueryEmbedding
from server.deps import Ready, ReadyDep
from server.forms import parse_box, parse_timestamp, read_image, upload_name
from server.imaging import DecodedImage
from server.problems import Problem, problem_responses
from server.schemas import QueryOut, SearchHitOut, SearchOut

router = APIRouter(tags=["search"])
MAX_TOP_K = 1000
SINGLE_FIELDS = ("query", "box", "top_k", "min_similarity", "min_score", "camera", "start", "end")


@router.post(
    "/search", response_model=SearchOut, responses=problem_responses(400, 413, 415, 422, 503)
)
async def search(
    request: Request,
    ready: ReadyDep,
    query: Annotated[UploadFile, File(description="an image showing the person (a crop)")],
    box: Annotated[
        str | None, Form(description="x1,y1,x2,y2 of the person in the query image; default all")
    ] = None,
    top_k: Annotated[int, Form(ge=1, le=MAX_TOP_K)] = 10,
    min_similarity: Annotated[float | None, Form(ge=-1.0, le=1.0)] = None,
    min_score: Annotated[
        float | None, Form(ge=0.0, le=1.0, description="minimum detector score of a result")
    ] = None,
    camera: Annotated[str | None, Form(description="only frames from this camera")] = None,
    start: Annotated[str | None, Form(description="frames at or after this time")] = None,
    end: Annotated[str | None, Form(description="frames at or before this time")] = None,
) -> SearchOut:
    """Rank stored detections by cosine similarity to the person in the query.

    The query is run through the detector too: if a detection overlaps the asked box with
    IoU >= 0.5, its embedding is used (like the gallery's); otherwise the box itself is
    embedded. `query.source` in the answer says which.
    """
    started = time.perf_counter()
    form = await request.form()  # already parsed for the fields above; this is its cache
    repeated = [name for name in SINGLE_FIELDS if len(form.getlist(name)) > 1]
    if repeated:
        raise Problem(
            422, "repeated-field", f"{', '.join(repeated)}: give each of these at most once"
        )
    image = await read_image(
        query, upload_name(query, "query"), ready.state, ready.engine.card.max_size
    )
    asked = None if box is None else parse_box(box, image.width, image.height)
    time_range = _time_range(start, end)
    embedded: QueryEmbedding = await ready.state.infer("query", lambda: _embed(ready, image, asked))
    hits = await run_in_threadpool(
        ready.store.search,
        embedded.embedding,
        top_k=top_k,
        camera=camera or None,
        time_range=time_range,
        min_score=min_score,
        min_similarity=min_similarity,
    )
    x1, y1, x2, y2 = (float(v) for v in image.to_original(embedded.box)[0])
    return SearchOut(
        results=[
            SearchHitOut(
                frame_id=hit.frame_id,
                detection_id=hit.detection_id,
                box=hit.box,
                similarity=hit.similarity,
                score=hit.score,
                camera=hit.camera,
                timestamp=hit.timestamp,
            )
            for hit in hits
        ],
        query=QueryOut(box=(x1, y1, x2, y2), source=embedded.source, iou=embedded.iou),
        took_ms=(time.perf_counter() - started) * 1000.0,
    )


def _embed(ready: Ready, image: DecodedImage, box: tuple[float, ...] | None) -> QueryEmbedding:
    """The engine sees the decoded (possibly shrunk) pixels: the box goes there and back."""
    return ready.engine.embed_query(image.pixels, None if box is None else image.to_pixels(box))


def _time_range(start: str | None, end: str | None) -> tuple[float | None, float | None] | None:
    if start is None and end is None:
        return None
    low = None if start is None else parse_timestamp(start, "start")
    high = None if end is None else parse_timestamp(end, "end")
    if low is not None and high is not None and low > high:
        raise Problem(422, "invalid-time-range", f"start {start!r} is after end {end!r}")
    return low, high
