from pathlib import Path

import numpy as np
import pytest

from dermdx.decision import (
    MALIGNANT_CLASSES,
    AbstentionConfig,
    abstain,
    balanced_accuracy_at_coverage,
    confidence_threshold_for_coverage,
    kept_per_class,
    malignancy_risk,
    plot_risk_coverage,
    risk_coverage_curve,
)
from dermdx.metrics import balanced_accuracy


def _probs(top: list[float], predicted: list[int], classes: int = 3) -> np.ndarray:
    """Rows whose top class is ``predicted`` with probability ``top``, the rest spread evenly."""
    out = np.zeros((len(top), classes))
    for i, (p, k) in enumerate(zip(top, predicted, strict=True)):
        out[i] = (1 - p) / (classes - 1)
        out[i, k] = p
    return out


# Ten cases, confidence 0.95 down to 0.50; the two least confident ones are wrong.
TOP = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5]
Y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
PRED = [0, 1, 2, 0, 1, 2, 0, 1, 0, 1]
P = _probs(TOP, PRED)


def test_risk_coverage_curve_on_a_hand_computed_case() -> None:
    curve = risk_coverage_curve(Y, P)
    assert np.allclose(curve["coverage"], np.arange(1, 11) / 10)
    assert np.allclose(curve["threshold"], TOP)
    expected_risk = [0.0] * 8 + [1 / 9, 2 / 10]
    assert np.allclose(curve["risk"], expected_risk)
    assert curve["balanced_accuracy"][7] == 1.0
    assert curve["balanced_accuracy"][-1] == pytest.approx(balanced_accuracy(Y, P.argmax(axis=1)))
    assert curve["aurc"] == pytest.approx((1 / 9 + 2 / 10) / 10)
    assert curve["n"] == 10


def test_tied_confidences_are_kept_together() -> None:
    probs = _probs([0.9, 0.7, 0.7, 0.7, 0.5], [0, 1, 2, 0, 1])
    curve = risk_coverage_curve(np.array([0, 1, 2, 1, 1]), probs)
    assert np.allclose(curve["coverage"], [0.2, 0.8, 1.0])
    assert np.allclose(curve["risk"], [0.0, 0.25, 0.2])
    assert confidence_threshold_for_coverage(probs, 0.4) == pytest.approx(0.7)
    assert (probs.max(axis=1) >= 0.7).mean() == 0.8  # ties keep more than asked, never fewer


def test_threshold_and_balanced_accuracy_at_coverage() -> None:
    assert confidence_threshold_for_coverage(P, 0.8) == pytest.approx(0.6)
    assert confidence_threshold_for_coverage(P, 1.0) == pytest.approx(0.5)
    assert confidence_threshold_for_coverage(P, 0.05) == pytest.approx(0.95)
    assert balanced_accuracy_at_coverage(Y, P, 0.8) == 1.0
    assert balanced_accuracy_at_coverage(Y, P, 1.0) == pytest.approx(balanced_accuracy(Y, P.argmax(axis=1)))
    assert kept_per_class(Y, P, 0.6, ["a", "b", "c"]) == {"a": 0.75, "b": 1.0, "c": pytest.approx(2 / 3)}


def test_abstaining_on_the_least_confident_cases_lowers_risk_on_random_data() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 2000)
    logits = rng.normal(size=(2000, 4))
    logits[np.arange(2000), y] += rng.uniform(0, 4, 2000)  # confident where the signal is strong
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    curve = risk_coverage_curve(y, probs)
    at_80 = balanced_accuracy_at_coverage(y, probs, 0.8)
    assert at_80 > curve["balanced_accuracy"][-1]
    assert curve["risk"][len(curve["risk"]) // 2] < curve["risk"][-1]


@pytest.mark.parametrize("coverage", [0, 1.5, -0.1, "0.8", True])
def test_bad_coverage_is_named(coverage) -> None:
    with pytest.raises(ValueError, match="coverage must be a share of cases in \\(0, 1\\]"):
        confidence_threshold_for_coverage(P, coverage)


def test_bad_probabilities_are_named() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        confidence_threshold_for_coverage(np.ones((3, 3)), 0.8)
    with pytest.raises(ValueError, match="shape mismatch"):
        risk_coverage_curve(Y[:5], P)


def test_abstain_gives_the_reason() -> None:
    config = AbstentionConfig(min_confidence=0.6)
    assert abstain(np.array([0.55, 0.3, 0.15]), config) == (True, "low confidence: top-class probability 0.55 is below the threshold 0.60")
    refused, reason = abstain(np.array([0.7, 0.2, 0.1]), config)
    assert not refused and "0.70 reaches the threshold 0.60" in reason
    with pytest.raises(ValueError, match="one case's probabilities"):
        abstain(P, config)


def test_abstention_config_validates_and_round_trips() -> None:
    config = AbstentionConfig(min_confidence=0.62, target_coverage=0.8, source="fitted")
    assert AbstentionConfig.from_dict(config.to_dict()) == config
    assert AbstentionConfig.from_model_info({"temperature": 1.2, "abstention": config.to_dict()}) == config
    assert AbstentionConfig.from_model_info(None) == AbstentionConfig()
    with pytest.raises(ValueError, match="min_confidence must be a probability in \\[0, 1\\], got 1.5"):
        AbstentionConfig(min_confidence=1.5)
    with pytest.raises(ValueError, match="unknown abstention settings \\['min_conf'\\]"):
        AbstentionConfig.from_dict({"min_conf": 0.5})


def test_malignancy_risk_sums_the_malignant_classes_present() -> None:
    classes = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    probs = np.array([0.1, 0.2, 0.05, 0.05, 0.3, 0.25, 0.05])
    assert malignancy_risk(probs, classes) == pytest.approx(0.6)
    assert malignancy_risk(np.array([0.4, 0.6]), ["mel", "nv"]) == pytest.approx(0.4)
    assert malignancy_risk(np.array([0.4, 0.6]), ["bkl", "nv"]) is None
    assert set(MALIGNANT_CLASSES) == {"mel", "bcc", "akiec"}


def test_risk_coverage_plot_is_written(tmp_path: Path) -> None:
    path = plot_risk_coverage(Y, P, tmp_path / "rc.png", coverage=0.8)
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
