"""The operators' page: `/` and its files under `/web/`, plain HTML, CSS and JavaScript.

The files hold no data, so they need no API key; the page sends the key with every API call.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
# Everything comes from this service: no CDN, no inline script; images arrive as blob: URLs
# (fetched with the API key) and the page is never framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

PAGE_PATH, ASSETS_PATH = "/", "/web"
router = APIRouter(include_in_schema=False)


@router.get(PAGE_PATH)
async def index() -> FileResponse:
    return FileResponse(
        WEB_DIR / "index.html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
        },
    )


@router.get(f"{ASSETS_PATH}/index.html")
async def index_file(request: Request) -> RedirectResponse:
    """The page has one address, `/`: there it has its Content-Security-Policy, and its
    relative links (`web/app.js`) resolve."""
    return RedirectResponse(request.scope.get("root_path", "") + PAGE_PATH, status_code=308)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=WEB_DIR), name="web")
