"""The service end to end over HTTP: ingest throughput and search latency.

    python -m benchmarks.serve --model models/demo/model.onnx --sizes 1e3,1e5,1e6

Ingest: synthetic frames (training.synth) POSTed to a real `python -m server` on 127.0.0.1,
one frame per request and then `--batch` frames per request, against a server batching at most
1 and then at most `--max-batch` frames per model call (PS_MAX_BATCH); frames/s counts the whole
HTTP round trip (upload, decode, detection, image write, SQLite commit, FAISS add).

Search: for each gallery size a data directory is filled with synthetic unit vectors through
the gallery's bulk path (benchmarks.gallery_search), keyed to the model's id so the server
searches them; then a real person crop is POSTed to /search `--queries` times. Latency is the
client's round trip (query upload, detection + embedding of the query, FAISS, SQLite lookup);
`took_ms` is the server's share of it.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.gallery_search import fill
from gallery import GalleryStore
from inference.card import load_model_card
from server.testing import ServerProcess
from training.data import PRW
from training.synth import generate

DEFAULT_MODEL = Path("models/demo/model.onnx")


@dataclass
class Latency:
    size: int
    index: str
    fill_s: float
    p50_ms: float
    p99_ms: float
    server_p50_ms: float


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model.onnx to serve")
    parser.add_argument("--providers", default="cpu", help="PS_PROVIDERS for the server")
    parser.add_argument("--sizes", default="1e3,1e5,1e6", help="gallery sizes (detections)")
    parser.add_argument("--frames", type=int, default=40, help="frames for the ingest run")
    parser.add_argument("--frame-size", default="640x360", help="synthetic frame WxH")
    parser.add_argument("--batch", type=int, default=8, help="frames per request, second run")
    parser.add_argument("--max-batch", type=int, default=8, help="server PS_MAX_BATCH to compare")
    parser.add_argument("--queries", type=int, default=100, help="searches per gallery size")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--per-frame", type=int, default=10, help="vectors per synthetic frame")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args()
    args.sizes = [int(float(s)) for s in args.sizes.split(",")]
    args.frame_size = tuple(int(v) for v in args.frame_size.lower().split("x"))
    if not args.model.is_file():
        parser.error(f"{args.model} not found: pass --model PATH/model.onnx")
    return args


def serve(args: argparse.Namespace, data_dir: Path, max_batch: int = 1) -> ServerProcess:
    return ServerProcess(
        log_path=data_dir.parent / f"{data_dir.name}.log",
        model=args.model.resolve(),
        data_dir=data_dir,
        providers=args.providers,
        max_files=max(args.batch, 1),
        max_batch=max_batch,
    ).start(ready_timeout=600)


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def ingest_rate(client: httpx.Client, paths: list[Path], per_request: int, tag: str) -> float:
    """Frames per second through POST /gallery, `per_request` frames in each request."""
    began = time.perf_counter()
    for start in range(0, len(paths), per_request):
        chunk = paths[start : start + per_request]
        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in chunk]
        ids = [f"{tag}-{start + i}" for i in range(len(chunk))]
        response = client.post("/gallery", files=files, data={"frame_id": ids})
        response.raise_for_status()
    return len(paths) / (time.perf_counter() - began)


def measure_ingest(args: argparse.Namespace, dataset: Path, workdir: Path) -> dict[str, float]:
    paths = sorted((dataset / "frames").glob("*.jpg"))[: args.frames]
    rates = {}
    for max_batch in sorted({1, args.max_batch}):
        server = serve(args, workdir / f"ingest-{max_batch}", max_batch)
        try:
            with httpx.Client(base_url=server.url, timeout=600) as client:
                ingest_rate(client, paths[:2], 1, "warmup")
                server_side = f"PS_MAX_BATCH={max_batch}"
                rates[f"1 frame/request, {server_side}"] = ingest_rate(client, paths, 1, "single")
                rates[f"{args.batch} frames/request, {server_side}"] = ingest_rate(
                    client, paths, args.batch, "batch"
                )
        finally:
            server.stop()
    return rates


def query_crops(dataset: Path, count: int) -> list[bytes]:
    """Crops of the annotated people, as a user would send them."""
    crops = []
    for record in PRW(dataset, "test").images:
        with Image.open(record.path) as image:
            for box in record.boxes:
                x1, y1, x2, y2 = (int(v) for v in box)
                crops.append(jpeg_bytes(image.convert("RGB").crop((x1, y1, x2, y2))))
    return [crops[i % len(crops)] for i in range(count)]


def measure_search(
    args: argparse.Namespace, size: int, queries: list[bytes], workdir: Path
) -> Latency:
    loaded = load_model_card(args.model)
    data_dir = workdir / f"gallery-{size}"
    began = time.perf_counter()
    dim = loaded.card.embedding_dim
    if dim is None:
        raise ValueError(f"{args.model}: its model card names no embedding_dim")
    with GalleryStore(data_dir, loaded.model_id, dim, faiss_threads=1) as store:
        fill_args = argparse.Namespace(per_frame=args.per_frame, batch=20_000, seed=0)
        fill(store, size, fill_args, None)
        index = store.stats().index_type
    fill_s = time.perf_counter() - began
    server = serve(args, data_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            round_trips, server_ms = [], []
            for query in [queries[0], *queries]:  # the first one warms up
                began = time.perf_counter()
                response = client.post(
                    "/search",
                    files={"query": ("query.jpg", query, "image/jpeg")},
                    data={"top_k": str(args.top_k)},
                )
                response.raise_for_status()
                round_trips.append((time.perf_counter() - began) * 1000)
                server_ms.append(response.json()["took_ms"])
    finally:
        server.stop()
    round_trips, server_ms = round_trips[1:], server_ms[1:]
    return Latency(
        size,
        index,
        fill_s,
        float(np.percentile(round_trips, 50)),
        float(np.percentile(round_trips, 99)),
        float(np.percentile(server_ms, 50)),
    )


def main() -> None:
    args = parse_args()
    loaded = load_model_card(args.model)
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        work = Path(workdir)
        dataset = generate(
            work / "frames",
            "prw",
            frames=max(args.frames, 8),
            identities=20,
            cameras=4,
            seed=0,
            size=args.frame_size,
        )
        rates = measure_ingest(args, dataset, work)
        print(
            f"\nmodel {args.model} ({loaded.model_id}, {loaded.card.embedding_dim}-d), "
            f"providers {args.providers}, frames {args.frame_size[0]}x{args.frame_size[1]}"
        )
        print("| ingest over HTTP | frames/s |\n|---|---:|")
        for name, rate in rates.items():
            print(f"| {name} | {rate:.2f} |")
        queries = query_crops(dataset, args.queries)
        latencies = [measure_search(args, size, queries, work) for size in args.sizes]
    print(f"\nsearch over HTTP, top-{args.top_k}, {args.queries} queries (person crops)")
    print("| gallery vectors | index | fill (s) | p50 (ms) | p99 (ms) | server p50 (ms) |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in latencies:
        print(
            f"| {r.size:,} | {r.index} | {r.fill_s:.1f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
            f"| {r.server_p50_ms:.1f} |"
        )


if __name__ == "__main__":
    main()
