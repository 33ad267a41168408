"""Run the real service in a child process on a free local port (tests, benchmarks).

    with ServerProcess(model=..., data_dir=...) as server:
        httpx.get(server.url + "/healthz")

Only the standard library: the service itself does not need this module.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """`python -m server` with PS_* settings from keyword arguments (e.g. api_key="k")."""

    def __init__(self, log_path: Path | None = None, **settings: object) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PS_HOST": "127.0.0.1",
            "PS_PORT": str(self.port),
            "PS_PROVIDERS": "cpu",
            "PS_LOG_LEVEL": "warning",
            **{f"PS_{name.upper()}": str(value) for name, value in settings.items()},
        }
        self.log_path = log_path
        self.root = REPOSITORY  # the checkout whose `server` package runs
        self.process: subprocess.Popen | None = None

    def start(self, ready_timeout: float = 60.0) -> ServerProcess:
        """Start and wait until /readyz answers 200; raise with the log if it never does."""
        if self.process is not None and self.process.poll() is None:
            # a second process would replace the first, which then runs on unstopped
            raise RuntimeError("this server is already running")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server"],
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if not isinstance(log, int):
            log.close()
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}{self._log()}")
            if self.status("/readyz") == 200:
                return
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout:.0f} s{self._log()}")

    def status(self, path: str) -> int | None:
        """HTTP status of GET path, or None when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def stop(self, timeout: float = 30.0) -> int:
        """Graceful stop (SIGTERM, as Docker sends); returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def _log(self) -> str:
        if self.log_path and self.log_path.exists():
            return "\n" + self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
