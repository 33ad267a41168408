// The operators' page: ingest frames, browse the gallery, search by eye.
// Plain JavaScript over the service's own API; every call carries the API key (X-API-Key)
// and every image is fetched with it and shown through a blob: URL.

const KEY_STORAGE = "person-search.api-key";
const IMAGE_EXTENSIONS = /\.(jpe?g|png|webp|bmp|tiff?)$/i;
const UPLOADS_AT_ONCE = 2;
const IMAGE_CACHE_SIZE = 300;
const MIN_DRAWN_BOX = 4; // pixels of the frame: smaller drags are taken as clicks
const SVG = "http://www.w3.org/2000/svg";

const $ = (selector) => document.querySelector(selector);

// ---- the API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    const title = problem.title || "Error";
    super(problem.detail ? `${status} ${title}: ${problem.detail}` : `${status} ${title}`);
    this.status = status;
    this.problem = problem;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

async function request(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("X-API-Key", key);
  let response;
  try {
    response = await fetch(new URL(path, document.baseURI), { ...options, headers });
  } catch (error) {
    throw new ApiError(0, { title: "Network error", detail: `the service did not answer (${error.message})` });
  }
  if (!response.ok) {
    let problem = { title: response.statusText };
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) problem = await response.json().catch(() => problem);
    if (response.status === 401) needKey(problem.detail);
    throw new ApiError(response.status, problem);
  }
  return response;
}

async function api(path, options) {
  return (await request(path, options)).json();
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// ---- images, fetched with the key ---------------------------------------------------------

const images = new Map(); // path -> Promise<{url, blob}>

function image(path) {
  if (!images.has(path)) {
    const loading = request(path)
      .then((response) => response.blob())
      .then((blob) => ({ blob, url: URL.createObjectURL(blob) }));
    loading.catch(() => images.delete(path));
    images.set(path, loading);
    if (images.size > IMAGE_CACHE_SIZE) {
      const [oldest, entry] = images.entries().next().value;
      images.delete(oldest);
      entry.then((loaded) => URL.revokeObjectURL(loaded.url), () => {});
    }
  }
  return images.get(path);
}

const frameImagePath = (frameId) => `gallery/frames/${encodeURIComponent(frameId)}/image`;
const cropPath = (detectionId) => `gallery/detections/${detectionId}/crop`;

function forgetImages() {
  for (const entry of images.values()) entry.then((loaded) => URL.revokeObjectURL(loaded.url), () => {});
  images.clear();
}

// ---- small helpers -----------------------------------------------------------------------

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function pad(number) {
  return String(number).padStart(2, "0");
}

function formatTime(seconds) {
  if (seconds === null || seconds === undefined) return "no time";
  // The service refuses times a Date cannot hold, but a gallery stored before it did may
  // still have some (or a client may hand us anything): never print "NaN-NaN-NaN".
  const t = new Date(seconds * 1000);
  if (typeof seconds !== "number" || Number.isNaN(t.getTime())) return "invalid time";
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
}

// A datetime-local value is the browser's local time; the API takes Unix seconds.
function inputSeconds(input) {
  if (!input.value) return "";
  const millis = new Date(input.value).getTime();
  return Number.isFinite(millis) ? String(millis / 1000) : "";
}

function setStatus(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// ---- service status and the API key ----------------------------------------------------

let retryTimer = null;
let serviceOk = false; // the gallery answered: the key (if any) is right and the model loaded

async function refreshService() {
  clearTimeout(retryTimer);
  const line = $("#service");
  try {
    const stats = await api("gallery/stats");
    const first = !serviceOk;
    serviceOk = true;
    if (first && currentTab === "browse") loadBrowse();
    setStatus(line, `${stats.frames} frames, ${stats.detections} people · model ${stats.model_id}`);
    $("#key-form").classList.remove("needed");
    return true;
  } catch (error) {
    serviceOk = false;
    if (error.status === 401) return false; // needKey has said so
    setStatus(line, error.status === 503 ? `Loading: ${error.problem.detail}` : error.message, true);
    retryTimer = setTimeout(refreshService, 2000);
    return false;
  }
}

function needKey(detail) {
  $("#key-form").classList.add("needed");
  setStatus($("#service"), `This service needs an API key (${detail || "unauthorized"}).`, true);
}

$("#key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("#api-key");
  sessionStorage.setItem(KEY_STORAGE, input.value.trim());
  input.value = "";
  forgetImages();
  serviceOk = false; // the next answer counts as the first: the gallery reloads with the key
  await refreshService();
});

// ---- tabs ------------------------------------------------------------------------------

const TABS = ["ingest", "browse", "search"];
let currentTab = "ingest";

function showTab(name, reload = false) {
  const changed = name !== currentTab;
  currentTab = name;
  for (const tab of TABS) {
    const selected = tab === name;
    const button = $(`#tab-${tab}`);
    button.setAttribute("aria-selected", String(selected));
    button.tabIndex = selected ? 0 : -1;
    $(`#${tab}`).hidden = !selected;
  }
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  if (serviceOk && name === "browse" && (changed || reload || !browseLoaded)) loadBrowse();
}

for (const tab of TABS) {
  $(`#tab-${tab}`).addEventListener("click", () => showTab(tab));
}
$(".tabs").addEventListener("keydown", (event) => {
  const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
  if (!step) return;
  const next = TABS[(TABS.indexOf(currentTab) + step + TABS.length) % TABS.length];
  showTab(next);
  $(`#tab-${next}`).focus();
});

// ---- a frame with its boxes --------------------------------------------------------------

// A frame image under an SVG overlay whose user units are the frame's pixels, so boxes from
// the API are drawn as they are. `onBox(detection)` makes each box a button.
function frameView({ frameId, width, height, detections = [], highlight = null, onBox = null, label }) {
  const holder = element("div", { class: "frame" });
  const img = element("img", { alt: label, decoding: "async" });
  const overlay = svg("svg", { class: "boxes", preserveAspectRatio: "none", "aria-hidden": onBox ? "false" : "true" });
  const size = (w, h) => {
    overlay.setAttribute("viewBox", `0 0 ${w} ${h}`);
    holder.style.aspectRatio = `${w} / ${h}`;
  };
  if (width && height) size(width, height);
  img.addEventListener("load", () => {
    if (!width || !height) size(img.naturalWidth, img.naturalHeight);
  });
  for (const detection of detections) {
    const [x1, y1, x2, y2] = detection.box;
    const rect = svg("rect", {
      x: x1, y: y1, width: Math.max(x2 - x1, 1), height: Math.max(y2 - y1, 1),
      class: detection.id === highlight ? "box match" : "box",
      "data-detection-id": detection.id,
    });
    if (onBox) {
      rect.setAttribute("tabindex", "0");
      rect.setAttribute("role", "button");
      rect.setAttribute("aria-label", `Search for person ${detection.id} (detector score ${detection.score.toFixed(2)})`);
      const title = svg("title");
      title.textContent = `person ${detection.id}, score ${detection.score.toFixed(2)}: select to search`;
      rect.append(title);
      rect.addEventListener("click", (event) => {
        if (!holder.classList.contains("drawing")) {
          event.stopPropagation();
          onBox(detection);
        }
      });
      rect.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          onBox(detection);
        }
      });
    }
    overlay.append(rect);
  }
  holder.append(img, overlay);
  image(frameImagePath(frameId)).then(
    (loaded) => { img.src = loaded.url; },
    (error) => { holder.classList.add("broken"); holder.title = error.message; },
  );
  return { holder, overlay };
}

// Drag over a frame to draw a box, then search for what is inside it.
function enableDrawing(view, frame) {
  const { holder, overlay } = view;
  let start = null;
  let drawn = null;
  const point = (event) => {
    const bounds = overlay.getBoundingClientRect();
    const x = ((event.clientX - bounds.left) / bounds.width) * frame.width;
    const y = ((event.clientY - bounds.top) / bounds.height) * frame.height;
    return [Math.min(Math.max(x, 0), frame.width), Math.min(Math.max(y, 0), frame.height)];
  };
  const corners = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  overlay.addEventListener("pointerdown", (event) => {
    if (!holder.classList.contains("drawing")) return;
    event.preventDefault();
    overlay.setPointerCapture(event.pointerId);
    start = point(event);
    drawn = svg("rect", { class: "box drawn", x: start[0], y: start[1], width: 0, height: 0 });
    overlay.append(drawn);
  });
  overlay.addEventListener("pointermove", (event) => {
    if (!start) return;
    const [x1, y1, x2, y2] = corners(start, point(event));
    drawn.setAttribute("x", x1);
    drawn.setAttribute("y", y1);
    drawn.setAttribute("width", x2 - x1);
    drawn.setAttribute("height", y2 - y1);
  });
  overlay.addEventListener("pointerup", (event) => {
    if (!start) return;
    const box = corners(start, point(event)).map((v) => Math.round(v));
    start = null;
    drawn.remove();
    if (box[2] - box[0] < MIN_DRAWN_BOX || box[3] - box[1] < MIN_DRAWN_BOX) return;
    holder.classList.remove("drawing");
    searchDrawn(frame, box);
  });
}

// ---- ingest ------------------------------------------------------------------------------

const ingest = { total: 0, done: 0, failed: 0, queue: [], running: 0 };

function fileName(file) {
  return file.relativePath || file.webkitRelativePath || file.name;
}

function folderName(file) {
  const parts = fileName(file).split("/");
  return parts.length > 1 ? parts[parts.length - 2] : "";
}

function ingestFiles(files) {
  if (!files.length) return;
  files = [...files].sort((a, b) => fileName(a).localeCompare(fileName(b)));
  const mode = $("#ingest-time-mode").value;
  const start = Number(inputSeconds($("#ingest-start")));
  const step = Number($("#ingest-step").value) || 0;
  if (mode === "given" && !$("#ingest-start").value) {
    setStatus($("#ingest-summary"), "Choose a start time, or another time option.", true);
    return;
  }
  const fromFolder = $("#ingest-camera-folder").checked;
  const camera = $("#ingest-camera").value.trim();
  const table = $("#ingest-results");
  table.hidden = false;
  if (ingest.done === ingest.total) {
    Object.assign(ingest, { total: 0, done: 0, failed: 0 });
    table.tBodies[0].replaceChildren();
  }
  files.forEach((file, position) => {
    const outcome = element("td", { text: "waiting" });
    const row = element("tr", { "data-status": "waiting" }, element("td", { text: fileName(file) }), outcome);
    table.tBodies[0].append(row);
    let timestamp = "";
    if (mode === "modified") timestamp = String(file.lastModified / 1000);
    if (mode === "given") timestamp = String(start + position * step);
    ingest.queue.push({ file, row, outcome, camera: (fromFolder && folderName(file)) || camera, timestamp });
  });
  ingest.total += files.length;
  showProgress();
  while (ingest.running < UPLOADS_AT_ONCE && ingest.queue.length) uploadNext();
}

async function uploadNext() {
  const job = ingest.queue.shift();
  if (!job) return;
  ingest.running += 1;
  job.row.dataset.status = "sending";
  job.outcome.textContent = "sending…";
  const form = new FormData();
  form.append("files", job.file, fileName(job.file));
  if (job.camera) form.append("camera", job.camera);
  if (job.timestamp) form.append("timestamp", job.timestamp);
  try {
    const answer = await api("gallery", { method: "POST", body: form });
    const frame = answer.frames[0];
    const people = frame.detections.length;
    job.row.dataset.status = "stored";
    job.row.dataset.frameId = frame.frame_id;
    job.outcome.textContent = `stored as ${frame.frame_id}: ${people} ${people === 1 ? "person" : "people"}`;
  } catch (error) {
    ingest.failed += 1;
    job.row.dataset.status = "failed";
    job.outcome.replaceChildren(element("span", { class: "problem", text: error.message }));
  }
  ingest.running -= 1;
  ingest.done += 1;
  showProgress();
  if (ingest.queue.length) uploadNext();
  else if (ingest.running === 0) {
    browseLoaded = false;
    refreshService();
  }
}

function showProgress() {
  const bar = $("#ingest-progress");
  bar.max = Math.max(ingest.total, 1);
  bar.value = ingest.done;
  const stored = ingest.done - ingest.failed;
  const finished = ingest.done === ingest.total;
  const text = `${ingest.done} of ${ingest.total} files: ${stored} stored, ${ingest.failed} refused${finished ? "" : "…"}`;
  setStatus($("#ingest-summary"), text, finished && ingest.failed > 0);
}

// Files and folders dropped on the page. Folders are walked for images; files dropped one
// by one are sent whatever they are, so the service says what is wrong with them.
async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items]
    .filter((item) => item.kind === "file")
    .map((item) => [item.webkitGetAsEntry ? item.webkitGetAsEntry() : null, item.getAsFile()]);
  const files = [];
  for (const [entry, file] of entries) {
    if (entry && entry.isDirectory) files.push(...(await walk(entry)));
    else if (file) files.push(file);
  }
  return files;
}

async function walk(directory) {
  const reader = directory.createReader();
  const files = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) return files;
    for (const entry of batch) {
      if (entry.isDirectory) files.push(...(await walk(entry)));
      else if (IMAGE_EXTENSIONS.test(entry.name)) {
        const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
        file.relativePath = entry.fullPath.replace(/^\//, "");
        files.push(file);
      }
    }
  }
}

function dropTarget(zone, onFiles) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    event.stopPropagation();
    zone.classList.remove("over");
    onFiles(await droppedFiles(event.dataTransfer));
  });
}

// A drop that misses a drop zone must not navigate away to the dropped file.
window.addEventListener("dragover", (event) => event.preventDefault());
window.addEventListener("drop", (event) => event.preventDefault());

dropTarget($("#drop-zone"), ingestFiles);
$("#ingest-files").addEventListener("change", (event) => {
  ingestFiles([...event.target.files]);
  event.target.value = "";
});
$("#ingest-folder").addEventListener("change", (event) => {
  ingestFiles([...event.target.files].filter((file) => IMAGE_EXTENSIONS.test(file.name)));
  event.target.value = "";
});
$("#drop-zone").addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    $("#ingest-files").click();
  }
});

// ---- browse ------------------------------------------------------------------------------

let browseLoaded = false;
const browsePages = { cursors: [null], index: 0 };

function browseFilters() {
  return {
    camera: $("#browse-camera").value.trim(),
    start: inputSeconds($("#browse-start")),
    end: inputSeconds($("#browse-end")),
    limit: $("#browse-limit").value,
  };
}

let browseRequest = 0; // only the latest request may fill the grid

async function loadBrowse() {
  browseLoaded = true;
  const status = $("#browse-status");
  const grid = $("#browse-grid");
  const cursor = browsePages.cursors[browsePages.index];
  const mine = ++browseRequest;
  setStatus(status, "Loading…");
  let page;
  try {
    page = await api(`gallery/frames${query({ ...browseFilters(), cursor })}`);
  } catch (error) {
    if (mine !== browseRequest) return;
    setStatus(status, error.message, true);
    grid.replaceChildren();
    return;
  }
  if (mine !== browseRequest) return;
  browsePages.cursors.length = browsePages.index + 1;
  if (page.next_cursor) browsePages.cursors.push(page.next_cursor);
  $("#browse-newer").disabled = browsePages.index === 0;
  $("#browse-older").disabled = !page.next_cursor;
  $("#browse-page").textContent = `page ${browsePages.index + 1}`;
  const people = page.frames.reduce((sum, frame) => sum + frame.detections.length, 0);
  setStatus(status, page.frames.length ? `${page.frames.length} frames, ${people} people on this page` : "No frames match.");
  grid.replaceChildren(...page.frames.map(frameCard));
}

function frameCard(frame) {
  const label = `frame ${frame.filename || frame.frame_id}, camera ${frame.camera || "none"}, ${formatTime(frame.timestamp)}`;
  const view = frameView({
    frameId: frame.frame_id,
    width: frame.width,
    height: frame.height,
    detections: frame.detections,
    onBox: (detection) => searchStored(detection.id),
    label,
  });
  enableDrawing(view, frame);
  const draw = element("button", { type: "button", class: "small", "aria-pressed": "false", text: "Draw a box" });
  draw.addEventListener("click", () => {
    const drawing = view.holder.classList.toggle("drawing");
    draw.setAttribute("aria-pressed", String(drawing));
  });
  const count = frame.detections.length;
  return element(
    "article",
    { class: "card", "data-frame-id": frame.frame_id },
    view.holder,
    element(
      "div",
      { class: "meta" },
      element("strong", { text: frame.filename || frame.frame_id }),
      element("span", { text: `${frame.camera || "no camera"} · ${formatTime(frame.timestamp)}` }),
      element("span", { text: `${count} ${count === 1 ? "person" : "people"}` }),
      draw,
    ),
  );
}

$("#browse-form").addEventListener("submit", (event) => {
  event.preventDefault();
  Object.assign(browsePages, { cursors: [null], index: 0 });
  loadBrowse();
});
$("#browse-older").addEventListener("click", () => {
  browsePages.index += 1;
  loadBrowse();
});
$("#browse-newer").addEventListener("click", () => {
  browsePages.index = Math.max(0, browsePages.index - 1);
  loadBrowse();
});

// ---- search ------------------------------------------------------------------------------

let currentQuery = null; // {fields(form), describe(answer) -> caption, preview() -> node}

function searchFilters(form) {
  const fields = {
    top_k: $("#search-top-k").value || "12",
    min_similarity: $("#search-min-similarity").value,
    camera: $("#search-camera").value.trim(),
    start: inputSeconds($("#search-start")),
    end: inputSeconds($("#search-end")),
  };
  for (const [name, value] of Object.entries(fields)) if (value !== "") form.append(name, value);
  return form;
}

let uploadUrl = null; // the uploaded query's blob: URL, released when the next one comes

function searchUpload(file) {
  if (uploadUrl) URL.revokeObjectURL(uploadUrl);
  const url = URL.createObjectURL(file);
  uploadUrl = url;
  runSearch({
    build: (form) => form.append("query", file, file.name),
    preview: () => element("img", { src: url, alt: `uploaded query ${file.name}` }),
    describe: (answer) => `Uploaded ${file.name}: ${answer.query.source === "detection"
      ? `the detector found the person (IoU ${answer.query.iou.toFixed(2)})`
      : "the whole box was embedded"}`,
  });
}

function searchStored(detectionId) {
  runSearch({
    build: (form) => form.append("detection_id", String(detectionId)),
    preview: () => {
      const img = element("img", { alt: `stored person ${detectionId}` });
      image(cropPath(detectionId)).then((loaded) => { img.src = loaded.url; }, () => {});
      return img;
    },
    describe: (answer) => `Person ${detectionId} of frame ${answer.query.frame_id} (left out of the results)`,
  });
}

async function searchDrawn(frame, box) {
  let loaded;
  try {
    loaded = await image(frameImagePath(frame.frame_id));
  } catch (error) {
    showTab("search");
    setStatus($("#search-status"), error.message, true);
    return;
  }
  runSearch({
    build: (form) => {
      form.append("query", loaded.blob, frame.filename || frame.frame_id);
      form.append("box", box.join(","));
    },
    preview: () => frameView({
      frameId: frame.frame_id, width: frame.width, height: frame.height,
      detections: [{ id: -1, box, score: 1 }], highlight: -1, label: "the drawn box",
    }).holder,
    describe: (answer) => `Box ${box.join(",")} drawn on ${frame.filename || frame.frame_id}: ${answer.query.source === "detection"
      ? `the detector found the person (IoU ${answer.query.iou.toFixed(2)})`
      : "the box was embedded as drawn"}`,
  });
}

async function runSearch(next) {
  currentQuery = next;
  showTab("search");
  $("#search-run").disabled = false;
  const view = $("#query-view");
  view.hidden = false;
  view.querySelector(".query-image").replaceChildren(next.preview());
  $("#query-caption").textContent = "";
  const status = $("#search-status");
  const list = $("#search-results");
  setStatus(status, "Searching…");
  list.replaceChildren();
  list.setAttribute("aria-busy", "true");
  const form = new FormData();
  next.build(form);
  let answer;
  try {
    answer = await api("search", { method: "POST", body: searchFilters(form) });
  } catch (error) {
    if (currentQuery === next) setStatus(status, error.message, true);
    list.removeAttribute("aria-busy");
    return;
  } finally {
    $("#results-heading").focus();
  }
  if (currentQuery !== next) return; // a newer search has started
  list.removeAttribute("aria-busy");
  $("#query-caption").textContent = next.describe(answer);
  const count = answer.results.length;
  setStatus(status, `${count} ${count === 1 ? "result" : "results"} in ${Math.round(answer.took_ms)} ms`);
  list.replaceChildren(...answer.results.map(resultCard));
}

function resultCard(hit, rank) {
  const label = `Rank ${rank + 1}, similarity ${hit.similarity.toFixed(3)}, camera ${hit.camera || "none"}, ${formatTime(hit.timestamp)}: search from this person`;
  const button = element(
    "button",
    { type: "button", class: "result-button", "aria-label": label },
    frameView({
      frameId: hit.frame_id,
      detections: [{ id: hit.detection_id, box: hit.box, score: hit.score }],
      highlight: hit.detection_id,
      label: `frame ${hit.filename || hit.frame_id}`,
    }).holder,
    element(
      "span",
      { class: "meta" },
      element("strong", { class: "rank", text: `#${rank + 1}` }),
      element("span", { class: "similarity", text: `similarity ${hit.similarity.toFixed(3)}` }),
      element("span", { text: `${hit.camera || "no camera"} · ${formatTime(hit.timestamp)}` }),
      element("span", { class: "name", text: hit.filename || hit.frame_id }),
    ),
  );
  button.addEventListener("click", () => searchStored(hit.detection_id));
  return element(
    "li",
    { class: "card", "data-frame-id": hit.frame_id, "data-detection-id": hit.detection_id, "data-similarity": hit.similarity },
    button,
  );
}

$("#search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (currentQuery) runSearch(currentQuery);
});
$("#search-file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) searchUpload(file);
  event.target.value = "";
});
dropTarget($("#query-drop"), (files) => {
  if (files.length) searchUpload(files[0]);
});
$("#query-drop").addEventListener("keydown", (event) => {
  if (event.target === $("#query-drop") && (event.key === "Enter" || event.key === " ")) {
    event.preventDefault();
    $("#search-file").click();
  }
});

// ---- start -------------------------------------------------------------------------------

showTab(TABS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "ingest");
refreshService();
