"""Person search evaluation: search mAP / top-k and detection AP / recall from a results file.

Score any model's outputs with `python -m training.evaluate` (see `__main__`) or from Python:
`evaluate_dataset(load_dataset(...), results)`; `evaluate_search` and `evaluate_detection`
work on plain records.
"""

from inference.boxes import box_iou
from training.evaluate.detection import evaluate_detection
from training.evaluate.metrics import average_precision, small_box_iou_threshold
from training.evaluate.protocol import SearchDataset, evaluate_dataset
from training.evaluate.results import ResultsError, load_results, save_results
from training.evaluate.search import evaluate_search

__all__ = [
    "ResultsError",
    "SearchDataset",
    "average_precision",
    "box_iou",
    "evaluate_dataset",
    "evaluate_detection",
    "evaluate_search",
    "load_results",
    "save_results",
    "small_box_iou_threshold",
]
