"""Static checks of the Dockerfile and docker-compose.yml (no Docker engine runs here).

The compose file is validated against the Compose Specification schema (vendored under
tests/data/compose), and both files are checked against the repository: every COPY source
exists and is not docker-ignored, the API image holds every module the server imports (and
no torch), the commands they run exist, the health check hits a real route, users are not
root, and the trainer's command line parses with training.galw's own parser.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.imports import imported_modules

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "data" / "compose" / "compose-spec.json"
# Import name -> distribution name, for the third-party modules serving may import.
DISTRIBUTIONS = {
    "numpy": "numpy",
    "PIL": "pillow",
    "scipy": "scipy",
    "onnxruntime": "onnxruntime-gpu",
    "faiss": "faiss-cpu",
    "fastapi": "fastapi",
    "fastapi_offline": "fastapi-offline",
    "starlette": "fastapi",
    "pydantic": "fastapi",
    "uvicorn": "uvicorn",
    "multipart": "python-multipart",
    "prometheus_client": "prometheus-client",
    "pydantic_settings": "pydantic-settings",
    "pymilvus": "pymilvus",
    "tqdm": "tqdm",
    "milvus_lite": "milvus-lite",
}
PROJECT_PACKAGES = ("server", "gallery", "inference", "training", "galw", "benchmarks")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    stages: dict[str, Stage]
    heredocs: dict[str, str]  # COPY <<NAME destination -> body

    @property
    def default_stage(self) -> Stage:
        return list(self.stages.values())[-1]


def parse_dockerfile(text: str) -> Dockerfile:
    """Instructions by stage, with continuations joined and heredoc bodies collected."""
    stages: dict[str, Stage] = {}
    heredocs: dict[str, str] = {}
    lines = iter(text.splitlines())
    current: Stage | None = None
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        keyword, _, args = line.strip().partition(" ")
        keyword = keyword.upper()
        heredoc = re.match(r"<<-?'?(\w+)'?\s+(\S+)", args)
        if heredoc:
            body = []
            for body_line in lines:
                if body_line == heredoc.group(1):
                    break
                body.append(body_line)
            heredocs[heredoc.group(2)] = "\n".join(body) + "\n"
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            current = stages[name] = Stage(name, parts[0])
        elif current is not None:
            current.instructions.append((keyword, args.strip()))
    return Dockerfile(stages, heredocs)


def stage_chain(dockerfile: Dockerfile, name: str) -> list[Stage]:
    """The stage and the stages it builds on, base first."""
    chain = [dockerfile.stages[name]]
    while chain[0].base in dockerfile.stages:
        chain.insert(0, dockerfile.stages[chain[0].base])
    return chain


def copy_sources(stage: Stage) -> list[str]:
    """Build-context sources of the stage's COPY instructions (not heredocs, not --from)."""
    sources = []
    for args in stage.all("COPY"):
        if args.startswith("<<") or "--from" in args:
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        sources.extend(parts[:-1])
    return sources


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the exec (JSON) form, got {args}"
    return value


def dockerignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(
        fnmatch.fnmatch(prefix, pattern.removeprefix("**/")) or fnmatch.fnmatch(prefix, pattern)
        for pattern in patterns
        for prefix in prefixes
    )


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def expand(value: str) -> str:
    """Compose variable interpolation with the defaults (${NAME:-default}), env ignored."""
    return re.sub(r"\$\{(\w+):?-([^}]*)\}", lambda m: m.group(2), value)


# ---- compose ---------------------------------------------------------------------------


def test_compose_matches_the_compose_specification(compose: dict) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_schema_rejects_a_broken_compose_file(compose: dict) -> None:
    """The vendored schema really constrains services (so the check above means something)."""
    schema = json.loads(SCHEMA.read_text())
    broken = {**compose, "services": {"api": {**compose["services"]["api"], "ports": "8000"}}}
    broken["services"]["api"]["deploy"] = {"resources": {"reservations": {"devices": "gpu"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_api_service_has_a_gpu_and_persistent_volumes(compose: dict, dockerfile: Dockerfile):
    api = compose["services"]["api"]
    assert api["build"]["target"] in dockerfile.stages
    devices = api["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices
    mounts = {v.split(":")[0]: v.split(":")[1] for v in api["volumes"]}
    assert mounts["data"] == "/app/data" and mounts["models"] == "/app/models"
    assert {"data", "models"} <= set(compose["volumes"])
    assert any(expand(p).endswith(":8000") for p in api["ports"])


def test_api_environment_names_real_settings(compose: dict) -> None:
    from server.settings import Settings

    environment = compose["services"]["api"]["environment"]
    for name in environment:
        assert name.startswith("PS_") and name[3:].lower() in Settings.model_fields, name
    model = Path(expand(environment["PS_MODEL"]))
    assert model.is_relative_to("/app/models"), "the model must come from the models volume"


def test_milvus_is_an_optional_pinned_service_the_api_can_use(compose: dict) -> None:
    from server.settings import Settings

    milvus = compose["services"]["milvus"]
    assert milvus["profiles"] == ["milvus"], "Milvus must stay optional"
    image, _, tag = milvus["image"].partition(":")
    assert image == "milvusdb/milvus" and re.fullmatch(r"v\d+\.\d+\.\d+", tag), tag
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert milvus["environment"]["ETCD_USE_EMBED"] == "true"  # no etcd service needed
    assert "milvus:/var/lib/milvus" in milvus["volumes"] and "milvus" in compose["volumes"]
    assert "9091/healthz" in " ".join(milvus["healthcheck"]["test"])
    api = compose["services"]["api"]
    assert api["depends_on"]["milvus"] == {"condition": "service_healthy", "required": False}
    environment = {name: expand(value) for name, value in api["environment"].items()}
    assert Settings(**_settings_fields(environment)).milvus is None  # FAISS by default
    # What the compose file's header tells users to set with the profile:
    environment |= {"PS_VECTOR_BACKEND": "milvus", "PS_MILVUS_URI": "http://milvus:19530"}
    config = Settings(**_settings_fields(environment)).milvus
    assert config is not None and not config.embedded
    assert config.uri.rsplit(":", 1)[1] in milvus["expose"]
    header = (ROOT / "docker-compose.yml").read_text().split("services:")[0]
    assert "PS_MILVUS_URI=http://milvus:19530" in header and "--profile milvus" in header


def _settings_fields(environment: dict[str, str]) -> dict[str, str]:
    return {name[3:].lower(): value for name, value in environment.items()}


def test_trainer_runs_galw_into_the_shared_models_volume(compose: dict, dockerfile: Dockerfile):
    trainer = compose["services"]["trainer"]
    assert trainer["profiles"] == ["train"]
    stage = dockerfile.stages[trainer["build"]["target"]]
    assert exec_form(stage.last("ENTRYPOINT")) == ["python", "-m", "training.galw"]
    assert "models:/app/models" in trainer["volumes"]
    argv = [expand(arg) for arg in trainer["command"]]
    from training.train import build_parser  # torch is fine in tests; the trainer has it

    options = build_parser().parse_args(argv)
    assert Path(options.out).is_relative_to("/app/models")
    # the default command must not be one the training program refuses (frozen BN, no weights)
    from training.model.config import CONFIGS

    assert options.backbone_weights is not None or CONFIGS[options.config].norm != "frozen_bn"


# ---- Dockerfile ------------------------------------------------------------------------


def test_copy_sources_exist_and_are_not_ignored(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages.values():
        for source in copy_sources(stage):
            assert (ROOT / source).exists(), f"{stage.name}: COPY {source}: not in the repository"
            assert not dockerignored(source), f"{stage.name}: COPY {source}: in .dockerignore"


def test_images_run_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    for name in ("api", "trainer"):
        user = [s.last("USER") for s in stage_chain(dockerfile, name) if s.last("USER")]
        assert user and user[-1].split(":")[0] not in ("root", "0"), f"{name} runs as root"


def test_api_is_the_default_target_and_serves_with_python_m_server(dockerfile: Dockerfile):
    api = dockerfile.stages["api"]
    assert dockerfile.default_stage is api
    assert exec_form(api.last("CMD")) == ["python", "-m", "server"]
    assert (ROOT / "server" / "__main__.py").is_file()
    assert api.last("EXPOSE") == "8000"
    environment = " ".join(api.all("ENV"))
    assert "PS_HOST=0.0.0.0" in environment and "PS_PORT=8000" in environment


def test_healthcheck_hits_the_liveness_route(dockerfile: Dockerfile) -> None:
    from server.app import create_app

    healthcheck = dockerfile.stages["api"].last("HEALTHCHECK")
    assert healthcheck is not None
    url = re.search(r"http://127\.0\.0\.1:8000(/\S*)", healthcheck)
    assert url is not None, healthcheck
    assert url.group(1) in create_app().openapi()["paths"]


def test_requirements_script_installs_gpu_runtime_only(dockerfile: Dockerfile) -> None:
    printed = _requirements(dockerfile, "serve", "gpu", "--exclude=onnxruntime")
    assert "onnxruntime-gpu" in printed and "onnxruntime" not in printed
    assert "torch" not in printed
    assert "torch" in _requirements(dockerfile, "train")
    api_run = " ".join(dockerfile.stages["api"].all("RUN"))
    assert "requirements.py serve gpu --exclude=onnxruntime" in api_run


def test_api_image_holds_every_module_the_server_imports(dockerfile: Dockerfile) -> None:
    copied = [ROOT / s for s in copy_sources(dockerfile.stages["api"])]
    packages = {"inference", "gallery", "server"}
    assert packages <= {path.name for path in copied if path.is_dir()}  # whole packages
    assert not any("training" in path.parts for path in copied)
    files, third_party = _imports_from(ROOT / "server" / "__main__.py")
    for path in files:
        assert any(path == c or c in path.parents for c in copied), f"{path} not in the image"
    assert "torch" not in third_party
    installed = _requirements(dockerfile, "serve", "gpu", "--exclude=onnxruntime")
    missing = {name for name in third_party if DISTRIBUTIONS.get(name) not in installed}
    assert not missing, f"imported by the server but not installed in the image: {missing}"


def _requirements(dockerfile: Dockerfile, *args: str) -> set[str]:
    """Run the Dockerfile's own requirements script on pyproject.toml; distribution names."""
    script = dockerfile.heredocs["/opt/requirements.py"]
    result = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return {re.split(r"[<>=!~\[; ]", line)[0] for line in result.stdout.split()}


def _imports_from(entry: Path) -> tuple[set[Path], set[str]]:
    """Project files reachable by imports from `entry`, and the third-party top-level names."""
    files: set[Path] = set()
    third_party: set[str] = set()
    pending = [entry]
    while pending:
        path = pending.pop()
        if path in files:
            continue
        files.add(path)
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top in PROJECT_PACKAGES:
                pending.extend(_module_files(module))
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    return files, third_party


def _module_files(module: str) -> list[Path]:
    """The package __init__ files along the dotted path, and the module's own file."""
    parts = module.split(".")
    found = []
    for depth in range(1, len(parts) + 1):
        base = ROOT.joinpath(*parts[:depth])
        if (base / "__init__.py").is_file():
            found.append(base / "__init__.py")
        elif base.with_suffix(".py").is_file():
            found.append(base.with_suffix(".py"))
    return found


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".venv", ".git", "data", "tests"):
        assert dockerignored(path), path
    assert not dockerignored("server/app.py")
    assert os.path.basename(SCHEMA) == "compose-spec.json"
