"""The OpenAPI document describes what the service answers: schemathesis sends generated
requests (valid and invalid) to a real `python -m server` on 127.0.0.1, and every answer's
status, media type and body must be the ones the document declares for its operation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.app import create_app
from server.settings import Settings
from server.testing import ServerProcess
from tests.server.helpers import MIN_DETECTION_SCORE

pytestmark = pytest.mark.torch

EXAMPLES = 25  # per operation and mode: a bounded run, about a minute on 2 cores
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def service(overfit_run, tmp_path_factory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("openapi-data")
    with ServerProcess(
        log_path=data_dir.parent / "openapi-server.log",
        model=overfit_run.onnx_path,
        data_dir=data_dir,
        min_detection_score=MIN_DETECTION_SCORE,
        max_files=4,
        max_upload_mb=1,
    ) as process:
        yield process


# The document as the code builds it (no model needed); the test below checks the running
# service serves the same one.
DOCUMENT = create_app(Settings()).openapi()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
# Each operation with inputs is also sent invalid ones (negative mode).
CASES = [
    (f"{method.upper()} {path}", mode)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or {"parameters", "requestBody"} & set(operation)
]


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{op} {m.value}" for op, m in CASES])
def test_answers_conform_to_the_openapi_document(
    service: ServerProcess, label: str, mode: GenerationMode
) -> None:
    operation = SCHEMA.find_operation_by_label(label)
    assert operation is not None

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=service.url, checks=CHECKS)

    conforms()


def test_every_error_is_declared_as_a_problem(service: ServerProcess) -> None:
    """No operation advertises FastAPI's HTTPValidationError or an application/json error."""
    document = httpx.get(f"{service.url}/openapi.json").json()
    assert document == DOCUMENT
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        status,
                    )
    ingest = document["paths"]["/gallery"]["post"]["responses"]
    assert {"400", "401", "409", "413", "415", "422", "503"} <= set(ingest)
