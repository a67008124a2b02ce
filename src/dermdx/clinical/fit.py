"""Fitting the clinical heads: standardised logistic regression, C chosen by grouped CV on the training rows.

Why logistic regression (scikit-learn) rather than a torch head: with a few hundred cases and
1,280 features the heads must be strongly regularised, and a convex fit with C chosen by
cross-validation is deterministic and has no epochs, learning rates or seeds to tune on the
evaluation split. ``class_weight="balanced"`` for the criteria and management (rare positives,
e.g. 2% atypical vascular pattern, would otherwise never be called). The thickness heads are fitted
unweighted, so that their cumulative probabilities stay estimates of P(thicker than band k) and
the median band is meaningful. Standardisation is folded into the linear weights afterwards, so
the shipped heads need numpy only.

The chosen C is small (strong regularisation), which ranks cases well but squeezes every
probability towards 0.5, so a shown "probability 0.51" would mean little. Each binary head is
therefore Platt-scaled: a one-feature logistic regression, with the head's own class weighting, on
its out-of-fold decision values over the same folds. It is a positive affine map of the logit,
folded into the weights: the ranking (AUC) is unchanged, the probabilities spread to what the
out-of-fold data support, and for the balanced heads 0.5 stays a balanced operating point.

Folds are grouped by case (``StratifiedGroupKFold``): in Derm7pt one case is one lesion and one
patient, so the grouping guards against a second image of a lesion, should one be added later.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dermdx.clinical.checklist import CRITERION_NAMES, THICKNESS_CATEGORIES
from dermdx.clinical.heads import ClinicalHeads
from dermdx.clinical.ordinal import cumulative_targets

C_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-5, 0, 11))


def _folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold

    smallest = int(np.bincount(y).min())
    k = min(n_splits, smallest)
    if k < 2:
        raise ValueError(f"a head needs at least 2 cases of each class for cross-validation, got class counts {np.bincount(y).tolist()}")
    return list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups))


def fit_linear(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, balanced: bool, scoring: str, n_splits: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One standardised logistic regression, C chosen from :data:`C_GRID` by grouped CV, refitted on all rows, Platt-scaled if binary.

    Returns:
        ``(W [K, D], b [K], info)`` on raw features (K = 1 for binary targets, else one row per
        class), and ``info`` = ``{"C", "cv_score", "scoring", "n", "class_counts"}`` plus ``"platt"``
        (slope, offset, applied) for binary targets.
    """
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(y).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced" if balanced else None, max_iter=5000))
    folds = _folds(y, groups, n_splits, seed)
    search = GridSearchCV(model, {"logisticregression__C": list(C_GRID)}, scoring=scoring, cv=folds, n_jobs=1)
    search.fit(x, y)
    scaler, logistic = search.best_estimator_[0], search.best_estimator_[1]
    w = logistic.coef_ / scaler.scale_[None, :]
    b = logistic.intercept_ - w @ scaler.mean_
    info = {
        "C": float(search.best_params_["logisticregression__C"]),
        "cv_score": float(search.best_score_),
        "scoring": scoring,
        "n": len(y),
        "class_counts": np.bincount(y).tolist(),
    }
    if w.shape[0] == 1:
        oof = cross_val_predict(clone(search.best_estimator_), x, y, cv=folds, method="decision_function")
        platt = LogisticRegression(C=1e4, class_weight="balanced" if balanced else None, max_iter=1000).fit(oof[:, None], y)
        slope, offset = float(platt.coef_[0, 0]), float(platt.intercept_[0])
        # A non-positive slope means the out-of-fold logits carry no usable signal: keep the raw head.
        if slope > 0:
            w, b = slope * w, slope * b + offset
        info["platt"] = {"slope": slope, "offset": offset, "applied": slope > 0}
    return w, b, info


def fit_clinical_heads(
    features: np.ndarray,
    criteria: np.ndarray,
    thickness: np.ndarray,
    management: np.ndarray,
    groups: np.ndarray,
    *,
    classifier_sha256: str,
    seed: int = 0,
    progress: bool = False,
) -> ClinicalHeads:
    """Fit all heads on the given rows.

    Args:
        features: ``[N, D]`` pooled classifier features.
        criteria: ``[N, 7]`` 0/1 criteria (``derm7pt_criteria``).
        thickness: ``[N]`` band index 0..3, -1 for rows without one (only melanomas with a band train that head).
        management: ``[N]`` management class index.
        groups: ``[N]`` case ids for the grouped folds.
        classifier_sha256: the classifier the features came from.
    """
    from tqdm.auto import tqdm

    x = np.asarray(features, dtype=np.float64)
    groups = np.asarray(groups)
    heads: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    info: dict[str, Any] = {"concepts": {}, "thickness": {}, "management": {}}
    steps = tqdm(total=len(CRITERION_NAMES) + len(THICKNESS_CATEGORIES), desc="fit heads", disable=not progress)
    ws, bs = [], []
    for k, name in enumerate(CRITERION_NAMES):
        w, b, info["concepts"][name] = fit_linear(x, criteria[:, k], groups, balanced=True, scoring="roc_auc", seed=seed)
        ws.append(w[0]), bs.append(b[0]), steps.update()
    heads["concepts"] = (np.stack(ws), np.array(bs))
    staged = np.asarray(thickness) >= 0
    cumulative = cumulative_targets(np.asarray(thickness)[staged], len(THICKNESS_CATEGORIES))
    ws, bs = [], []
    for k in range(cumulative.shape[1]):
        name = f"thicker than {THICKNESS_CATEGORIES[k]}"
        w, b, info["thickness"][name] = fit_linear(x[staged], cumulative[:, k], groups[staged], balanced=False, scoring="neg_log_loss", seed=seed)
        ws.append(w[0]), bs.append(b[0]), steps.update()
    heads["thickness"] = (np.stack(ws), np.array(bs))
    w, b, info["management"] = fit_linear(x, management, groups, balanced=True, scoring="balanced_accuracy", seed=seed)
    heads["management"] = (w, b)
    steps.update()
    steps.close()
    return ClinicalHeads(heads, classifier_sha256, record={"fit": info})


def derm7pt_targets(frame: Any, source: str = "Derm7pt") -> dict[str, np.ndarray]:
    """Everything the heads learn from and are judged on, from ``read_derm7pt(...).frame``.

    Returns:
        ``criteria`` [N, 7], ``thickness`` [N] (-1 if none), ``management`` [N], ``groups`` [N]
        (case ids), ``split`` [N] (official train / valid) and ``melanoma`` [N] (diag5 == MEL,
        metastases included).

    Raises:
        ValueError: a split value other than train / valid, a case in both splits, or bad labels.
    """
    from dermdx.clinical.checklist import (
        derm7pt_criteria,
        derm7pt_management,
        derm7pt_thickness,
    )

    split = frame["split"].to_numpy().astype(str)
    bad = sorted(set(split) - {"train", "valid"})
    if bad:
        raise ValueError(f"{source}: split values {bad} are not 'train' or 'valid'")
    groups = frame["patient_id"].to_numpy().astype(str)
    shared = set(groups[split == "train"]) & set(groups[split == "valid"])
    if shared:
        raise ValueError(f"{source}: cases {sorted(shared)[:5]} ({len(shared)} in all) are in both the train and valid splits")
    return {
        "criteria": derm7pt_criteria(frame, source),
        "thickness": derm7pt_thickness(frame),
        "management": derm7pt_management(frame, source),
        "groups": groups,
        "split": split,
        "melanoma": (frame["label"].str.lower() == "mel").to_numpy().astype(int),
    }
