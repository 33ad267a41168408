"""Anchor-free (FCOS-style) re-id head on P3' = P3 minus its per-channel spatial mean.

Only one level (stride 8). Targets use centre sampling (radius 1.5 strides inside the box);
a location inside several boxes goes to the smallest. Each positive location carries its box's
person id, and its P3' vector is the AlignPS re-id embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import generalized_box_iou_loss, nms, sigmoid_focal_loss

from .backbone import group_count
from .collectives import LocalBatch

STRIDE = 8
CENTRE_RADIUS = 1.5


class FCOSHead(nn.Module):
    """cls/reg towers (conv3x3 + GroupNorm + ReLU), cls, box (ltrb in pixels) and centerness."""

    def __init__(self, channels: int, num_convs: int) -> None:
        super().__init__()
        self.cls_tower = _tower(channels, num_convs)
        self.reg_tower = _tower(channels, num_convs)
        self.cls_logits = nn.Conv2d(channels, 1, 3, padding=1)
        self.bbox_pred = nn.Conv2d(channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(channels, 1, 3, padding=1)
        self.scale = nn.Parameter(torch.tensor(1.0))
        prior = -math.log((1 - 0.01) / 0.01)  # the cls logits start at probability 0.01
        for conv, bias in ((self.cls_logits, prior), (self.bbox_pred, 0.0), (self.centerness, 0.0)):
            _init_small(conv, bias)

    def forward(self, p3: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """cls logits [B,1,H,W], ltrb distances in pixels [B,4,H,W], ctr logits [B,1,H,W]."""
        cls_features = self.cls_tower(p3)
        reg_features = self.reg_tower(p3)
        ltrb = F.relu(self.scale * self.bbox_pred(reg_features)) * STRIDE
        return self.cls_logits(cls_features), ltrb, self.centerness(reg_features)


def _init_small(conv: nn.Conv2d, bias: float = 0.0) -> None:
    """Weights ~ N(0, 0.01) and a constant bias."""
    nn.init.normal_(conv.weight, std=0.01)
    if conv.bias is not None:  # always, with Conv2d's default bias=True
        nn.init.constant_(conv.bias, bias)


def _tower(channels: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        conv = nn.Conv2d(channels, channels, 3, padding=1)
        _init_small(conv)
        layers += [conv, nn.GroupNorm(group_count(channels), channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def locations(height: int, width: int, device: torch.device) -> Tensor:
    """Centres (x, y) in input pixels of the P3 locations, row-major, [H*W, 2]."""
    ys = torch.arange(height, device=device, dtype=torch.float32) * STRIDE + STRIDE // 2
    xs = torch.arange(width, device=device, dtype=torch.float32) * STRIDE + STRIDE // 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)


def assign_targets(points: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Index of the assigned box per location (-1 = background) and ltrb targets [L, 4]."""
    if len(boxes) == 0:
        return torch.full((len(points),), -1, dtype=torch.long, device=points.device), (
            points.new_zeros(len(points), 4)
        )
    x, y = points[:, 0:1], points[:, 1:2]
    ltrb = torch.stack(
        [x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], dim=2
    )  # [L, N, 4]
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    radius = CENTRE_RADIUS * STRIDE
    in_centre = (
        (x > torch.maximum(centre_x - radius, boxes[:, 0]))
        & (x < torch.minimum(centre_x + radius, boxes[:, 2]))
        & (y > torch.maximum(centre_y - radius, boxes[:, 1]))
        & (y < torch.minimum(centre_y + radius, boxes[:, 3]))
    )
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand_as(in_centre)
    areas = areas.masked_fill(~in_centre, float("inf"))
    smallest_area, assigned = areas.min(dim=1)
    assigned = assigned.masked_fill(torch.isinf(smallest_area), -1)
    return assigned, ltrb[torch.arange(len(points)), assigned.clamp(min=0)]


def centerness_target(ltrb: Tensor) -> Tensor:
    left_right, top_bottom = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
    return torch.sqrt(
        (left_right.amin(1) / left_right.amax(1)) * (top_bottom.amin(1) / top_bottom.amax(1))
    )


def decode(points: Tensor, ltrb: Tensor) -> Tensor:
    """Boxes x1y1x2y2 from locations [L,2] and distances [L,4]."""
    return torch.cat([points - ltrb[:, :2], points + ltrb[:, 2:]], dim=1)


def flatten_maps(cls: Tensor, ltrb: Tensor, ctr: Tensor, embed: Tensor):
    """Per-image [H*W, C] views of head outputs and embeddings (row-major, as locations())."""
    return tuple(t.flatten(2).transpose(1, 2) for t in (cls, ltrb, ctr, embed))


def fcos_losses(
    cls: Tensor,
    ltrb: Tensor,
    ctr: Tensor,
    embed: Tensor,
    targets: list[dict],
    collectives: LocalBatch | None = None,
) -> tuple[dict[str, Tensor], Tensor, Tensor, list[Tensor]]:
    """fcos_cls, fcos_reg, fcos_ctr losses; plus the positive embeddings [P, D] (normalised),
    their pids [P], and per-image positive box indices (for the attribute head).
    ``collectives``: the other processes' shards of the batch, when there are some."""
    collectives = collectives or LocalBatch()
    height, width = cls.shape[-2:]
    points = locations(height, width, cls.device)
    # losses in fp32 whatever the autocast dtype (GIoU of bf16 corners is off by ~1 px)
    cls_flat, ltrb_flat, ctr_flat, embed_flat = flatten_maps(
        cls.float(), ltrb.float(), ctr.float(), embed
    )
    cls_targets, reg_pred, reg_target, ctr_pred, pos_embed, pos_pids, pos_boxes = (
        [],
        [],
        [],
        [],
        [],
        [],
        [],
    )
    pos_points = []
    for i, target in enumerate(targets):
        assigned, ltrb_target = assign_targets(points, target["boxes"].to(cls.device))
        positive = assigned >= 0
        cls_targets.append(positive.float())
        reg_pred.append(ltrb_flat[i][positive])
        reg_target.append(ltrb_target[positive])
        ctr_pred.append(ctr_flat[i][positive, 0])
        pos_points.append(points[positive])
        pos_embed.append(embed_flat[i][positive])
        pos_pids.append(target["pids"].to(cls.device)[assigned[positive]])
        pos_boxes.append(assigned[positive])
    reg_target_all = torch.cat(reg_target)
    points_all = torch.cat(pos_points)
    ctr_pred_all = torch.cat(ctr_pred)
    ctr_target = centerness_target(reg_target_all)
    # normalised by the global batch's counts (as mmdetection's FCOS head with reduce_mean), so
    # the processes' mean loss is the loss of one process holding the whole batch
    num_pos = collectives.mean_count(cls_flat.new_tensor(float(len(reg_target_all))))
    num_pos = num_pos.clamp(min=1.0)
    ctr_sum = collectives.mean_count(ctr_target.sum()).clamp(min=1e-6)
    cls_loss = (
        sigmoid_focal_loss(
            cls_flat[..., 0].reshape(-1),
            torch.cat(cls_targets),
            alpha=0.25,
            gamma=2.0,
            reduction="sum",
        )
        / num_pos
    )
    if len(reg_target_all) == 0:
        zero = ltrb_flat.sum() * 0.0 + ctr_flat.sum() * 0.0
        losses = {"fcos_cls": cls_loss, "fcos_reg": zero, "fcos_ctr": zero}
    else:
        giou = generalized_box_iou_loss(
            decode(points_all, torch.cat(reg_pred)),
            decode(points_all, reg_target_all),
            reduction="none",
        )
        ctr_loss = F.binary_cross_entropy_with_logits(ctr_pred_all, ctr_target, reduction="sum")
        losses = {
            "fcos_cls": cls_loss,
            "fcos_reg": (giou * ctr_target).sum() / ctr_sum,
            "fcos_ctr": ctr_loss / num_pos,
        }
    embeddings = F.normalize(torch.cat(pos_embed).float(), dim=1)
    return losses, embeddings, torch.cat(pos_pids), pos_boxes


def detect(
    cls: Tensor, ltrb: Tensor, ctr: Tensor, image_hw: tuple, pre_nms_top: int, cls_threshold: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Candidate boxes, scores (sigmoid(cls) * sigmoid(ctr)), image indices and location indices
    (row-major over every image's locations, [B*H*W]) of a batch, before NMS: per image the top
    `pre_nms_top` by score, then sigmoid(cls) >= cls_threshold. Image 0's candidates come first,
    each image's by falling score. Export-friendly."""
    batch = cls.shape[0]
    height, width = cls.shape[-2:]
    cls_prob = cls[:, 0].flatten(1).sigmoid()  # [B, H*W]
    scores = cls_prob * ctr[:, 0].flatten(1).sigmoid()
    k = torch.sym_min(pre_nms_top, scores.shape[1])
    top_scores, top_index = scores.topk(k, dim=1)
    keep = cls_prob.gather(1, top_index) >= cls_threshold
    image = torch.arange(batch, device=cls.device).unsqueeze(1).expand_as(top_index)[keep]
    location = top_index[keep]
    index = image * (height * width) + location
    points = locations(height, width, cls.device)[location]
    boxes = decode(points, ltrb.flatten(2).transpose(1, 2).flatten(0, 1)[index])
    boxes = torch.stack(
        [
            boxes[:, 0].clamp(0, image_hw[1]),
            boxes[:, 1].clamp(0, image_hw[0]),
            boxes[:, 2].clamp(0, image_hw[1]),
            boxes[:, 3].clamp(0, image_hw[0]),
        ],
        dim=1,
    )
    return boxes, top_scores[keep], image, index


def nms_per_image(
    boxes: Tensor,
    scores: Tensor,
    image: Tensor,
    batch: int,
    iou: float,
    image_hw: tuple,
    most: int,
) -> Tensor:
    """Indices of the boxes NMS keeps within each image (boxes of different images never
    suppress each other), at most ``most`` per image, by falling score. Export-friendly: one
    NMS over boxes shifted apart by image (coordinates are clamped to the image)."""
    shift = (image.to(boxes.dtype) * (torch.sym_max(image_hw[0], image_hw[1]) + 1)).unsqueeze(1)
    keep = nms(boxes + shift, scores, iou)
    kept_image = image[keep]
    same = kept_image.unsqueeze(1) == torch.arange(batch, device=image.device).unsqueeze(0)
    rank = (same.long().cumsum(0) * same.long()).sum(1) - 1  # place within its image
    return keep[rank < most]
