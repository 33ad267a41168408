"""Errors as RFC 9457 problem details (`application/problem+json`).

Every error the service answers, its own or FastAPI's, goes through here, so clients see one
shape: {type, title, status, detail} plus optional extension members (e.g. `errors`).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger(__name__)


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


async def _on_http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return problem_response(422, summary or "invalid request", "validation", errors=errors)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "internal error; see the server log")


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception
    app.add_exception_handler(Exception, _on_unexpected)
