"""`python -m server`: serve the API with uvicorn, configured from PS_* environment variables."""

from __future__ import annotations

import logging
import sys

import uvicorn

from server.app import create_app
from server.settings import Settings

log = logging.getLogger("server")


class _Server(uvicorn.Server):
    """uvicorn's server, printing how to reach the service once its port is bound."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers and self.servers[0].sockets:
            port = self.servers[0].sockets[0].getsockname()[1]  # the real one when PS_PORT=0
            print(_banner(self.settings, port), flush=True)


def main() -> int:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info(
        "model %s, data folder %s (PS_MODEL and PS_DATA_DIR; relative ones are taken from the "
        "working folder); API key %s",
        settings.model,
        settings.data_dir,
        "required" if settings.api_key else "off",
    )
    app = create_app(settings)
    state = app.state.service
    # One worker process: the gallery's FAISS index lives in this process's memory.
    server = _Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            proxy_headers=True,
        ),
        settings,
    )
    # A model or data folder that cannot be loaded will not fix itself: stop, rather than
    # answer 503 for ever.
    state.on_load_failure = lambda: setattr(server, "should_exit", True)
    server.run()
    if state.load_error is not None:
        print(f"person search: cannot start: {state.load_error}", file=sys.stderr, flush=True)
        return 1
    return 0 if server.started else 1


def _banner(settings: Settings, port: int) -> str:
    """Where the service listens and how to try it."""
    url = f"http://{settings.host}:{port}"
    key = ' -H "X-API-Key: $PS_API_KEY"' if settings.api_key else ""
    return (
        f"person search: {url}  (API docs: {url}/docs, model: {settings.model}, "
        f"data: {settings.data_dir})\n"
        f"  add frames:  curl{key} -F files=@frame.jpg -F camera=c1 {url}/gallery\n"
        f"  search:      curl{key} -F query=@person.jpg {url}/search"
    )


if __name__ == "__main__":
    sys.exit(main())
