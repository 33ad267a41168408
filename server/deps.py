"""FastAPI dependencies: the shared state, readiness, the API key."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from gallery.store import GalleryStore
from inference.engine import Engine
from server.problems import Problem
from server.state import ServiceState

# auto_error=False: a missing key is reported by require_api_key as problem+json.
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


@dataclass(frozen=True)
class Ready:
    """The state once the model and the gallery are loaded (non-optional engine and store)."""

    state: ServiceState
    engine: Engine
    store: GalleryStore


def get_ready(state: Annotated[ServiceState, Depends(get_state)]) -> Ready:
    if state.engine is None or state.store is None:
        detail = state.load_error or "the model and gallery are still loading"
        raise Problem(503, "not-ready", detail)
    return Ready(state, state.engine, state.store)


def require_api_key(
    state: Annotated[ServiceState, Depends(get_state)],
    key: Annotated[str | None, Security(api_key_header)],
) -> None:
    expected = state.settings.api_key
    if expected is None:
        return
    if key is None or not secrets.compare_digest(key.encode(), expected.encode()):
        raise Problem(401, "unauthorized", "missing or wrong X-API-Key header")


ReadyDep = Annotated[Ready, Depends(get_ready)]
StateDep = Annotated[ServiceState, Depends(get_state)]
