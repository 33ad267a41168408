"""Errors as RFC 9457 problem details (`application/problem+json`).

Every error the service answers, its own or FastAPI's, goes through here, so clients see one
shape: {type, title, status, detail} plus optional extension members (e.g. `errors`).
"""

from __future__ import annotations

import errno
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gallery.records import FrameExists, StorageFull
from inference.imaging import ImageRejected, ImageTooLarge, NotAnImage
from server.schemas import ProblemOut

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_SCHEMA = "Problem"
log = logging.getLogger(__name__)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the errors a route answers, each as problem+json.

    Pass it to a route or router (`responses=problem_responses(404, 422)`); declaring 422
    here also keeps FastAPI from advertising its own HTTPValidationError shape.
    """
    content = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA}"}}}
    return {
        status: {"description": HTTPStatus(status).phrase, "content": content}
        for status in statuses
    }


class Problem(Exception):
    """An error to answer as problem+json; `kind` becomes the type URI's last part."""

    def __init__(self, status: int, kind: str, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.extensions = extensions


def problem_response(
    status: int,
    detail: str,
    kind: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """Build the response; `kind` None means the generic `about:blank` type."""
    body = {
        "type": f"urn:person-search:problem:{kind}" if kind else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **jsonable_encoder(extensions),
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


async def _on_problem(request: Request, exc: Problem) -> JSONResponse:
    return problem_response(exc.status, exc.detail, exc.kind, **exc.extensions)


# Starlette's multipart parser refuses a form over its counts with a bare 400 and these
# messages (which state the maximum); the counts are the service's limits, so they answer as
# such, with what the client can do about it.
PARSER_LIMITS = {
    "Too many files.": (
        "too-many-files",
        "Send the other files in further requests (the service's PS_MAX_FILES setting).",
    ),
    "Too many fields.": ("too-many-fields", "Send fewer form fields in one request."),
}


async def _on_http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 400:
        for message, (kind, advice) in PARSER_LIMITS.items():
            if detail.startswith(message):
                return problem_response(413, f"{detail} {advice}", kind)
    return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return problem_response(422, summary or "invalid request", "validation", errors=errors)


async def _on_image_rejected(request: Request, exc: ImageRejected) -> JSONResponse:
    if isinstance(exc, ImageTooLarge):
        return problem_response(413, f"{exc.detail} (PS_MAX_PIXELS)", exc.kind)
    return problem_response(415 if isinstance(exc, NotAnImage) else 422, exc.detail, exc.kind)


async def _on_frame_exists(request: Request, exc: FrameExists) -> JSONResponse:
    return problem_response(409, str(exc), "frame-exists")


# The disk or quota is full: the client may retry once space has been made.
STORAGE_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


async def _on_storage_full(request: Request, exc: StorageFull) -> JSONResponse:
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        507, "the service's disk is full; nothing was stored or deleted", "insufficient-storage"
    )


async def _on_os_error(request: Request, exc: OSError) -> JSONResponse:
    if exc.errno in STORAGE_FULL_ERRNOS:
        return await _on_storage_full(request, StorageFull(str(exc)))
    return await _on_unexpected(request, exc)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "internal error; see the server log")


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error as problem+json, and describe that shape in the OpenAPI document."""
    _add_problem_schema(app)
    app.add_exception_handler(Problem, _on_problem)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception
    app.add_exception_handler(ImageRejected, _on_image_rejected)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception
    app.add_exception_handler(FrameExists, _on_frame_exists)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception
    app.add_exception_handler(StorageFull, _on_storage_full)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception
    app.add_exception_handler(OSError, _on_os_error)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception
    app.add_exception_handler(Exception, _on_unexpected)


def _add_problem_schema(app: FastAPI) -> None:
    """Register the Problem schema that problem_responses() refers to (FastAPI only adds
    models it meets as a route's response_model, and under application/json)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        if PROBLEM_SCHEMA not in schemas:
            problem = ProblemOut.model_json_schema(
                ref_template="#/components/schemas/{model}", mode="serialization"
            )
            schemas.update(problem.pop("$defs", {}))
            schemas[PROBLEM_SCHEMA] = problem
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
