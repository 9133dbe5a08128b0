"""Choosing logit offsets on validation images (fortify.evaluation.operating_point)."""

import pytest
import torch

from fortify.errors import ConfigError
from fortify.evaluation.operating_point import choose_class_bias, resolve_floors

CLASSES = ["benign", "malignant", "normal"]


def _logits(rows: list[tuple[list[float], int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logit row, label, how many copies) -> logits, labels."""
    z = [r for r, _, n in rows for _ in range(n)]
    y = [label for _, label, n in rows for _ in range(n)]
    return torch.tensor(z), torch.tensor(y)


def test_a_rare_class_just_below_threshold_gets_its_predictions_back():
    # Benign scans rank above normal on the benign logit but never win: an offset of ~1 recovers them.
    z, y = _logits([([0.05, -3.0, 1.0], 0, 4), ([-1.0, -3.0, 1.0], 2, 10), ([-2.0, 2.0, 0.0], 1, 10)])
    point = choose_class_bias(z, y, CLASSES)
    assert point.before["per_class"]["benign"]["sensitivity"] == 0.0
    assert point.after["per_class"]["benign"]["sensitivity"] == 1.0
    assert point.after["balanced_accuracy"] == 1.0 and point.after["accuracy"] == 1.0
    assert 0.95 < point.bias[0] - point.bias[2] < 2.0  # between the benign and the normal scans' margins


def test_a_model_that_gains_nothing_keeps_zero_offsets():
    z, y = _logits([([2.0, 0.0, 0.0], 0, 3), ([0.0, 2.0, 0.0], 1, 3), ([0.0, 0.0, 2.0], 2, 3)])
    point = choose_class_bias(z, y, CLASSES)
    assert point.bias == [0.0, 0.0, 0.0]


def _trade_off() -> tuple[torch.Tensor, torch.Tensor]:
    # Benign scans sit 0.2 below malignant; one malignant scan sits 0.1 above benign: any offset that
    # recovers the benign scans costs that malignant scan.
    return _logits(
        [
            ([0.8, 1.0, 0.0], 0, 4),
            ([0.9, 1.0, 0.0], 1, 1),
            ([0.0, 1.0, 0.0], 1, 9),
            ([0.0, 0.0, 1.0], 2, 9),
        ]
    )


def test_a_recall_floor_is_never_traded_away():
    z, y = _trade_off()
    free = choose_class_bias(z, y, CLASSES)
    assert free.after["per_class"]["malignant"]["sensitivity"] < 1.0  # unconstrained: trades one away
    assert free.after["per_class"]["benign"]["sensitivity"] == 1.0
    floors = resolve_floors({"malignant": "keep"}, CLASSES, free.before)
    kept = choose_class_bias(z, y, CLASSES, min_recall=floors)
    assert kept.after["per_class"]["malignant"]["sensitivity"] == 1.0
    assert kept.after["balanced_accuracy"] >= kept.before["balanced_accuracy"]
    assert kept.min_recall == {"malignant": 1.0}


def test_floors_no_offset_can_meet_are_a_config_error():
    z, y = _trade_off()
    with pytest.raises(ConfigError, match="no offsets"):
        choose_class_bias(z, y, CLASSES, min_recall={"malignant": 1.0, "benign": 1.0})


def test_only_the_named_classes_move():
    z, y = _logits([([0.05, -3.0, 1.0], 0, 4), ([-1.0, -3.0, 1.0], 2, 10), ([-2.0, 2.0, 0.0], 1, 10)])
    point = choose_class_bias(z, y, CLASSES, move=["benign"])
    assert point.moved == ["benign"] and point.bias[1:] == [0.0, 0.0] and point.bias[0] > 0.95


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"move": ["cyst"]}, "unknown class 'cyst'"),
        ({"min_recall": {"cyst": 0.5}}, "unknown class 'cyst'"),
        ({"step": 0.0}, "step > 0"),
    ],
)
def test_bad_requests_are_config_errors(kwargs, message):
    z, y = _trade_off()
    with pytest.raises(ConfigError, match=message):
        choose_class_bias(z, y, CLASSES, **kwargs)


@pytest.mark.parametrize("text", ["1.5", "-0.1", "most"])
def test_a_floor_is_a_rate_or_keep(text):
    z, y = _trade_off()
    before = choose_class_bias(z, y, CLASSES).before
    with pytest.raises(ConfigError, match="expected a number in"):
        resolve_floors({"malignant": text}, CLASSES, before)
