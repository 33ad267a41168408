"""Store-level search latency of the gallery: FAISS flat vs IVF vs Milvus at several sizes.

Fills a real GalleryStore (SQLite + FAISS) with synthetic L2-normalised vectors through the
bulk path, times `search` (the vector index plus the SQLite lookup of the hits) for top-k
queries with and without a camera filter, then reopens the same database with an IVF index,
and with each `--milvus` index type (Milvus Lite in the data directory, or `--milvus-uri`; the
collection is built from SQLite at open), and repeats, measuring recall against the exact
flat results.

    python -m benchmarks.gallery_search --sizes 1e3,1e5 --queries 100 --milvus hnsw,flat
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from gallery import DetectionInput, FrameInput, GalleryStore
from gallery.vectors import MilvusConfig

CAMERAS = 10  # a camera filter keeps about a tenth of the gallery
IDENTITY_NOISE = 0.03  # per dimension around a unit centre: same-identity cosine about 0.7


@dataclass
class Result:
    size: int
    index: str
    prepare_s: float
    p50_ms: float
    p99_ms: float
    filtered_p50_ms: float
    filtered_p99_ms: float
    recall: float


def synthetic_vectors(count: int, dim: int, centres: np.ndarray | None, rng) -> np.ndarray:
    """Random directions, or (with identity centres) noisy views of random identities,
    which is closer to how person embeddings cluster and what IVF relies on."""
    if centres is None:
        return rng.standard_normal((count, dim), dtype=np.float32)
    chosen = centres[rng.integers(len(centres), size=count)]
    noise = rng.standard_normal((count, dim), dtype=np.float32) * IDENTITY_NOISE
    return chosen + noise


def synthetic_frames(
    start: int, count: int, per_frame: int, dim: int, centres: np.ndarray | None, rng
) -> list[FrameInput]:
    vectors = synthetic_vectors(count * per_frame, dim, centres, rng)
    frames = []
    for i in range(count):
        rows = vectors[i * per_frame : (i + 1) * per_frame]
        detections = [DetectionInput((0.0, 0.0, 64.0, 128.0), 0.9, row) for row in rows]
        number = start + i
        frames.append(
            FrameInput(1920, 1080, detections, f"f{number}", f"cam{number % CAMERAS}", number)
        )
    return frames


def identity_centres(args: argparse.Namespace) -> np.ndarray | None:
    if not args.identities:
        return None
    rng = np.random.default_rng(args.seed + 2)
    centres = rng.standard_normal((args.identities, args.dim), dtype=np.float32)
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def fill(store: GalleryStore, size: int, args: argparse.Namespace, centres) -> None:
    rng = np.random.default_rng(args.seed)
    frames_total = size // args.per_frame
    batch = max(1, args.batch // args.per_frame)
    for start in range(0, frames_total, batch):
        count = min(batch, frames_total - start)
        frames = synthetic_frames(start, count, args.per_frame, store.dim, centres, rng)
        store.add_frames(frames)


def time_searches(
    store: GalleryStore, queries: np.ndarray, top_k: int, **filters
) -> tuple[list[float], list[list[int]]]:
    latencies, results = [], []
    for query in queries:
        began = time.perf_counter()
        hits = store.search(query, top_k=top_k, **filters)
        latencies.append((time.perf_counter() - began) * 1000)
        results.append([hit.detection_id for hit in hits])
    return latencies, results


def recall(found: list[list[int]], exact: list[list[int]]) -> float:
    matched = sum(len(set(f) & set(e)) for f, e in zip(found, exact, strict=True))
    return matched / max(1, sum(len(e) for e in exact))


def measure(
    store: GalleryStore,
    size: int,
    prepare_s: float,
    queries: np.ndarray,
    top_k: int,
    exact: list[list[int]] | None,
) -> tuple[Result, list[list[int]]]:
    plain, found = time_searches(store, queries, top_k)
    filtered, _ = time_searches(store, queries, top_k, camera="cam3")
    result = Result(
        size,
        store.stats().index_type,
        prepare_s,
        float(np.percentile(plain, 50)),
        float(np.percentile(plain, 99)),
        float(np.percentile(filtered, 50)),
        float(np.percentile(filtered, 99)),
        recall(found, exact) if exact is not None else 1.0,
    )
    print(f"  {table_row(result)}", flush=True)  # a long run's figures survive its interruption
    return result, found


def run_size(size: int, args: argparse.Namespace, workdir: Path) -> list[Result]:
    data_dir = workdir / f"gallery-{size}"
    centres = identity_centres(args)
    rng = np.random.default_rng(args.seed + 1)
    queries = synthetic_vectors(args.queries, args.dim, centres, rng)
    began = time.perf_counter()
    with GalleryStore(
        data_dir, "bench", args.dim, ivf_threshold=size + 1, faiss_threads=args.faiss_threads
    ) as store:
        fill(store, size, args, centres)
        ingest_s = time.perf_counter() - began
        print(
            f"  {size}: ingested in {ingest_s:.1f} s ({size / ingest_s:,.0f} vectors/s)",
            flush=True,
        )
        flat, exact = measure(store, size, ingest_s, queries, args.top_k, None)
    began = time.perf_counter()
    with GalleryStore(data_dir, "bench", args.dim, ivf_threshold=1, nprobe=args.nprobe) as store:
        rebuild_s = time.perf_counter() - began
        print(f"  {size}: IVF built from SQLite in {rebuild_s:.1f} s", flush=True)
        ivf, _ = measure(store, size, rebuild_s, queries, args.top_k, exact)
    results = [flat, ivf]
    if size in args.milvus_sizes:
        for index_type in args.milvus:
            results.append(run_milvus(data_dir, size, index_type, args, queries, exact))
    return results


def run_milvus(
    data_dir: Path,
    size: int,
    index_type: str,
    args: argparse.Namespace,
    queries: np.ndarray,
    exact: list[list[int]],
) -> Result:
    """Open the gallery on Milvus: the collection is built from SQLite, then searched."""
    uri = args.milvus_uri or str(data_dir / f"milvus-{index_type}.db")
    config = MilvusConfig(uri, index_type.upper(), collection_prefix=f"bench_{size}")
    began = time.perf_counter()
    with GalleryStore(data_dir, "bench", args.dim, milvus=config) as store:
        build_s = time.perf_counter() - began
        print(f"  {size}: Milvus {index_type} built from SQLite in {build_s:.1f} s", flush=True)
        result, _ = measure(store, size, build_s, queries, args.top_k, exact)
    return result


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\nsearch latency, top-{args.top_k}, {args.dim}-d, {args.queries} queries, "
        f"IVF nprobe={args.nprobe}, FAISS threads {faiss.omp_get_max_threads()}; "
        f"Milvus: HNSW M=16 efConstruction=200 ef=max(64, k), IVF_FLAT nlist 1024 nprobe 32; "
        f"filtered = camera filter keeping 1/{CAMERAS}; "
        + (f"{args.identities} identities" if args.identities else "random directions")
    )
    print(
        "| vectors | index | ingest / build (s) | p50 (ms) | p99 (ms) "
        "| filtered p50 (ms) | filtered p99 (ms) | recall@k vs flat |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for result in results:
        print(table_row(result))


def table_row(r: Result) -> str:
    return (
        f"| {r.size:,} | {r.index} | {r.prepare_s:.1f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
        f"| {r.filtered_p50_ms:.2f} | {r.filtered_p99_ms:.2f} | {r.recall:.3f} |"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e3,1e5,1e6", help="comma-separated vector counts")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--per-frame", type=int, default=10, help="detections per frame")
    parser.add_argument(
        "--identities", type=int, default=0, help="cluster vectors around N identities (0: none)"
    )
    parser.add_argument("--batch", type=int, default=20_000, help="vectors per transaction")
    parser.add_argument(
        "--faiss-threads", type=int, default=None, help="OpenMP threads (default: FAISS's)"
    )
    parser.add_argument(
        "--milvus",
        default="hnsw",
        help="comma-separated Milvus index types to measure (flat, hnsw, ivf_flat; '' for none)",
    )
    parser.add_argument(
        "--milvus-sizes", default=None, help="sizes to measure Milvus at (default: all)"
    )
    parser.add_argument(
        "--milvus-uri", default=None, help="a Milvus server; default Milvus Lite per gallery"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args()
    args.sizes = [int(float(s)) for s in args.sizes.split(",")]
    args.milvus = [name.strip().lower() for name in args.milvus.split(",") if name.strip()]
    milvus_sizes = args.milvus_sizes.split(",") if args.milvus_sizes else args.sizes
    args.milvus_sizes = {int(float(s)) for s in milvus_sizes}
    if any(size < args.per_frame for size in args.sizes):
        parser.error("every size must hold at least one frame")
    return args


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        results = []
        for size in args.sizes:
            results += run_size(size, args, Path(workdir))
    print_table(results, args)


if __name__ == "__main__":
    main()
