"""Tests for dermdx.metrics on small synthetic data with hand-computed answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dermdx import metrics
from dermdx.metrics import (
    age_band,
    balanced_accuracy,
    compute_metrics,
    expected_calibration_error,
    reliability_bins,
    sensitivity_at_specificity,
    subgroup_metrics,
)

CLASSES = ["mel", "nv", "bcc"]


def one_hot_probs(pred: np.ndarray, n_classes: int, confidence: float = 0.9) -> np.ndarray:
    """Probabilities whose argmax is ``pred``: ``confidence`` on it, the rest spread evenly."""
    p = np.full((len(pred), n_classes), (1 - confidence) / (n_classes - 1))
    p[np.arange(len(pred)), pred] = confidence
    return p


def noisy_classifier(n: int, n_classes: int, seed: int, signal: float = 1.5,
                     prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(n_classes, size=n, p=prior)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y] += signal
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def walk_nan(obj) -> bool:
    if isinstance(obj, float):
        return math.isnan(obj)
    if isinstance(obj, dict):
        return any(walk_nan(v) for v in obj.values())
    if isinstance(obj, list):
        return any(walk_nan(v) for v in obj)
    return False


# --------------------------------------------------------------------------- balanced accuracy


def test_balanced_accuracy_of_known_confusion():
    # class 0: 4 of 5 right; class 1: 1 of 3 right; class 2: 2 of 2 right
    y_true = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 0, 1, 1, 0, 2, 2, 2])
    assert balanced_accuracy(y_true, y_pred) == pytest.approx((4 / 5 + 1 / 3 + 2 / 2) / 3)


def test_balanced_accuracy_ignores_classes_only_predicted():
    # class 2 never occurs in y_true: its recall is undefined and must not count as 0
    assert balanced_accuracy([0, 0, 1, 1], [0, 2, 1, 1]) == pytest.approx((0.5 + 1.0) / 2)


def test_majority_predictor_has_balanced_accuracy_one_over_c():
    n_classes = 4
    y = np.array([0] * 85 + [1] * 5 + [2] * 5 + [3] * 5)
    p = one_hot_probs(np.zeros(len(y), dtype=int), n_classes)
    m = compute_metrics(y, p, ["nv", "mel", "bcc", "df"], n_bootstrap=0)
    assert m["accuracy"] == pytest.approx(0.85)
    assert m["balanced_accuracy"] == pytest.approx(1 / n_classes)
    assert m["per_class"]["mel"]["precision"] is None  # never predicted: undefined, not 0
    assert m["per_class"]["nv"]["specificity"] == 0.0


# --------------------------------------------------------------------------- sensitivity at specificity


def test_sensitivity_at_specificity_hand_example():
    # negatives 0.1..0.5 (5), positives 0.35, 0.6, 0.7, 0.8 (4)
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.35, 0.6, 0.7, 0.8])
    # threshold 0.6: 3/4 sensitivity, 5/5 specificity
    assert sensitivity_at_specificity(y, s, 1.0) == pytest.approx(0.75)
    # specificity >= 0.8 allows one false positive (threshold 0.5): still 3/4
    assert sensitivity_at_specificity(y, s, 0.8) == pytest.approx(0.75)
    # specificity >= 0.6 allows threshold 0.35 (negatives 0.4, 0.5 above it): 4/4 at spec 3/5
    assert sensitivity_at_specificity(y, s, 0.6) == pytest.approx(1.0)
    assert sensitivity_at_specificity(y, s, 0.0) == 1.0


def test_sensitivity_at_specificity_rejects_single_outcome():
    with pytest.raises(ValueError, match="both positives and negatives"):
        sensitivity_at_specificity([0, 0, 0], [0.1, 0.2, 0.3], 0.9)
    with pytest.raises(ValueError, match=r"specificity must be in \[0, 1\], got 90"):
        sensitivity_at_specificity([0, 1], [0.1, 0.2], 90)


# --------------------------------------------------------------------------- calibration


def test_ece_small_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(1)
    n = 20000
    conf = rng.uniform(0.5, 1.0, size=n)
    correct = rng.uniform(size=n) < conf  # right with exactly the stated probability
    y = np.where(correct, 0, 1)
    calibrated = np.stack([conf, 1 - conf], axis=1)
    assert expected_calibration_error(y, calibrated) < 0.02

    # 99% confident, right ~70% of the time
    y_over = (rng.uniform(size=n) > 0.7).astype(int)
    over = np.tile([0.99, 0.01], (n, 1))
    assert expected_calibration_error(y_over, over) == pytest.approx(0.29, abs=0.02)


def test_reliability_bins_counts_and_empty_bins():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.95, 0.05], [0.55, 0.45], [0.95, 0.05], [0.3, 0.7]])
    bins = reliability_bins(y, p, n_bins=10)
    assert bins["count"].sum() == 4
    assert bins["count"][9] == 2 and bins["accuracy"][9] == pytest.approx(0.5)
    assert bins["count"][5] == 1  # 0.55 lies in (0.5, 0.6]
    assert bins["count"][6] == 1 and bins["accuracy"][6] == 1.0
    assert np.isnan(bins["accuracy"][0]) and bins["count"][0] == 0


# --------------------------------------------------------------------------- compute_metrics


def test_perfect_classifier():
    y = np.repeat(np.arange(3), 10)
    m = compute_metrics(y, one_hot_probs(y, 3), CLASSES, n_bootstrap=50)
    assert m["balanced_accuracy"] == 1.0 and m["accuracy"] == 1.0
    assert m["macro_auc"] == 1.0 and m["mel_auc"] == 1.0
    assert all(v["auc"] == 1.0 and v["sensitivity"] == 1.0 for v in m["per_class"].values())
    assert m["mel_sensitivity_at_90_specificity"] == 1.0
    assert m["confusion_matrix"] == [[10, 0, 0], [0, 10, 0], [0, 0, 10]]
    assert m["ci95"]["balanced_accuracy"] == [1.0, 1.0]


def test_per_class_figures_match_confusion():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 1])
    m = compute_metrics(y, one_hot_probs(pred, 3), CLASSES, n_bootstrap=0)
    mel = m["per_class"]["mel"]
    assert mel["support"] == 4
    assert mel["sensitivity"] == pytest.approx(2 / 4)
    assert mel["specificity"] == pytest.approx(5 / 6)  # one nv predicted mel
    assert mel["precision"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"][0] == [2, 1, 1]


def test_auc_is_none_when_class_has_no_positives():
    y = np.array([1, 1, 1, 2, 2, 2, 1, 2])  # no melanoma at all
    p = np.random.default_rng(0).dirichlet(np.ones(3), size=len(y))
    m = compute_metrics(y, p, CLASSES, n_bootstrap=20)
    assert m["per_class"]["mel"]["auc"] is None
    assert m["per_class"]["mel"]["sensitivity"] is None
    assert m["mel_auc"] is None
    assert m["mel_sensitivity_at_80_specificity"] is None
    assert m["ci95"]["mel_auc"] is None
    assert m["macro_auc"] == pytest.approx(np.mean([m["per_class"][c]["auc"] for c in ("nv", "bcc")]))
    json.dumps(m, allow_nan=False)  # raises on NaN
    assert not walk_nan(m)


def test_positive_keys_absent_when_positive_not_a_class():
    y, p = noisy_classifier(60, 3, seed=0)
    m = compute_metrics(y, p, ["a", "b", "c"], n_bootstrap=0)
    assert m["positive"] is None
    assert not any(k.startswith("mel_") for k in m)
    m = compute_metrics(y, p, ["a", "b", "c"], positive="b", n_bootstrap=10)
    assert m["b_auc"] == m["per_class"]["b"]["auc"]
    assert "b_sensitivity_at_90_specificity" in m and "b_auc" in m["ci95"]


def test_point_estimates_match_sklearn():
    y, p = noisy_classifier(300, 4, seed=3)
    m = compute_metrics(y, p, ["mel", "nv", "bcc", "df"], n_bootstrap=0)
    assert m["macro_auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))


def test_ci_contains_estimate_and_narrows_with_more_data():
    small = compute_metrics(*noisy_classifier(150, 3, seed=4), CLASSES, n_bootstrap=300)
    large = compute_metrics(*noisy_classifier(2400, 3, seed=4), CLASSES, n_bootstrap=300)
    for m in (small, large):
        for key in ("balanced_accuracy", "accuracy", "macro_auc", "mel_auc"):
            low, high = m["ci95"][key]
            assert low <= m[key] <= high, key
        assert m["bootstrap"]["n_used"] == 300
    for key in ("balanced_accuracy", "macro_auc"):
        width = lambda m: m["ci95"][key][1] - m["ci95"][key][0]  # noqa: E731
        assert width(large) < 0.5 * width(small), key  # ~1/sqrt(16) expected


def test_bootstrap_is_seeded():
    y, p = noisy_classifier(200, 3, seed=5)
    a = compute_metrics(y, p, CLASSES, n_bootstrap=100, seed=7)
    b = compute_metrics(y, p, CLASSES, n_bootstrap=100, seed=7)
    c = compute_metrics(y, p, CLASSES, n_bootstrap=100, seed=8)
    assert a["ci95"] == b["ci95"]
    assert a["ci95"] != c["ci95"]


def test_bootstrap_skips_resamples_missing_a_class():
    y = np.array([0] * 15 + [1] * 14 + [2])  # one bcc: absent from ~37% of resamples
    p = one_hot_probs(y, 3)
    m = compute_metrics(y, p, CLASSES, n_bootstrap=400)
    used = m["bootstrap"]["n_used"]
    assert 180 < used < 320
    assert m["bootstrap"]["n_requested"] == 400


def test_weighted_auc_equals_sklearn_on_expanded_resample():
    rng = np.random.default_rng(6)
    scores = np.round(rng.uniform(size=40), 1)  # many ties
    is_pos = rng.uniform(size=40) < 0.3
    weights = rng.multinomial(40, np.full(40, 1 / 40), size=5).astype(float)
    got = metrics._weighted_auc(weights, metrics._weighted_auc_setup(scores, is_pos))
    for w, auc in zip(weights, got, strict=True):
        rows = np.repeat(np.arange(40), w.astype(int))
        assert auc == pytest.approx(roc_auc_score(is_pos[rows], scores[rows]))


def test_bootstrap_balanced_accuracy_matches_direct_computation():
    y, p = noisy_classifier(80, 3, seed=9)
    rng = np.random.default_rng(0)
    n = len(y)
    w = rng.multinomial(n, np.full(n, 1 / n), size=1)[0]
    rows = np.repeat(np.arange(n), w)
    # the vectorised path, seeded the same way, must reproduce a direct recomputation
    kept, used = metrics._bootstrap(y, p, [0, 1, 2], 0, 1, seed=0)
    assert used == 1
    assert kept["balanced_accuracy"][0] == pytest.approx(balanced_accuracy(y[rows], p[rows].argmax(1)))
    assert kept["macro_auc"][0] == pytest.approx(
        roc_auc_score(y[rows], p[rows], multi_class="ovr", average="macro"))


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 1], [[0.5, 0.3, 0.2]], "y_true has 2 labels but probs has 1 rows"),
        ([0, 1], [[0.5, 0.5], [0.5, 0.5]], "probs has 2 columns but 3 classes"),
        ([0, 3], [[0.5, 0.3, 0.2]] * 2, r"y_true\[1\] = 3, but valid indices are 0..2"),
        ([0, -1], [[0.5, 0.3, 0.2]] * 2, r"y_true\[1\] = -1"),
        ([0, 1], [[0.5, 0.3, 0.2], [2.0, 1.0, 0.5]], "outside \\[0, 1\\].*not logits"),
        ([0, 1], [[0.5, 0.3, 0.2], [0.5, 0.3, 0.1]], "row 1 sums to 0.9"),
        ([0, 1], [[0.5, 0.3, 0.2], [np.nan, 0.5, 0.5]], "row 1 holds a non-finite"),
        ([], np.zeros((0, 3)), "empty"),
        ([[0, 1]], [[0.5, 0.3, 0.2]], "y_true must be 1-D"),
        ([0, 1.5], [[0.5, 0.3, 0.2]] * 2, "integer class indices"),
    ],
)
def test_compute_metrics_rejects_bad_input(y, p, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(y, p, CLASSES, n_bootstrap=0)


def test_compute_metrics_rejects_string_labels_and_bad_classes():
    with pytest.raises(TypeError, match="Manifest.label_indices"):
        compute_metrics(np.array(["mel", "nv"]), [[0.5, 0.3, 0.2]] * 2, CLASSES)
    with pytest.raises(ValueError, match=r"repeated: \['mel'\]"):
        compute_metrics([0, 1], [[0.5, 0.3, 0.2]] * 2, ["mel", "nv", "mel"])
    with pytest.raises(ValueError, match="n_bootstrap must be a non-negative integer, got -1"):
        compute_metrics([0, 1], [[0.5, 0.3, 0.2]] * 2, CLASSES, n_bootstrap=-1)


# --------------------------------------------------------------------------- subgroups and age


def test_subgroup_skips_small_groups_and_gathers_unknown():
    y, p = noisy_classifier(60, 3, seed=11)
    centre = ["vienna"] * 30 + ["rosendahl"] * 25 + ["tiny"] * 5
    sex = ["female"] * 20 + [None] * 10 + [float("nan")] * 10 + [""] * 5 + ["male"] * 15
    out = subgroup_metrics(y, p, CLASSES, {"centre": centre, "sex": np.array(sex, dtype=object)},
                           n_bootstrap=20, min_size=10)
    assert list(out) == ["centre", "sex"]
    assert out["centre"]["tiny"] == {"n": 5, "skipped": "fewer than min_size images"}
    assert out["centre"]["vienna"]["n"] == 30 and "balanced_accuracy" in out["centre"]["vienna"]
    assert set(out["sex"]) == {"female", "male", "unknown"}
    assert out["sex"]["unknown"]["n"] == 25
    assert list(out["sex"])[-1] == "unknown"
    # the subgroup figure is the figure computed on those rows alone
    direct = compute_metrics(y[:30], p[:30], CLASSES, n_bootstrap=0)
    assert out["centre"]["vienna"]["balanced_accuracy"] == direct["balanced_accuracy"]
    json.dumps(out, allow_nan=False)


def test_subgroup_rejects_wrong_length():
    y, p = noisy_classifier(20, 3, seed=12)
    with pytest.raises(ValueError, match="grouping 'sex' has 19 labels but there are 20"):
        subgroup_metrics(y, p, CLASSES, {"sex": ["f"] * 19})


def test_age_band():
    ages = [0, 29.9, 30, 44.9, 45, 59, 60, 74, 75, 95, None, float("nan"), ""]
    assert age_band(ages) == ["<30", "<30", "30-44", "30-44", "45-59", "45-59", "60-74", "60-74",
                              "75+", "75+", "unknown", "unknown", "unknown"]
    assert age_band(np.array([50.0, np.nan])) == ["45-59", "unknown"]


def test_age_band_rejects_bad_ages():
    with pytest.raises(ValueError, match=r"ages\[1\] = -3 is outside 0..130"):
        age_band([40, -3])
    with pytest.raises(ValueError, match=r"ages\[0\] = 'old' is not a number"):
        age_band(["old"])


def test_age_bands_sort_in_age_order_in_subgroups():
    y, p = noisy_classifier(50, 3, seed=13)
    ages = [80] * 10 + [20] * 10 + [50] * 10 + [None] * 10 + [35] * 10
    out = subgroup_metrics(y, p, CLASSES, {"age_band": age_band(ages)}, n_bootstrap=0)
    assert list(out["age_band"]) == ["<30", "30-44", "45-59", "75+", "unknown"]


def test_paired_difference_of_a_model_with_itself_is_exactly_zero():
    from dermdx.metrics import paired_difference

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    probs = rng.dirichlet(np.ones(3), 200)
    result = paired_difference(y, probs, probs, ["mel", "nv", "bcc"], n_bootstrap=200)
    for row in result.values():
        assert row["difference"] == 0.0 and row["ci95"] == [0.0, 0.0] and row["share_a_better"] == 0.0


def test_paired_difference_sees_a_better_model_and_its_sign():
    from dermdx.metrics import paired_difference

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    noise = rng.dirichlet(np.ones(3), 300)
    good = 0.5 * np.eye(3)[y] + 0.5 * noise
    result = paired_difference(y, good, noise, ["mel", "nv", "bcc"], n_bootstrap=300)
    ba = result["balanced_accuracy"]
    assert ba["difference"] > 0.3 and ba["ci95"][0] > 0.2 and ba["share_a_better"] == 1.0
    assert result["mel_auc"]["difference"] > 0
    flipped = paired_difference(y, noise, good, ["mel", "nv", "bcc"], n_bootstrap=300)["balanced_accuracy"]
    assert flipped["difference"] == -ba["difference"] and flipped["ci95"][1] < -0.2
    with pytest.raises(ValueError, match="same rows and classes"):
        paired_difference(y, good, noise[:10], ["mel", "nv", "bcc"])
