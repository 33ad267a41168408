"""Health, readiness, the model card and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.deps import ReadyDep, StateDep
from server.problems import Problem, problem_responses
from server.schemas import ModelOut, Status

health = APIRouter(tags=["health"])
# Behind the API key when one is set (server.app adds it, as to the data routes).
protected = APIRouter(tags=["service"])


@health.get("/healthz", response_model=Status, responses=problem_responses(503))
async def healthz(state: StateDep) -> Status:
    """Liveness: the process answers. 503 only once loading the model has failed for good."""
    if state.load_error is not None:
        raise Problem(503, "load-failed", state.load_error)
    return Status(status="ok")


@health.get("/readyz", response_model=Status, responses=problem_responses(503))
async def readyz(ready: ReadyDep) -> Status:
    """Readiness: 200 once the model is warmed up and the gallery index is loaded, else 503."""
    return Status(status="ready")


@protected.get("/model", response_model=ModelOut, responses=problem_responses(503))
async def model(ready: ReadyDep) -> ModelOut:
    """The loaded model: its card, id (the gallery key), and the providers running it."""
    engine = ready.engine
    return ModelOut(
        model_id=engine.model.model_id,
        path=str(engine.model.path),
        sha256=engine.model.sha256,
        embedding_dim=engine.embedding_dim,
        min_detection_score=engine.min_score,
        providers=engine.providers,
        card=engine.card.to_dict(),
    )


@protected.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(state: StateDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
