"""The OpenAPI document describes what the service answers: schemathesis sends generated
requests (valid and invalid) to a real `python -m server` on 127.0.0.1, with and without an
API key configured, and runs all its checks: every answer's status, media type and body must be
the ones the document declares, schema-valid requests must be accepted and invalid ones refused,
and a declared API key must be enforced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from server.app import create_app
from server.settings import Settings
from server.testing import ServerProcess
from tests.conftest import DEMO_MODEL

EXAMPLES = 25  # per operation and mode: a bounded run, about a minute on 2 cores
KEY = "openapi-key"


def start_service(tmp_path_factory, api_key: str | None) -> ServerProcess:
    data_dir: Path = tmp_path_factory.mktemp("openapi-data")
    keyed = {} if api_key is None else {"api_key": api_key}
    return ServerProcess(
        log_path=data_dir.parent / f"openapi-server-{data_dir.name}.log",
        model=DEMO_MODEL,
        data_dir=data_dir,
        max_files=4,
        max_upload_mb=1,
        **keyed,
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[ServerProcess]:
    with start_service(tmp_path_factory, None) as process:
        yield process


@pytest.fixture(scope="module")
def keyed_service(tmp_path_factory) -> Iterator[ServerProcess]:
    with start_service(tmp_path_factory, KEY) as process:
        yield process


# What a schema cannot say about a request, so a schema-valid one may still be refused with
# these kinds: whether an upload is an image the service takes and fits its limits, relations
# between fields (one value per file, query or detection_id, start before end, a box inside
# its image), and text the service parses (a timestamp as Unix seconds or ISO 8601 within a
# JavaScript Date's range, a box, a camera name, an upload's file name, a cursor it issued).
BEYOND_THE_SCHEMA = {
    "not-an-image",
    "unreadable-image",
    "animated-image",
    "empty-file",
    "image-too-large",
    "file-too-large",
    "too-many-files",
    "request-too-large",
    "field-count",
    "query-or-detection",
    "invalid-time-range",
    "box-outside-image",
    "invalid-number",
    "timestamp-out-of-range",
    "invalid-box",
    "invalid-camera",
    "invalid-filename",
    "invalid-cursor",
}


def positive_data_accepted(ctx, response, case) -> bool | None:
    """schemathesis' positive_data_acceptance, less the refusals in BEYOND_THE_SCHEMA."""
    if response.status_code in (413, 415, 422):
        kind = str(response.json().get("type", "")).rpartition(":")[2]
        if kind in BEYOND_THE_SCHEMA:
            return None
    return positive_data_acceptance(ctx, response, case)


def config(key: str | None) -> SchemathesisConfig:
    """All checks; a request refused before its fields are read (too many files, a body too
    large) is refused too; the key, where one is set, given as schemathesis' own auth so
    that its auth checks can also send requests without it."""
    refused = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428"]
    settings: dict = {
        "checks": {"negative_data_rejection": {"expected-statuses": [*refused, "429", "5xx"]}}
    }
    if key is not None:
        settings["auth"] = {"openapi": {"APIKeyHeader": {"api_key": key}}}
    return SchemathesisConfig.from_dict(settings)


# The documents as the code builds them (no model needed); a test below checks the running
# services serve the same ones.
DOCUMENTS = {key: create_app(Settings(api_key=key)).openapi() for key in (None, KEY)}
SCHEMAS = {
    key: schemathesis.openapi.from_dict(DOCUMENTS[key], config=config(key)) for key in DOCUMENTS
}
# Each operation with inputs is also sent invalid ones (negative mode).
CASES = [
    (f"{method.upper()} {path}", mode, key)
    for key, document in DOCUMENTS.items()
    for path, operations in document["paths"].items()
    for method, operation in operations.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or {"parameters", "requestBody"} & set(operation)
]


@pytest.mark.parametrize(
    ("label", "mode", "key"),
    CASES,
    ids=[f"{op} {m.value}{'' if k is None else ' keyed'}" for op, m, k in CASES],
)
def test_answers_conform_to_the_openapi_document(
    request: pytest.FixtureRequest, label: str, mode: GenerationMode, key: str | None
) -> None:
    service: ServerProcess = request.getfixturevalue("service" if key is None else "keyed_service")
    operation = SCHEMAS[key].find_operation_by_label(label)
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
        case.call_and_validate(
            base_url=service.url,
            excluded_checks=[positive_data_acceptance],
            additional_checks=[positive_data_accepted],
        )

    conforms()


def test_every_error_is_declared_as_a_problem(
    service: ServerProcess, keyed_service: ServerProcess
) -> None:
    """No operation advertises FastAPI's HTTPValidationError or an application/json error;
    the X-API-Key scheme and its 401 are declared exactly when a key is configured."""
    for key, process in ((None, service), (KEY, keyed_service)):
        document = httpx.get(f"{process.url}/openapi.json").json()
        assert document == DOCUMENTS[key]
        assert "HTTPValidationError" not in document["components"]["schemas"]
        keyed = set()
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                for status, response in operation["responses"].items():
                    if int(status) >= 400:
                        assert list(response["content"]) == ["application/problem+json"], (
                            method,
                            path,
                            status,
                        )
                if operation.get("security"):
                    assert "401" in operation["responses"], (method, path)
                    keyed.add(path)
        assert "securitySchemes" in document.get("components", {}) or key is None
        unkeyed = {"/healthz", "/readyz"}
        assert keyed == (set() if key is None else set(document["paths"]) - unkeyed)
        ingest = document["paths"]["/gallery"]["post"]["responses"]
        errors = {"400", "409", "413", "415", "422", "503", "507"} | ({"401"} if key else set())
        assert {status for status in ingest if int(status) >= 400} == errors


def test_the_document_states_frame_ids_and_required_files() -> None:
    document = DOCUMENTS[None]
    pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
    for path in ("/gallery/frames/{frame_id}", "/gallery/frames/{frame_id}/image"):
        for operation in document["paths"][path].values():
            (parameter,) = operation["parameters"]
            assert parameter["schema"]["pattern"] == pattern, path
    body = document["components"]["schemas"]["Body_add_frames_gallery_post"]["properties"]
    assert body["frame_id"]["items"]["pattern"] == pattern
    assert body["files"]["minItems"] == 1
