"""The operators' page in a real browser: Debian's headless Chromium driven by Playwright, the
real service on 127.0.0.1 with an API key and the bundled demo model, synthetic frames.

Any console error fails the test, except Chromium's own network log line for the answers the
test provokes on purpose (the 401 before the key is entered, the 415 of a file that is not an
image): Chromium logs every 4xx a fetch() gets, which no page can prevent.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from server.testing import ServerProcess
from tests.conftest import DEMO_MODEL

playwright = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra)")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)

KEY = "page-key"
NETWORK_LOG = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")
TIMEOUT_MS = 30_000


class Console:
    """Console errors and uncaught exceptions; `allowed` holds the HTTP statuses whose
    network log line is expected at the moment."""

    def __init__(self, page) -> None:
        self.allowed: set[int] = set()
        self.unexpected: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.unexpected.append(f"uncaught: {error}"))

    def _message(self, message) -> None:
        if message.type != "error":
            return
        logged = NETWORK_LOG.match(message.text)
        if logged is None or int(logged.group(1)) not in self.allowed:
            self.unexpected.append(message.text)


def iou(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("page-data")
    with ServerProcess(
        log_path=data_dir.parent / "page-server.log",
        model=DEMO_MODEL,
        data_dir=data_dir,
        api_key=KEY,
    ) as process:
        yield process


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


def frames_folder(root: Path, demo_frames: list) -> Path:
    """The frames as an operator has them: a folder per camera, with a stray non-image."""
    folder = root / "upload"
    for record in demo_frames:
        target = folder / f"c{record.camera}" / record.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(record.path, target)
    (folder / "c1" / "notes.txt").write_text("not a frame")
    return folder


def found_person(demo_frames: list, stored: dict) -> tuple:
    """The largest labelled person whom the model detects (IoU >= 0.5) in its frame."""
    candidates = []
    for record in demo_frames:
        boxes = [d["box"] for d in stored[record.path.name]["detections"]]
        for box in record.boxes:
            if boxes and max(iou(found, box) for found in boxes) >= 0.5:
                candidates.append((float(np.prod(box[2:] - box[:2])), record.path.name, box))
    _, name, box = max(candidates, key=lambda row: row[0])
    return next(r for r in demo_frames if r.path.name == name), box


def crop(path: Path, box, out: Path, margin: float = 0.1) -> Path:
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    with Image.open(path) as image:
        area = (
            max(0, x1 - dx),
            max(0, y1 - dy),
            min(image.width, x2 + dx),
            min(image.height, y2 + dy),
        )
        image.convert("RGB").crop(tuple(round(v) for v in area)).save(out, quality=95)
    return out


def wait_for_images(page) -> None:
    """Every frame image on the page has arrived (fetched with the key, shown as blob:)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('main section:not([hidden]) .frame img')]"
        ".every(img => img.complete && img.naturalWidth > 0 && img.src.startsWith('blob:'))",
        timeout=TIMEOUT_MS,
    )


def result_ids(page) -> list[int]:
    return [int(v) for v in page.locator("#search-results li").evaluate_all(
        "items => items.map(item => item.dataset.detectionId)")]  # fmt: skip


def api_search(server: ServerProcess, detection_id: int, top_k: int = 12) -> list[int]:
    answer = httpx.post(
        f"{server.url}/search",
        data={"detection_id": detection_id, "top_k": top_k},
        headers={"X-API-Key": KEY},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return [hit["detection_id"] for hit in answer.json()["results"]]


def no_sideways_scroll(page) -> bool:
    return page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


def test_operators_ingest_browse_and_search_in_the_browser(
    server: ServerProcess, browser, demo_frames: list, tmp_path: Path
) -> None:
    expect = playwright.expect
    expect.set_options(timeout=TIMEOUT_MS)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    console = Console(page)

    # The key is asked for, entered once, and kept in the tab's session storage.
    console.allowed = {401}
    page.goto(f"{server.url}/")
    expect(page.locator("#service")).to_contain_text("needs an API key")
    page.locator("#api-key").fill(KEY)
    page.locator("#api-key").press("Enter")
    expect(page.locator("#service")).to_contain_text("0 frames")
    assert page.evaluate("() => sessionStorage.getItem('person-search.api-key')") == KEY
    console.allowed = set()

    # Ingest a folder: a camera per sub-folder, times from a start time two seconds apart.
    page.locator("#ingest-camera-folder").check()
    page.locator("#ingest-time-mode").select_option("given")
    page.locator("#ingest-start").fill("2027-01-01T08:00:00")
    page.locator("#ingest-step").fill("2")
    page.locator("#ingest-folder").set_input_files(frames_folder(tmp_path, demo_frames))
    total = len(demo_frames)
    summary = page.locator("#ingest-summary")
    expect(summary).to_have_text(
        f"{total} of {total} files: {total} stored, 0 refused", timeout=4 * TIMEOUT_MS
    )
    expect(page.locator("#ingest-results tr[data-status=stored]")).to_have_count(total)
    assert page.locator("#ingest-progress").evaluate("bar => bar.value / bar.max") == 1
    page.screenshot(path=shots / "ingest.png")

    listed = httpx.get(
        f"{server.url}/gallery/frames", params={"limit": 100}, headers={"X-API-Key": KEY}
    ).json()["frames"]
    stored = {Path(frame["filename"]).name: frame for frame in listed}
    assert len(stored) == total
    for record in demo_frames:
        frame = stored[record.path.name]
        assert frame["filename"] == f"upload/c{record.camera}/{record.path.name}"
        assert frame["camera"] == f"c{record.camera}"
    times = sorted(frame["timestamp"] for frame in listed)
    assert np.allclose(np.diff(times), 2.0)

    # A file that is not an image, dropped on the page: the service's problem is shown.
    console.allowed = {415}
    page.locator("#drop-zone").evaluate(
        """zone => {
            const files = new DataTransfer();
            files.items.add(new File(["not an image"], "notes.txt", {type: "text/plain"}));
            const drop = {dataTransfer: files, bubbles: true, cancelable: true};
            zone.dispatchEvent(new DragEvent("drop", drop));
        }"""
    )
    expect(summary).to_have_text("1 of 1 files: 0 stored, 1 refused")
    refused = page.locator("#ingest-results tr[data-status=failed]")
    expect(refused).to_contain_text("notes.txt")
    expect(refused).to_contain_text("415 Unsupported Media Type")
    expect(refused).to_contain_text("not an image in a supported format")
    console.allowed = set()

    # Browse: a page of 12 frames with their boxes, then the older rest.
    page.locator("#tab-ingest").focus()
    page.keyboard.press("ArrowRight")  # the tabs are reachable by keyboard
    expect(page.locator("#browse")).to_be_visible()
    page.locator("#browse-limit").select_option("12")
    page.locator("#browse-form button[type=submit]").click()
    cards = page.locator("#browse-grid .card")
    expect(cards).to_have_count(12)
    newest = sorted(listed, key=lambda frame: -frame["timestamp"])
    shown = cards.evaluate_all("cards => cards.map(card => card.dataset.frameId)")
    assert shown == [frame["frame_id"] for frame in newest[:12]]
    boxes = sum(len(frame["detections"]) for frame in newest[:12])
    expect(page.locator("#browse-grid rect.box[role=button]")).to_have_count(boxes)
    wait_for_images(page)
    page.screenshot(path=shots / "browse.png")
    page.locator("#browse-older").click()
    expect(cards).to_have_count(total - 12)
    expect(page.locator("#browse-older")).to_be_disabled()
    page.locator("#browse-newer").click()
    expect(cards).to_have_count(12)

    # Search by uploading a crop of a person the model finds: their frame ranks first.
    record, box = found_person(demo_frames, stored)
    query = crop(record.path, box, tmp_path / "query.jpg")
    page.locator("#tab-search").click()
    page.locator("#search-file").set_input_files(query)
    results = page.locator("#search-results li")
    expect(results).to_have_count(12)
    first = results.first
    assert first.get_attribute("data-frame-id") == stored[record.path.name]["frame_id"]
    matched = first.locator("rect.box.match")
    expect(matched).to_have_count(1)
    drawn = [float(matched.get_attribute(name)) for name in ("x", "y", "width", "height")]
    assert iou([drawn[0], drawn[1], drawn[0] + drawn[2], drawn[1] + drawn[3]], box) >= 0.5
    expect(first).to_contain_text("#1")
    expect(first).to_contain_text("similarity 0.")
    expect(first).to_contain_text(f"c{record.camera}")
    expect(first).to_contain_text("2027-01-01")
    expect(page.locator("#query-caption")).to_contain_text("query.jpg")
    similarities = [float(v) for v in results.evaluate_all("r => r.map(i => i.dataset.similarity)")]
    assert similarities == sorted(similarities, reverse=True)
    wait_for_images(page)
    page.screenshot(path=shots / "search.png")

    # Filters apply to the next search: a camera and a similarity floor.
    page.locator("#search-camera").fill(f"c{record.camera}")
    page.locator("#search-min-similarity").fill("0.5")
    page.locator("#search-run").click()
    expect(page.locator("#search-status")).to_contain_text("result")
    for item in results.all():
        expect(item).to_contain_text(f"c{record.camera}")
        assert float(item.get_attribute("data-similarity")) >= 0.5
    page.locator("#search-camera").fill("")
    page.locator("#search-min-similarity").fill("")

    # Click a result to search from it: the page shows what the API ranks for it.
    second = int(results.nth(1).get_attribute("data-detection-id"))
    results.nth(1).locator("button").click()
    expect(page.locator("#query-caption")).to_contain_text(f"Person {second} of frame")
    expect(results).to_have_count(12)
    assert result_ids(page) == api_search(server, second)

    # Select a detected person in the gallery, by keyboard.
    page.locator("#tab-browse").click()
    person = page.locator("#browse-grid rect.box[role=button]").first
    chosen = int(person.get_attribute("data-detection-id"))
    person.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#search")).to_be_visible()
    expect(page.locator("#query-caption")).to_contain_text(f"Person {chosen} of frame")
    expect(results).to_have_count(12)
    assert chosen not in result_ids(page) and result_ids(page) == api_search(server, chosen)

    # Draw a box over the same person on their frame: that frame ranks first.
    page.locator("#tab-browse").click()
    card = page.locator(
        f"#browse-grid .card[data-frame-id='{stored[record.path.name]['frame_id']}']"
    )
    if card.count() == 0:
        page.locator("#browse-older").click()
    expect(card).to_have_count(1)
    card.locator("button", has_text="Draw a box").click()
    overlay = card.locator("svg.boxes").bounding_box()
    frame = stored[record.path.name]
    scale_x, scale_y = overlay["width"] / frame["width"], overlay["height"] / frame["height"]
    x1, y1, x2, y2 = (float(v) for v in box)
    page.mouse.move(overlay["x"] + x1 * scale_x, overlay["y"] + y1 * scale_y)
    page.mouse.down()
    page.mouse.move(overlay["x"] + x2 * scale_x, overlay["y"] + y2 * scale_y, steps=5)
    page.mouse.up()
    expect(page.locator("#query-caption")).to_contain_text("drawn on")
    expect(results).to_have_count(12)
    assert results.first.get_attribute("data-frame-id") == frame["frame_id"]

    # Readable on a phone: nothing scrolls sideways on any tab.
    page.set_viewport_size({"width": 390, "height": 844})
    for tab in ("search", "browse", "ingest"):
        page.locator(f"#tab-{tab}").click()
        assert no_sideways_scroll(page), tab
    page.locator("#tab-search").click()
    page.screenshot(path=shots / "phone-search.png")

    page.close()
    assert console.unexpected == []
