"""GalleryStore against real SQLite, FAISS and Milvus Lite: search, filters, recovery, crash
safety. The store tests run on both vector backends (the `backend` fixture), Milvus with its
exact FLAT index so that both must give the brute-force ranking."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from gallery import (
    DetectionInput,
    FrameExists,
    FrameInput,
    GalleryStore,
    StorageFull,
    StoreClosed,
    StoreLocked,
)
from gallery.records import camera_problem, clean_camera_name
from gallery.store import MAX_OVERFETCH
from gallery.vectors import MilvusConfig

DIM = 16
REPO_ROOT = Path(__file__).resolve().parents[2]


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def make_frames(count: int, per_frame: int = 3, seed: int = 0, prefix: str = "f") -> list:
    """Frames on cameras c0..c2 at timestamps 0..count-1 with scores spread over [0, 1)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        detections = [
            DetectionInput(
                (10.0 * j, 5.0, 10.0 * j + 8, 30.0), float(rng.random()), rng.normal(size=DIM)
            )
            for j in range(per_frame)
        ]
        frames.append(
            FrameInput(
                640, 480, detections, f"{prefix}{i}", f"c{i % 3}", float(i), f"frames/{i}.jpg"
            )
        )
    return frames


def brute_force(frames: list, query: np.ndarray, keep=lambda frame, det: True) -> list:
    """(frame id, box, similarity) of every stored detection passing keep, best first."""
    rows = [
        (frame.frame_id, det.box, float(unit(det.embedding) @ unit(query)))
        for frame in frames
        for det in frame.detections
        if keep(frame, det)
    ]
    return sorted(rows, key=lambda row: -row[2])


def hit_rows(hits: list) -> list:
    return [(hit.frame_id, hit.box, hit.similarity) for hit in hits]


def assert_same_ranking(hits: list, expected: list) -> None:
    assert [(h.frame_id, h.box) for h in hits] == [(e[0], e[1]) for e in expected]
    np.testing.assert_allclose([h.similarity for h in hits], [e[2] for e in expected], atol=1e-5)


def milvus_config(data_dir: Path, index_type: str = "FLAT") -> MilvusConfig:
    """Milvus Lite in a fresh .db under the test's data directory."""
    return MilvusConfig(uri=str(Path(data_dir) / "milvus.db"), index_type=index_type)


def open_store(backend: str, data_dir: Path, model_id: str = "m", **faiss_options):
    """A store on `backend`; faiss_options (ivf_threshold, ...) apply to FAISS only."""
    if backend == "milvus":
        return GalleryStore(data_dir, model_id, DIM, milvus=milvus_config(data_dir))
    return GalleryStore(data_dir, model_id, DIM, **faiss_options)


@pytest.fixture(params=["faiss", "milvus"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def store(tmp_path: Path, backend: str):
    with open_store(backend, tmp_path / "data", "model-a") as opened:
        yield opened


def test_add_search_get_delete(store: GalleryStore) -> None:
    frames = make_frames(20)
    records = store.add_frames(frames)
    assert [r.frame_id for r in records] == [f.frame_id for f in frames]
    query = np.random.default_rng(1).normal(size=DIM)

    hits = store.search(query, top_k=7)
    assert_same_ranking(hits, brute_force(frames, query)[:7])
    top = hits[0]
    assert (top.camera, top.timestamp) == (f"c{int(top.timestamp) % 3}", top.timestamp)

    stored = store.get_frame(top.frame_id)
    assert stored is not None and stored.image_path == f"frames/{int(top.timestamp)}.jpg"
    assert top.detection_id in [d.id for d in stored.detections]

    assert store.delete_frame(top.frame_id) is True
    assert store.delete_frame(top.frame_id) is False
    assert store.get_frame(top.frame_id) is None
    remaining = [f for f in frames if f.frame_id != top.frame_id]
    assert_same_ranking(store.search(query, top_k=7), brute_force(remaining, query)[:7])
    stats = store.stats()
    assert (stats.frames, stats.detections, stats.index_size) == (19, 57, 57)
    milvus = isinstance(store.vector_config, MilvusConfig)
    assert stats.index_type == ("milvus-flat" if milvus else "flat")


def test_stored_embedding_finds_itself_and_generated_ids(store: GalleryStore) -> None:
    embedding = np.random.default_rng(2).normal(size=DIM)
    store.add_frames(make_frames(10))
    record = store.add_frame(width=32, height=64, detections=[((1, 2, 3, 4), 0.5, embedding)])
    assert len(record.frame_id) == 32 and record.model_id == "model-a"
    hit = store.search(embedding * 3.0, top_k=1)[0]
    assert hit.frame_id == record.frame_id and hit.similarity == pytest.approx(1.0, abs=1e-5)


def test_frame_ids_by_prefix(store: GalleryStore) -> None:
    # f1, f10, f11 and f1x0 share the prefix "f1"; g0 sorts right after every "f..."
    store.add_frames(make_frames(12) + make_frames(1, prefix="f1x") + make_frames(1, prefix="g"))
    assert store.frame_ids("f1") == {"f1", "f10", "f11", "f1x0"}
    assert store.frame_ids("f1x") == {"f1x0"}
    assert store.frame_ids("g") == {"g0"} and store.frame_ids("h") == set()
    assert len(store.frame_ids("")) == 14


def test_filters_match_brute_force(store: GalleryStore) -> None:
    frames = make_frames(60)
    store.add_frames(frames)
    query = np.random.default_rng(3).normal(size=DIM)
    cases = [
        (dict(camera="c1"), lambda f, d: f.camera == "c1"),
        (dict(time_range=(10, 25)), lambda f, d: 10 <= f.timestamp <= 25),
        (dict(time_range=(None, 4)), lambda f, d: f.timestamp <= 4),
        (dict(min_score=0.8), lambda f, d: d.score >= 0.8),
        (
            dict(camera="c2", time_range=(30, None), min_score=0.3),
            lambda f, d: f.camera == "c2" and f.timestamp >= 30 and d.score >= 0.3,
        ),
    ]
    for kwargs, keep in cases:
        expected = brute_force(frames, query, keep)[:10]
        assert_same_ranking(store.search(query, top_k=10, **kwargs), expected)

    ranked = brute_force(frames, query)
    floor = (ranked[4][2] + ranked[5][2]) / 2  # midway, clear of float32 rounding
    assert_same_ranking(store.search(query, top_k=50, min_similarity=floor), ranked[:5])
    assert store.search(query, top_k=5, camera="nowhere") == []


def test_selective_filter_still_returns_top_k(tmp_path: Path, backend: str) -> None:
    """Matching rows sit far below the over-fetch window: the store must still find them."""
    rng = np.random.default_rng(4)
    query = unit(rng.normal(size=DIM))
    common = [
        DetectionInput((0, 0, 1, 1), 0.9, query + 0.3 * rng.normal(size=DIM))
        for _ in range(MAX_OVERFETCH + 500)
    ]
    rare = [
        DetectionInput((0, 0, 1, 1), 0.9, -query + 0.1 * rng.normal(size=DIM)) for _ in range(4)
    ]
    frames = [FrameInput(8, 8, common, "crowd", "busy"), FrameInput(8, 8, rare, "lone", "quiet")]
    with open_store(backend, tmp_path) as store:
        store.add_frames(frames)
        hits = store.search(query, top_k=3, camera="quiet")
        assert_same_ranking(hits, brute_force(frames, query, lambda f, d: f.camera == "quiet")[:3])
        assert len(store.search(query, top_k=10, camera="quiet")) == 4


def test_reopen_keeps_gallery_and_index(tmp_path: Path, backend: str) -> None:
    frames = make_frames(30)
    query = np.random.default_rng(5).normal(size=DIM)
    with open_store(backend, tmp_path) as store:
        store.add_frames(frames)
        before = hit_rows(store.search(query, top_k=10))
    with open_store(backend, tmp_path) as store:
        assert store.stats().index_origin == "loaded"
        assert hit_rows(store.search(query, top_k=10)) == before
        assert (
            store.get_frame("f7").detections == tuple(store.get_frame("f7").detections)
            and len(store.get_frame("f7").detections) == 3
        )


def _damage(kind: str, data_dir: Path) -> None:
    index_file, meta_file = data_dir / "index.faiss", data_dir / "index.json"
    if kind == "missing":
        index_file.unlink()
    elif kind == "corrupt":
        raw = bytearray(index_file.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        index_file.write_bytes(bytes(raw))
    elif kind == "truncated":
        index_file.write_bytes(index_file.read_bytes()[:100])
    elif kind == "bad-meta":
        meta_file.write_text("{not json")


@pytest.mark.parametrize("kind", ["missing", "corrupt", "truncated", "bad-meta"])
def test_damaged_index_is_rebuilt(tmp_path: Path, kind: str) -> None:
    frames = make_frames(25)
    query = np.random.default_rng(6).normal(size=DIM)
    with GalleryStore(tmp_path, "m", DIM) as store:
        store.add_frames(frames)
        before = hit_rows(store.search(query, top_k=10))
    _damage(kind, tmp_path)
    with GalleryStore(tmp_path, "m", DIM) as store:
        assert store.stats().index_origin.startswith("rebuilt")
        assert hit_rows(store.search(query, top_k=10)) == before
    with GalleryStore(tmp_path, "m", DIM) as store:
        assert store.stats().index_origin == "loaded"


def test_stale_index_is_caught_up(tmp_path: Path) -> None:
    """An index saved before later adds and deletes is brought up to SQLite at start."""
    frames = make_frames(30)
    query = np.random.default_rng(7).normal(size=DIM)
    with GalleryStore(tmp_path, "m", DIM) as store:
        store.add_frames(frames[:20])
    saved = tmp_path / "saved"
    saved.mkdir()
    for name in ("index.faiss", "index.json"):
        shutil.copy(tmp_path / name, saved / name)
    with GalleryStore(tmp_path, "m", DIM) as store:
        store.add_frames(frames[20:])
        store.delete_frame("f3")
        store.delete_frame("f25")
    for name in ("index.faiss", "index.json"):
        shutil.copy(saved / name, tmp_path / name)
    with GalleryStore(tmp_path, "m", DIM) as store:
        stats = store.stats()
        assert stats.index_origin == "caught up (+27, -3)"
        assert stats.index_size == stats.detections == 84
        kept = [f for f in frames if f.frame_id not in ("f3", "f25")]
        assert_same_ranking(store.search(query, top_k=10), brute_force(kept, query)[:10])


CRASH_WRITER = """
import sys
import numpy as np
from gallery import GalleryStore
from gallery.vectors import MilvusConfig
if sys.argv[2] == "milvus":
    milvus = MilvusConfig(uri=sys.argv[1] + "/milvus.db", index_type="FLAT")
    store = GalleryStore(sys.argv[1], "m", {dim}, milvus=milvus)
else:
    store = GalleryStore(sys.argv[1], "m", {dim}, autosave_every=7)
for i in range(100_000):
    rng = np.random.default_rng(i)
    detections = [((0, 0, 5, 5), 0.5, rng.normal(size={dim})) for _ in range(2)]
    store.add_frame(frame_id=f"k{{i}}", width=10, height=10, detections=detections)
    print(f"k{{i}}", flush=True)
"""


def test_acknowledged_frames_survive_sigkill(tmp_path: Path, backend: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", CRASH_WRITER.format(dim=DIM), str(tmp_path), backend],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    acknowledged = [process.stdout.readline().strip() for _ in range(60)]
    process.send_signal(signal.SIGKILL)
    acknowledged += [line.strip() for line in process.stdout if line.strip()]
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    with open_store(backend, tmp_path) as store:
        for frame_id in acknowledged:
            assert store.get_frame(frame_id) is not None, frame_id
        stats = store.stats()
        assert stats.index_size == stats.detections >= 2 * len(acknowledged)
        last = int(acknowledged[-1][1:])
        embedding = np.random.default_rng(last).normal(size=DIM)
        assert store.search(embedding, top_k=1)[0].frame_id == acknowledged[-1]
    assert not list(tmp_path.glob("*.tmp"))


def test_models_never_mix(tmp_path: Path, backend: str) -> None:
    frames_a = make_frames(10, prefix="a")
    frames_b = make_frames(5, seed=9, prefix="b")
    query = np.random.default_rng(10).normal(size=DIM)
    with open_store(backend, tmp_path, "model-a") as store:
        store.add_frames(frames_a)
    with open_store(backend, tmp_path, "model-b") as store:
        stats = store.stats()
        assert (stats.frames, stats.detections, stats.index_size) == (0, 0, 0)
        assert stats.other_models == {"model-a": {"frames": 10, "detections": 30}}
        assert store.search(query, top_k=5) == []
        store.add_frames(frames_b)
        assert {h.frame_id[0] for h in store.search(query, top_k=100)} == {"b"}
        with pytest.raises(FrameExists):
            store.add_frames(make_frames(1, prefix="a"))
    with open_store(backend, tmp_path, "model-a") as store:
        assert_same_ranking(store.search(query, top_k=30), brute_force(frames_a, query)[:30])
        assert store.stats().other_models == {"model-b": {"frames": 5, "detections": 15}}
    with pytest.raises(ValueError, match="dim"):
        GalleryStore(tmp_path, "model-a", DIM * 2)


def test_ivf_above_threshold(tmp_path: Path) -> None:
    frames = make_frames(120)
    query = np.random.default_rng(11).normal(size=DIM)
    # nprobe above the list count makes IVF exhaustive, so results are exactly comparable.
    with GalleryStore(tmp_path, "m", DIM, ivf_threshold=300, nprobe=1000) as store:
        store.add_frames(frames[:90])
        assert store.stats().index_type == "flat"
        store.add_frames(frames[90:])
        assert store.stats().index_type == "ivf"
        assert_same_ranking(store.search(query, top_k=10), brute_force(frames, query)[:10])
        before = hit_rows(store.search(query, top_k=10, camera="c0"))
    with GalleryStore(tmp_path, "m", DIM, ivf_threshold=300, nprobe=1) as store:
        stats = store.stats()
        assert (stats.index_type, stats.index_origin, stats.index_size) == ("ivf", "loaded", 360)
        # One probed list holds fewer matches than asked for: the store widens the search.
        assert hit_rows(store.search(query, top_k=10, camera="c0")) == before
    with GalleryStore(tmp_path, "m", DIM, ivf_threshold=1000) as store:
        assert store.stats().index_type == "flat"


def test_concurrent_searches_during_ingest(tmp_path: Path, backend: str) -> None:
    frames = make_frames(80, per_frame=2)
    query = np.random.default_rng(12).normal(size=DIM)
    errors: list[BaseException] = []
    with open_store(backend, tmp_path, autosave_every=20) as store:
        store.add_frames(frames[:10])

        def search_repeatedly() -> None:
            try:
                for _ in range(40):
                    assert len(store.search(query, top_k=5, camera="c1")) == 5
            except BaseException as error:  # surfaced in the main thread
                errors.append(error)

        readers = [threading.Thread(target=search_repeatedly) for _ in range(3)]
        for reader in readers:
            reader.start()
        for frame in frames[10:]:
            store.add_frames([frame])
        for reader in readers:
            reader.join()
        assert not errors
        assert store.stats().index_size == 160


def test_failed_batch_stores_nothing(store: GalleryStore) -> None:
    store.add_frames(make_frames(2))
    batch = make_frames(3, prefix="new") + make_frames(1)
    with pytest.raises(FrameExists) as raised:
        store.add_frames(batch)
    assert raised.value.frame_id == "f0"
    assert store.get_frame("new0") is None
    assert store.stats().detections == store.stats().index_size == 6


def test_a_full_database_refuses_a_batch_cleanly(store: GalleryStore) -> None:
    """SQLite's own limit on the file's pages stands in for a full disk (SQLITE_FULL)."""
    store.add_frames(make_frames(2))
    writer = store._writer  # the limit is a per-connection setting of the store's writer
    (pages,) = writer.execute("PRAGMA page_count").fetchone()
    writer.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StorageFull, match="full"):
        store.add_frames(make_frames(200, prefix="big"))
    assert store.get_frame("big0") is None
    assert store.stats().detections == store.stats().index_size == 6
    writer.execute(f"PRAGMA max_page_count = {pages * 1000}")
    store.add_frames(make_frames(200, prefix="big"))
    assert store.stats().detections == store.stats().index_size == 606


@pytest.mark.parametrize("backend", ["faiss"])  # input checks come before any index
@pytest.mark.parametrize(
    ("detection", "message"),
    [
        (((0, 0, 1, 1), 0.5, np.ones(DIM + 1)), "shape"),
        (((0, 0, 1, 1), 0.5, np.zeros(DIM)), "non-zero"),
        (((0, 0, 1, 1), 0.5, np.full(DIM, np.nan)), "finite"),
        (((0, 0, 1), 0.5, np.ones(DIM)), "four"),
        (((5, 0, 1, 1), 0.5, np.ones(DIM)), "order"),
        (((0, 0, 1, 1), float("inf"), np.ones(DIM)), "score"),
        (((0, 0, 1, 1), 0.5), "box, score, embedding"),
    ],
)
def test_bad_detections_are_rejected(store: GalleryStore, detection, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        store.add_frame(width=10, height=10, detections=[detection])
    assert store.stats().frames == 0


@pytest.mark.parametrize("backend", ["faiss"])  # input checks come before any index
@pytest.mark.parametrize(
    "fields",
    [
        dict(frame_id="../etc/passwd"),
        dict(frame_id="a/b"),
        dict(frame_id=""),
        dict(frame_id="abc\n"),  # `$` alone would match before a final newline
        dict(width=0),
        dict(image_path="/abs/file.jpg"),
        dict(image_path="../outside.jpg"),
        dict(timestamp=float("nan")),
        dict(camera=3),
    ],
)
def test_bad_frames_are_rejected(store: GalleryStore, fields: dict) -> None:
    with pytest.raises(ValueError):
        store.add_frame(**{"width": 10, "height": 10, **fields})


def test_bad_searches_and_closed_store(store: GalleryStore) -> None:
    store.add_frames(make_frames(2))
    good = np.ones(DIM)
    for kwargs in (
        dict(query_embedding=np.ones(DIM - 1)),
        dict(query_embedding=good, top_k=0),
        dict(query_embedding=good, top_k=2.5),
        dict(query_embedding=good, time_range=(5, 1)),
        dict(query_embedding=good, min_similarity=float("nan")),
    ):
        with pytest.raises(ValueError):
            store.search(**kwargs)
    with pytest.raises(ValueError, match="duplicate"):
        store.add_frames(make_frames(1) + make_frames(1))
    store.close()
    with pytest.raises(StoreClosed):
        store.search(good)
    with pytest.raises(StoreClosed):
        store.add_frame(width=1, height=1)


def test_one_store_per_directory(tmp_path: Path, backend: str) -> None:
    with open_store(backend, tmp_path):
        with pytest.raises(StoreLocked):
            open_store(backend, tmp_path)
    open_store(backend, tmp_path).close()


# ---- browsing (issue 11) ---------------------------------------------------------------


def test_frames_are_listed_newest_first_page_by_page(store: GalleryStore) -> None:
    frames = make_frames(23)
    frames.append(FrameInput(32, 32, (), "untimed", "c0", None, None, "cam0/untimed.png"))
    store.add_frames(frames)
    seen, after = [], None
    while True:
        page = store.list_frames(limit=5, after=after)
        seen += page.frames
        after = page.next_after
        if after is None:
            break
        assert len(page.frames) == 5
        store.add_frame(width=8, height=8, frame_id=f"late{len(seen)}", timestamp=-1.0)
    # Untimed frames sort by when they were stored (now, far after timestamps 0..22); the
    # frames added while paging sort before the cursor and never shift a page.
    assert [f.frame_id for f in seen[:24]] == ["untimed"] + [f"f{i}" for i in range(22, -1, -1)]
    assert all(f.frame_id.startswith("late") for f in seen[24:])
    assert seen[0].filename == "cam0/untimed.png" and seen[1].filename is None
    expected = {f.frame_id: [d.box for d in f.detections] for f in frames}
    assert [d.box for d in seen[1].detections] == [
        tuple(float(v) for v in box) for box in expected["f22"]
    ]

    chosen = store.list_frames(limit=50, camera="c1", time_range=(4.0, 13.0))
    assert [f.frame_id for f in chosen.frames] == ["f13", "f10", "f7", "f4"]
    assert chosen.next_after is None
    with pytest.raises(ValueError, match="limit"):
        store.list_frames(limit=0)


def test_a_stored_detection_is_found_with_its_embedding(store: GalleryStore) -> None:
    frames = make_frames(5)
    records = store.add_frames(frames)
    detection = records[3].detections[1]
    stored = store.get_detection(detection.id)
    assert stored is not None and stored.frame_id == "f3" and stored.model_id == "model-a"
    assert stored.detection == detection
    np.testing.assert_allclose(stored.embedding, unit(frames[3].detections[1].embedding), atol=1e-6)
    hit = store.search(stored.embedding, top_k=1)[0]
    assert hit.detection_id == detection.id and hit.filename is None
    assert store.get_detection(10_000) is None


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    """A gallery written before file names were kept opens, keeps its frames, and stores
    names from then on."""
    import sqlite3

    from gallery.schema import SCHEMA, SCHEMA_VERSION

    data = tmp_path / "data"
    data.mkdir()
    old = sqlite3.connect(data / "gallery.sqlite3")
    old.executescript(SCHEMA + "INSERT INTO schema_version VALUES (1);")
    old.execute("INSERT INTO models VALUES ('model-a', ?, 0)", (DIM,))
    old.execute("INSERT INTO frames VALUES ('old', 'c0', 5, 64, 48, NULL, 'model-a', 1)")
    embedding = unit(np.ones(DIM, dtype=np.float32))
    old.execute(
        "INSERT INTO detections (frame_id, x1, y1, x2, y2, score, embedding, model_id)"
        " VALUES ('old', 1, 2, 3, 4, 0.9, ?, 'model-a')",
        (embedding.tobytes(),),
    )
    old.commit()
    old.close()
    with GalleryStore(data, "model-a", DIM) as store:
        record = store.get_frame("old")
        assert record is not None and record.filename is None and len(record.detections) == 1
        store.add_frame(width=4, height=4, frame_id="new", timestamp=9.0, filename="a/b.jpg")
        assert [f.filename for f in store.list_frames().frames] == ["a/b.jpg", None]
        assert store.search(embedding, top_k=1)[0].frame_id == "old"
    with GalleryStore(data, "model-a", DIM):  # opening again migrates nothing twice
        pass
    check = sqlite3.connect(data / "gallery.sqlite3")
    assert check.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    indexes = {row[0] for row in check.execute("SELECT name FROM sqlite_master")}
    assert {"frames_newest", "frames_camera_newest"} <= indexes
    check.close()


# ---- Milvus ----------------------------------------------------------------------------


def test_backends_agree(tmp_path: Path) -> None:
    """The same data in FAISS and in Milvus (both exact) gives the same top-k, filtered or not."""
    frames = make_frames(40)
    queries = np.random.default_rng(13).normal(size=(4, DIM))
    answers = {}
    for backend in ("faiss", "milvus"):
        with open_store(backend, tmp_path / backend) as store:
            store.add_frames(frames)
            store.delete_frame("f5")
            answers[backend] = [
                [(h.detection_id, h.frame_id) for h in store.search(q, top_k=8, **filters)]
                for q in queries
                for filters in ({}, {"camera": "c2"}, {"time_range": (3, 30), "min_score": 0.4})
            ]
    assert answers["faiss"] == answers["milvus"]
    assert all(len(hits) == 8 for hits in answers["faiss"])


def test_awkward_cameras_and_missing_metadata(tmp_path: Path, backend: str) -> None:
    """Camera names that need escaping in a Milvus filter, and rows without camera or time:
    the pushed-down filter keeps exactly what SQLite's would."""
    # with a zero-width joiner (emoji), a zero-width non-joiner (Persian), a no-break space
    cameras = [
        'say "hi"',
        "back\\slash",
        "fire\U0001f469\u200d\U0001f692",
        "\u0645\u06cc\u200c\u0631\u0648\u062f",
        "gate\u00a02",
        "caméra",
        "c' OR 1",
        None,
    ]
    rng = np.random.default_rng(14)
    frames = [
        FrameInput(
            8, 8, [((0, 0, 1, 1), 0.5, rng.normal(size=DIM))], f"k{i}", camera, i if i % 2 else None
        )
        for i, camera in enumerate(cameras * 2)
    ]
    query = rng.normal(size=DIM)
    with open_store(backend, tmp_path) as store:
        store.add_frames(frames)
        for camera in cameras[:-1]:
            hits = store.search(query, top_k=20, camera=camera)
            assert sorted(h.frame_id for h in hits) == sorted(
                f.frame_id for f in frames if f.camera == camera
            )
        timed = store.search(query, top_k=20, time_range=(None, 100))
        assert {h.frame_id for h in timed} == {
            f.frame_id for f in frames if f.timestamp is not None
        }


def _milvus_client(data_dir: Path):
    """A raw client on the store's Milvus Lite files, to do behind the store's back what a
    crash can do: lose writes."""
    from pymilvus import MilvusClient

    return MilvusClient(milvus_config(data_dir).uri)


def _release(data_dir: Path) -> None:
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(milvus_config(data_dir).uri)


def test_milvus_catches_up_lost_writes(tmp_path: Path) -> None:
    """Milvus lost the last insert and a delete (as a crash between SQLite and Milvus can
    leave it): the store finds out at open and brings the collection in line with SQLite."""
    frames = make_frames(30)
    query = np.random.default_rng(15).normal(size=DIM)
    with open_store("milvus", tmp_path) as store:
        store.add_frames(frames[:29])
        kept_in_milvus = [d.id for d in store.add_frames(frames[29:])[0].detections]
        collection = store._vectors.collection  # type: ignore[attr-defined]
        lost_insert = [d.id for d in store.get_frame("f29").detections]
    client = _milvus_client(tmp_path)
    client.load_collection(collection)
    client.delete(collection, ids=lost_insert)  # the last insert never reached Milvus
    client.close()
    _release(tmp_path)
    with sqlite3.connect(tmp_path / "gallery.sqlite3") as connection:
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("DELETE FROM frames WHERE id IN ('f4', 'f17')")  # deletes Milvus missed
    with open_store("milvus", tmp_path) as store:
        stats = store.stats()
        assert stats.index_origin == "caught up (+3, -6)"
        assert stats.index_size == stats.detections == 84
        kept = [f for f in frames if f.frame_id not in ("f4", "f17")]
        assert_same_ranking(store.search(query, top_k=10), brute_force(kept, query)[:10])
        assert kept_in_milvus == lost_insert
    with open_store("milvus", tmp_path) as store:
        assert store.stats().index_origin == "loaded"


def test_milvus_collection_of_another_index_is_rebuilt(tmp_path: Path) -> None:
    frames = make_frames(20)
    query = np.random.default_rng(16).normal(size=DIM)
    with open_store("milvus", tmp_path) as store:
        store.add_frames(frames)
    milvus = milvus_config(tmp_path, index_type="HNSW")
    with GalleryStore(tmp_path, "m", DIM, milvus=milvus) as store:
        stats = store.stats()
        assert (stats.index_type, stats.index_origin) == ("milvus-hnsw", "rebuilt (index FLAT)")
        assert stats.index_size == 60
        assert_same_ranking(store.search(query, top_k=5), brute_force(frames, query)[:5])


def test_camera_names_real_people_use(tmp_path: Path) -> None:
    """One rule for the service, the page and the bulk ingest: format characters and no-break
    spaces are part of real names; controls and line breaks are not."""
    for name in ("\U0001f469\u200d\U0001f692", "\u0645\u06cc\u200c\u0631\u0648\u062f", "a\u00a0b"):
        assert camera_problem(name) is None
    for name in ("two\nlines", "nul\x00", "tab\tbed", "para\u2029graph", "line\u2028sep", "\ud800"):
        assert camera_problem(name) is not None, repr(name)
    assert camera_problem("x" * 128) is None and camera_problem("x" * 129) is not None
    assert clean_camera_name("cam\n3\u200d") == "cam_3\u200d"
    assert clean_camera_name("") is None
    with open_store("faiss", tmp_path) as store, pytest.raises(ValueError, match="line breaks"):
        store.add_frame(width=8, height=8, camera="two\nlines")
