"""ROI-AlignPS*: a ResNet trunk, the AFA neck with the FCOS re-id head on P3', and the NAE-style
ROI branch on C4. Training returns the ten unweighted losses; inference returns detections with
both embeddings, and embeddings of given (query) boxes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from inference.preprocess import PIXEL_MEAN, PIXEL_STD

from . import fcos
from .backbone import ResNetTrunk, load_backbone_weights
from .collectives import LocalBatch
from .config import ModelConfig, resolve_config
from .crops import CropGroup, cut_crop_queries
from .neck import AFANeck
from .reid_losses import OIMLoss, batch_hard_triplet, box_means
from .roi import ROIHead, ROISampler, build_rpn, roi_losses
from .tasks import ATTR_TASK, CROP_TASK

__all__ = ["PersonSearchModel", "build_model"]

_MAX_BOXES = 1 << 20  # box keys unique in a batch: image index * this + box index


class PersonSearchModel(nn.Module):
    # buffers (register_buffer), declared for the type checker
    pixel_mean: Tensor
    pixel_std: Tensor

    def __init__(self, config: ModelConfig, num_ids: int, queue_size: int, attr_dim: int = 0):
        super().__init__()
        self.config, self.num_ids, self.queue_size, self.attr_dim = (
            config,
            num_ids,
            queue_size,
            attr_dim,
        )
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1))
        self.backbone = ResNetTrunk(config)
        c2, c3, c4, c5 = self.backbone.channels
        self.neck = AFANeck((c3, c4, c5), config.neck_channels)
        self.fcos_head = fcos.FCOSHead(config.neck_channels, config.head_convs)
        self.fcos_oim = OIMLoss(
            num_ids,
            queue_size,
            config.neck_channels,
            config.fcos_oim_scale,
            config.oim_momentum,
            focal=config.fcos_oim_focal,
            queue_dims=config.fcos_queue_dims,
        )
        self.rpn = build_rpn(config, c4)
        self.roi_sampler = ROISampler(config.roi_batch, config.roi_pos_fraction)
        self.roi_head = ROIHead(self.backbone.res5_copy(), (c4, c5), config.roi_emb_dim)
        self.roi_oim = OIMLoss(
            num_ids, queue_size, config.roi_emb_dim, config.roi_oim_scale, config.oim_momentum
        )
        self.attr_head = nn.Linear(config.neck_channels, attr_dim) if attr_dim > 0 else None
        # the other processes' shards of a training batch; training on several processes
        # replaces it with a training.model.collectives.ProcessGroupBatch
        self.collectives = LocalBatch()

    @property
    def embedding_dims(self) -> dict[str, int]:
        return {"alignps": self.config.neck_channels, "roi": self.config.roi_emb_dim}

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trunk stages conv2..conv4 (layer1..layer3): where GALW probes task gradients."""
        stages = (self.backbone.layer1, self.backbone.layer2, self.backbone.layer3)
        return [p for stage in stages for p in stage.parameters() if p.requires_grad]

    def features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """C4 and P3' (P3 minus its per-channel spatial mean) of 0..255 RGB images."""
        x = (images.float() - self.pixel_mean.float()) / self.pixel_std.float()
        x = x.to(self.backbone.conv1.weight.dtype)  # half in an fp16 export
        c3, c4, c5 = self.backbone(x)
        p3 = self.neck(c3, c4, c5)
        return c4, p3 - p3.mean(dim=(2, 3), keepdim=True)

    def forward(self, images: Tensor, targets: list[dict] | None = None, query_boxes=None):
        _check_images(images)
        if self.training:
            if targets is None or len(targets) != len(images):
                raise ValueError("training needs one target dict per image")
            return self.losses(images, targets)
        return self.infer(images, query_boxes)

    def losses(self, images: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        targets = [_check_target(t, images.device, self.attr_dim) for t in targets]
        c4, p3 = self.features(images)
        cls, ltrb, ctr = self.fcos_head(p3)
        shards = self.collectives
        losses, embeddings, pids, assigned = fcos.fcos_losses(cls, ltrb, ctr, p3, targets, shards)
        # OIM and the triplet loss see the positives of the whole (global) batch
        batch_embeddings, batch_pids = shards.gather(embeddings), shards.gather_detached(pids)
        batch_ids = torch.unique(batch_pids[batch_pids >= 0])
        rows = self.fcos_oim.rows(batch_ids)  # read before this iteration's update
        losses["fcos_reid"] = self.fcos_oim(batch_embeddings, batch_pids)
        losses["fcos_tri"] = batch_hard_triplet(
            batch_embeddings, batch_pids, rows, batch_ids, self.config.triplet_margin
        )
        # one memory update per box, from the mean of its locations (not one per location,
        # which would leave each row a snapshot of the box's last location)
        box_keys = torch.cat([a + i * _MAX_BOXES for i, a in enumerate(assigned)])
        means, box_pids = box_means(embeddings.detach(), box_keys, pids)
        self.fcos_oim.update(shards.gather_detached(means), shards.gather_detached(box_pids))
        if self.attr_head is not None:
            losses[ATTR_TASK] = self._attr_loss(self.attr_head, targets, assigned, embeddings)
        losses.update(self._roi_losses(images, c4, targets))
        if self.config.crop_queries > 0:
            crops = cut_crop_queries(
                images, targets, self.config.crop_queries, self.config.crop_jitter
            )
            losses[CROP_TASK] = self._crop_loss(crops) if crops else p3.sum() * 0.0
        return losses

    def _roi_losses(self, images: Tensor, c4: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        image_list = ImageList(images, [tuple(images.shape[-2:])] * len(images))
        proposals, rpn = self.rpn(image_list, {"c4": c4}, [{"boxes": t["boxes"]} for t in targets])
        rois, fg, pids, deltas = self.roi_sampler(proposals, targets)
        embeddings, logits, deltas_pred = self.roi_head(c4, rois)
        losses = {"rpn_cls": rpn["loss_objectness"], "rpn_reg": rpn["loss_rpn_box_reg"]}
        losses.update(roi_losses(logits, deltas_pred, fg, deltas))
        fg_embeddings = self.collectives.gather(embeddings[fg])
        fg_pids = self.collectives.gather_detached(pids[fg])
        losses["roi_reid"] = self.roi_oim(fg_embeddings, fg_pids)
        self.roi_oim.update(fg_embeddings.detach(), fg_pids)
        return losses

    def _crop_loss(self, crops: list[CropGroup]) -> Tensor:
        """OIM of people embedded alone (both branches, against the frames' lookup tables,
        which crops do not update). Batch norms use their running statistics, as a query
        crop is embedded at inference, and are left unchanged."""
        alignps, aligned, pids = [], [], []
        with _batch_norms_frozen(self):
            for group in crops:
                c4, p3 = self.features(group.images)
                flat = p3.flatten(2).transpose(1, 2)  # [n, H*W, C]
                at = _centre_index(group.boxes, p3)
                alignps.append(flat[torch.arange(len(at), device=at.device), at])
                owners = torch.arange(len(at), device=at.device, dtype=group.boxes.dtype)
                rois = torch.cat([owners[:, None], group.boxes], dim=1)
                aligned.append(self.roi_head.align(c4, rois))
                pids.append(group.pids)
            roi, _, _ = self.roi_head.from_aligned(torch.cat(aligned))
        crop_pids = torch.cat(pids)
        alignps_loss = self.fcos_oim(F.normalize(torch.cat(alignps).float(), dim=1), crop_pids)
        return alignps_loss + self.roi_oim(roi, crop_pids)

    def _attr_loss(self, head: nn.Linear, targets, assigned, embeddings) -> Tensor:
        """BCE of ``head``'s attribute logits at positive locations; negative labels mean
        unknown."""
        labels = torch.cat([t["attrs"][a] for t, a in zip(targets, assigned, strict=True)])
        logits = head(embeddings)
        known = labels >= 0
        count = self.collectives.mean_count(known.sum().float()).clamp(min=1.0)
        loss = F.binary_cross_entropy_with_logits(logits[known], labels[known], reduction="sum")
        return loss / count

    @torch.no_grad()
    def infer(self, images: Tensor, query_boxes: Tensor | None = None) -> dict[str, Tensor]:
        return self.detect_and_embed(images, query_boxes)

    def detect_and_embed(self, images: Tensor, query_boxes: Tensor | None) -> dict[str, Tensor]:
        """Detections of every image with both embeddings (``images`` says whose each is), and
        both embeddings of the query boxes, which are boxes of image 0 (traceable). Each image's
        results are those it gets alone: every op after the input is per image."""
        if query_boxes is None:
            query_boxes = images.new_zeros((0, 4), dtype=torch.float32)
        c4, p3 = self.features(images)
        cls, ltrb, ctr = self.fcos_head(p3)
        cfg = self.config
        image_hw = images.shape[-2:]
        boxes, scores, image, index = fcos.detect(
            cls, ltrb, ctr, image_hw, cfg.pre_nms_top, cfg.cls_threshold
        )
        boxes, scores = boxes.float(), scores.float()  # NMS stays fp32 in an fp16 graph
        keep = fcos.nms_per_image(
            boxes, scores, image, images.shape[0], cfg.nms_iou, image_hw, cfg.max_detections
        )
        boxes, scores, image, index = boxes[keep], scores[keep], image[keep], index[keep]
        flat_p3 = p3.flatten(2).transpose(1, 2).flatten(0, 1)  # [B*H*W, C], image 0 first
        query_boxes = query_boxes.float()
        return {
            "boxes": boxes,
            "scores": scores,
            "images": image,
            "emb_alignps": F.normalize(flat_p3[index].float(), dim=1),
            "emb_roi": self._roi_embed(c4, boxes, image),
            "query_alignps": F.normalize(flat_p3[_centre_index(query_boxes, p3)].float(), dim=1),
            "query_roi": self._roi_embed(
                c4, query_boxes, query_boxes.new_zeros(query_boxes.shape[0])
            ),
        }

    def _roi_embed(self, c4: Tensor, boxes: Tensor, image: Tensor) -> Tensor:
        # A leading dummy ROI (dropped after) keeps every op's batch >= 1: ONNX Runtime's
        # GroupNorm decomposition cannot reshape an empty batch. Eval-mode ops are per-ROI.
        owners = torch.cat([image.new_zeros(1), image]).to(boxes.dtype).unsqueeze(1)
        rois = torch.cat([owners, _with_dummy(boxes)], dim=1)
        return self.roi_head(c4, rois)[0][1:].float()


@contextmanager
def _batch_norms_frozen(module: nn.Module) -> Iterator[None]:
    """Within: every batch norm of ``module`` in eval mode (running statistics, no update)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [norm.training for norm in norms]
    for norm in norms:
        norm.eval()
    try:
        yield
    finally:
        for norm, mode in zip(norms, modes, strict=True):
            norm.train(mode)


def _with_dummy(boxes: Tensor) -> Tensor:
    return torch.cat([boxes.new_tensor([[0.0, 0.0, 32.0, 32.0]]), boxes], dim=0)


def _centre_index(boxes: Tensor, p3: Tensor) -> Tensor:
    """Row-major P3 location index nearest to each box centre."""
    height, width = p3.shape[-2:]
    column = ((boxes[:, 0] + boxes[:, 2]) / 2 / fcos.STRIDE).floor().long()
    row = ((boxes[:, 1] + boxes[:, 3]) / 2 / fcos.STRIDE).floor().long()
    column = torch.minimum(column.clamp(min=0), torch.full_like(column, width - 1))
    row = torch.minimum(row.clamp(min=0), torch.full_like(row, height - 1))
    return row * width + column


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")


def _check_target(target: dict, device: torch.device, attr_dim: int) -> dict:
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
    pids = torch.as_tensor(target["pids"], dtype=torch.long, device=device).reshape(-1)
    if len(pids) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(pids)} pids in a target")
    checked = {"boxes": boxes, "pids": pids}
    if attr_dim > 0:
        attrs = target.get("attrs")
        attrs = (
            torch.full((len(boxes), attr_dim), -1.0, device=device)
            if attrs is None
            else torch.as_tensor(attrs, dtype=torch.float32, device=device)
        )
        checked["attrs"] = attrs.reshape(len(boxes), attr_dim)
    return checked


def build_model(
    config: str | ModelConfig,
    num_ids: int,
    queue_size: int,
    attr_dim: int = 0,
    backbone_weights: Path | None = None,
) -> PersonSearchModel:
    """A ROI-AlignPS* network. With backbone_weights (a torchvision resnet state dict file) the
    trunk and its res5 copy start from them and the stem and res2 are frozen."""
    config = resolve_config(config)
    model = PersonSearchModel(config, num_ids, queue_size, attr_dim)
    if backbone_weights is not None:
        load_backbone_weights(model.backbone, Path(backbone_weights))
        model.roi_head.res5.load_state_dict(model.backbone.layer4.state_dict())
        model.backbone.freeze_stem_and_res2()
    return model
