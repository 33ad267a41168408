"""Per-image latency of our network against the detectors a user would pick instead, in one run.

    python -m benchmarks.latency --config r50 [--device cpu|cuda] [--providers cpu|cuda|tensorrt]
        [--batch N] [--fp16] [--int8] [--size 1500x900] [--persons K] [--runs 20] [--json]

Contestants, all with random weights (nothing is downloaded) and the same fixed work per frame:
exactly K people leave every detector, and our K go through the ROI branch.

- ``ours-ort``: our network exported (``training.export``) and run by the service's engine
  (``inference.engine.Engine``: pad, ONNX Runtime, boxes back to frame pixels); ``ours-int8``
  the same export with int8 convs (``training.quantize``, calibrated on synthetic frames), with
  ``--int8``; ``ours-eager``: the same weights in PyTorch eager.
  K is forced by an inference config of the network (``forced_k_config``): every candidate
  passes the class threshold (0), NMS keeps every box (IoU 1) and the top K are kept.
- ``fcos``: torchvision FCOS ResNet-50-FPN, ``frcnn``: torchvision Faster R-CNN ResNet-50-FPN
  (1000 RPN proposals through its box head, its own setting), both with two classes (person,
  background), score threshold 0 and K detections per image, resized to the same input size.
- ``fcos+reid``: the two-stage stack: the same FCOS, then a ResNet-50 re-id network (2048-d
  pooled features) on the K detected people cropped to 256x128.

Frames are synthetic (``training.synth``) at ``--size``; every model sees the same frames. After
``--warmup`` rounds, ``--runs`` timed rounds interleave the models (one batch of ``--batch``
frames each per round) so a busy machine slows them alike. Figures are ms per image (batch time
/ batch): median, 10th and 90th percentiles, and each peer's median over ours. With ``--int8``
the int8 graph's detections and embeddings are compared with fp32 on every frame (not timed).
ONNX Runtime and PyTorch get the same thread count (``--threads``, default one per core).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import torchvision
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import fasterrcnn_resnet50_fpn, fcos_resnet50_fpn
from torchvision.ops import roi_align

from inference.card import BATCH_OUTPUT, OUTPUT_NAMES, load_model_card
from inference.engine import Engine
from inference.preprocess import PIXEL_MEAN, PIXEL_STD, load_rgb, resize_and_pad
from training.export import export_onnx, half_precision
from training.model import build_model
from training.model.config import ModelConfig, resolve_config
from training.model.network import PersonSearchModel
from training.quantize import agreement, quantize_int8
from training.synth import generate

REID_CROP = (256, 128)  # height, width: the usual person re-id input
REID = "reid"  # the second stage alone
STACK = "fcos+reid"
BOUND = "ours-ort-bound"  # with --io-binding
PEERS = ("fcos", "frcnn", STACK)
FRAMES = 4  # distinct frames, taken in turn (at least the batch)
CALIBRATION = 2  # of them calibrate the int8 graph; the others compare it with fp32
# Round per-image figures to what a 2-core machine's noise leaves meaningful.
DIGITS = 1


@dataclasses.dataclass(frozen=True)
class Contestant:
    name: str
    what: str  # runtime and precision, for the table
    # Runs a batch of HxWx3 uint8 frames (checking that K people were found in each); returns
    # the ms of the part to time when the contestant times itself, else None (the whole call).
    run: Callable[[list[np.ndarray]], float | None]


def forced_k_config(config: str | ModelConfig, persons: int) -> ModelConfig:
    """The network with an inference config that returns exactly ``persons`` detections on any
    frame (with at least that many candidates): the same work whatever the weights find."""
    return dataclasses.replace(
        resolve_config(config), cls_threshold=0.0, nms_iou=1.0, max_detections=persons
    )


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__)
    parser.add_argument("--config", default="r50", help="our network's config (r50, r18, tiny)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch models")
    parser.add_argument(
        "--providers", default=None, help="ONNX Runtime providers, comma list (default: device)"
    )
    parser.add_argument("--batch", type=int, default=1, help="frames per model call")
    parser.add_argument("--fp16", action="store_true", help="half precision (cuda)")
    parser.add_argument("--int8", action="store_true", help="also our int8 graph (cpu)")
    parser.add_argument(
        "--io-binding", action="store_true", help="also our graph through IO binding"
    )
    parser.add_argument(
        "--cuda-graph", action="store_true", help="capture the IO-bound run as a CUDA graph"
    )
    parser.add_argument("--size", default="1500x900", help="frame WxH (= the input size)")
    parser.add_argument("--persons", type=int, default=10, help="K people per frame")
    parser.add_argument("--runs", type=int, default=20, help="timed rounds (>= 20 to record)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: cores)"
    )
    parser.add_argument("--models", default=None, help="comma list of contestants (default: all)")
    parser.add_argument("--workdir", type=Path, default=None, help="keeps exports between runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    args.size = parse_size(args.size)
    args.providers = (args.providers or args.device).split(",")
    if args.batch < 1 or args.persons < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("--batch, --persons and --runs must be >= 1, --warmup >= 0")
    if args.fp16 and args.device != "cuda":
        parser.error("--fp16 needs --device cuda (CPUs run fp16 convs slower than fp32, if at all)")
    if args.cuda_graph and not (args.io_binding and args.device == "cuda"):
        parser.error("--cuda-graph needs --io-binding and --device cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    args.threads = args.threads or os.cpu_count() or 1
    return args


def synthetic_frames(workdir: Path, size: tuple[int, int], count: int, seed: int) -> list:
    root = generate(workdir / "frames", "prw", frames=max(count, 2), identities=8, cameras=2,
                    seed=seed, size=size)  # fmt: skip
    return [load_rgb(path) for path in sorted((root / "frames").glob("*.jpg"))[:count]]


def export_ours(model: PersonSearchModel, out: Path, fp16: bool, size: tuple[int, int]) -> Path:
    """The export of ``model`` at ``out`` (kept under --workdir: an r50 export takes minutes)."""
    path = out / "model.onnx"
    card = path.with_name("model.json")
    wanted = {"config": model.config.to_dict(), "max_size": [max(size), min(size)]}
    if path.is_file() and card.is_file():
        written = json.loads(card.read_text())
        if all(written.get(key) == value for key, value in wanted.items()):
            return path
    export_onnx(model, path, fp16=fp16, card_fields={"max_size": (max(size), min(size))})
    return path


def ours_ort(path: Path, args: argparse.Namespace, what: str, name: str):
    # min_score 0: all K detections count (random weights score them all near 0)
    engine = Engine(path, args.providers, min_score=0.0, threads=args.threads, max_batch=args.batch)
    engine.warm_up()
    persons = args.persons

    def run(frames: list[np.ndarray]) -> float | None:
        # the frames share a size, so a graph with a batch dimension takes them in one run
        counts = {len(found.scores) for found in engine.detect_batch(frames)}
        _one_count(counts, name, persons)
        return None

    return Contestant(name, f"{what}, {engine.providers[0]}", run), engine


def ours_bound(path: Path, args: argparse.Namespace) -> Contestant:
    """Our graph through IO binding, as a GPU service would run it: the padded uint8 frame is
    copied to the device, the outputs stay there (only the detection count is read back).
    With ``--cuda-graph`` ONNX Runtime is asked to capture the run as a CUDA graph."""
    on_gpu = args.device == "cuda"
    device = "cuda" if on_gpu else "cpu"
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    provider: str | tuple[str, dict[str, str]] = "CPUExecutionProvider"
    if on_gpu:
        provider = ("CUDAExecutionProvider", {"enable_cuda_graph": str(int(args.cuda_graph))})
    session = ort.InferenceSession(str(path), options, providers=[provider])
    card = load_model_card(path).card
    no_boxes = ort.OrtValue.ortvalue_from_numpy(np.zeros((0, 4), np.float32), device, 0)

    def run(frames: list[np.ndarray]) -> float | None:
        images = [
            resize_and_pad(frame, card.max_size, card.size_divisor, pad_colour=card.pad_colour)
            for frame in frames
        ]
        # a graph with a batch dimension takes the (same-size) frames in one run
        runs = (
            [np.stack([i.image for i in images])] if card.batch else [i.image[None] for i in images]
        )
        counts: set[int] = set()
        for batch in runs:
            binding = session.io_binding()
            binding.bind_ortvalue_input("image", ort.OrtValue.ortvalue_from_numpy(batch, device, 0))
            binding.bind_ortvalue_input("boxes", no_boxes)
            for output in (*OUTPUT_NAMES, BATCH_OUTPUT) if card.batch else OUTPUT_NAMES:
                binding.bind_output(output, device)
            session.run_with_iobinding(binding)
            if card.batch:  # only the image index of each detection comes back to the host
                owners = binding.get_outputs()[-1].numpy()
                counts.update(int((owners == i).sum()) for i in range(len(batch)))
            else:
                counts.add(binding.get_outputs()[1].shape()[0])
        _one_count(counts, BOUND, args.persons)
        return None

    graph = ", CUDA graph" if args.cuda_graph else ""
    what = f"ONNX Runtime {ort.__version__}, {_precision(args)}, IO binding{graph}"
    return Contestant(BOUND, f"{what}, {session.get_providers()[0]}", run)


def ours_eager(model: PersonSearchModel, args: argparse.Namespace) -> Contestant:
    device = torch.device(args.device)
    net = (half_precision(model) if args.fp16 else model.eval()).to(device)
    max_size = (max(args.size), min(args.size))

    def run(frames: list[np.ndarray]) -> float | None:
        counts: set[int] = set()
        for frame in frames:
            image = torch.from_numpy(resize_and_pad(frame, max_size).image[None]).to(device)
            with torch.inference_mode():
                counts.add(len(net.detect_and_embed(image, None)["scores"]))
        _sync(device)
        _one_count(counts, "ours-eager", args.persons)
        return None

    precision = "fp16" if args.fp16 else "fp32"
    return Contestant("ours-eager", f"PyTorch {torch.__version__} eager, {precision}", run)


def torch_detector(kind: str, size: tuple[int, int], persons: int) -> nn.Module:
    """A torchvision detector with random weights, one class of object, K detections out."""
    common: dict[str, Any] = {
        "weights": None,
        "weights_backbone": None,
        "num_classes": 2,
        "min_size": min(size),
        "max_size": max(size),
    }
    if kind == "fcos":
        return fcos_resnet50_fpn(**common, score_thresh=0.0, detections_per_img=persons)
    return fasterrcnn_resnet50_fpn(**common, box_score_thresh=0.0, box_detections_per_img=persons)


class ReidNet(nn.Module):
    """ResNet-50 with its classifier removed: 2048-d pooled features of 256x128 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = resnet50(weights=None)
        self.trunk.fc = nn.Identity()
        self.register_buffer("mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1) / 255)
        self.register_buffer("std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1) / 255)

    def forward(self, images: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        crops = roi_align(images, boxes, REID_CROP, 1.0, 2, aligned=True)
        return nn.functional.normalize(self.trunk((crops - self.mean) / self.std), dim=1)


def peer(name: str, detector: nn.Module, args: argparse.Namespace) -> Contestant:
    device = torch.device(args.device)
    detector = detector.to(device).eval().to(_dtype(args))

    def run(frames: list[np.ndarray]) -> float | None:
        with torch.inference_mode():
            found = detector(_tensors(frames, args))
        _sync(device)
        _one_count({len(f["boxes"]) for f in found}, name, args.persons)
        return None

    return Contestant(name, f"torchvision {torchvision.__version__} eager, {_precision(args)}", run)


def reid_stage(detector: nn.Module, args: argparse.Namespace) -> Contestant:
    """The second stage of FCOS + re-id alone: ResNet-50 on the K people FCOS found in the
    same frames (found untimed, once per frame); the stack's time is FCOS's plus this."""
    device = torch.device(args.device)
    reid = ReidNet().to(device).eval().to(_dtype(args))
    boxes_of: dict[int, torch.Tensor] = {}

    def run(frames: list[np.ndarray]) -> float | None:
        images = _tensors(frames, args)
        with torch.inference_mode():
            for frame, image in zip(frames, images, strict=True):
                if id(frame) not in boxes_of:
                    boxes_of[id(frame)] = detector([image])[0]["boxes"]
            boxes = [boxes_of[id(frame)] for frame in frames]
            _sync(device)
            began = time.perf_counter()
            reid(torch.stack(images), boxes)
            _sync(device)
        _one_count({len(b) for b in boxes}, REID, args.persons)
        return (time.perf_counter() - began) * 1000

    return Contestant(REID, f"torchvision {torchvision.__version__} eager, {_precision(args)}", run)


def _tensors(frames: list[np.ndarray], args: argparse.Namespace) -> list[torch.Tensor]:
    device, dtype = torch.device(args.device), _dtype(args)
    return [torch.from_numpy(f.copy()).to(device).permute(2, 0, 1).to(dtype) / 255 for f in frames]


def _dtype(args: argparse.Namespace) -> torch.dtype:
    return torch.float16 if args.fp16 else torch.float32


def _precision(args: argparse.Namespace) -> str:
    return "fp16" if args.fp16 else "fp32"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _one_count(counts: set[int], name: str, persons: int) -> None:
    if counts != {persons}:
        raise RuntimeError(f"{name} found {sorted(counts)} people per frame, not {persons}")


def contestants(args: argparse.Namespace, work: Path, frames: list[np.ndarray]):
    """The models to time, and (with --int8) the engines to compare."""
    wanted = set(args.models.split(",")) if args.models else None
    torch.manual_seed(args.seed)
    model = build_model(forced_k_config(args.config, args.persons), num_ids=1, queue_size=0)
    precision = "fp16" if args.fp16 else "fp32"
    onnx_dir = (
        work / f"ours-{args.config}-{args.size[0]}x{args.size[1]}-k{args.persons}-{precision}"
    )
    chosen: list[Contestant] = []
    engines: dict[str, Engine] = {}

    def include(name: str) -> bool:
        return wanted is None or name in wanted

    if include("ours-ort") or args.int8:
        path = export_ours(model, onnx_dir, args.fp16, args.size)
        what = f"ONNX Runtime {ort.__version__}, {precision}"
        contestant, engines["fp32"] = ours_ort(path, args, what, "ours-ort")
        chosen.append(contestant)
        if args.io_binding:
            chosen.append(ours_bound(path, args))
        if args.int8:
            int8_path = onnx_dir.with_name(onnx_dir.name + "-int8") / "model.onnx"
            if not int8_path.is_file() or int8_path.stat().st_mtime < path.stat().st_mtime:
                quantize_int8(path, int8_path, frames[:CALIBRATION])
            what = f"ONNX Runtime {ort.__version__}, int8 convs"
            contestant, engines["int8"] = ours_ort(int8_path, args, what, "ours-int8")
            chosen.append(contestant)
    if include("ours-eager"):
        chosen.append(ours_eager(model, args))
    fcos = torch_detector("fcos", args.size, args.persons)
    if include("fcos") or include(STACK):
        chosen.append(peer("fcos", fcos, args))
    if include("frcnn"):
        chosen.append(peer("frcnn", torch_detector("frcnn", args.size, args.persons), args))
    if include(STACK):
        chosen.append(reid_stage(fcos, args))
    return chosen, engines


def measure(chosen: list[Contestant], frames: list[np.ndarray], args) -> dict[str, list[float]]:
    """ms per image of each contestant, rounds interleaved."""
    times: dict[str, list[float]] = {c.name: [] for c in chosen}
    for round_index in range(args.warmup + args.runs):
        start = round_index * args.batch
        batch = [frames[(start + i) % len(frames)] for i in range(args.batch)]
        for contestant in chosen:
            began = time.perf_counter()
            own_ms = contestant.run(batch)
            elapsed = (time.perf_counter() - began) * 1000 if own_ms is None else own_ms
            if round_index >= args.warmup:
                times[contestant.name].append(elapsed / args.batch)
        # a long run's progress (and its figures so far) on stderr, one JSON line per round
        done = {name: round(samples[-1], DIGITS) for name, samples in times.items() if samples}
        print(json.dumps({"round": round_index, "ms_per_image": done}), file=sys.stderr)
    if REID in times:  # the two-stage stack: FCOS and re-id on its people, round by round
        times[STACK] = [a + b for a, b in zip(times["fcos"], times[REID], strict=True)]
    return times


def report(args, chosen, times, agreement) -> dict[str, Any]:
    rows = []
    described = {c.name: c.what for c in chosen} | {STACK: f"fcos + {REID}, summed per round"}
    for name, samples in times.items():
        p10, p50, p90 = np.percentile(samples, [10, 50, 90])
        rows.append(
            {
                "model": name,
                "runtime": described[name],
                "median_ms": round(float(p50), DIGITS),
                "p10_ms": round(float(p10), DIGITS),
                "p90_ms": round(float(p90), DIGITS),
            }
        )
    medians = {row["model"]: row["median_ms"] for row in rows}
    ratios = {
        f"{other}/{ours}": round(medians[other] / medians[ours], 2)
        for ours in ("ours-ort", BOUND, "ours-int8")
        if ours in medians
        for other in (*PEERS, "ours-eager")
        if other in medians
    }
    return {
        "config": args.config,
        "size": f"{args.size[0]}x{args.size[1]}",
        "persons": args.persons,
        "batch": args.batch,
        "runs": args.runs,
        "warmup": args.warmup,
        "device": args.device,
        "providers": args.providers,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or '?'}",
        "versions": {
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
        "rows": rows,
        "ratios": ratios,
        "int8_vs_fp32": agreement,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        frames = synthetic_frames(Path(scratch), args.size, max(args.batch, FRAMES), args.seed)
        chosen, engines = contestants(args, work, frames)
        if not chosen:
            raise SystemExit(f"--models {args.models}: none of ours-ort, ours-eager, {PEERS}")
        times = measure(chosen, frames, args)
        held_out = frames[CALIBRATION:]
        close = agreement(engines["fp32"], engines["int8"], held_out) if args.int8 else None
    result = report(args, chosen, times, close)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"{result['config']} at {result['size']}, K={args.persons} people per frame, batch "
        f"{args.batch}, {args.runs} rounds after {args.warmup} warm-up, {args.threads} threads"
    )
    print("| model | runtime | median ms/image | p10 | p90 |\n|---|---|---:|---:|---:|")
    for row in result["rows"]:
        print("| " + " | ".join(str(value) for value in row.values()) + " |")
    for pair, ratio in result["ratios"].items():
        print(f"{pair}: {ratio}x")
    if close is not None:
        print("int8 vs fp32:", json.dumps(close))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
