"""ROI-AlignPS* network: stage shapes, the ten losses and their gradients, weights loading."""

from __future__ import annotations

import pytest
import torch
import torchvision

from training.model import CONFIGS, TASKS, build_model
from training.model.tasks import ATTR_TASK

pytestmark = pytest.mark.torch

torch.set_num_threads(2)


def _capture_stage_shapes(model) -> dict[str, list]:
    """Forward hooks recording the output shapes of each stage."""
    shapes: dict[str, list] = {}

    def hook(name):
        def record(_module, _inputs, output):
            outputs = output if isinstance(output, tuple) else (output,)
            shapes[name] = [tuple(t.shape) for t in outputs]

        return record

    for name in ("backbone", "neck", "fcos_head", "roi_head"):
        getattr(model, name).register_forward_hook(hook(name))
    return shapes


def test_r50_stage_shapes_on_a_1500x900_input():
    torch.manual_seed(0)
    model = build_model("r50", num_ids=10, queue_size=10).eval()
    shapes = _capture_stage_shapes(model)
    image = torch.randint(0, 256, (1, 3, 928, 1504), dtype=torch.uint8)  # 1500x900 padded
    query = torch.tensor([[100.0, 100.0, 200.0, 400.0], [700.0, 300.0, 800.0, 600.0]])
    with torch.no_grad():
        out = model(image, query_boxes=query)
    assert shapes["backbone"] == [(1, 512, 116, 188), (1, 1024, 58, 94), (1, 2048, 29, 47)]
    assert shapes["neck"] == [(1, 256, 116, 188)]
    assert shapes["fcos_head"] == [(1, 1, 116, 188), (1, 4, 116, 188), (1, 1, 116, 188)]
    rois = shapes["roi_head"][0][0]  # ROI head runs on detections + dummy, last on 2 queries + 1
    assert shapes["roi_head"] == [(rois, 256), (rois,), (rois, 4)]
    num_det = len(out["boxes"])
    assert out["boxes"].shape == (num_det, 4) and out["scores"].shape == (num_det,)
    assert out["emb_alignps"].shape == out["emb_roi"].shape == (num_det, 256)
    assert out["query_alignps"].shape == out["query_roi"].shape == (2, 256)
    for key in ("query_alignps", "query_roi"):
        torch.testing.assert_close(out[key].norm(dim=1), torch.ones(2))


def _targets(attr_dim: int = 0) -> list[dict]:
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 60.0, 150.0], [100.0, 30.0, 150.0, 180.0]]),
            "pids": torch.tensor([0, -1]),
        },
        {
            "boxes": torch.tensor([[50.0, 20.0, 100.0, 170.0], [150.0, 40.0, 200.0, 180.0]]),
            "pids": torch.tensor([1, 2]),
        },
    ]
    if attr_dim:
        targets[0]["attrs"] = torch.tensor([[1.0, 0.0, 1.0], [-1.0, -1.0, -1.0]])
        targets[1]["attrs"] = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    return targets


@pytest.fixture(scope="module")
def tiny_losses():
    """Losses of tiny after one warm-up step (so the OIM tables hold the batch's ids)."""
    torch.manual_seed(0)
    model = build_model("tiny", num_ids=4, queue_size=8, attr_dim=3).train()
    warm_up, images = torch.randint(0, 256, (2, 2, 3, 192, 256), dtype=torch.uint8)
    with torch.no_grad():
        model(warm_up, _targets(3))
    return model, model(images, _targets(3))


def test_tiny_training_returns_each_task_loss_finite(tiny_losses):
    _, losses = tiny_losses
    assert set(losses) == set(TASKS) | {ATTR_TASK}
    for name, loss in losses.items():
        assert loss.dim() == 0 and torch.isfinite(loss), name
        assert loss.item() > 0, name


HEADS = {
    "rpn_cls": "rpn.head.cls_logits",
    "rpn_reg": "rpn.head.bbox_pred",
    "roi_cls": "roi_head.embedding.rescaler",
    "roi_reg": "roi_head.bbox_pred",
    "roi_reid": "roi_head.embedding.projectors",
    "fcos_cls": "fcos_head.cls_logits",
    "fcos_reg": "fcos_head.bbox_pred",
    "fcos_ctr": "fcos_head.centerness",
    "fcos_reid": "neck.output",
    "fcos_tri": "neck.output",
    ATTR_TASK: "attr_head",
}


@pytest.mark.parametrize("task", list(HEADS))
def test_each_loss_moves_its_own_head(tiny_losses, task):
    model, losses = tiny_losses
    head = model.get_submodule(HEADS[task])
    params = [p for p in head.parameters() if p.requires_grad]
    grads = torch.autograd.grad(losses[task], params, retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads), task
    shared = torch.autograd.grad(
        losses[task], model.shared_parameters()[-1:], retain_graph=True, allow_unused=True
    )
    assert shared[0] is not None, f"{task} does not reach the shared trunk"


def test_tiny_inference_shapes_and_normalised_embeddings():
    torch.manual_seed(0)
    model = build_model("tiny", num_ids=4, queue_size=8).eval()
    with torch.no_grad():
        model.fcos_head.cls_logits.bias.fill_(2.0)  # every location passes the score filter
        out = model(torch.randint(0, 256, (1, 3, 160, 224), dtype=torch.uint8))
    k = len(out["boxes"])
    assert 0 < k <= CONFIGS["tiny"].max_detections
    assert out["emb_alignps"].shape == out["emb_roi"].shape == (k, 32)
    assert out["query_alignps"].shape == out["query_roi"].shape == (0, 32)
    assert torch.all(out["scores"][:-1] >= out["scores"][1:])
    assert torch.all(out["boxes"][:, 2:] <= torch.tensor([224.0, 160.0]))
    torch.testing.assert_close(out["emb_roi"].norm(dim=1), torch.ones(k))


def test_bad_inputs_raise_clear_errors():
    model = build_model("tiny", num_ids=2, queue_size=0)
    with pytest.raises(ValueError, match="one target dict per image"):
        model.train()(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.zeros(3, 64, 64), [])
    with pytest.raises(ValueError, match="pids"):
        model(torch.zeros(1, 3, 64, 64), [{"boxes": torch.zeros(2, 4), "pids": torch.zeros(1)}])
    with pytest.raises(ValueError, match="unknown model config"):
        build_model("r101", num_ids=2, queue_size=0)


def test_backbone_weights_load_and_freeze_stem_and_res2(tmp_path):
    weights = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(weights, path)
    model = build_model("r18", num_ids=2, queue_size=0, backbone_weights=path)
    torch.testing.assert_close(
        model.backbone.layer3[0].conv1.weight, weights["layer3.0.conv1.weight"]
    )
    torch.testing.assert_close(
        model.roi_head.res5[0].conv1.weight, weights["layer4.0.conv1.weight"]
    )
    assert not model.backbone.conv1.weight.requires_grad
    assert not any(p.requires_grad for p in model.backbone.layer1.parameters())
    assert all(p.requires_grad for p in model.shared_parameters())
    with pytest.raises(ValueError, match="do not fit"):
        build_model("tiny", num_ids=2, queue_size=0, backbone_weights=path)
