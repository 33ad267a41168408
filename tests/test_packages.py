"""Package boundaries: the service side (inference, gallery, server) and the bulk ingest
(ingest) need neither torch nor anything of training/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.imports import imported_modules

REPO = Path(__file__).resolve().parents[1]
SERVICE_PACKAGES = ("inference", "gallery", "server", "ingest")


@pytest.mark.parametrize("package", SERVICE_PACKAGES)
def test_service_packages_import_nothing_from_training(package):
    for path in sorted((REPO / package).rglob("*.py")):
        offending = {m for m in imported_modules(path) if m.split(".")[0] in ("training", "torch")}
        assert not offending, f"{path.relative_to(REPO)} imports {offending}"


def test_service_packages_import_with_torch_and_training_absent():
    # None in sys.modules makes `import torch` (and `import training...`) raise ImportError.
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['training'] = None\n"
        "import inference, inference.boxes, inference.card, inference.engine, inference.files\n"
        "import inference.outputs, inference.preprocess, inference.imaging\n"
        "import gallery, gallery.store\n"
        "import server, server.__main__, server.app\n"
        "server.app.create_app()\n"
        "import ingest.__main__, ingest.client, ingest.sources\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# What only the service needs: the bulk ingest and the store must not pull them in.
WEB_FRAMEWORK = ("server", "fastapi", "starlette", "uvicorn", "fastapi_offline", "multipart")


@pytest.mark.parametrize("package", ("ingest", "gallery", "inference"))
def test_ingest_gallery_and_inference_know_no_web_framework(package):
    for path in sorted((REPO / package).rglob("*.py")):
        offending = {m for m in imported_modules(path) if m.split(".")[0] in WEB_FRAMEWORK}
        assert not offending, f"{path.relative_to(REPO)} imports {offending}"


def test_the_http_ingest_runs_without_the_web_framework_faiss_or_onnxruntime():
    """`pip install '.[ingest]'` has PyAV, httpx and tqdm only: the HTTP path must import with
    the service's libraries absent (the Ray path needs the ingest-ray extra)."""
    absent = (*WEB_FRAMEWORK, "faiss", "onnxruntime", "pydantic_settings", "ray")
    code = (
        "import sys\n"
        f"for name in {absent!r}: sys.modules[name] = None\n"
        "import ingest.__main__, ingest.client, ingest.sources\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
