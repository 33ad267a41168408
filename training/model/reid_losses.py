"""Re-id losses: OIM (labelled lookup table + unlabelled circular queue) and batch-hard triplet."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class OIMLoss(nn.Module):
    """Online instance matching.

    Logits are scale * cosine similarities of L2-normalised features to the lookup table (one
    row per labelled id, updated by momentum) and the queue (features of unlabelled people).
    Labelled features give a cross-entropy term; unlabelled ones only enter the queue.
    """

    def __init__(
        self, num_ids: int, queue_size: int, dim: int, scale: float, momentum: float
    ) -> None:
        super().__init__()
        if num_ids < 1:
            raise ValueError(f"num_ids must be >= 1, got {num_ids}")
        self.num_ids, self.queue_size = num_ids, queue_size
        self.scale, self.momentum = scale, momentum
        self.register_buffer("lut", torch.zeros(num_ids, dim))
        self.register_buffer("queue", torch.zeros(queue_size, dim))
        self.register_buffer("queue_head", torch.zeros((), dtype=torch.long))

    def forward(self, features: Tensor, pids: Tensor) -> Tensor:
        """features: [N, D] L2-normalised; pids: [N] (>= 0 labelled, -1 unlabelled)."""
        labelled = pids >= 0
        if not bool(labelled.any()):
            self._update(features.detach(), pids)
            return features.sum() * 0.0  # keeps the graph; no labelled target in this batch
        memory = torch.cat([self.lut, self.queue]).to(features.dtype)
        logits = self.scale * features[labelled] @ memory.t()
        loss = F.cross_entropy(logits, pids[labelled])
        self._update(features.detach(), pids)
        return loss

    @torch.no_grad()
    def _update(self, features: Tensor, pids: Tensor) -> None:
        features = features.float()
        for feature, pid in zip(features[pids >= 0], pids[pids >= 0].tolist(), strict=True):
            row = self.momentum * self.lut[pid] + (1.0 - self.momentum) * feature
            self.lut[pid] = F.normalize(row, dim=0)
        unlabelled = features[pids < 0]
        if self.queue_size == 0 or len(unlabelled) == 0:
            return
        unlabelled = unlabelled[-self.queue_size :]
        slots = (self.queue_head + torch.arange(len(unlabelled), device=features.device)) % (
            self.queue_size
        )
        self.queue[slots] = unlabelled
        self.queue_head.copy_((self.queue_head + len(unlabelled)) % self.queue_size)


def batch_hard_triplet(features: Tensor, pids: Tensor, memory: Tensor, margin: float) -> Tensor:
    """Batch-hard triplet loss of labelled features against each other and the lookup table.

    features: [N, D] L2-normalised, pids [N]; memory: the OIM lookup table [num_ids, D] (rows
    of ids not yet seen are zero and left out). Anchors are the labelled features.
    """
    labelled = pids >= 0
    anchors, anchor_ids = features[labelled], pids[labelled]
    seen = memory.norm(dim=1) > 0
    pool = torch.cat([anchors, memory[seen].detach().to(features.dtype)])
    pool_ids = torch.cat([anchor_ids, torch.nonzero(seen).flatten()])
    if len(anchors) == 0:
        return features.sum() * 0.0
    # unit vectors: squared distance = 2 - 2 cos; clamp keeps sqrt differentiable at 0
    distances = (2.0 - 2.0 * anchors @ pool.t()).clamp(min=1e-12).sqrt()
    same = anchor_ids[:, None] == pool_ids[None, :]
    hardest_positive = distances.masked_fill(~same, 0.0).amax(dim=1)
    hardest_negative = distances.masked_fill(same, float("inf")).amin(dim=1)
    has_negative = torch.isfinite(hardest_negative)
    if not bool(has_negative.any()):
        return features.sum() * 0.0
    losses = F.relu(hardest_positive - hardest_negative + margin)
    return losses[has_negative].mean()
