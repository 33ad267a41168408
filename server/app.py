"""The FastAPI application: `create_app(settings)` wires routers, errors, limits, metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from gallery.records import FRAME_ID_PATTERN
from server.deps import declare_api_key, single_valued
from server.limits import ApiKeyMiddleware, BodyLimitMiddleware
from server.metrics import Metrics, MetricsMiddleware
from server.problems import install_problem_handlers, problem_responses
from server.routers import browse, gallery, search, system, web
from server.settings import Settings
from server.state import ServiceState

log = logging.getLogger(__name__)

DOCS_URL, REDOC_URL, DOCS_ASSETS = "/docs", "/redoc", "/docs-assets"
DESCRIPTION = """
Person search: store camera frames (`POST /gallery`), then find a person given as a crop or
as a stored detection (`POST /search`). Results are boxes in stored frames, ranked by embedding
similarity. Browse what is stored with `GET /gallery/frames`; the operators' page is at `/`.
Errors are RFC 9457 problem details (`application/problem+json`).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service. The model and gallery load in the background after start-up:
    /healthz answers at once, /readyz (and every model route) 503 until loaded."""
    settings = settings or Settings()
    metrics = Metrics()
    state = ServiceState(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(asyncio.to_thread(state.load))
        try:
            yield
        finally:
            await loading  # a thread cannot be cancelled; let it finish before closing
            await asyncio.to_thread(state.close)

    # The API docs' scripts and styles are served from the fastapi-offline package, not a
    # CDN, so /docs and /redoc work on a host without internet access.
    app = FastAPIOffline(
        title="Person search",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=DOCS_URL,
        redoc_url=REDOC_URL,
        static_url=DOCS_ASSETS,
    )
    app.state.service = state
    metrics.watch_gallery(*_gallery_size(state))
    install_problem_handlers(app)
    _document_request_rules(app)
    # The X-API-Key scheme and its 401 are declared only where the service asks for a key.
    keyed: list[Any] = []
    unauthorized: dict[int | str, dict[str, Any]] = {}
    if settings.api_key is not None:
        keyed, unauthorized = [Depends(declare_api_key)], problem_responses(401)
    app.include_router(system.health)
    app.include_router(system.protected, dependencies=keyed, responses=unauthorized)
    # The multipart parser stops at PS_MAX_FILES + 1 files, rather than spool up to its own
    # default of 1000 before the route could count them.
    app.include_router(
        gallery.router,
        dependencies=keyed,
        responses=unauthorized,
        form_limits={"max_files": settings.max_files},
    )
    app.include_router(browse.router, dependencies=keyed, responses=unauthorized)
    app.include_router(
        search.router,
        dependencies=[*keyed, Depends(single_valued(*search.SINGLE_FIELDS))],
        responses=unauthorized,
    )
    web.install(app)
    # Added innermost first. Metrics see every answer; the key is checked, then the body
    # limit applied, before anything reads the body.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        path_limits={"/search": settings.max_search_body_bytes},
    )
    if settings.api_key is not None:
        app.add_middleware(
            ApiKeyMiddleware,
            key=settings.api_key,
            open_paths=_open_paths(app),
            open_prefixes=(f"{DOCS_ASSETS}/", f"{web.ASSETS_PATH}/"),
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _open_paths(app: FastAPI) -> set[str]:
    """Routes that need no API key: liveness, readiness, the API docs (their assets are
    under DOCS_ASSETS) and the operators' page (its files, under /web/, hold no data; the page
    sends the key with every API call)."""
    docs = (app.openapi_url, DOCS_URL, REDOC_URL, app.swagger_ui_oauth2_redirect_url)
    return {"/healthz", "/readyz", web.PAGE_PATH, *(path for path in docs if path)}


def _document_request_rules(app: FastAPI) -> None:
    """Add to the OpenAPI document what the routes enforce but FastAPI does not derive from
    their signatures: a frame id matches FRAME_ID_PATTERN wherever a request names one
    (server.forms.check_frame_id); in a form, a required list needs a value (FastAPI reports
    an empty one as missing, e.g. POST /gallery without files) and no field is null."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()
        schemas = document.get("components", {}).get("schemas", {})
        for operations in document["paths"].values():
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    if parameter["name"] == "frame_id":
                        parameter["schema"]["pattern"] = FRAME_ID_PATTERN.pattern
                for media, content in operation.get("requestBody", {}).get("content", {}).items():
                    if media in FORM_MEDIA_TYPES:
                        ref = content["schema"].get("$ref", "")
                        _form_rules(schemas.get(ref.rsplit("/", 1)[-1], {}))
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


FORM_MEDIA_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _form_rules(body: dict[str, Any]) -> None:
    properties = body.get("properties", {})
    for field in properties.values():
        # A form has no null: an optional field is one left out, not one sent as "null".
        choices = field.get("anyOf", [])
        if {"type": "null"} in choices:
            choices.remove({"type": "null"})
            if len(choices) == 1:
                field.update(field.pop("anyOf")[0])
    for name in body.get("required", []):
        if properties[name].get("type") == "array":
            properties[name]["minItems"] = 1
    if "frame_id" in properties:
        field = properties["frame_id"]
        for choice in field.get("anyOf", [field]):
            if choice.get("type") == "array":
                choice["items"]["pattern"] = FRAME_ID_PATTERN.pattern
            elif choice.get("type") == "string":
                choice["pattern"] = FRAME_ID_PATTERN.pattern


def _gallery_size(state: ServiceState):
    def count(field: str) -> float:
        if state.store is None:
            return 0.0
        return float(getattr(state.store.stats(), field))

    return (lambda: count("frames")), (lambda: count("detections"))
