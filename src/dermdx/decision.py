"""Selective prediction: when the model should say "refer: uncertain" instead of a class.

The model keeps a case when its top-class probability (after calibration) reaches a threshold
and abstains otherwise. The risk-coverage curve shows what each threshold buys: coverage is the
share of cases kept, selective risk the error rate among them (1 - accuracy), selective balanced
accuracy the mean per-class recall among them. The threshold is fitted for a target coverage on
validation rows (``dermdx calibrate``) and stored with the model as an :class:`AbstentionConfig`.

Malignancy risk is the summed probability of the malignant classes (:data:`MALIGNANT_CLASSES`);
it is a quantity the model measures, not a triage rule. Triage levels and recommendations need a
rule base that does not exist yet.

Example:
    >>> curve = risk_coverage_curve(y, probs)
    >>> threshold = confidence_threshold_for_coverage(probs, 0.8)
    >>> abstain(probs[0], AbstentionConfig(min_confidence=threshold))
    (False, 'top-class probability 0.91 reaches the threshold 0.62')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from dermdx.metrics import balanced_accuracy, check_predictions

# Classes counted as malignant in a model's class list (ISIC 2018 names). akiec holds actinic
# keratoses and intraepithelial carcinoma (Bowen's disease): treated as malignant, as in the
# HAM10000 benign/malignant grouping, because both call for treatment. Classes not named here
# (nv, bkl, df, vasc) count as benign.
MALIGNANT_CLASSES: tuple[str, ...] = ("mel", "bcc", "akiec")
ABSTAIN_LABEL = "refer: uncertain"
DEFAULT_MIN_CONFIDENCE = 0.5


@dataclass
class AbstentionConfig:
    """When to abstain: top-class probability below ``min_confidence``.

    Attributes:
        min_confidence: threshold on the highest class probability, in [0, 1].
        target_coverage: the share of validation cases the threshold was fitted to keep, or None
            when the threshold was not fitted (the default 0.5, or set by hand).
        source: where the threshold comes from (``default``, ``fitted on ...``, ``command line``).
    """

    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    target_coverage: float | None = None
    source: str = "default"

    def __post_init__(self) -> None:
        value = self.min_confidence
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"min_confidence must be a probability in [0, 1], got {value!r}")
        self.min_confidence = float(value)
        if self.target_coverage is not None:
            _check_coverage(self.target_coverage)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AbstentionConfig:
        unknown = set(values) - {"min_confidence", "target_coverage", "source"}
        if unknown:
            raise ValueError(f"unknown abstention settings {sorted(unknown)}; allowed: min_confidence, target_coverage, source")
        return cls(**values)

    @classmethod
    def from_model_info(cls, calibration: Mapping[str, Any] | None) -> AbstentionConfig:
        """The threshold stored by ``dermdx calibrate`` in ``ModelInfo.calibration``, else the default."""
        stored = (calibration or {}).get("abstention")
        return cls.from_dict(stored) if stored else cls()


def _check_coverage(coverage: Any) -> float:
    if isinstance(coverage, bool) or not isinstance(coverage, int | float) or not 0.0 < float(coverage) <= 1.0:
        raise ValueError(f"coverage must be a share of cases in (0, 1], e.g. 0.8; got {coverage!r}")
    return float(coverage)


def _check_probs(probs: Any) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D [N images, C classes], got shape {p.shape}")
    check_predictions(np.zeros(len(p), dtype=np.int64), p)
    return p


def risk_coverage_curve(y_true: Any, probs: Any) -> dict[str, Any]:
    """Coverage, selective risk and selective balanced accuracy for every confidence threshold.

    Cases are ranked by their top-class probability; each point keeps every case whose confidence
    is at least ``threshold`` (cases with equal confidence are kept or dropped together), from the
    most confident case alone to all cases.

    Returns:
        ``threshold``, ``coverage``, ``risk`` (1 - accuracy among kept cases) and
        ``balanced_accuracy`` (mean recall over the classes present among kept cases) as arrays
        ordered by increasing coverage, plus ``aurc`` (area under the risk-coverage curve, lower
        is better) and ``n``.

    Raises:
        ValueError / TypeError: bad labels or probabilities (see ``dermdx.metrics.check_predictions``).
    """
    y, p = check_predictions(y_true, probs)
    n, n_classes = p.shape
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    order = np.argsort(-confidence, kind="stable")
    conf_sorted = confidence[order]
    # The last index of each run of equal confidences: where a threshold can cut.
    ends = np.flatnonzero(np.r_[conf_sorted[1:] != conf_sorted[:-1], True])
    onehot = np.eye(n_classes)[y[order]]
    seen = np.cumsum(onehot, axis=0)[ends]
    hits = np.cumsum(onehot * correct[order, None], axis=0)[ends]
    kept = ends + 1
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(seen > 0, hits / np.maximum(seen, 1), np.nan)
    bal = np.nanmean(recall, axis=1)
    risk = 1.0 - hits.sum(axis=1) / kept
    coverage = kept / n
    # Step integral of risk over coverage, starting from the first kept group.
    aurc = float(np.sum(risk * np.diff(np.r_[0.0, coverage])))
    return {
        "threshold": conf_sorted[ends],
        "coverage": coverage,
        "risk": risk,
        "balanced_accuracy": bal,
        "aurc": aurc,
        "n": int(n),
    }


def confidence_threshold_for_coverage(probs: Any, coverage: float = 0.8) -> float:
    """The highest threshold that keeps at least ``coverage`` of the cases (confidence >= threshold).

    Ties can make the kept share larger than ``coverage``; it is never smaller.
    """
    target = _check_coverage(coverage)
    p = _check_probs(probs)
    confidence = np.sort(p.max(axis=1))[::-1]
    # Small tolerance: 0.8 * 10 = 8.000000000000002 must still mean 8 cases.
    k = max(1, math.ceil(target * len(confidence) - 1e-9))
    return float(confidence[k - 1])


def balanced_accuracy_at_coverage(y_true: Any, probs: Any, coverage: float = 0.8) -> float:
    """Balanced accuracy among the cases kept by :func:`confidence_threshold_for_coverage`.

    Classes with no kept case drop out of the mean (as in ``dermdx.metrics.balanced_accuracy``);
    read it beside :func:`kept_per_class` so a class the model always abstains on is seen.
    """
    y, p = check_predictions(y_true, probs)
    threshold = confidence_threshold_for_coverage(p, coverage)
    keep = p.max(axis=1) >= threshold
    return balanced_accuracy(y[keep], p[keep].argmax(axis=1))


def kept_per_class(y_true: Any, probs: Any, threshold: float, classes: Sequence[str]) -> dict[str, float | None]:
    """Share of each true class kept at ``threshold`` (None for a class with no cases)."""
    y, p = check_predictions(y_true, probs, classes)
    keep = p.max(axis=1) >= threshold
    out: dict[str, float | None] = {}
    for k, name in enumerate(classes):
        rows = y == k
        out[str(name)] = float(keep[rows].mean()) if rows.any() else None
    return out


def abstain(probs: Any, config: AbstentionConfig) -> tuple[bool, str]:
    """Whether to answer "refer: uncertain" for one case, and why.

    Args:
        probs: the case's class probabilities ``[C]`` (calibrated, when the model is).
        config: the threshold.

    Returns:
        ``(True, reason)`` when the top-class probability is below ``config.min_confidence``,
        else ``(False, reason)``; the reason names the probability and the threshold.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"abstain takes one case's probabilities [C], got shape {p.shape}")
    _check_probs(p[None])
    top = float(p.max())
    if top < config.min_confidence:
        return True, f"low confidence: top-class probability {top:.2f} is below the threshold {config.min_confidence:.2f}"
    return False, f"top-class probability {top:.2f} reaches the threshold {config.min_confidence:.2f}"


def malignancy_risk(probs: Any, classes: Sequence[str]) -> float | None:
    """Summed probability of the :data:`MALIGNANT_CLASSES` among ``classes``; None if the model has none of them."""
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (len(classes),):
        raise ValueError(f"probs must hold one value per class ({len(classes)}), got shape {p.shape}")
    index = [k for k, name in enumerate(classes) if str(name).lower() in MALIGNANT_CLASSES]
    return float(p[index].sum()) if index else None


def plot_risk_coverage(y_true: Any, probs: Any, path: str | Path, *, coverage: float | None = 0.8) -> Path:
    """Selective risk and balanced accuracy against coverage; the ``coverage`` operating point marked."""
    curve = risk_coverage_curve(y_true, probs)
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    ax.step(curve["coverage"], curve["risk"], where="post", color="tab:red", label=f"selective risk (1 - accuracy), AURC {curve['aurc']:.3f}")
    ax.step(curve["coverage"], curve["balanced_accuracy"], where="post", color="tab:blue", label="selective balanced accuracy")
    if coverage is not None:
        target = _check_coverage(coverage)
        threshold = confidence_threshold_for_coverage(probs, target)
        at = int(np.flatnonzero(curve["threshold"] >= threshold)[-1])
        ax.axvline(curve["coverage"][at], color="grey", linestyle="--", linewidth=1)
        ax.plot([curve["coverage"][at]], [curve["balanced_accuracy"][at]], "o", color="tab:blue")
        ax.annotate(
            f"keep {curve['coverage'][at]:.0%} (confidence >= {threshold:.2f})\nbalanced accuracy {curve['balanced_accuracy'][at]:.3f}",
            (curve["coverage"][at], curve["balanced_accuracy"][at]), textcoords="offset points", xytext=(-150, -40), fontsize=8,
        )
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("coverage (share of cases the model answers)")
    ax.set_ylabel("rate")
    ax.set_title(f"Risk-coverage on {curve['n']} cases (cases not covered: '{ABSTAIN_LABEL}')", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120, bbox_inches="tight")
    return path
