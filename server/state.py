"""What the running service holds: settings, the engine, the store, the inference pool."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gallery.reembed import reembed
from gallery.store import GalleryStore
from inference.engine import Detections, Engine, Image, chosen_providers
from server.batcher import Batcher
from server.budget import PixelBudget
from server.metrics import Metrics
from server.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
DECODE_THREADS = 2


class ServiceState:
    """Shared by every request. `engine` and `store` are None until load() has finished."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.engine: Engine | None = None
        self.store: GalleryStore | None = None
        # Ingest detections: frames of concurrent requests (and of one request) share runs.
        self.detector: Batcher[Image, Detections] | None = None
        self.load_error: str | None = None
        # Called (from the loading thread) when loading fails: `python -m server` stops then.
        self.on_load_failure: Callable[[], None] | None = None
        # Inference gets its own small pool: ONNX Runtime already spreads one run over the
        # cores, so a few concurrent runs are plenty and the event loop stays free.
        self.inference_pool = ThreadPoolExecutor(
            settings.inference_threads, thread_name_prefix="inference"
        )
        self.decode_budget = PixelBudget(settings.decode_budget_pixels)
        # Decoding on a few threads of its own, rather than any of the many request threads,
        # keeps the large buffers it frees in a few malloc arenas, where the next decode
        # reuses them (docs/BENCHMARKS.md: 8 concurrent 40-Mpixel searches peaked at 672 MiB
        # on request threads, 507 MiB on these).
        self.decode_pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")
        # Re-embedding the frames another model embedded (PS_REEMBED), in the background.
        self.reembedding: threading.Thread | None = None
        self._stop_reembedding = threading.Event()

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.store is not None

    def load(self) -> None:
        """Open the model (with a warm-up run) and the store; record any failure."""
        try:
            engine = Engine(
                self.settings.model,
                chosen_providers(self.settings.provider_list),
                self.settings.min_detection_score,
                cache_dir=self.settings.data_dir / "trt-cache",
                max_batch=self.settings.max_batch,
            )
            engine.warm_up()
            self.store = GalleryStore(
                self.settings.data_dir,
                engine.model.model_id,
                engine.embedding_dim,
                faiss_threads=self.settings.faiss_threads,
                milvus=self.settings.milvus,
            )
            self.detector = Batcher(
                self._detect_batch,
                self.settings.max_batch,
                self.settings.max_wait_ms / 1000,
                name="detect-batcher",
            )
            self.engine = engine
            self._log_ready(engine, self.store)
            self._start_reembedding(engine, self.store)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("the service could not load its model or gallery")
            if self.on_load_failure is not None:
                self.on_load_failure()

    def _log_ready(self, engine: Engine, store: GalleryStore) -> None:
        stats = store.stats()
        log.info(
            "ready: model %s (%s) on %s; data folder %s: %d frames, %d detections, "
            "index %s of %d (%s); API key %s",
            engine.model.model_id,
            self.settings.model,
            ", ".join(engine.providers),
            self.settings.data_dir,
            stats.frames,
            stats.detections,
            stats.index_type,
            stats.index_size,
            stats.index_origin,
            "required" if self.settings.api_key else "off (PS_API_KEY unset)",
        )

    def _start_reembedding(self, engine: Engine, store: GalleryStore) -> None:
        pending = sum(counts["frames"] for counts in store.stats().other_models.values())
        if pending == 0:
            return
        if not self.settings.reembed:
            log.warning(
                "%d stored frames were embedded by another model and are not searched; "
                "re-embed them with `python -m gallery.reembed` (service stopped) or restart "
                "with PS_REEMBED=on",
                pending,
            )
            return
        log.warning(
            "%d stored frames were embedded by another model: re-embedding them with %s in the "
            "background (GET /gallery/stats: reembed_pending)",
            pending,
            engine.model.model_id,
        )

        def detect(images: Sequence[Image]) -> list[Detections]:
            # on the inference pool: PS_INFERENCE_THREADS bounds it with the requests' runs
            return self.inference_pool.submit(engine.detect_batch, images).result()

        def run() -> None:
            try:
                summary = reembed(
                    store,
                    detect,
                    engine.card.max_size,
                    self.settings.max_pixels,
                    stop=self._stop_reembedding,
                )
                log.info(
                    "re-embedded %d frames (%d unreadable)",
                    summary.reembedded,
                    len(summary.unreadable),
                )
            except Exception:
                if not self._stop_reembedding.is_set():
                    log.exception("re-embedding stopped; it resumes at the next start")

        self.reembedding = threading.Thread(target=run, name="reembed", daemon=True)
        self.reembedding.start()

    async def infer(self, kind: str, function: Callable[[], T]) -> T:
        """Run `function` on the inference pool, timing it under `kind`."""
        loop = asyncio.get_running_loop()
        with self.metrics.inference_seconds.labels(kind).time():
            return await loop.run_in_executor(self.inference_pool, function)

    async def detect(self, image: Image) -> Detections:
        """Detect the people in an image (boxes in its own pixels), in a batch with other
        frames."""
        assert self.detector is not None
        with self.metrics.inference_seconds.labels("detect").time():
            return await asyncio.wrap_future(self.detector.submit(image))

    def _detect_batch(self, images: list[Image]) -> list[Detections]:
        # on the inference pool, so that PS_INFERENCE_THREADS still bounds concurrent runs
        assert self.engine is not None
        return self.inference_pool.submit(self.engine.detect_batch, images).result()

    async def decode(self, function: Callable[[], T]) -> T:
        """Run an image decode on the decode pool."""
        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, function)

    def close(self) -> None:
        self._stop_reembedding.set()
        if self.reembedding is not None:
            self.reembedding.join()
        if self.detector is not None:
            self.detector.close()
        self.inference_pool.shutdown(wait=True)
        self.decode_pool.shutdown(wait=True)
        if self.store is not None:
            self.store.close()
