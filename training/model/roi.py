"""ROI branch on C4 (NAE-style): RPN for training proposals, RoIAlign 14x14, res5 copy,
norm-aware embedding whose norm is the detection logit, box regression and OIM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import box_iou, roi_align

from .config import ModelConfig

C4_SCALE = 1.0 / 16
ROI_SIZE = 14


def build_rpn(config: ModelConfig, c4_channels: int) -> RegionProposalNetwork:
    """15 anchors per location (5 scales x ratios 0.5/1/2); IoU 0.7/0.3; NMS 0.7."""
    anchors = AnchorGenerator(sizes=(config.anchor_sizes,), aspect_ratios=((0.5, 1.0, 2.0),))
    head = RPNHead(c4_channels, anchors.num_anchors_per_location()[0])
    top_n = {"training": config.rpn_pre_nms, "testing": config.rpn_pre_nms}
    post = {"training": config.rpn_post_nms, "testing": config.rpn_post_nms}
    return RegionProposalNetwork(
        anchors,
        head,
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=config.rpn_batch,
        positive_fraction=0.5,
        pre_nms_top_n=top_n,
        post_nms_top_n=post,
        nms_thresh=0.7,
    )


class NormAwareEmbedding(nn.Module):
    """Linear+BN projections of both pooled features, concatenated; the L2 norm (through a
    BatchNorm1d) is the person/background logit and the unit vector is the embedding."""

    def __init__(self, in_channels: tuple[int, int], dim: int) -> None:
        super().__init__()
        pairs = [(nn.Linear(c, dim // 2), nn.BatchNorm1d(dim // 2)) for c in in_channels]
        for linear, norm in pairs:
            nn.init.normal_(linear.weight, std=0.01)
            nn.init.zeros_(linear.bias)
            # a small BN gain, as in the reference: embeddings start with small norms, so the
            # norm-aware logit starts near the rescaler's bias rather than saturated
            nn.init.normal_(norm.weight, std=0.01)
            nn.init.zeros_(norm.bias)
        self.projectors = nn.ModuleList(nn.Sequential(linear, norm) for linear, norm in pairs)
        self.rescaler = nn.BatchNorm1d(1)

    def forward(self, pooled: list[Tensor]) -> tuple[Tensor, Tensor]:
        features = torch.cat([p(x) for p, x in zip(self.projectors, pooled, strict=True)], dim=1)
        norms = features.norm(dim=1, keepdim=True)
        embeddings = features / norms.clamp(min=1e-12)
        return embeddings, self.rescaler(norms).squeeze(1)


class ROIHead(nn.Module):
    """RoIAlign on C4 -> (max pool of C4 features, max pool of res5(C4 features))."""

    def __init__(self, res5: nn.Module, channels: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.res5 = res5
        self.embedding = NormAwareEmbedding(channels, dim)
        # Linear + BatchNorm1d(4), as the reference's box head: the BN keeps the deltas'
        # scale right from the start of training
        box_linear = nn.Linear(channels[1], 4)
        nn.init.normal_(box_linear.weight, std=0.001)
        nn.init.zeros_(box_linear.bias)
        self.bbox_pred = nn.Sequential(box_linear, nn.BatchNorm1d(4))

    def forward(self, c4: Tensor, rois: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """rois: [K, 5] (batch index, x1, y1, x2, y2). Returns embeddings, logits, box deltas."""
        return self.from_aligned(self.align(c4, rois))

    @staticmethod
    def align(c4: Tensor, rois: Tensor) -> Tensor:
        """RoIAlign of rois [K, 5] on C4 -> [K, C, 14, 14]."""
        # fp32 RoIAlign also in an fp16 graph: ONNX Runtime's CUDA RoiAlign has no fp16 kernel
        crops = roi_align(c4.float(), rois.float(), ROI_SIZE, C4_SCALE, 2, aligned=True)
        return crops.to(c4.dtype)

    def from_aligned(self, crops: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Embeddings, logits and box deltas of RoIAligned features (``align``)."""
        pooled_c4 = crops.amax(dim=(2, 3))
        pooled_c5 = self.res5(crops).amax(dim=(2, 3))
        embeddings, logits = self.embedding([pooled_c4, pooled_c5])
        return embeddings, logits, self.bbox_pred(pooled_c5)


class ROISampler:
    """Matches proposals (plus the ground truth) to boxes and samples a balanced set: positive
    at IoU >= 0.5, negative below 0.1, and the proposals in between are not sampled (as in the
    reference; training them as background would teach the head that half-covered people are
    not people)."""

    def __init__(
        self, batch_per_image: int, positive_fraction: float, negative_iou: float = 0.1
    ) -> None:
        self.matcher = det_utils.Matcher(0.5, negative_iou, allow_low_quality_matches=False)
        self.sampler = det_utils.BalancedPositiveNegativeSampler(batch_per_image, positive_fraction)
        self.coder = det_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))

    def __call__(self, proposals: list[Tensor], targets: list[dict]):
        """Returns rois [K,5], foreground mask [K], pids [K] (-2 for background), deltas [K,4]."""
        matched_per_image, rois = [], []
        for boxes, target in zip(proposals, targets, strict=True):
            gt = target["boxes"]
            boxes = torch.cat([boxes.detach(), gt])
            if len(gt) == 0:
                matched = torch.full((len(boxes),), -1, dtype=torch.long, device=boxes.device)
            else:
                matched = self.matcher(box_iou(gt, boxes))
            matched_per_image.append(matched)
            rois.append(boxes)
        # sampler labels: 1 positive, 0 negative, -1 ignored (the matcher's -2, between IoUs)
        labels = [torch.where(m >= 0, 1, torch.where(m == -1, 0, -1)) for m in matched_per_image]
        positives, negatives = self.sampler(labels)
        out_rois, fg, pids, deltas = [], [], [], []
        per_image = zip(rois, matched_per_image, targets, strict=True)
        for i, (boxes, matched, target) in enumerate(per_image):
            chosen = torch.nonzero(positives[i] | negatives[i]).flatten()
            boxes, matched = boxes[chosen], matched[chosen]
            is_fg = matched >= 0
            gt = target["boxes"]
            matched_boxes = gt[matched.clamp(min=0)] if len(gt) else boxes
            out_rois.append(torch.cat([boxes.new_full((len(boxes), 1), i), boxes], dim=1))
            fg.append(is_fg)
            pid = target["pids"][matched.clamp(min=0)] if len(gt) else matched
            pids.append(torch.where(is_fg, pid, torch.full_like(pid, -2)))
            deltas.append(self.coder.encode_single(matched_boxes, boxes))
        return torch.cat(out_rois), torch.cat(fg), torch.cat(pids), torch.cat(deltas)


def roi_losses(logits: Tensor, deltas_pred: Tensor, fg: Tensor, deltas_target: Tensor):
    """roi_cls: BCE on the norm logit; roi_reg: L1 on foreground deltas / sampled ROIs (the
    reference's factor 10 on it is part of the fixed weights, not of the loss)."""
    cls_loss = F.binary_cross_entropy_with_logits(logits.float(), fg.float())
    reg_loss = F.l1_loss(deltas_pred[fg].float(), deltas_target[fg], reduction="sum") / max(
        len(fg), 1
    )
    return {"roi_cls": cls_loss, "roi_reg": reg_loss}
