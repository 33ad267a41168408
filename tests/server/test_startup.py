"""Starting `python -m server`: providers, the banner, what the log says, failing loudly."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest

from gallery import GalleryStore
from inference.engine import PROVIDERS, Engine, chosen_providers
from server.settings import Settings
from server.testing import REPOSITORY, ServerProcess
from tests.conftest import DEMO_MODEL


def test_default_providers_are_the_installed_ones(caplog) -> None:
    installed = set(ort.get_available_providers())
    default = chosen_providers(Settings(providers=None).provider_list)
    assert default and all(PROVIDERS[name] in installed for name in default)
    assert default[-1] == "cpu"
    with caplog.at_level(logging.WARNING, logger="inference.engine"):
        Engine(DEMO_MODEL, default)
    assert not caplog.records  # nothing asked for explicitly, nothing to warn about
    if "CUDAExecutionProvider" not in installed:  # asked for explicitly: say it is missing
        with caplog.at_level(logging.WARNING, logger="inference.engine"):
            Engine(
                DEMO_MODEL,
                chosen_providers(Settings(providers="cuda,cpu").provider_list),
            )
        assert "CUDAExecutionProvider" in caplog.text


def test_relative_paths_are_resolved_from_the_working_folder(tmp_path: Path) -> None:
    settings = Settings(model=Path("m/model.onnx"), data_dir=Path("data"))
    assert settings.model == Path.cwd() / "m" / "model.onnx"
    assert settings.data_dir == Path.cwd() / "data"


def test_banner_after_the_port_is_bound_and_the_ready_log(tmp_path: Path) -> None:
    """With PS_PORT=0 the banner can only name the port once it is bound; the log says what
    the service serves from."""
    env = {
        **os.environ,
        "PS_HOST": "127.0.0.1",
        "PS_PORT": "0",
        "PS_LOG_LEVEL": "info",
        "PS_MODEL": str(DEMO_MODEL),
        "PS_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("PS_PROVIDERS", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "server"],
        cwd=REPOSITORY,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        url = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (line := process.stdout.readline()):
            lines.append(line)
            if found := re.match(r"person search: (http://127\.0\.0\.1:(\d+))", line):
                url = found.group(1)
                assert int(found.group(2)) > 0
                assert httpx.get(f"{url}/healthz").status_code == 200  # bound already
            if "ready: model" in line:
                break
        assert url is not None, "".join(lines)
        ready = lines[-1]
        assert f"data folder {tmp_path / 'data'}: 0 frames" in ready
        assert "index flat of 0 (rebuilt" in ready and "API key off" in ready
        assert "CPUExecutionProvider" in ready
        assert "not available" not in "".join(lines)  # no provider warning by default
    finally:
        process.terminate()
        process.wait(30)


def test_a_missing_model_or_a_locked_data_folder_stops_the_process(tmp_path: Path) -> None:
    missing = ServerProcess(
        log_path=tmp_path / "missing.log",
        model=tmp_path / "absent.onnx",
        data_dir=tmp_path / "data-1",
    )
    with pytest.raises(RuntimeError, match="server exited with 1") as raised:
        missing.start(ready_timeout=30)
    assert "cannot start" in str(raised.value) and "absent.onnx" in str(raised.value)
    with GalleryStore(tmp_path / "data-2", "another service", 4):  # holds the folder's lock
        locked = ServerProcess(
            log_path=tmp_path / "locked.log",
            model=DEMO_MODEL,
            data_dir=tmp_path / "data-2",
        )
        with pytest.raises(RuntimeError, match="server exited with 1") as raised:
            locked.start(ready_timeout=30)
    assert "already open" in str(raised.value)
