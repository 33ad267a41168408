"""The end of a training run: the PyTorch model's search results on the test split, their
metrics for each embedding (AlignPS, ROI, both concatenated), and the ONNX export with its
model card."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inference.card import ModelCard
from inference.outputs import Detections, FrameOutputs
from inference.preprocess import resize_and_pad
from training.data import load_dataset
from training.evaluate import evaluate_dataset
from training.evaluate.collect import QueryEmbedding, collect_results, protocols
from training.model.network import PersonSearchModel
from training.run_config import RunConfig
from training.train_loop import log

EMBEDDINGS = ("alignps", "roi", "concat")


def torch_image_runner(model: nn.Module, device: torch.device, max_size: tuple[int, int]):
    """A ``collect_results`` runner for the PyTorch model: outputs per embedding kind."""
    model.eval()

    @torch.no_grad()
    def run(image: np.ndarray, boxes: np.ndarray) -> dict[str, FrameOutputs]:
        prepared = resize_and_pad(image, max_size)
        out = model(
            torch.from_numpy(prepared.image)[None].to(device),
            query_boxes=torch.from_numpy(boxes * prepared.scale).to(device),
        )
        height, width = image.shape[:2]
        found = (out["boxes"].float() / prepared.scale).cpu().numpy()
        found = np.clip(found, 0, [width, height, width, height]).astype(np.float32)
        scores = out["scores"].float().cpu().numpy()
        detections = _by_embedding(out["emb_alignps"], out["emb_roi"])
        queries = _by_embedding(out["query_alignps"], out["query_roi"])
        return {
            name: FrameOutputs(Detections(found, scores, detections[name]), queries[name])
            for name in EMBEDDINGS
        }

    return run


def search_results(
    model: nn.Module,
    dataset,
    device: torch.device,
    max_size: tuple[int, int],
    show_progress: bool = True,
    query_embedding: QueryEmbedding = "detection",
    min_score: float = 0.5,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Results per embedding kind, and how the queries were embedded (see collect_results)."""
    runner = torch_image_runner(model, device, (max_size[0], max_size[1]))
    return collect_results(
        dataset, runner, EMBEDDINGS, query_embedding, min_score, show_progress=show_progress
    )


def _by_embedding(alignps: torch.Tensor, roi: torch.Tensor) -> dict[str, np.ndarray]:
    alignps, roi = F.normalize(alignps.float(), dim=1), F.normalize(roi.float(), dim=1)
    both = F.normalize(torch.cat([alignps, roi], dim=1), dim=1)
    return {name: t.cpu().numpy() for name, t in zip(EMBEDDINGS, (alignps, roi, both), strict=True)}


def evaluate_model(model: nn.Module, config: RunConfig, device: torch.device) -> dict[str, Any]:
    """metrics.json: per embedding and protocol setting, the evaluator's metrics."""
    test = load_dataset(config.dataset, config.data_root, "test")
    max_size, _ = config.sizes
    results, queries = search_results(
        model,
        test,
        device,
        max_size,
        not config.no_progress,
        config.query_embedding,
        config.det_thresh,
    )
    settings = protocols(config.dataset, config.gallery_size)
    metrics: dict[str, Any] = {
        "dataset": config.dataset,
        "det_thresh": config.det_thresh,
        **queries,
    }
    for embedding in EMBEDDINGS:
        metrics[embedding] = {
            setting: evaluate_dataset(
                test, results[embedding], det_thresh=config.det_thresh, **options
            )
            for setting, options in settings.items()
        }
    headline_setting = next(iter(settings))
    log(f"test metrics ({headline_setting}, queries embedded from the {config.query_embedding}):")
    for embedding in EMBEDDINGS:
        scores = metrics[embedding][headline_setting]
        log(
            f"  {embedding:8s} mAP {scores['mAP']:.4f}  top-1 {scores['top1']:.4f}  "
            f"det AP {scores['det_ap']:.4f}  det recall {scores['det_recall']:.4f}"
        )
    return metrics


def card_fields(
    config: RunConfig,
    checkpoint: str,
    metrics: Mapping[str, Any] | None,
    grouping,
    provenance: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The model-card fields a run exports with (also saved in its final checkpoint, so that
    ``python -m training.export --checkpoint`` writes the same card). ``provenance``: the
    training command (``command``) and, for synthetic data, the generator's
    (``synth_command``), both under ``training``."""
    max_size, _ = config.sizes
    fields: dict[str, Any] = {
        "random_weights": False,
        "max_size": list(max_size),
        "search_score_threshold": config.det_thresh,  # the threshold the metrics were taken at
        "dataset": config.dataset,
        "training": {
            "data_root": str(config.data_root),
            "weighting": config.weighting,
            "fixed_weights": config.fixed_weights,
            "grouping": grouping.to_dict() if grouping is not None else None,
            "epochs": config.epochs,
            "probe_epochs": config.probe_epochs if config.grouping == "slope" else 0,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "seed": config.seed,
            "checkpoint": checkpoint,
            **dict(provenance or {}),
        },
    }
    if metrics is not None:
        fields["metrics"] = dict(metrics)
    return fields


def export_model(
    model: PersonSearchModel, onnx_path, fields: Mapping[str, Any], fp16: bool = False
) -> ModelCard:
    """model.onnx and model.json (with the training data, options and metrics in the card)."""
    from training.export import export_onnx

    card = export_onnx(model, onnx_path, embedding="concat", fp16=fp16, card_fields=fields)
    log(f"exported {onnx_path} ({card.embedding_dim}-d {card.embedding})")
    return card
