"""The model card's key policy: misspelt keys are errors, other unknown keys are named."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from inference.card import ModelCard, ModelError, UnknownCardKeyWarning, load_model_card

DEMO_CARD = Path(__file__).resolve().parents[2] / "models" / "demo" / "model.json"


def test_the_bundled_card_reads_without_a_warning():
    raw = json.loads(DEMO_CARD.read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        card = ModelCard.from_dict(raw)
    assert card.extra == {} and card.to_dict() == raw


def test_a_misspelt_key_is_an_error_naming_the_field():
    with pytest.raises(ValueError, match="'search_score_treshold'.*'search_score_threshold'"):
        ModelCard.from_dict({"search_score_treshold": 0.3})
    with pytest.raises(ValueError, match="misspelling of 'embedding_dim'"):
        ModelCard.from_dict({"embeding_dim": 64})


def test_other_unknown_keys_are_named_in_a_warning_and_kept():
    with pytest.warns(UnknownCardKeyWarning, match=r"\['exported_by', 'note'\]"):
        card = ModelCard.from_dict({"note": "test", "exported_by": "an older exporter"})
    assert card.extra == {"note": "test", "exported_by": "an older exporter"}
    assert card.to_dict()["note"] == "test"


def test_the_service_refuses_a_card_with_a_misspelt_key(tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not read: the card is refused first")
    (tmp_path / "model.json").write_text(json.dumps({"max_sise": [640, 360]}))
    with pytest.raises(ModelError, match="misspelling of 'max_size'"):
        load_model_card(onnx)
