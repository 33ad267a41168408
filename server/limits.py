"""Request gates that run before the body is read: the API key, then the body size limit."""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.problems import problem_response

API_KEY_HEADER = "X-API-Key"


class ApiKeyMiddleware:
    """Answer 401 to a request without the right X-API-Key before anything reads its body,
    so an unauthenticated client cannot make the service receive or spool an upload.

    Paths in `open_paths` (health, readiness, the docs) and under `open_prefixes` need no key.
    """

    def __init__(
        self,
        app: ASGIApp,
        key: str,
        open_paths: Collection[str],
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.key = key.encode()
        self.open_paths = frozenset(open_paths)
        self.open_prefixes = open_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path in self.open_paths
            or path.startswith(self.open_prefixes)
        ):
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).getlist(API_KEY_HEADER)
        # Two keys are refused rather than one of them taken: which one counted would depend
        # on the order a proxy or client library writes them in.
        if len(given) > 1:
            detail = f"{API_KEY_HEADER} given {len(given)} times; send it once"
        elif not given or not secrets.compare_digest(given[0].encode(), self.key):
            detail = f"missing or wrong {API_KEY_HEADER} header"
        else:
            await self.app(scope, receive, send)
            return
        await problem_response(401, detail, "unauthorized")(scope, receive, send)


class BodyLimitMiddleware:
    """Answer 413 to a request whose body is larger than `max_bytes`, or than its path's own
    limit in `path_limits` (e.g. /search, which takes one image).

    A declared Content-Length over the limit is refused before reading anything. A body that
    streams past the limit is cut off: the app sees the body end there, and whatever it
    answers is replaced by the 413 (FastAPI would otherwise report a truncated form as 400).
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(limit, scope, receive, send)
            return
        received = 0
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if exceeded:
            await self._refuse(limit, scope, receive, send)

    @staticmethod
    async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(413, f"request body is over {limit} bytes", "request-too-large")
        await response(scope, receive, send)
