"""Re-id losses: OIM (labelled lookup table + unlabelled circular queue) and batch-hard triplet.

Both run in fp32 whatever the autocast dtype: a scale of 10..30 on bf16 cosines would round
logits by up to ~0.1 (docs/ARCHITECTURE.md, "Mixed precision").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class OIMLoss(nn.Module):
    """Online instance matching.

    Logits are scale * cosine similarities of L2-normalised features to the lookup table (one
    row per labelled id, updated by momentum) and the queue (features of unlabelled people).
    Labelled features give a cross-entropy term (or the reference AlignPS head's focal variant,
    -(1 - p)^2 log p); unlabelled ones only enter the queue.

    The memories are not updated in ``forward``: the caller passes what should update them to
    ``update`` (the ROI branch: every foreground proposal, as in OIM; the FCOS branch: one mean
    feature per box, see ``box_means``), after the loss is computed.
    """

    # buffers (register_buffer), declared for the type checker
    lut: Tensor
    queue: Tensor
    queue_head: Tensor

    def __init__(
        self,
        num_ids: int,
        queue_size: int,
        dim: int,
        scale: float,
        momentum: float,
        focal: bool = False,
        queue_dims: int = 0,
    ) -> None:
        super().__init__()
        if num_ids < 1:
            raise ValueError(f"num_ids must be >= 1, got {num_ids}")
        self.num_ids, self.queue_size = num_ids, queue_size
        self.scale, self.momentum, self.focal = scale, momentum, focal
        # the reference writes only the first 64 dimensions of a queued feature; 0 = all
        self.queue_dims = queue_dims if 0 < queue_dims < dim else dim
        self.register_buffer("lut", torch.zeros(num_ids, dim))
        self.register_buffer("queue", torch.zeros(queue_size, dim))
        self.register_buffer("queue_head", torch.zeros((), dtype=torch.long))

    def forward(self, features: Tensor, pids: Tensor) -> Tensor:
        """features: [N, D] L2-normalised; pids: [N] (>= 0 labelled, -1 unlabelled)."""
        labelled = pids >= 0
        if not bool(labelled.any()):
            return features.sum() * 0.0  # keeps the graph; no labelled target in this batch
        with torch.autocast(features.device.type, enabled=False):
            memory = torch.cat([self.lut, self.queue])
            logits = self.scale * features[labelled].float() @ memory.t()
            if not self.focal:
                return F.cross_entropy(logits, pids[labelled])
            log_p = F.log_softmax(logits, dim=1)
            focal = (1.0 - log_p.exp()) ** 2 * log_p
            return F.nll_loss(focal, pids[labelled])

    def rows(self, pids: Tensor) -> Tensor:
        """A copy of the lookup-table rows of ``pids`` (read before an update)."""
        return self.lut[pids].clone()

    @torch.no_grad()
    def update(self, features: Tensor, pids: Tensor) -> None:
        """Momentum update of the rows of labelled features (in order, a row renormalised after
        each), and unlabelled features (pid -1) into the queue."""
        features = features.detach().float()
        for feature, pid in zip(features[pids >= 0], pids[pids >= 0].tolist(), strict=True):
            row = self.momentum * self.lut[pid] + (1.0 - self.momentum) * feature
            self.lut[pid] = F.normalize(row, dim=0)
        unlabelled = features[pids == -1]
        if self.queue_size == 0 or len(unlabelled) == 0:
            return
        unlabelled = unlabelled[-self.queue_size :]
        slots = (self.queue_head + torch.arange(len(unlabelled), device=features.device)) % (
            self.queue_size
        )
        self.queue[slots, : self.queue_dims] = unlabelled[:, : self.queue_dims]
        self.queue_head.copy_((self.queue_head + len(unlabelled)) % self.queue_size)


def box_means(features: Tensor, boxes: Tensor, pids: Tensor) -> tuple[Tensor, Tensor]:
    """One L2-normalised mean feature per box from the features of its locations.

    features [N, D], boxes [N] (a box key unique within the batch), pids [N]. Returns the
    means [M, D] and the pid of each box [M], boxes in ascending key order.
    """
    keys, inverse = torch.unique(boxes, return_inverse=True)
    sums = features.new_zeros(len(keys), features.shape[1]).index_add_(0, inverse, features)
    box_pids = pids.new_zeros(len(keys)).scatter_(0, inverse, pids)
    return F.normalize(sums, dim=1), box_pids


def batch_hard_triplet(
    features: Tensor, pids: Tensor, rows: Tensor, row_pids: Tensor, margin: float
) -> Tensor:
    """Batch-hard triplet loss of labelled features against each other and lookup-table rows.

    features: [N, D] L2-normalised, pids [N]; rows [M, D]: the lookup-table rows of the batch's
    identities as they were before this iteration's update, with their ids row_pids [M] (rows
    never written yet are zero and left out). Anchors are the labelled features.
    """
    labelled = pids >= 0
    anchors, anchor_ids = features[labelled].float(), pids[labelled]
    if len(anchors) == 0:
        return features.sum() * 0.0
    written = rows.norm(dim=1) > 0
    with torch.autocast(features.device.type, enabled=False):
        pool = torch.cat([anchors, rows[written].detach().float()])
        pool_ids = torch.cat([anchor_ids, row_pids[written]])
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
