"""Can the AFA neck's deformable convs be made int8 for the CPU? Two exportable rewrites timed
against ONNX Runtime's DeformConv op at one layer's shape, fp32 and int8.

    python -m benchmarks.deform_conv [--channels 768,256] [--size 116x188] [--runs 5] [--threads 1]

The default shape is the r50 neck's output conv at 1504x928 (768 -> 256 channels on the stride-8
map), the largest of the four. ONNX Runtime has no int8 DeformConv, so after ``training.quantize``
these convs are the largest item of the int8 graph (docs/BENCHMARKS.md). Both rewrites compute
exactly what torchvision's deform_conv2d computes (bilinear samples at p + k + offset, zeros
outside) and put its multiply-adds in an op that static quantisation reaches:

- ``taps-conv``: kernel first. y_k = W_k x for the nine taps in one 1x1 Conv (9*O outputs), then
  each y_k sampled at its own positions (GridSample) and the nine summed. Sampling is linear, so
  sampling W_k x equals W_k applied to the sampled x; only O channels are sampled, not C.
- ``taps-matmul``: the same product as a MatMul on [HW, C] rows, and the bilinear sampling as
  four row Gathers (one per corner) weighted and summed.

Prints, per formulation and precision, the median ms of ``--runs`` interleaved runs, the largest
difference from the DeformConv op's output, and ONNX Runtime's kernel time per op type.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from torch import Tensor, nn
from torchvision.ops import deform_conv2d


def sample_positions(offset: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Rows and columns [B, 9, H, W] each tap samples (offset [B, 18, H, W]: (dy, dx) per tap)."""
    ys = torch.arange(height, dtype=offset.dtype).view(1, 1, height, 1)
    xs = torch.arange(width, dtype=offset.dtype).view(1, 1, 1, width)
    taps = torch.arange(9)
    rows = ys + (taps // 3 - 1).to(offset.dtype).view(1, 9, 1, 1) + offset[:, 0::2]
    columns = xs + (taps % 3 - 1).to(offset.dtype).view(1, 9, 1, 1) + offset[:, 1::2]
    return rows, columns


def taps_conv(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    batch, _, height, width = x.shape
    outputs = weight.shape[0]
    tap_weight = weight.permute(2, 3, 0, 1).reshape(9 * outputs, -1, 1, 1)  # tap-major
    per_tap = F.conv2d(x, tap_weight).view(batch * 9, outputs, height, width)
    rows, columns = sample_positions(offset, height, width)
    # align_corners=True maps -1..1 to pixel centres 0..size-1
    grid = torch.stack([2 * columns / (width - 1) - 1, 2 * rows / (height - 1) - 1], dim=-1)
    sampled = F.grid_sample(
        per_tap, grid.view(batch * 9, height, width, 2), align_corners=True, padding_mode="zeros"
    )
    return sampled.view(batch, 9, outputs, height, width).sum(1) + bias.view(1, -1, 1, 1)


def taps_matmul(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    batch, channels, height, width = x.shape
    outputs, cells = weight.shape[0], height * width
    tap_weight = weight.permute(1, 2, 3, 0).reshape(channels, 9 * outputs)
    per_tap = torch.matmul(x.flatten(2).transpose(1, 2), tap_weight)  # [B, HW, 9*O]
    per_tap = per_tap.view(batch, cells, 9, outputs).transpose(1, 2).reshape(-1, outputs)
    rows, columns = sample_positions(offset, height, width)
    top, left = torch.floor(rows), torch.floor(columns)
    down, right = rows - top, columns - left
    first_row = (torch.arange(batch * 9) * cells).view(batch, 9, 1, 1)
    out = torch.zeros(())
    for dy, dx, share in (
        (0, 0, (1 - down) * (1 - right)),
        (0, 1, (1 - down) * right),
        (1, 0, down * (1 - right)),
        (1, 1, down * right),
    ):
        row, column = top + dy, left + dx
        inside = (row >= 0) & (row <= height - 1) & (column >= 0) & (column <= width - 1)
        index = row.clamp(0, height - 1).long() * width + column.clamp(0, width - 1).long()
        gathered = per_tap[(index + first_row).flatten()]
        out = out + gathered * (share * inside.to(share.dtype)).flatten().unsqueeze(1)
    out = out.view(batch, 9, cells, outputs).sum(1).transpose(1, 2)
    return out.reshape(batch, outputs, height, width) + bias.view(1, -1, 1, 1)


class Layer(nn.Module):
    """A deformable 3x3 conv with its offset predictor, computed one of three ways."""

    def __init__(self, inputs: int, outputs: int, formulation: str) -> None:
        super().__init__()
        self.offset = nn.Conv2d(inputs, 18, 3, padding=1)
        self.weight = nn.Parameter(torch.randn(outputs, inputs, 3, 3) / (9 * inputs) ** 0.5)
        self.bias = nn.Parameter(torch.randn(outputs) * 0.1)
        nn.init.normal_(self.offset.weight, std=0.01)  # offsets of a few pixels
        self.formulation = formulation

    def forward(self, x: Tensor) -> Tensor:
        offset = self.offset(x)
        if self.formulation == "op":
            return deform_conv2d(x, offset, self.weight, self.bias, padding=1)
        if self.formulation == "taps-conv":
            return taps_conv(x, offset, self.weight, self.bias)
        return taps_matmul(x, offset, self.weight, self.bias)


class _Once(CalibrationDataReader):
    def __init__(self, feed: dict[str, np.ndarray]) -> None:
        self._feeds = iter([feed])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def export(layer: Layer, x: Tensor, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(layer, (x,), dynamo=True, opset_version=19, input_names=["x"])
        assert program is not None  # the dynamo exporter always returns its program
        program.save(str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", default="768,256", help="inputs,outputs")
    parser.add_argument("--size", default="116x188", help="HxW of the feature map")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    inputs, outputs = (int(v) for v in args.channels.split(","))
    height, width = (int(v) for v in args.size.split("x"))
    torch.manual_seed(0)
    x = torch.randn(1, inputs, height, width)
    reference = Layer(inputs, outputs, "op").eval()
    feed = {"x": x.numpy()}
    with tempfile.TemporaryDirectory() as work:
        paths: dict[str, Path] = {}
        for formulation in ("op", "taps-conv", "taps-matmul"):
            layer = Layer(inputs, outputs, formulation).eval()
            layer.load_state_dict(reference.state_dict())
            paths[f"{formulation} fp32"] = Path(work) / f"{formulation}.onnx"
            export(layer, x, paths[f"{formulation} fp32"])
            if formulation != "op":  # the same quantisation as training.quantize
                paths[f"{formulation} int8"] = Path(work) / f"{formulation}-int8.onnx"
                quantize_static(
                    str(paths[f"{formulation} fp32"]),
                    str(paths[f"{formulation} int8"]),
                    _Once(feed),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    reduce_range=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv", "MatMul"],
                )
        sessions = {}
        for name, path in paths.items():
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(work) / name.replace(" ", "_"))
            sessions[name] = ort.InferenceSession(str(path), options, ["CPUExecutionProvider"])
        expected = sessions["op fp32"].run(None, feed)[0]
        error = {
            name: float(np.abs(session.run(None, feed)[0] - expected).max())
            for name, session in sessions.items()
        }
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(args.runs):
            for name, session in sessions.items():
                started = time.perf_counter()
                session.run(None, feed)
                times[name].append(1000 * (time.perf_counter() - started))
        print(
            f"{inputs}->{outputs} channels on {height}x{width}, {args.threads} thread(s), "
            f"output scale {float(np.abs(expected).max()):.2f}"
        )
        for name, session in sessions.items():
            per_op: collections.Counter[str] = collections.Counter()
            for event in json.loads(Path(session.end_profiling()).read_text()):
                if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                    per_op[event["args"]["op_name"]] += event["dur"] / 1000 / (args.runs + 2)
            ops = ", ".join(f"{op} {ms:.0f}" for op, ms in per_op.most_common(4))
            print(
                f"{name:17s} median {np.median(times[name]):7.0f} ms  max |diff| "
                f"{error[name]:.2e}  ({ops})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
