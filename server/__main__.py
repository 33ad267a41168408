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
    # One worker process: the gallery's FAISS index lives in this process's memory.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
