"""Evaluation metrics for multi-class skin-lesion classifiers.

Plain accuracy flatters a classifier on skewed data (always answering "nevus" scores about 67% on
HAM10000), so the headline figure is balanced accuracy (mean per-class recall, the ISIC 2018
metric), reported with per-class figures, AUCs, calibration and bootstrap confidence intervals.

Every function takes numpy arrays: ``y_true`` holds integer class indices, ``probs`` holds one
row of softmax probabilities per image. A value that is undefined for the data (an AUC for a class
with no positives, say) is ``None`` in the results, never NaN and never a silent 0, so the dicts
can go straight to JSON.

Example:
    >>> m = compute_metrics(y, probs, ["mel", "nv", "bcc"], n_bootstrap=1000)
    >>> m["balanced_accuracy"], m["ci95"]["balanced_accuracy"]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score, roc_curve

AGE_BANDS = ("<30", "30-44", "45-59", "60-74", "75+", "unknown")
UNKNOWN_GROUP = "unknown"
SKIPPED_SMALL = "fewer than min_size images"
# Softmax outputs in float32 sum to 1 within ~1e-6; anything further off is not probabilities.
PROB_SUM_ATOL = 1e-3
# Bootstrap resamples are processed in blocks of about this many (resample, row) cells, which
# bounds memory (~8 bytes each, a few copies) whatever the data size.
_BOOTSTRAP_BLOCK_CELLS = 2_000_000


# --------------------------------------------------------------------------- validation


def check_predictions(
    y_true: Any, probs: Any, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and probabilities and return them as ``int64`` / ``float64`` arrays.

    Args:
        y_true: integer class indices, shape ``[N]``.
        probs: probabilities, shape ``[N, C]``; each row must sum to 1 (within 1e-3).
        classes: class names; when given, ``C`` must equal ``len(classes)``.

    Returns:
        ``(y_true, probs)`` as numpy arrays.

    Raises:
        TypeError: labels that are not integers (class-name strings, say).
        ValueError: a shape mismatch, an empty input, labels outside ``0..C-1``, probabilities
            outside [0, 1], non-finite values, or rows that do not sum to 1 (logits, say).
    """
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D (one class index per image), got shape {y.shape}")
    if y.dtype.kind in "fc" and y.size and not np.all(np.isfinite(y) & (y == np.round(y))):
        bad = int(np.flatnonzero(~(np.isfinite(y) & (y == np.round(y))))[0])
        raise ValueError(f"y_true must hold integer class indices; y_true[{bad}] = {y[bad]!r}")
    if y.dtype.kind not in "iuf" and y.size:
        raise TypeError(
            f"y_true must hold integer class indices, got dtype {y.dtype} (first value {y[0]!r}); "
            "map class names to indices first (Manifest.label_indices)"
        )
    y = y.astype(np.int64)

    try:
        p = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"probs must be a numeric [N, C] array: {err}") from None
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D [N images, C classes], got shape {p.shape}")
    if p.shape[0] != y.shape[0]:
        raise ValueError(
            f"shape mismatch: y_true has {y.shape[0]} labels but probs has {p.shape[0]} rows"
        )
    if y.shape[0] == 0:
        raise ValueError("no predictions to evaluate: y_true and probs are empty")
    n_classes = p.shape[1]
    if classes is not None:
        names = list(classes)
        if len(names) != n_classes:
            raise ValueError(
                f"shape mismatch: probs has {n_classes} columns but {len(names)} classes were "
                f"given ({names})"
            )
        dupes = sorted({c for c in names if names.count(c) > 1})
        if dupes:
            raise ValueError(f"class names must be unique; repeated: {dupes}")
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes (probs columns), got {n_classes}")

    out_of_range = (y < 0) | (y >= n_classes)
    if out_of_range.any():
        i = int(np.flatnonzero(out_of_range)[0])
        named = f" ({list(classes)})" if classes is not None else ""
        raise ValueError(
            f"labels out of range: y_true[{i}] = {y[i]}, but valid indices are "
            f"0..{n_classes - 1} for {n_classes} classes{named}"
        )
    finite = np.isfinite(p).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"probs row {i} holds a non-finite value: {p[i].tolist()}")
    outside = ((p < -PROB_SUM_ATOL) | (p > 1 + PROB_SUM_ATOL)).any(axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"probs row {i} has values outside [0, 1]: {p[i].tolist()}; pass softmax "
            "probabilities, not logits"
        )
    sums = p.sum(axis=1)
    off = np.abs(sums - 1.0) > PROB_SUM_ATOL
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise ValueError(
            f"probs rows must sum to 1: row {i} sums to {sums[i]:.6g} ({int(off.sum())} rows off "
            "by more than 1e-3); apply softmax to logits first"
        )
    return y, p


def _check_pair(a: Any, b: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    x, z = np.asarray(a), np.asarray(b)
    if x.ndim != 1 or z.ndim != 1:
        raise ValueError(f"{names[0]} and {names[1]} must be 1-D, got shapes {x.shape} and {z.shape}")
    if x.shape[0] != z.shape[0]:
        raise ValueError(
            f"shape mismatch: {names[0]} has {x.shape[0]} values but {names[1]} has {z.shape[0]}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{names[0]} and {names[1]} are empty")
    return x, z


def _float_or_none(value: Any) -> float | None:
    """JSON-safe float: None for missing or non-finite values, so NaN never reaches a report."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- single metrics


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (the ISIC 2018 metric).

    A class that is only ever predicted, never true, does not count: its recall is undefined.

    Example:
        >>> balanced_accuracy([0, 0, 0, 1], [0, 0, 1, 1])  # (2/3 + 1) / 2
        0.8333333333333333
    """
    y, pred = _check_pair(y_true, y_pred, ("y_true", "y_pred"))
    with warnings.catch_warnings():
        # sklearn warns when y_pred holds classes absent from y_true; dropping them is the point.
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, pred))


def sensitivity_at_specificity(y_true_binary: Any, scores: Any, specificity: float) -> float:
    """Highest sensitivity on the ROC curve among thresholds whose specificity is >= ``specificity``.

    This is the operating point a clinician would fix ("no more than 20% of benign lesions sent for
    excision") and then ask how many melanomas are caught.

    Args:
        y_true_binary: 1 (or True) for the positive class, 0 for the rest.
        scores: higher means more likely positive (e.g. the positive-class probability).
        specificity: the target, in [0, 1].

    Raises:
        ValueError: labels that are not 0/1, only one outcome present (the curve is undefined),
            non-finite scores, or a target outside [0, 1].
    """
    y, s = _check_pair(y_true_binary, scores, ("y_true_binary", "scores"))
    if not 0.0 <= float(specificity) <= 1.0:
        raise ValueError(f"specificity must be in [0, 1], got {specificity!r}")
    labels = set(np.unique(y).tolist())
    if not labels <= {0, 1, True, False}:
        raise ValueError(f"y_true_binary must hold only 0/1, got values {sorted(labels)}")
    if len(labels) < 2:
        raise ValueError(
            "sensitivity at specificity needs both positives and negatives; y_true_binary holds "
            f"only {sorted(labels)}"
        )
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError(f"scores must be finite; scores[{int(np.flatnonzero(~np.isfinite(s))[0])}] is not")
    fpr, tpr, _ = roc_curve(y.astype(int), s, drop_intermediate=False)
    # The small tolerance keeps e.g. 1 - 0.3 = 0.7000000000000001 from missing a 0.7 target.
    ok = (1.0 - fpr) >= float(specificity) - 1e-9
    return float(tpr[ok].max())  # the (0, 0) point always qualifies


def reliability_bins(y_true: Any, probs: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Top-label reliability table with equal-width confidence bins over (0, 1].

    Confidence is the highest class probability; a row is correct when its argmax is the true
    class. Bins are right-closed, ``(lo, hi]``, with the first bin also holding 0.

    Returns:
        ``lower``, ``upper`` (bin edges), ``count`` (rows per bin), ``confidence`` (mean
        confidence) and ``accuracy`` (fraction correct), each of length ``n_bins``.
        ``confidence`` and ``accuracy`` are NaN where ``count`` is 0 (nothing to plot there).
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    y, p = check_predictions(y_true, probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
    return {
        "lower": edges[:-1],
        "upper": edges[1:],
        "count": count,
        "confidence": confidence,
        "accuracy": accuracy,
    }


def expected_calibration_error(y_true: Any, probs: Any, n_bins: int = 15) -> float:
    """Top-label expected calibration error: sum over bins of (bin share) * |accuracy - confidence|.

    0 means confidence matches accuracy; a model that says 99% and is right 70% of the time
    scores near 0.29. Equal-width bins, as in Guo et al. 2017.
    """
    bins = reliability_bins(y_true, probs, n_bins)
    count = bins["count"]
    used = count > 0
    gap = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float(np.sum(count[used] * gap) / count.sum())


# --------------------------------------------------------------------------- bootstrap


def _weighted_auc_setup(scores: np.ndarray, is_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, positive mask in that order, and start of each run of tied scores."""
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, is_pos[order], starts


def _weighted_auc(weights: np.ndarray, setup: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """AUC of each row of ``weights`` (copies of each image in a resample), ties counted as 1/2.

    A bootstrap resample is the original rows with multiplicities, so its AUC is the
    Mann-Whitney statistic with weights. Summing weights within runs of tied scores and taking a
    cumulative sum gives every resample's AUC in O(rows) instead of one sort per resample; it
    equals ``roc_auc_score`` on the expanded resample (checked in the tests).
    """
    order, pos_sorted, starts = setup
    w = weights[:, order]
    w_pos = np.add.reduceat(w * pos_sorted, starts, axis=1)
    w_neg = np.add.reduceat(w * ~pos_sorted, starts, axis=1)
    neg_below = np.cumsum(w_neg, axis=1) - w_neg
    numerator = np.sum(w_pos * (neg_below + 0.5 * w_neg), axis=1)
    denominator = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    out = np.full(weights.shape[0], np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _bootstrap(
    y: np.ndarray,
    probs: np.ndarray,
    auc_classes: list[int],
    positive_index: int | None,
    n_bootstrap: int,
    seed: int,
) -> tuple[dict[str, np.ndarray], int]:
    """Resample rows with replacement; return kept metric values per resample and the kept count.

    A resample is kept only if every class present in the data is present in it, so each kept
    value estimates the same quantity as the point estimate (same classes averaged).
    """
    n, n_classes = probs.shape
    rng = np.random.default_rng(seed)
    onehot = np.eye(n_classes)[y]
    correct = (probs.argmax(axis=1) == y).astype(np.float64)
    present = onehot.sum(axis=0) > 0
    # auc_classes holds every class with positives and negatives, the positive class included.
    setups = {k: _weighted_auc_setup(probs[:, k], y == k) for k in auc_classes}

    values: dict[str, list[np.ndarray]] = {
        "balanced_accuracy": [], "accuracy": [], "macro_auc": [], "positive_auc": []
    }
    block = max(1, _BOOTSTRAP_BLOCK_CELLS // n)
    uniform = np.full(n, 1.0 / n)
    for start in range(0, n_bootstrap, block):
        size = min(block, n_bootstrap - start)
        # Multinomial counts are exactly the multiplicities of n draws with replacement.
        w = rng.multinomial(n, uniform, size=size).astype(np.float64)
        class_counts = w @ onehot
        keep = np.all(class_counts[:, present] > 0, axis=1)
        if not keep.any():
            continue
        w, class_counts = w[keep], class_counts[keep]
        hits = w @ (onehot * correct[:, None])
        values["accuracy"].append(hits.sum(axis=1) / n)
        values["balanced_accuracy"].append(np.mean(hits[:, present] / class_counts[:, present], axis=1))
        aucs = {k: _weighted_auc(w, setup) for k, setup in setups.items()}
        if auc_classes:
            values["macro_auc"].append(np.mean([aucs[k] for k in auc_classes], axis=0))
        if positive_index in aucs:
            values["positive_auc"].append(aucs[positive_index])
    kept = {k: np.concatenate(v) for k, v in values.items() if v}
    used = len(kept["accuracy"]) if "accuracy" in kept else 0
    return kept, used


def _percentile_interval(values: np.ndarray | None) -> list[float] | None:
    if values is None or len(values) == 0:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


# --------------------------------------------------------------------------- reports


def compute_metrics(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    *,
    positive: str | None = "mel",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """All headline figures for one set of predictions, as a JSON-serialisable dict.

    Predictions are the argmax of ``probs``. AUCs are one-vs-rest on each class's probability.

    Args:
        y_true: integer class indices, shape ``[N]``.
        probs: softmax probabilities, shape ``[N, C]``, columns in the order of ``classes``.
        classes: class names.
        positive: the class that gets its own AUC and sensitivity at 80% / 90% specificity
            (melanoma by default); ignored if it is not one of ``classes``.
        n_bootstrap: resamples for the 95% percentile intervals; 0 skips them.
        seed: seed of the numpy Generator that draws the resamples.

    Returns:
        ``n``, ``classes``, ``positive``, ``balanced_accuracy``, ``accuracy``, ``macro_auc``
        (mean one-vs-rest AUC over classes that have positives and negatives), ``ece``,
        ``per_class`` ({name: support, sensitivity, specificity, precision, auc}),
        ``confusion_matrix`` (rows = true class, columns = predicted), the positive-class keys
        ``{positive}_auc``, ``{positive}_sensitivity_at_80_specificity`` and
        ``{positive}_sensitivity_at_90_specificity``, ``ci95`` ({metric: [low, high] or None})
        and ``bootstrap`` (requested and used resamples). Undefined values are ``None``.

    Raises:
        ValueError: see :func:`check_predictions`; also a negative ``n_bootstrap``.

    Example:
        >>> m = compute_metrics([0, 1, 1], [[.9, .1], [.2, .8], [.6, .4]], ["mel", "nv"], n_bootstrap=0)
        >>> m["balanced_accuracy"]
        0.75
    """
    names = [str(c) for c in classes]
    y, p = check_predictions(y_true, probs, names)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative integer, got {n_bootstrap!r}")
    n, n_classes = p.shape
    pred = p.argmax(axis=1)
    cm = confusion_matrix(y, pred, labels=list(range(n_classes)))
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)

    per_class: dict[str, dict[str, Any]] = {}
    auc_classes: list[int] = []
    for k, name in enumerate(names):
        tp = int(cm[k, k])
        negatives = n - int(support[k])
        tn = negatives - (int(predicted[k]) - tp)
        both = 0 < support[k] < n
        if both:
            auc_classes.append(k)
        per_class[name] = {
            "support": int(support[k]),
            "sensitivity": tp / int(support[k]) if support[k] else None,
            "specificity": tn / negatives if negatives else None,
            "precision": tp / int(predicted[k]) if predicted[k] else None,
            "auc": float(roc_auc_score(y == k, p[:, k])) if both else None,
        }
    aucs = [per_class[names[k]]["auc"] for k in auc_classes]

    result: dict[str, Any] = {
        "n": int(n),
        "classes": names,
        "positive": positive if positive in names else None,
        "balanced_accuracy": balanced_accuracy(y, pred),
        "accuracy": float(np.mean(pred == y)),
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "ece": expected_calibration_error(y, p),
        "per_class": per_class,
        "confusion_matrix": cm.astype(int).tolist(),
    }
    positive_index = names.index(positive) if positive in names else None
    if positive_index is not None:
        is_pos = y == positive_index
        both = 0 < is_pos.sum() < n
        result[f"{positive}_auc"] = per_class[positive]["auc"]
        for spec in (80, 90):
            value = sensitivity_at_specificity(is_pos, p[:, positive_index], spec / 100) if both else None
            result[f"{positive}_sensitivity_at_{spec}_specificity"] = value

    kept, used = _bootstrap(y, p, auc_classes, positive_index, int(n_bootstrap), seed)
    ci95: dict[str, list[float] | None] = {
        "balanced_accuracy": _percentile_interval(kept.get("balanced_accuracy")),
        "accuracy": _percentile_interval(kept.get("accuracy")),
        "macro_auc": _percentile_interval(kept.get("macro_auc")),
    }
    if positive_index is not None:
        ci95[f"{positive}_auc"] = _percentile_interval(kept.get("positive_auc"))
    result["ci95"] = ci95
    result["bootstrap"] = {
        "n_requested": int(n_bootstrap),
        "n_used": int(used),
        "seed": int(seed),
        "method": "percentile; rows resampled with replacement; resamples missing a class "
        "present in the data are skipped",
    }
    return result


def _group_key(value: Any) -> str:
    """A group label as a string; None, NaN and blank strings become ``"unknown"``."""
    if value is None:
        return UNKNOWN_GROUP
    if isinstance(value, str):
        return value.strip() or UNKNOWN_GROUP
    try:
        if pd.isna(value):
            return UNKNOWN_GROUP
    except (TypeError, ValueError):  # pd.isna of a list-like is not a scalar answer
        pass
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))  # 3.0 from a pandas column with gaps reads as "3"
    return str(value)


def _group_sort_key(key: str) -> tuple[int, int, str]:
    """Age bands in age order, other groups alphabetically, ``unknown`` last."""
    if key == UNKNOWN_GROUP:
        return (2, 0, key)
    if key in AGE_BANDS:
        return (0, AGE_BANDS.index(key), key)
    return (1, 0, key)


def subgroup_metrics(
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    groups: Mapping[str, Any],
    *,
    positive: str | None = "mel",
    n_bootstrap: int = 200,
    min_size: int = 10,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`compute_metrics` within each group of each grouping (centre, sex, age band, ...).

    A model that is good on average can fail one centre or one age band; these tables show it.
    Within a group, balanced accuracy averages only the classes present in that group.

    Args:
        groups: grouping name -> one group label per row (e.g. ``{"sex": manifest["sex"]}``).
            None, NaN and empty labels are gathered in the group ``"unknown"``.
        min_size: groups with fewer rows are listed as ``{"n": k, "skipped": ...}``, because
            figures from a handful of images mislead more than they inform.

    Returns:
        ``{grouping: {group: metrics or {"n", "skipped"}}}``, groups in a stable order.

    Raises:
        ValueError: a grouping whose length differs from ``y_true``, or bad predictions.
    """
    names = [str(c) for c in classes]
    y, p = check_predictions(y_true, probs, names)
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ValueError(f"min_size must be a positive integer, got {min_size!r}")
    if not isinstance(groups, Mapping):
        raise TypeError(f"groups must map a grouping name to labels, got {type(groups).__name__}")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for grouping, labels in groups.items():
        values = list(labels.tolist() if hasattr(labels, "tolist") else labels)
        if len(values) != len(y):
            raise ValueError(
                f"grouping {grouping!r} has {len(values)} labels but there are {len(y)} predictions"
            )
        keys = np.array([_group_key(v) for v in values], dtype=object)
        table: dict[str, dict[str, Any]] = {}
        for key in sorted(set(keys.tolist()), key=_group_sort_key):
            rows = np.flatnonzero(keys == key)
            if len(rows) < min_size:
                table[key] = {"n": int(len(rows)), "skipped": SKIPPED_SMALL}
                continue
            table[key] = compute_metrics(
                y[rows], p[rows], names, positive=positive, n_bootstrap=n_bootstrap, seed=seed
            )
        out[str(grouping)] = table
    return out


def age_band(ages: Any) -> list[str]:
    """Ages in years to bands ``<30``, ``30-44``, ``45-59``, ``60-74``, ``75+``; missing -> ``unknown``.

    Raises:
        ValueError: an age that is not a number, or is negative or above 130 (a data error).

    Example:
        >>> age_band([25, 44.5, 45, None, 80])
        ['<30', '30-44', '45-59', 'unknown', '75+']
    """
    values = list(ages.tolist() if hasattr(ages, "tolist") else ages)
    bands: list[str] = []
    for i, age in enumerate(values):
        if _group_key(age) == UNKNOWN_GROUP:
            bands.append(UNKNOWN_GROUP)
            continue
        try:
            a = float(age)
        except (TypeError, ValueError):
            raise ValueError(f"ages[{i}] = {age!r} is not a number of years") from None
        if not 0 <= a <= 130:
            raise ValueError(f"ages[{i}] = {age!r} is outside 0..130 years; fix the metadata")
        if a < 30:
            bands.append("<30")
        elif a < 45:
            bands.append("30-44")
        elif a < 60:
            bands.append("45-59")
        elif a < 75:
            bands.append("60-74")
        else:
            bands.append("75+")
    return bands


def paired_difference(
    y_true: Any,
    probs_a: Any,
    probs_b: Any,
    classes: Sequence[str],
    *,
    positive: str | None = "mel",
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, float | list[float] | None]]:
    """A minus B on the same rows, with a paired bootstrap: both are scored on the same resamples.

    Two models' separate intervals overlap even when one is better on nearly every resample; the
    paired interval of the difference answers "is A better than B on these images?".

    Returns:
        Per metric (``balanced_accuracy``, ``macro_auc``, ``<positive>_auc``): ``a``, ``b``,
        ``difference`` (a - b), ``ci95`` of the difference and ``share_a_better`` (resamples).

    Raises:
        ValueError: the probability tables differ in shape or do not match ``y_true``.
    """
    a, b = np.asarray(probs_a, dtype=np.float64), np.asarray(probs_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"probs_a {a.shape} and probs_b {b.shape} must score the same rows and classes")
    y = np.asarray(y_true, dtype=np.int64)
    names = list(classes)
    metrics_a = compute_metrics(y, a, names, positive=positive, n_bootstrap=0)
    metrics_b = compute_metrics(y, b, names, positive=positive, n_bootstrap=0)
    n = len(y)
    auc_classes = [k for k in range(len(names)) if 0 < int((y == k).sum()) < n]
    positive_index = names.index(positive) if positive in names else None
    # Same seed, same labels -> the same resamples (and the same skipped ones) for A and B.
    kept_a, _ = _bootstrap(y, a, auc_classes, positive_index, int(n_bootstrap), seed)
    kept_b, _ = _bootstrap(y, b, auc_classes, positive_index, int(n_bootstrap), seed)
    pairs = {"balanced_accuracy": "balanced_accuracy", "macro_auc": "macro_auc"}
    if positive_index is not None:
        pairs[f"{positive}_auc"] = "positive_auc"
    out: dict[str, dict[str, float | list[float] | None]] = {}
    for name, key in pairs.items():
        va, vb = metrics_a.get(name), metrics_b.get(name)
        diffs = kept_a[key] - kept_b[key] if key in kept_a and key in kept_b else None
        out[name] = {
            "a": va,
            "b": vb,
            "difference": None if va is None or vb is None else float(va - vb),
            "ci95": _percentile_interval(diffs),
            "share_a_better": None if diffs is None else float(np.mean(diffs > 0)),
        }
    return out
