"""Attribute labels (t11) from attributes.json into training targets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.data import PRW
from training.data.attributes import UNKNOWN, box_attributes, load_attribute_labels
from training.data.base import DatasetError
from training.data.torch_dataset import ScaleRange, TrainImages
from training.synth import generate

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def prw_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("attr") / "data"
    return generate(root, "prw", frames=24, identities=8, cameras=3, seed=5, size=(320, 192))


def test_labels_follow_the_training_label_order(prw_root):
    train = PRW(prw_root, "train")
    labels, names = load_attribute_labels(prw_root / "attributes.json", train.train_id_names)
    document = json.loads((prw_root / "attributes.json").read_text())
    assert names == document["vector_names"]
    for row, id_name in enumerate(train.train_id_names):
        assert labels[row].tolist() == document["identities"][id_name]["vector"]


def test_training_targets_carry_each_box_identity_attributes(prw_root):
    train = PRW(prw_root, "train")
    labels, _ = load_attribute_labels(prw_root / "attributes.json", train.train_id_names)
    images = TrainImages(train.images, ScaleRange(320, 320), seed=0, attributes=labels)
    for index in range(len(images)):
        _, target = images[(0, index)]
        pids = target["pids"].numpy()
        attrs = target["attrs"].numpy()
        assert attrs.shape == (len(pids), labels.shape[1])
        for pid, row in zip(pids, attrs, strict=True):
            expected = labels[pid] if pid >= 0 else np.full(labels.shape[1], UNKNOWN)
            assert row.tolist() == expected.tolist()


def test_unlisted_identities_are_unknown_and_bad_files_are_named(tmp_path):
    path = tmp_path / "attributes.json"
    path.write_text(
        json.dumps({"vector_names": ["a", "b"], "identities": {"7": {"vector": [1, 0]}}})
    )
    labels, _ = load_attribute_labels(path, ["7", "9"])
    assert labels.tolist() == [[1.0, 0.0], [UNKNOWN, UNKNOWN]]
    assert box_attributes(labels, np.array([1, -1, 0])).tolist() == [
        [UNKNOWN, UNKNOWN], [UNKNOWN, UNKNOWN], [1.0, 0.0]
    ]  # fmt: skip
    path.write_text(json.dumps({"vector_names": ["a"], "identities": {"7": {"vector": [2]}}}))
    with pytest.raises(DatasetError, match="0 or 1"):
        load_attribute_labels(path, ["7"])
    with pytest.raises(DatasetError, match="none of the 1"):
        load_attribute_labels(path, ["8"])
    path.write_text("[")
    with pytest.raises(DatasetError, match=str(path.name)):
        load_attribute_labels(path, ["7"])
