"""ONNX export: the graph runs in ONNX Runtime (CPU) and matches PyTorch; the model card."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from inference.card import OUTPUT_NAMES
from inference.engine import Engine
from training.export import export_onnx, load_checkpoint_model, main
from training.model import build_model
from training.model.fcos import nms_per_image

pytestmark = pytest.mark.torch

torch.set_num_threads(2)
QUERIES = torch.tensor([[10.0, 20.0, 60.0, 150.0], [130.0, 40.0, 200.0, 220.0]])


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _twins(boxes, scores, ref_boxes, ref_scores) -> np.ndarray:
    """For each reference detection, the unused detection closest to it (boxes, then score)."""
    free = np.ones(len(boxes), bool)
    order = []
    for box, score in zip(ref_boxes, ref_scores, strict=True):
        cost = np.abs(boxes - box).max(axis=1) + 1e3 * np.abs(scores - score) + 1e9 * ~free
        order.append(int(np.argmin(cost)))
        free[order[-1]] = False
    return np.array(order, dtype=int)


@pytest.fixture(scope="module")
def detecting_export(tmp_path_factory):
    """Random tiny whose cls bias lets every location through the score filter, exported."""
    torch.manual_seed(0)
    model = build_model("tiny", num_ids=4, queue_size=8).eval()
    with torch.no_grad():
        model.fcos_head.cls_logits.bias.fill_(1.0)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    card = export_onnx(model, path, card_fields={"note": "test"}).to_dict()
    return model, path, card


@pytest.mark.parametrize("num_queries", [0, 2])
def test_onnx_runtime_matches_pytorch(detecting_export, num_queries):
    model, path, _ = detecting_export
    image = torch.randint(0, 256, (1, 3, 224, 288), dtype=torch.uint8)  # not the export size
    boxes = QUERIES[:num_queries]
    det_boxes, det_scores, det_emb, box_emb, det_images = _session(path).run(
        None, {"image": image.numpy(), "boxes": boxes.numpy()}
    )
    with torch.no_grad():
        ref = model(image, query_boxes=boxes)
    assert len(det_boxes) > 0 and np.all(det_images == 0)
    ref_det = F.normalize(torch.cat([ref["emb_alignps"], ref["emb_roi"]], 1), dim=1).numpy()
    ref_box = F.normalize(torch.cat([ref["query_alignps"], ref["query_roi"]], 1), dim=1).numpy()
    assert det_emb.shape == ref_det.shape == (len(ref["boxes"]), 64)
    assert box_emb.shape == ref_box.shape == (num_queries, 64)
    # near-equal scores may come out in either order: pair each detection with its twin
    order = _twins(det_boxes, det_scores, ref["boxes"].numpy(), ref["scores"].numpy())
    np.testing.assert_allclose(det_boxes[order], ref["boxes"].numpy(), atol=0.5)
    np.testing.assert_allclose(det_scores[order], ref["scores"].numpy(), atol=1e-3)
    assert np.all(np.sum(det_emb[order] * ref_det, axis=1) >= 0.999)
    assert np.all(np.sum(box_emb * ref_box, axis=1) >= 0.999)


def test_graph_uses_standard_operators_and_card_describes_it(detecting_export):
    _, path, card = detecting_export
    graph = onnx.load(str(path))
    ops = {node.op_type for node in graph.graph.node}
    assert {"DeformConv", "RoiAlign", "NonMaxSuppression"} <= ops
    assert [i.name for i in graph.graph.input] == ["image", "boxes"]
    assert [o.name for o in graph.graph.output] == [
        "det_boxes",
        "det_scores",
        "det_embeddings",
        "box_embeddings",
        "det_images",
    ]
    on_disk = json.loads(path.with_name("model.json").read_text())
    assert on_disk == card
    assert card["onnx_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["embedding"] == "concat" and card["embedding_dim"] == 64
    assert card["size_divisor"] == 32 and card["max_size"] == [1500, 900]
    assert card["pad_colour"] == [124, 116, 104]  # the mean colour: ~0 once normalised
    assert card["opset"] >= 19 and card["random_weights"] is True and card["note"] == "test"
    assert card["batch"] is True and "det_images" in card["outputs"]
    assert path.stat().st_size < 25e6


def test_checkpoint_export_with_no_detections_gives_empty_outputs(tmp_path):
    """An untrained tiny (cls prior 0.01 < 0.05 filter) detects nobody, in PyTorch and ORT."""
    torch.manual_seed(1)
    model = build_model("tiny", num_ids=3, queue_size=4)
    checkpoint = tmp_path / "ckpt.pt"
    torch.save(
        {
            "model": model.state_dict(),
            "config": "tiny",
            "num_ids": 3,
            "queue_size": 4,
            "attr_dim": 0,
            "metrics": {"mAP": 0.1},
            "dataset": "synthetic",
        },
        checkpoint,
    )
    out = tmp_path / "export" / "model.onnx"
    assert main(["--checkpoint", str(checkpoint), "--out", str(out), "--embedding", "roi"]) == 0
    card = json.loads(out.with_name("model.json").read_text())
    assert card["random_weights"] is False and card["metrics"] == {"mAP": 0.1}
    assert card["embedding"] == "roi" and card["embedding_dim"] == 32
    reloaded, _ = load_checkpoint_model(checkpoint)
    image = torch.randint(0, 256, (1, 3, 128, 160), dtype=torch.uint8)
    with torch.no_grad():
        ref = reloaded(image, query_boxes=QUERIES)
    assert ref["boxes"].shape == (0, 4) and ref["emb_roi"].shape == (0, 32)
    outputs = _session(out).run(None, {"image": image.numpy(), "boxes": QUERIES.numpy()})
    assert [o.shape for o in outputs] == [(0, 4), (0,), (0, 32), (2, 32), (0,)]
    np.testing.assert_allclose(outputs[3], ref["query_roi"].numpy(), atol=1e-4)
    empty = _session(out).run(None, {"image": image.numpy(), "boxes": np.zeros((0, 4), "f4")})
    assert empty[3].shape == (0, 32)


def test_export_needs_a_config_or_a_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "m.onnx")])
    assert "give --config or --checkpoint" in capsys.readouterr().err


def test_fp16_export_keeps_roialign_and_nms_in_fp32(detecting_export, tmp_path):
    model, _, _ = detecting_export
    path = tmp_path / "half" / "model.onnx"
    card = export_onnx(model, path, fp16=True)
    assert card.precision == "fp16"
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    elem_types = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    elem_types.update({init.name: init.data_type for init in graph.initializer})
    for node in graph.node:
        if node.op_type in ("RoiAlign", "NonMaxSuppression"):
            assert elem_types[node.input[0]] == onnx.TensorProto.FLOAT, node.op_type
        if node.op_type == "DeformConv":
            assert elem_types[node.input[1]] == onnx.TensorProto.FLOAT16
    image = torch.randint(0, 256, (1, 3, 160, 192), dtype=torch.uint8)
    outputs = _session(path).run(
        list(OUTPUT_NAMES), {"image": image.numpy(), "boxes": QUERIES.numpy()}
    )
    assert all(o.dtype == np.float32 for o in outputs)
    with torch.no_grad():
        ref = model(image, query_boxes=QUERIES)
    ref_box = F.normalize(torch.cat([ref["query_alignps"], ref["query_roi"]], 1), dim=1).numpy()
    assert np.all(np.sum(outputs[3] * ref_box, axis=1) >= 0.99)


def test_a_batch_gives_each_image_what_it_gets_alone(detecting_export, tmp_path):
    """The graph's batch dimension: images of one padded size run together, each image's
    detections and embeddings those of its own run, whatever else is in the batch."""
    model, path, _ = detecting_export
    engine = Engine(path, ("cpu",), min_score=0.0, threads=1, max_batch=3)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (180, 300, 3), dtype=np.uint8) for _ in range(4)]
    frames.insert(2, rng.integers(0, 256, (200, 150, 3), dtype=np.uint8))  # its own size
    frames[3] = frames[0].copy()  # the same image twice in one run: neither suppresses the other
    alone = [engine.detect(frame) for frame in frames]
    together = engine.detect_batch(frames)
    assert len(together) == len(frames)
    for one, batched in zip(alone, together, strict=True):
        assert len(one.scores) > 0
        np.testing.assert_allclose(batched.boxes, one.boxes, atol=1e-3)
        np.testing.assert_allclose(batched.scores, one.scores, atol=1e-5)
        np.testing.assert_allclose(batched.embeddings, one.embeddings, atol=1e-4)
    np.testing.assert_array_equal(together[3].boxes, together[0].boxes)


def test_nms_per_image_keeps_images_apart_and_caps_each():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10]] * 2)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95, 0.85, 0.75, 0.65])
    image = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    keep = nms_per_image(boxes.float(), scores, image, 2, 0.5, (64, 64), most=5)
    assert keep.tolist() == [4, 0, 6, 2]  # by score; the same box in both images kept twice
    capped = nms_per_image(boxes.float(), scores, image, 2, 0.5, (64, 64), most=1)
    assert capped.tolist() == [4, 0]
