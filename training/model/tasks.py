"""The person-search tasks (losses) of ROI-AlignPS* and their kinds, as GALW needs them.

Kind "cls" marks classification-type losses (k = 1 in the uncertainty weighting), "reg"
regression-type ones (k = 2).
"""

TASK_KINDS: dict[str, str] = {
    "rpn_cls": "cls",  # t1
    "rpn_reg": "reg",  # t2
    "roi_cls": "cls",  # t3
    "roi_reg": "reg",  # t4
    "roi_reid": "cls",  # t5 OIM
    "fcos_cls": "cls",  # t6 focal
    "fcos_reg": "reg",  # t7 GIoU
    "fcos_ctr": "cls",  # t8 centerness BCE
    "fcos_reid": "cls",  # t9 OIM
    "fcos_tri": "cls",  # t10 triplet: a ranking loss, not a coordinate regression
}
TASKS: tuple[str, ...] = tuple(TASK_KINDS)
ATTR_TASK = "attr"  # optional t11, binary cross-entropy
ATTR_KIND = "cls"
CROP_TASK = "crop_reid"  # optional: OIM of people cut out of their frames (crop_queries > 0)
CROP_KIND = "cls"

# Which branch each task belongs to: the paper's "branch" grouping strategy.
TASK_BRANCHES: dict[str, str] = {
    "rpn_cls": "rpn",
    "rpn_reg": "rpn",
    "roi_cls": "roi",
    "roi_reg": "roi",
    "roi_reid": "roi",
    "fcos_cls": "fcos",
    "fcos_reg": "fcos",
    "fcos_ctr": "fcos",
    "fcos_reid": "fcos",
    "fcos_tri": "fcos",
    ATTR_TASK: "attr",
    CROP_TASK: "crop",
}

# The paper's fixed baseline for ROI-AlignPS* (its Table 1, last row: t3, t5..t9 by 10, the rest
# by 1) times the reference code's own per-loss factors (the ROI box L1 carries a factor of 10
# in its config), so that the model's losses stay unweighted.
PAPER_FIXED_WEIGHTS: dict[str, float] = {
    task: 10.0
    if task in {"roi_cls", "roi_reid", "fcos_cls", "fcos_reg", "fcos_ctr", "fcos_reid"}
    else 1.0
    for task in TASKS
}
REFERENCE_LOSS_FACTORS: dict[str, float] = {"roi_reg": 10.0}
REFERENCE_FIXED_WEIGHTS: dict[str, float] = {
    task: weight * REFERENCE_LOSS_FACTORS.get(task, 1.0)
    for task, weight in PAPER_FIXED_WEIGHTS.items()
}
