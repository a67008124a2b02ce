"""Clinical heads on the classifier's pooled features: 7-point criteria, thickness, management.

Why heads on frozen features: Derm7pt's official training split has 413 cases, too few to
fine-tune a backbone honestly (the selection and the report would share a handful of melanomas).
Linear heads on the diagnosis model's pooled features reuse the computation the diagnosis already
does, add microseconds per case, and are only valid on the backbone they were fitted on, so the
file records that backbone's SHA-256 and loading checks it.

Storage is safe by construction: weights in ``.safetensors`` (no pickle), a JSON record beside it
with the weights' SHA-256 (checked on load), the classifier's SHA-256, the output names and the
fitting record. Each head is a linear map on raw features (standardisation folded in), so
prediction is a matrix product and a sigmoid / softmax.

Example:
    >>> heads = ClinicalHeads.default(classifier_sha256=predictor.sha256)
    >>> clinical = heads.predict(predictor.predict_features(manifest))[0]
    >>> clinical["seven_point_score"], clinical["concepts"]["blue_whitish_veil"]["probability"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dermdx.checkpoint import check_sha256, file_sha256
from dermdx.clinical.checklist import (
    CRITERIA,
    CRITERION_NAMES,
    MANAGEMENT_CLASSES,
    SEVEN_POINT_CUTOFF,
    THICKNESS_CATEGORIES,
    WEIGHTS,
)
from dermdx.clinical.ordinal import category_probs, median_category, monotone

HEADS_FORMAT = "dermdx-clinical-heads/1"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_HEADS = WEIGHTS_DIR / "clinical_heads.safetensors"
_HEADS = ("concepts", "thickness", "management")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form: no overflow warnings for large |x|


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def record_path(weights_path: str | Path) -> Path:
    """The JSON record that belongs to a heads ``.safetensors`` file."""
    return Path(weights_path).with_suffix(".json")


@dataclass
class ClinicalHeads:
    """Linear heads ``{name: (weight [K, D], bias [K])}`` for concepts (7), thickness (3 cumulative) and management (3).

    Attributes:
        weights: ``{"concepts" | "thickness" | "management": (W, b)}``; W maps raw pooled features.
        classifier_sha256: SHA-256 of the classifier whose features the heads were fitted on.
        concept_threshold: probability at which a criterion counts as present (0.5: the heads are
            fitted and Platt-scaled with balanced class weights, so 0.5 is their balanced
            operating point; their probabilities are on that balanced prior, not Derm7pt's).
        record: how they were fitted (data, C values, figures); written to the JSON record.
    """

    weights: dict[str, tuple[np.ndarray, np.ndarray]]
    classifier_sha256: str
    concept_threshold: float = 0.5
    record: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = {"concepts": len(CRITERIA), "thickness": len(THICKNESS_CATEGORIES) - 1, "management": len(MANAGEMENT_CLASSES)}
        if set(self.weights) != set(expected):
            raise ValueError(f"clinical heads need exactly the heads {sorted(expected)}, got {sorted(self.weights)}")
        dims = set()
        for name, (w, b) in self.weights.items():
            if w.ndim != 2 or w.shape[0] != expected[name] or b.shape != (expected[name],):
                raise ValueError(f"head {name!r}: weight {w.shape} / bias {b.shape} do not fit {expected[name]} outputs")
            dims.add(w.shape[1])
        if len(dims) != 1:
            raise ValueError(f"the heads disagree on the feature size: {sorted(dims)}")

    @property
    def feature_dim(self) -> int:
        return int(self.weights["concepts"][0].shape[1])

    # ------------------------------------------------------------------ prediction

    def raw(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Arrays for many cases: ``concepts`` [N, 7] P(present), ``thickness_greater`` [N, 3] monotone P(thicker than band k), ``management`` [N, 3]."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(f"features must be [N, {self.feature_dim}] pooled classifier features (Predictor.predict_features), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or infinity; recompute them from the image")
        logits = {name: x @ w.T + b for name, (w, b) in self.weights.items()}
        return {
            "concepts": _sigmoid(logits["concepts"]),
            "thickness_greater": monotone(_sigmoid(logits["thickness"])),
            "management": _softmax(logits["management"]),
        }

    def predict(self, features: np.ndarray) -> list[dict[str, Any]]:
        """Per case: the 7 criteria, the 7-point score, thickness band probabilities and management probabilities.

        Args:
            features: ``[N, D]`` (or one case ``[D]``) pooled features from the classifier whose
                SHA-256 these heads carry (``Predictor.predict_features``).

        Returns:
            One dict per case::

                {"concepts": {name: {"probability", "present", "points", "text"}},
                 "seven_point_score": int,            # points of the criteria judged present
                 "seven_point_expected": float,       # sum of points x probability
                 "seven_point_suggests_melanoma": bool,  # score >= 3 (Argenziano 1998)
                 "thickness": {"if_melanoma": True, "category": str, "probabilities": {band: p},
                               "p_thicker_than": {band: p}},
                 "management": {"excision": p, "clinical follow up": p, "no further examination": p}}

        Raises:
            ValueError: features of the wrong shape or not finite.
        """
        arrays = self.raw(features)
        present = arrays["concepts"] >= self.concept_threshold
        scores = present.astype(int) @ WEIGHTS
        expected = arrays["concepts"] @ WEIGHTS
        bands = category_probs(arrays["thickness_greater"])
        median = median_category(arrays["thickness_greater"])
        out = []
        for i in range(len(present)):
            out.append({
                "concepts": {
                    c.name: {"probability": float(arrays["concepts"][i, k]), "present": bool(present[i, k]), "points": c.weight, "text": c.text}
                    for k, c in enumerate(CRITERIA)
                },
                "seven_point_score": int(scores[i]),
                "seven_point_expected": float(expected[i]),
                "seven_point_suggests_melanoma": bool(scores[i] >= SEVEN_POINT_CUTOFF),
                "thickness": {
                    "if_melanoma": True,
                    "category": THICKNESS_CATEGORIES[int(median[i])],
                    "probabilities": {band: float(bands[i, k]) for k, band in enumerate(THICKNESS_CATEGORIES)},
                    "p_thicker_than": {band: float(arrays["thickness_greater"][i, k]) for k, band in enumerate(THICKNESS_CATEGORIES[:-1])},
                },
                "management": {m: float(arrays["management"][i, k]) for k, m in enumerate(MANAGEMENT_CLASSES)},
            })  # fmt: skip
        return out

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> str:
        """Write ``path`` (.safetensors) and its JSON record; returns the weights' SHA-256."""
        from safetensors.numpy import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"clinical heads are saved as .safetensors, got {path.name!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name, (w, b) in self.weights.items():
            tensors[f"{name}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
            tensors[f"{name}.bias"] = np.ascontiguousarray(b, dtype=np.float32)
        save_file(tensors, str(path))
        sha = file_sha256(path)
        record = {
            "format": HEADS_FORMAT,
            "file": path.name,
            "sha256": sha,
            "classifier_sha256": self.classifier_sha256,
            "feature_dim": self.feature_dim,
            "concepts": list(CRITERION_NAMES),
            "concept_points": [int(w) for w in WEIGHTS],
            "concept_threshold": self.concept_threshold,
            "thickness_categories": list(THICKNESS_CATEGORIES),
            "management_classes": list(MANAGEMENT_CLASSES),
            **{k: v for k, v in self.record.items() if k not in {"format", "file", "sha256", "classifier_sha256"}},
        }
        record_path(path).write_text(json.dumps(record, indent=2) + "\n")
        return sha

    @classmethod
    def from_file(cls, path: str | Path, *, classifier_sha256: str) -> ClinicalHeads:
        """Load heads and check them: the weights' SHA-256, the output names, and the classifier they belong to.

        Args:
            path: the ``.safetensors`` file; its record is the ``.json`` beside it.
            classifier_sha256: SHA-256 of the classifier that will produce the features
                (``Predictor.sha256``). Heads fitted on another backbone's features would give
                meaningless outputs, so a mismatch is an error.

        Raises:
            FileNotFoundError: the weights or the record is missing.
            ValueError: a damaged or replaced file, other output names, or another classifier.
        """
        from safetensors.numpy import load_file

        path = Path(path)
        rec_path = record_path(path)
        for p in (path, rec_path):
            if not p.is_file():
                raise FileNotFoundError(f"clinical heads file not found: {p}; fit them with scripts/fit_clinical_heads.py")
        try:
            record = json.loads(rec_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{rec_path} is not valid JSON ({error}); restore the record written with the heads") from error
        if record.get("format") != HEADS_FORMAT:
            raise ValueError(f"{rec_path}: format {record.get('format')!r} is not {HEADS_FORMAT!r}; refit the heads with this dermdx")
        check_sha256(path, str(record.get("sha256")), expected_from=f"{rec_path.name}'s", fix=", restore or refit it")
        if record.get("classifier_sha256") != classifier_sha256:
            raise ValueError(
                f"{path} was fitted on the features of classifier {record.get('classifier_sha256')}, not of {classifier_sha256}; "
                "the heads are only valid on that backbone: use that classifier, or refit the heads for this one with scripts/fit_clinical_heads.py --model"
            )
        names = {"concepts": list(CRITERION_NAMES), "thickness_categories": list(THICKNESS_CATEGORIES), "management_classes": list(MANAGEMENT_CLASSES)}
        for key, expected in names.items():
            if record.get(key) != expected:
                raise ValueError(f"{rec_path}: {key} {record.get(key)} differ from this dermdx's {expected}; refit the heads")
        tensors = load_file(str(path))
        missing = [f"{h}.{p}" for h in _HEADS for p in ("weight", "bias") if f"{h}.{p}" not in tensors]
        if missing:
            raise ValueError(f"{path}: missing tensors {missing}; refit the heads")
        weights = {h: (tensors[f"{h}.weight"].astype(np.float64), tensors[f"{h}.bias"].astype(np.float64)) for h in _HEADS}
        return cls(weights, classifier_sha256, concept_threshold=float(record.get("concept_threshold", 0.5)), record=record)

    @classmethod
    def default(cls, *, classifier_sha256: str | None = None) -> ClinicalHeads:
        """The shipped heads, for the shipped classifier (``classifier_sha256`` defaults to its recorded SHA-256).

        Raises:
            FileNotFoundError / ValueError: as :meth:`from_file`; in particular when the classifier
            in use is not the one the shipped heads were fitted on.
        """
        if classifier_sha256 is None:
            from dermdx.default_model import default_model_record

            classifier_sha256 = default_model_record()["sha256"]
        return cls.from_file(DEFAULT_HEADS, classifier_sha256=classifier_sha256)
