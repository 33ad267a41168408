"""The FastAPI application: `create_app(settings)` wires routers, errors, limits, metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from server.deps import declare_api_key
from server.limits import ApiKeyMiddleware, BodyLimitMiddleware
from server.metrics import Metrics, MetricsMiddleware
from server.problems import install_problem_handlers, problem_responses
from server.routers import gallery, search, system
from server.settings import Settings
from server.state import ServiceState

log = logging.getLogger(__name__)

DOCS_URL, REDOC_URL, DOCS_ASSETS = "/docs", "/redoc", "/docs-assets"
DESCRIPTION = """
Person search: store camera frames (`POST /gallery`), then find a person given as a crop
(`POST /search`). Results are boxes in stored frames, ranked by embedding similarity.
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
    keyed, unauthorized = [Depends(declare_api_key)], problem_responses(401)
    app.include_router(system.health)
    app.include_router(system.protected)
    # The multipart parser stops at PS_MAX_FILES + 1 files, rather than spool up to its own
    # default of 1000 before the route could count them.
    app.include_router(
        gallery.router,
        dependencies=keyed,
        responses=unauthorized,
        form_limits={"max_files": settings.max_files},
    )
    app.include_router(search.router, dependencies=keyed, responses=unauthorized)
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
            open_prefixes=(f"{DOCS_ASSETS}/",),
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _open_paths(app: FastAPI) -> set[str]:
    """Routes that need no API key: liveness, readiness and the API docs (their assets are
    under DOCS_ASSETS)."""
    docs = (app.openapi_url, DOCS_URL, REDOC_URL, app.swagger_ui_oauth2_redirect_url)
    return {"/healthz", "/readyz", *(path for path in docs if path)}


def _gallery_size(state: ServiceState):
    def count(field: str) -> float:
        if state.store is None:
            return 0.0
        return float(getattr(state.store.stats(), field))

    return (lambda: count("frames")), (lambda: count("detections"))
