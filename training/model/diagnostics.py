"""Whether the re-id branches learn: how far apart different people's embeddings are.

A collapsed branch gives every person nearly the same vector (mean cosine between different
people near 1) and its lookup-table rows become alike; OIM then sits at chance. The training
loop records these figures per epoch and warns when a branch collapses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .network import PersonSearchModel

BRANCHES = ("alignps", "roi")
COLLAPSE_COSINE = 0.9  # mean cosine between different people above which a branch has collapsed


@torch.no_grad()
def embedding_spread(
    model: PersonSearchModel, images: list[Tensor], targets: list[dict]
) -> dict[str, float]:
    """Mean cosine between labelled boxes of different people, per branch, on ground-truth
    boxes of the given images (each [1, 3, H, W] uint8), and the mean cosine between the
    lookup-table rows written so far (``<branch>_lut_cosine``). NaN where there is no pair."""
    was_training = model.training
    model.eval()
    embeddings: dict[str, list[Tensor]] = {branch: [] for branch in BRANCHES}
    pids = []
    try:
        for image, target in zip(images, targets, strict=True):
            out = model(image, query_boxes=target["boxes"].float())
            for branch in BRANCHES:
                embeddings[branch].append(out[f"query_{branch}"])
            pids.append(target["pids"])
    finally:
        model.train(was_training)
    all_pids = torch.cat(pids) if pids else torch.zeros(0, dtype=torch.long)
    spread = {}
    for branch in BRANCHES:
        vectors = torch.cat(embeddings[branch]) if pids else torch.zeros(0, 1)
        spread[f"{branch}_cosine_between_people"] = _mean_cosine_between(vectors, all_pids)
    for branch, oim in (("alignps", model.fcos_oim), ("roi", model.roi_oim)):
        rows = oim.lut[oim.lut.norm(dim=1) > 0]
        spread[f"{branch}_lut_cosine"] = _mean_cosine_between(rows, torch.arange(len(rows)))
    return spread


def _mean_cosine_between(vectors: Tensor, pids: Tensor) -> float:
    """Mean cosine over pairs of labelled vectors with different ids."""
    labelled = pids >= 0
    vectors, pids = F.normalize(vectors[labelled].float(), dim=1), pids[labelled]
    different = pids[:, None] != pids[None, :]
    if not bool(different.any()):
        return float("nan")
    return float((vectors @ vectors.t())[different].mean())


def collapsed_branches(spread: dict[str, float]) -> list[str]:
    """The branches whose embeddings of different people are nearly all alike."""
    return [
        branch
        for branch in BRANCHES
        if spread.get(f"{branch}_cosine_between_people", 0.0) > COLLAPSE_COSINE
    ]
