"""FastAPI dependencies: the shared state, readiness, the API key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from gallery.store import GalleryStore
from inference.engine import Engine
from server.limits import API_KEY_HEADER
from server.problems import Problem
from server.state import ServiceState

# auto_error=False: a missing key is answered by ApiKeyMiddleware, as problem+json.
api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


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


def declare_api_key(key: Annotated[str | None, Security(api_key_header)]) -> None:
    """Shows the X-API-Key scheme on a route in the OpenAPI document. The key is checked by
    server.limits.ApiKeyMiddleware, before the request body is read, not here: FastAPI reads
    a route's form before it runs its dependencies."""


def single_valued(*names: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing a form that gives one of `names` more than once. It runs before
    FastAPI checks the fields, so `top_k` sent as 5 and 0 is answered as repeated rather than
    as the 0 that FastAPI would keep."""

    async def refuse_repeated(request: Request) -> None:
        form = await request.form()  # FastAPI has parsed it (with the route's limits): cached
        repeated = [name for name in names if len(form.getlist(name)) > 1]
        if repeated:
            raise Problem(
                422, "repeated-field", f"{', '.join(repeated)}: give each of these at most once"
            )

    return refuse_repeated


ReadyDep = Annotated[Ready, Depends(get_ready)]
StateDep = Annotated[ServiceState, Depends(get_state)]
