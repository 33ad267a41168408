"""Sending frames to a running service: batches of POST /gallery, retried and resumable.

What a batch's answer means, and what the uploader does with it:
- 201: every frame of the batch is stored.
- 409 `frame-exists`: the service stored nothing of this request (its checks run before any
  frame is stored); GET /gallery/frames/{id} finds which frames are there already. Those are
  skipped, the rest is sent again. A rerun after an interruption goes through this path.
- another 4xx: the batch stored nothing; a batch of several frames is split in halves until
  the refused frame is alone, so one bad file costs only itself. A 413 `too-many-files` or
  `request-too-large` also lowers the batch size for the rest of the run.
- 401, 403, 404, 405: the service (or the URL) refuses every request; the run stops.
- 5xx, 429 and connection errors: retried with exponential backoff (Retry-After honoured).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePath

import httpx

from inference.imaging import MEDIA_TYPES
from ingest.sources import SourceFrame, Unreadable

log = logging.getLogger(__name__)

FATAL_STATUSES = frozenset({401, 403, 404, 405})
SHRINKING_KINDS = frozenset({"too-many-files", "request-too-large"})


class ServiceError(Exception):
    """The gallery cannot take frames: the service unreachable after every retry or refusing
    every request, or (on Ray) its store held by a running service or the model unusable."""


@dataclass(frozen=True)
class Refusal:
    """A frame that was not stored, and why (the service's problem, or a local read error)."""

    name: str
    status: int | None  # None: refused before sending (the file could not be read)
    title: str
    detail: str
    kind: str = ""

    @property
    def reason(self) -> str:
        status = f"{self.status} " if self.status else ""
        kind = f" ({self.kind})" if self.kind else ""
        return f"{status}{self.title}{kind}"


@dataclass
class Summary:
    """What a run did; `done` counts frames in every outcome (for progress)."""

    ingested: int = 0
    skipped: int = 0  # already stored
    detections: int = 0
    refused: list[Refusal] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.ingested + self.skipped + len(self.refused)

    def report(self, examples: int = 5) -> str:
        lines = [
            f"ingested {self.ingested} frames ({self.detections} people detected), "
            f"skipped {self.skipped} already stored, refused {len(self.refused)}"
        ]
        for reason, count in Counter(r.reason for r in self.refused).most_common():
            lines.append(f"  refused x{count}: {reason}")
            shown = [r for r in self.refused if r.reason == reason][:examples]
            lines += [f"    {r.name}: {r.detail}" for r in shown]
            if count > len(shown):
                lines.append(f"    ... and {count - len(shown)} more")
        return "\n".join(lines)


@dataclass(frozen=True)
class ProblemDetails:
    """The parts of a problem+json answer a summary shows (any error body is tolerated)."""

    status: int
    title: str
    detail: str
    kind: str

    @classmethod
    def of(cls, response: httpx.Response) -> ProblemDetails:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"detail": response.text[:200]}
        kind = str(body.get("type", "")).rpartition(":")[2]
        return cls(
            response.status_code,
            str(body.get("title") or response.reason_phrase),
            str(body.get("detail", "")),
            "" if kind == "blank" else kind,
        )


@dataclass(frozen=True)
class Backoff:
    """Retry policy: `retries` more tries after the first, waiting base x 2^n (at most cap)."""

    retries: int = 8
    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        wait = min(self.cap, self.base * 2**attempt)
        if retry_after and retry_after.isdigit():
            wait = max(wait, min(self.cap, float(retry_after)))
        return wait


class Uploader:
    """Sends frames in batches to POST /gallery and keeps the run's `summary`."""

    def __init__(
        self,
        client: httpx.Client,
        batch_size: int = 8,
        backoff: Backoff = Backoff(),
        sleep: Callable[[float], None] = time.sleep,
        summary: Summary | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.client = client
        self.batch_size = batch_size
        self.backoff = backoff
        self.sleep = sleep
        self.summary = Summary() if summary is None else summary

    def send(
        self,
        frames: Iterable[SourceFrame | Unreadable],
        on_batch: Callable[[Summary], None] | None = None,
    ) -> Summary:
        """Send everything; `on_batch` sees the summary after each batch (progress).

        Frames with and without timestamps travel in separate batches: the form takes one
        timestamp per file or none at all.
        """
        batch: list[SourceFrame] = []
        for item in frames:
            if isinstance(item, Unreadable):
                self.summary.refused.append(Refusal(item.name, None, "Unreadable", item.detail))
                continue
            if batch and (batch[0].timestamp is None) != (item.timestamp is None):
                self._flush(batch, on_batch)
                batch = []
            batch.append(item)
            if len(batch) >= self.batch_size:
                self._flush(batch, on_batch)
                batch = []
        if batch:
            self._flush(batch, on_batch)
        return self.summary

    def _flush(self, batch: list[SourceFrame], on_batch: Callable[[Summary], None] | None) -> None:
        self._deliver(batch)
        if on_batch is not None:
            on_batch(self.summary)

    def _deliver(self, frames: list[SourceFrame]) -> None:
        response = self._with_retries(
            lambda: self._post(frames), f"POST /gallery ({len(frames)} frames)"
        )
        if response.status_code == 201:
            stored = response.json()["frames"]
            self.summary.ingested += len(stored)
            self.summary.detections += sum(len(frame["detections"]) for frame in stored)
            return
        problem = ProblemDetails.of(response)
        if problem.status in FATAL_STATUSES:
            raise ServiceError(f"POST /gallery: {problem.status} {problem.title}: {problem.detail}")
        if problem.status == 409 and problem.kind == "frame-exists":
            stored_ids = {f.frame_id for f in frames if self._exists(f.frame_id)}
            if stored_ids:
                self.summary.skipped += len(stored_ids)
                rest = [f for f in frames if f.frame_id not in stored_ids]
                if rest:
                    self._deliver(rest)
                return
        if len(frames) > 1:
            if problem.status == 413 and problem.kind in SHRINKING_KINDS:
                self.batch_size = max(1, min(self.batch_size, len(frames) // 2))
            half = len(frames) // 2
            self._deliver(frames[:half])
            self._deliver(frames[half:])
            return
        self.summary.refused.append(
            Refusal(frames[0].name, problem.status, problem.title, problem.detail, problem.kind)
        )

    def _post(self, frames: list[SourceFrame]) -> httpx.Response:
        files = [("files", (f.file_name, f.data, _media_type(f.file_name))) for f in frames]
        form: dict[str, list[str]] = {
            "frame_id": [f.frame_id for f in frames],
            "camera": [f.camera or "" for f in frames],
        }
        if frames[0].timestamp is not None:
            form["timestamp"] = [repr(f.timestamp) for f in frames]
        return self.client.post("/gallery", files=files, data=form)

    def _exists(self, frame_id: str) -> bool:
        response = self._with_retries(
            lambda: self.client.get(f"/gallery/frames/{frame_id}"),
            f"GET /gallery/frames/{frame_id}",
        )
        if response.status_code in (200, 404):
            return response.status_code == 200
        problem = ProblemDetails.of(response)
        raise ServiceError(
            f"GET /gallery/frames/{frame_id}: {problem.status} {problem.title}: {problem.detail}"
        )

    def _with_retries(self, call: Callable[[], httpx.Response], what: str) -> httpx.Response:
        """The first answer that is neither a 5xx nor a 429, retrying those and connection
        errors; ServiceError once the retries are spent."""
        for attempt in range(self.backoff.retries + 1):
            retry_after = None
            try:
                response = call()
            except httpx.TransportError as exc:  # refused, reset, timed out
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500 and response.status_code != 429:
                    return response
                problem = ProblemDetails.of(response)
                reason = f"{problem.status} {problem.title}: {problem.detail}"
                retry_after = response.headers.get("retry-after")
            if attempt == self.backoff.retries:
                raise ServiceError(f"{what}: gave up after {attempt + 1} tries; last: {reason}")
            delay = self.backoff.delay(attempt, retry_after)
            log.warning("%s: %s; retrying in %.1f s", what, reason, delay)
            self.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises


def _media_type(file_name: str) -> str:
    """The upload's declared type, by extension (the service reads the bytes anyway)."""
    return MEDIA_TYPES.get(PurePath(file_name).suffix.lower(), "application/octet-stream")
