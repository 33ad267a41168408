"""`python -m server`: serve the API with uvicorn, configured from PS_* environment variables."""

from __future__ import annotations

import logging

import uvicorn

from server.app import create_app
from server.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    print(_banner(settings), flush=True)
    # One worker process: the gallery's FAISS index lives in this process's memory.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )


def _banner(settings: Settings) -> str:
    """Where the service listens and how to try it: printed before uvicorn starts."""
    url = f"http://{settings.host}:{settings.port}"
    key = ' -H "X-API-Key: $PS_API_KEY"' if settings.api_key else ""
    return (
        f"person search: {url}  (API docs: {url}/docs, model: {settings.model})\n"
        f"  add frames:  curl{key} -F files=@frame.jpg -F camera=c1 {url}/gallery\n"
        f"  search:      curl{key} -F query=@person.jpg {url}/search"
    )


if __name__ == "__main__":
    main()
