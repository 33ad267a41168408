"""Dynamic batching: work items from concurrent requests gathered into shared runs.

One worker thread takes the first waiting item, then waits up to ``max_wait_s`` for more until
it holds ``max_batch``, and runs the batch with one call. A batch that fails is run again item
by item, so one bad item (an undecodable upload) fails only its own request.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Why a batch was closed: it was full, the wait for more ran out, or the batcher was closing.
Closed = Literal["full", "waited", "closing"]
# Batches remembered for /metrics-style inspection and tests.
HISTORY = 1000


@dataclass(frozen=True)
class BatchRecord:
    size: int
    closed: Closed


class BatcherClosed(RuntimeError):
    """An item was submitted after ``close()``."""


class Batcher(Generic[T, R]):
    """Runs ``run_batch(items) -> results`` (one result per item, in order) on batches of at
    most ``max_batch`` items, waiting at most ``max_wait_s`` after a batch's first item."""

    def __init__(
        self,
        run_batch: Callable[[list[T]], Sequence[R]],
        max_batch: int,
        max_wait_s: float,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(
                f"max_batch must be >= 1 and max_wait_s >= 0, got {max_batch}, {max_wait_s}"
            )
        self.run_batch, self.max_batch, self.max_wait_s = run_batch, max_batch, max_wait_s
        self.history: list[BatchRecord] = []
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)
        self._worker.start()

    def submit(self, item: T) -> Future[R]:
        """Queue ``item``; the future holds its result (or the exception its run raised)."""
        if self._closing.is_set():
            raise BatcherClosed("the batcher is closed")
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future

    def close(self) -> None:
        """Run what is queued (without waiting for more), then stop the worker."""
        if not self._closing.is_set():
            self._closing.set()
            self._queue.put(None)
        self._worker.join()
        while True:  # items that raced close() past its check
            try:
                left = self._queue.get_nowait()
            except queue.Empty:
                return
            if left is not None:
                left[1].set_exception(BatcherClosed("the batcher closed before running this"))

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, closed = self._gather(first)
            self._run(batch)
            self.history = [*self.history[-HISTORY + 1 :], BatchRecord(len(batch), closed)]
            if closed == "closing":
                return

    def _gather(self, first: tuple[T, Future[R]]) -> tuple[list[tuple[T, Future[R]]], Closed]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                waiting = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                return batch, "waited"
            if waiting is None:
                return batch, "closing"
            batch.append(waiting)
        return batch, "full"

    def _run(self, batch: list[tuple[T, Future[R]]]) -> None:
        live = [(item, future) for item, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self.run_batch([item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError(f"run_batch gave {len(results)} results for {len(live)} items")
        except Exception as exc:
            if len(live) == 1:
                live[0][1].set_exception(exc)
                return
            for item, future in live:  # alone, so that only the failing items fail
                try:
                    future.set_result(self.run_batch([item])[0])
                except Exception as alone:
                    future.set_exception(alone)
            return
        for (_, future), result in zip(live, results, strict=True):
            future.set_result(result)
