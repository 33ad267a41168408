"""POST /search: find a person, given as a crop or as a stored detection, in the stored frames."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from inference.engine import QueryEmbedding
from inference.imaging import DecodedImage, ImageRejected, decode_image
from server.deps import Ready, ReadyDep
from server.forms import parse_box, parse_time_range, read_image, upload_name
from server.problems import Problem, problem_responses
from server.routers.browse import MAX_DETECTION_ID, find_detection
from server.schemas import QueryOut, SearchHitOut, SearchOut

router = APIRouter(tags=["search"])
MAX_TOP_K = 1000
# Given at most once (server.deps.single_valued checks it before the form is validated).
SINGLE_FIELDS = (
    "query",
    "detection_id",
    "box",
    "top_k",
    "min_similarity",
    "min_score",
    "camera",
    "start",
    "end",
)


@router.post(
    "/search",
    response_model=SearchOut,
    responses=problem_responses(400, 404, 409, 413, 415, 422, 503),
)
async def search(
    request: Request,
    ready: ReadyDep,
    query: Annotated[
        UploadFile | None,
        File(description="an image showing the person (a crop); or give detection_id"),
    ] = None,
    detection_id: Annotated[
        int | None,
        Form(
            ge=1,
            le=MAX_DETECTION_ID,
            description="search from this stored detection instead of a query image; "
            "it is left out of the results",
        ),
    ] = None,
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
    embedded. `query.source` in the answer says which. With `detection_id` instead of
    `query`, that stored detection's embedding is searched (`query.source` is `stored`).
    """
    started = time.perf_counter()
    if (query is None) == (detection_id is None):
        raise Problem(
            422, "query-or-detection", "give either a query image or a detection_id, not both"
        )
    time_range = parse_time_range(start, end)
    if detection_id is not None:
        if box is not None:
            raise Problem(422, "invalid-box", "box applies to a query image, not to a detection_id")
        embedding, asked = await _stored_query(ready, detection_id)
    else:
        assert query is not None
        embedding, asked = await _image_query(ready, query, box)
    # One more than asked: the stored detection itself is dropped from its own results.
    wanted = top_k + (detection_id is not None)
    hits = await run_in_threadpool(
        ready.store.search,
        embedding,
        top_k=wanted,
        camera=camera or None,
        time_range=time_range,
        min_score=min_score,
        min_similarity=min_similarity,
    )
    hits = [hit for hit in hits if hit.detection_id != detection_id][:top_k]
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
                filename=hit.filename,
            )
            for hit in hits
        ],
        query=asked,
        took_ms=(time.perf_counter() - started) * 1000.0,
    )


async def _image_query(
    ready: Ready, query: UploadFile, box: str | None
) -> tuple[np.ndarray, QueryOut]:
    image = await read_image(
        query, upload_name(query, "query"), ready.state, ready.engine.card.max_size
    )
    given = None if box is None else parse_box(box, image.width, image.height)
    asked = None if given is None else given.box
    scenes = await _scenes(ready, image) if asked is None else []
    if scenes:
        person = image.pixels
        embedded: QueryEmbedding = await ready.state.infer(
            "query", lambda: ready.engine.embed_query_in_scenes(person, scenes)
        )
    else:
        embedded = await ready.state.infer("query", lambda: ready.engine.embed_query(image, asked))
    x1, y1, x2, y2 = (float(v) for v in embedded.box)
    return embedded.embedding, QueryOut(
        box=(x1, y1, x2, y2),
        source=embedded.source,
        iou=embedded.iou,
        clipped=given is not None and given.clipped,
    )


async def _stored_query(ready: Ready, detection_id: int) -> tuple[np.ndarray, QueryOut]:
    stored = await find_detection(ready, detection_id)
    if stored.model_id != ready.store.model_id:
        raise Problem(
            409,
            "other-model",
            f"detection {detection_id} was embedded by model {stored.model_id}; this service "
            f"searches with {ready.store.model_id}. "
            + (
                "Its frame is being re-embedded in the background; search again when "
                "GET /gallery/stats says reembed_pending 0."
                if ready.state.settings.reembed
                else "Re-embed the stored frames: `python -m gallery.reembed` (PS_REEMBED=off)."
            ),
        )
    found = stored.detection
    return stored.embedding, QueryOut(
        box=found.box,
        source="stored",
        iou=None,
        detection_id=found.id,
        frame_id=stored.frame_id,
    )


async def _scenes(ready: Ready, image: DecodedImage) -> list[np.ndarray]:
    """PS_QUERY_SCENES stored frames, decoded at their own resolution (the crop's scale), to
    place a crop query into; none for a crop the service shrank (another scale) or when the
    setting is 0. A stored image that cannot be read or decoded is skipped."""
    wanted = ready.state.settings.query_scenes
    if wanted == 0 or image.shrunk:
        return []
    stored = await run_in_threadpool(ready.store.sample_frame_images, wanted)
    max_pixels = ready.state.settings.max_pixels
    scenes = []
    for data in stored:
        try:
            decoded = await ready.state.decode(
                partial(decode_image, data, "a stored frame", max_pixels)
            )
        except ImageRejected:
            continue
        scenes.append(decoded.pixels)
    return scenes
