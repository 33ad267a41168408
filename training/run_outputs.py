"""The end of a training run: search results on the test split, their metrics for each embedding
(AlignPS, ROI, both concatenated), and the ONNX export with a model card."""

from __future__ import annotations

import argparse
from collections import defaultdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from training.data import load_dataset
from training.evaluate import evaluate_dataset
from training.preprocess import load_rgb, resize_and_pad
from training.train_loop import log

EMBEDDINGS = ("alignps", "roi", "concat")


@torch.no_grad()
def search_results(
    model: nn.Module,
    dataset,
    device: torch.device,
    max_size: tuple[int, int],
    show_progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run the model on every test image once; results (see training.evaluate) per embedding.

    Each image is run with the boxes of the queries it holds, so the queries' embeddings come
    from the same pass as the image's detections (boxes mapped back to original pixels).
    """
    model.eval()
    queries_in = defaultdict(list)
    for index, query in enumerate(dataset.queries):
        queries_in[query.image].append(index)
    records = {record.name: record for record in dataset.images}
    missing = sorted(set(queries_in) - set(records))
    if missing:
        raise ValueError(f"query images missing from the test split: {missing[:5]}")
    results = {
        name: {"gallery": {}, "queries": [None] * len(dataset.queries)} for name in EMBEDDINGS
    }
    for record in tqdm(dataset.images, desc="evaluate", unit="img", disable=not show_progress):
        prepared = resize_and_pad(load_rgb(record.path), tuple(max_size))
        query_ids = queries_in.get(record.name, [])
        query_boxes = np.array([dataset.queries[i].box for i in query_ids], np.float32).reshape(
            -1, 4
        )
        out = model(
            torch.from_numpy(prepared.image)[None].to(device),
            query_boxes=torch.from_numpy(query_boxes * prepared.scale).to(device),
        )
        detections = _by_embedding(out["emb_alignps"], out["emb_roi"])
        queries = _by_embedding(out["query_alignps"], out["query_roi"])
        boxes = (out["boxes"].float() / prepared.scale).cpu().numpy()
        scores = out["scores"].float().cpu().numpy()
        for name in EMBEDDINGS:
            results[name]["gallery"][record.name] = {
                "boxes": boxes,
                "scores": scores,
                "embeddings": detections[name],
            }
            for slot, index in enumerate(query_ids):
                results[name]["queries"][index] = {"embedding": queries[name][slot]}
    return results


def _by_embedding(alignps: torch.Tensor, roi: torch.Tensor) -> dict[str, np.ndarray]:
    alignps, roi = F.normalize(alignps.float(), dim=1), F.normalize(roi.float(), dim=1)
    both = F.normalize(torch.cat([alignps, roi], dim=1), dim=1)
    return {name: t.cpu().numpy() for name, t in zip(EMBEDDINGS, (alignps, roi, both), strict=True)}


def protocols(dataset_name: str, gallery_size: int) -> dict[str, dict[str, Any]]:
    """The evaluation settings reported for a dataset (PRW: all cameras and cross-camera)."""
    if dataset_name == "prw":
        return {"all_cameras": {"cross_camera": False}, "cross_camera": {"cross_camera": True}}
    return {f"gallery_{gallery_size}": {"gallery_size": gallery_size}}


def evaluate_model(model: nn.Module, args: argparse.Namespace, device: torch.device) -> dict:
    """metrics.json: per embedding and protocol setting, the evaluator's metrics."""
    test = load_dataset(args.dataset, args.data_root, "test")
    results = search_results(model, test, device, args.max_size, not args.no_progress)
    metrics: dict[str, Any] = {"dataset": args.dataset, "det_thresh": args.det_thresh}
    for embedding in EMBEDDINGS:
        metrics[embedding] = {
            setting: evaluate_dataset(
                test, results[embedding], det_thresh=args.det_thresh, **options
            )
            for setting, options in protocols(args.dataset, args.gallery_size).items()
        }
    headline_setting = next(iter(protocols(args.dataset, args.gallery_size)))
    log(f"test metrics ({headline_setting}):")
    for embedding in EMBEDDINGS:
        scores = metrics[embedding][headline_setting]
        log(
            f"  {embedding:8s} mAP {scores['mAP']:.4f}  top-1 {scores['top1']:.4f}  "
            f"det AP {scores['det_ap']:.4f}  det recall {scores['det_recall']:.4f}"
        )
    return metrics


def export_model(model: nn.Module, run, args: argparse.Namespace, metrics, grouping) -> dict:
    """model.onnx and model.json (with the training data, options and metrics in the card)."""
    from training.export import export_onnx

    card_extra = {
        "random_weights": False,
        "max_size": list(args.max_size),
        "search_score_threshold": args.det_thresh,  # the threshold the metrics were taken at
        "dataset": args.dataset,
        "training": {
            "data_root": str(args.data_root),
            "weighting": args.weighting,
            "grouping": grouping.to_dict() if grouping is not None else None,
            "epochs": args.epochs,
            "probe_epochs": args.probe_epochs if args.grouping == "slope" else 0,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "checkpoint": str(run.final.relative_to(run.root)),
        },
    }
    if metrics is not None:
        card_extra["metrics"] = metrics
    card = export_onnx(
        model, run.onnx, embedding="concat", fp16=args.export_fp16, card_extra=card_extra
    )
    log(f"exported {run.onnx} ({card['embedding_dim']}-d {card['embedding']})")
    return card
