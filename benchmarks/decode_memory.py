"""Memory of the service under concurrent searches with a small file of many pixels.

    python -m benchmarks.decode_memory --model models/demo/model.onnx [--concurrent 8]

A 6300 x 6300 PNG of a few KB (under PS_MAX_PIXELS) is POSTed to /search of a real
`python -m server` on 127.0.0.1, first alone, then `--concurrent` at once, `--rounds` times.
The server process's resident memory (psutil) is sampled every 5 ms: the figures are its RSS
after start-up and a warm-up search, the peak during the lone search and during the concurrent
ones, and what stays resident a second after the last. `--server-root` runs the server from
another checkout (e.g. a worktree of an older commit), to measure a baseline in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from PIL import Image, ImageDraw

from server.testing import ServerProcess

MIB = 1024 * 1024


def large_small_png(side: int) -> bytes:
    """side x side pixels in a few KB: flat colour and a person-sized block."""
    image = Image.new("RGB", (side, side), (90, 110, 130))
    ImageDraw.Draw(image).rectangle((side // 3, side // 4, side // 2, side * 3 // 4), (200, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


class PeakRss:
    """Samples a process's RSS in a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRss:
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_memory")
    parser.add_argument("--model", type=Path, default=Path("models/demo/model.onnx"))
    parser.add_argument("--side", type=int, default=6300, help="the PNG's width and height")
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server-root", type=Path, default=None, help="checkout to serve from")
    args = parser.parse_args(argv)
    query = large_small_png(args.side)
    with tempfile.TemporaryDirectory() as data_dir:
        server = ServerProcess(model=args.model.resolve(), data_dir=data_dir)
        if args.server_root is not None:
            server.root = args.server_root.resolve()
        with server, httpx.Client(base_url=server.url, timeout=600) as client:
            assert server.process is not None
            rss = psutil.Process(server.process.pid)

            def search() -> int:
                files = {"query": ("q.png", query, "image/png")}
                return client.post("/search", files=files).status_code

            warm = client.post("/search", files={"query": ("q.png", large_small_png(64))})
            assert warm.status_code == 200, warm.text
            started_mib = rss.memory_info().rss / MIB
            with PeakRss(rss.pid) as alone:
                status = search()
            assert status == 200, status
            with PeakRss(rss.pid) as together, ThreadPoolExecutor(args.concurrent) as pool:
                for _ in range(args.rounds):
                    statuses = list(pool.map(lambda _: search(), range(args.concurrent)))
                    assert statuses == [200] * args.concurrent, statuses
            time.sleep(1.0)
            figures = {
                "png_kib": round(len(query) / 1024, 1),
                "pixels": args.side * args.side,
                "rss_start_mib": round(started_mib),
                "peak_one_search_mib": round(alone.peak / MIB),
                f"peak_{args.concurrent}_concurrent_mib": round(together.peak / MIB),
                "rss_after_mib": round(rss.memory_info().rss / MIB),
            }
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
