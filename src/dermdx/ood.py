"""Out-of-distribution rejection: flag inputs the classifier must not diagnose.

The classifier answers for any picture, so a photo of a cat, a blank frame or a clinical
(macroscopic) photo sent as dermoscopy would get a confident-looking diagnosis. Two detectors
read the classifier's own pooled features (``Predictor.predict_features``), so they cost no
second network:

* **unfamiliar** — cosine distance to the k-th nearest of a bank of dermoscopic features (a
  sample of the classifier's training images plus cluster means of a second device's images),
  after a square root that evens out the few dominant ReLU features. Far from every
  dermoscopic image = not a skin-lesion image, or one unlike anything seen in training.
* **clinical_photo** — a logistic regression telling clinical photos from dermoscopic images
  (trained on paired Derm7pt cases), because a clinical photo of a lesion is close enough to
  dermoscopy to pass the first detector.

Each score is expressed as ``(raw - threshold) / scale``, so 0 is the rejection threshold and
the two are comparable; an image is out of distribution when either is above 0. The thresholds
keep a chosen share (95% by default) of dermoscopic images the detector did not see while
fitting (out-of-fold), see ``OodDetector.fit``. Logit-based scores (max softmax, energy) and a
Mahalanobis distance were measured and rejected as weaker (docs/benchmarks.md).

The shipped detector (``weights/ood.npz`` + ``ood.json``) belongs to the shipped classifier:
features of another model mean something else, so loading it for another classifier fails.

Example:
    >>> predictor = Predictor.from_checkpoint(default_model_path())
    >>> detector = OodDetector.default(classifier_sha256=predictor.sha256)
    >>> results = detector.score(predictor.predict_features(manifest))
    >>> [r.reasons for r in results if not r.in_distribution]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dermdx.checkpoint import check_sha256, file_sha256

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_OOD = WEIGHTS_DIR / "ood.npz"
SCORES = ("unfamiliar", "clinical_photo")
REASONS = {
    "unfamiliar": "not like the dermoscopic images the model was trained on (not a skin lesion, or an unusual image)",
    "clinical_photo": "looks like a clinical (macroscopic) photo, not dermoscopy; the model reads dermoscopic images only",
}
_ARRAYS = ("bank", "modality_coef", "modality_intercept", "knn_k", "thresholds", "scales")


@dataclass
class OodResult:
    """The verdict on one image.

    Attributes:
        in_distribution: False when any score is above 0 (its threshold): do not diagnose.
        reasons: one sentence per detector that fired, empty when ``in_distribution``.
        scores: ``unfamiliar`` and ``clinical_photo`` as ``(raw - threshold) / scale`` (> 0 =
            flagged), plus the raw values ``knn_distance`` and ``clinical_logit``.
    """

    in_distribution: bool
    reasons: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)


def _transform(features: np.ndarray) -> np.ndarray:
    """Square root (features are post-ReLU, >= 0) then unit length: what the kNN bank stores."""
    root = np.sqrt(np.maximum(np.asarray(features, dtype=np.float32), 0))
    norm = np.linalg.norm(root, axis=1, keepdims=True)
    return root / np.maximum(norm, 1e-12)


class OodDetector:
    """k-NN distance to dermoscopic features plus a clinical-photo classifier, with thresholds.

    Build one with ``OodDetector.fit`` (``scripts/fit_ood.py``), load the shipped one with
    ``OodDetector.default`` or a saved one with ``OodDetector.from_file``.
    """

    def __init__(self, *, bank: np.ndarray, modality_coef: np.ndarray, modality_intercept: float, knn_k: int,
                 thresholds: dict[str, float], scales: dict[str, float], classifier_sha256: str = "") -> None:
        bank = np.asarray(bank)
        if bank.ndim != 2 or bank.shape[0] < knn_k:
            raise ValueError(f"the feature bank must be [N, D] with N >= knn_k={knn_k}, got shape {bank.shape}")
        if np.asarray(modality_coef).shape != (bank.shape[1],):
            raise ValueError(f"modality_coef has shape {np.asarray(modality_coef).shape}, expected ({bank.shape[1]},) to match the bank")
        self.bank = bank.astype(np.float16)  # unit vectors: float16 halves the file, changes cosines by < 1e-3
        self.modality_coef = np.asarray(modality_coef, dtype=np.float32)
        self.modality_intercept = float(modality_intercept)
        self.knn_k = int(knn_k)
        self.thresholds = {name: float(thresholds[name]) for name in SCORES}
        self.scales = {name: float(scales[name]) for name in SCORES}
        self.classifier_sha256 = classifier_sha256
        # How the thresholds were chosen (set by ``fit``, saved in the JSON record).
        self.calibration: dict = {}

    @property
    def feature_dim(self) -> int:
        return int(self.bank.shape[1])

    def raw_scores(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """``{"knn_distance": [N], "clinical_logit": [N]}`` for pooled features ``[N, D]`` (higher = more out of distribution).

        Raises:
            ValueError: ``features`` is not ``[N, feature_dim]``.
        """
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise ValueError(
                f"features must be [N, {self.feature_dim}] pooled features of the classifier this detector was fitted on "
                f"(Predictor.predict_features), got shape {features.shape}"
            )
        similarity = _transform(features) @ self.bank.astype(np.float32).T
        k = min(self.knn_k, similarity.shape[1])
        kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
        logit = np.sqrt(np.maximum(features, 0)) @ self.modality_coef + self.modality_intercept
        return {"knn_distance": 1.0 - kth, "clinical_logit": logit}

    def normalised_scores(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """``{"unfamiliar": [N], "clinical_photo": [N]}`` as ``(raw - threshold) / scale``; > 0 = flagged."""
        raw = self.raw_scores(features)
        values = {"unfamiliar": raw["knn_distance"], "clinical_photo": raw["clinical_logit"]}
        return {name: (values[name] - self.thresholds[name]) / self.scales[name] for name in SCORES}

    def combined_score(self, features: np.ndarray) -> np.ndarray:
        """The larger of the two normalised scores: one number per image for AUROC; > 0 = rejected."""
        scores = self.normalised_scores(features)
        return np.maximum(scores["unfamiliar"], scores["clinical_photo"])

    def score(self, features: np.ndarray) -> list[OodResult]:
        """One ``OodResult`` per row of pooled features ``[N, D]`` (``Predictor.predict_features``).

        Raises:
            ValueError: ``features`` is not ``[N, feature_dim]``.
        """
        raw = self.raw_scores(features)
        normalised = self.normalised_scores(features)
        results = []
        for i in range(len(raw["knn_distance"])):
            scores = {name: float(normalised[name][i]) for name in SCORES}
            scores.update({name: float(values[i]) for name, values in raw.items()})
            reasons = [REASONS[name] for name in SCORES if scores[name] > 0]
            results.append(OodResult(in_distribution=not reasons, reasons=reasons, scores=scores))
        return results

    @classmethod
    def fit(cls, reference: np.ndarray, paired_dermoscopy: np.ndarray, paired_clinical: np.ndarray, *, knn_k: int = 5,
            centroids: int = 32, min_cluster: int = 5, keep: float = 0.95, c: float = 0.01, folds: int = 5, seed: int = 0,
            classifier_sha256: str = "") -> OodDetector:
        """Fit both detectors and choose thresholds that keep ``keep`` of unseen dermoscopic images.

        Args:
            reference: dermoscopic features ``[N, D]`` (e.g. a class-stratified sample of the
                classifier's training set): the kNN bank (saved with the detector) and part of
                the logistic regression's dermoscopy side.
            paired_dermoscopy / paired_clinical: ``[M, D]`` features of the same M cases, row i
                of both from one case (Derm7pt). They train the logistic regression and, out of
                fold, set the thresholds. Both sides of a case stay in one fold.
            knn_k: which neighbour's distance is the score.
            centroids: k-means centroids of ``paired_dermoscopy`` added to the bank, so images
                from that second device are not all "unfamiliar". Only centroids of clusters of
                at least ``min_cluster`` images are kept: the file then holds averages of several
                images, never one image's features (Derm7pt may not be redistributed).
            keep: share of held-out dermoscopic images to accept (both detectors together).
            c: inverse L2 strength of the logistic regression (on standardised features).
            folds: case folds for the out-of-fold scores the thresholds are chosen on; scores
                of cases the logistic regression was fitted on would be optimistic.

        Raises:
            ValueError: mismatched shapes, fewer than ``folds`` cases, or ``keep`` outside (0, 1).
        """
        reference, derm, clin = (np.asarray(a, dtype=np.float32) for a in (reference, paired_dermoscopy, paired_clinical))
        if derm.shape != clin.shape or derm.ndim != 2 or reference.ndim != 2 or reference.shape[1] != derm.shape[1]:
            raise ValueError(
                f"reference {reference.shape}, paired_dermoscopy {derm.shape} and paired_clinical {clin.shape} must be 2-D "
                "with one feature size, and the paired arrays one row per case"
            )
        if not 0 < keep < 1:
            raise ValueError(f"keep={keep} must be a share between 0 and 1 (e.g. 0.95)")
        if len(derm) < folds:
            raise ValueError(f"{len(derm)} paired cases are fewer than folds={folds}")
        order = np.random.default_rng(seed).permutation(len(derm))
        held_out = {"knn_distance": np.zeros(len(derm)), "clinical_logit": np.zeros(len(derm))}
        for part in np.array_split(order, folds):
            train = np.setdiff1d(order, part)
            detector = cls._fit_once(reference, derm[train], clin[train], knn_k, c, centroids, min_cluster, seed, classifier_sha256)
            for name, values in detector.raw_scores(derm[part]).items():
                held_out[name][part] = values
        final = cls._fit_once(reference, derm, clin, knn_k, c, centroids, min_cluster, seed, classifier_sha256)
        final.thresholds, final.scales, final.calibration = _joint_thresholds(held_out, keep)
        final.calibration.update(n_reference=len(reference), n_paired_cases=len(derm), n_centroids=len(final.bank) - len(reference),
                                 min_cluster=min_cluster, folds=folds, knn_k=knn_k, c=c, seed=seed)
        return final

    @classmethod
    def _fit_once(cls, reference: np.ndarray, derm: np.ndarray, clin: np.ndarray, knn_k: int, c: float, centroids: int,
                  min_cluster: int, seed: int, sha: str) -> OodDetector:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        dermoscopy = np.concatenate([reference, derm])
        x = np.sqrt(np.maximum(np.concatenate([dermoscopy, clin]), 0))
        y = np.r_[np.zeros(len(dermoscopy)), np.ones(len(clin))]
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(scaler.transform(x), y)
        # Fold the standardisation into the weights: the shipped file needs no scaler.
        coef = model.coef_[0] / scaler.scale_
        intercept = float(model.intercept_[0] - np.sum(coef * scaler.mean_))
        ones = {name: 1.0 for name in SCORES}
        # Per-image features are derived data: only the classifier's own training set (whose licence
        # already covers the shipped weights) goes in as is; the paired set only as cluster means.
        bank = np.concatenate([_transform(reference), _cluster_means(_transform(derm), centroids, min_cluster, seed)])
        return cls(bank=bank, modality_coef=coef, modality_intercept=intercept, knn_k=knn_k,
                   thresholds={name: 0.0 for name in SCORES}, scales=ones, classifier_sha256=sha)

    def save(self, path: str | Path, *, record: dict | None = None) -> dict:
        """Write ``path`` (``.npz``, plain arrays, no pickle) and ``path.with_suffix('.json')``.

        The JSON holds the npz's SHA-256 (checked on load), the classifier's SHA-256, the
        thresholds and whatever ``record`` adds (data, commands, figures). Returns the JSON dict.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "bank": self.bank,
            "modality_coef": self.modality_coef,
            "modality_intercept": np.array(self.modality_intercept, dtype=np.float64),
            "knn_k": np.array(self.knn_k),
            "thresholds": np.array([self.thresholds[n] for n in SCORES], dtype=np.float64),
            "scales": np.array([self.scales[n] for n in SCORES], dtype=np.float64),
        }
        with path.open("wb") as handle:
            np.savez_compressed(handle, **arrays)
        info = {
            "file": path.name,
            "sha256": file_sha256(path),
            "classifier_sha256": self.classifier_sha256,
            "feature_dim": self.feature_dim,
            "bank_size": int(self.bank.shape[0]),
            "knn_k": self.knn_k,
            "thresholds": self.thresholds,
            "scales": self.scales,
            "calibration": self.calibration,
            **(record or {}),
        }
        path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
        return info

    @classmethod
    def from_file(cls, path: str | Path, *, classifier_sha256: str) -> OodDetector:
        """Load a detector saved by ``save``, after checking its SHA-256 and its classifier.

        Args:
            classifier_sha256: SHA-256 of the classifier whose features will be scored
                (``Predictor.sha256``); it must be the one the detector was fitted on.

        Raises:
            FileNotFoundError: the ``.npz`` or its ``.json`` record is missing.
            ValueError: the file's SHA-256 differs from the record, or the detector belongs to
                another classifier.
        """
        path = Path(path)
        record_path = path.with_suffix(".json")
        for needed in (path, record_path):
            if not needed.is_file():
                raise FileNotFoundError(f"OOD detector file not found: {needed}; fit one with scripts/fit_ood.py")
        record = json.loads(record_path.read_text())
        check_sha256(path, str(record.get("sha256")), expected_from=f"{record_path.name}'s",
                     fix=": reinstall dermdx or refit with scripts/fit_ood.py")
        if classifier_sha256 != record.get("classifier_sha256"):
            raise ValueError(
                f"{path} was fitted on the features of classifier {record.get('classifier_sha256')}, not {classifier_sha256}; "
                "features of another model mean something else: use that model, or refit with "
                "python scripts/fit_ood.py --model YOUR_MODEL --out DIR"
            )
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in _ARRAYS if name not in data.files]
            if missing:
                raise ValueError(f"{path} lacks arrays {missing}; refit it with scripts/fit_ood.py")
            return cls(bank=data["bank"], modality_coef=data["modality_coef"], modality_intercept=float(data["modality_intercept"]),
                       knn_k=int(data["knn_k"]), thresholds=dict(zip(SCORES, data["thresholds"].tolist(), strict=True)),
                       scales=dict(zip(SCORES, data["scales"].tolist(), strict=True)), classifier_sha256=record["classifier_sha256"])

    @classmethod
    def default(cls, *, classifier_sha256: str) -> OodDetector:
        """The shipped detector, fitted on the shipped classifier (``dermdx.default_model``).

        Raises:
            FileNotFoundError / ValueError: as ``from_file``.
        """
        return cls.from_file(DEFAULT_OOD, classifier_sha256=classifier_sha256)


def _cluster_means(unit: np.ndarray, n: int, min_cluster: int, seed: int) -> np.ndarray:
    """Unit-length k-means centroids of ``unit`` rows, only of clusters with >= ``min_cluster`` members."""
    if n <= 0:
        return np.zeros((0, unit.shape[1]), dtype=unit.dtype)
    from sklearn.cluster import KMeans

    n = min(n, len(unit) // max(min_cluster, 1))
    if n == 0:
        return np.zeros((0, unit.shape[1]), dtype=unit.dtype)
    kmeans = KMeans(n_clusters=n, n_init=4, random_state=seed).fit(unit)
    sizes = np.bincount(kmeans.labels_, minlength=n)
    centres = kmeans.cluster_centers_[sizes >= min_cluster]
    return (centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)).astype(unit.dtype)


def _joint_thresholds(held_out: dict[str, np.ndarray], keep: float) -> tuple[dict[str, float], dict[str, float], dict]:
    """Per-detector thresholds at one common quantile q: the smallest q whose union keeps ``keep``.

    Scales are each score's interquartile range on the same held-out images, so a normalised
    score of 1 means "one IQR past the threshold" for either detector. Also returns q and the
    share actually kept, for the record.
    """
    raw = {"unfamiliar": held_out["knn_distance"], "clinical_photo": held_out["clinical_logit"]}
    for q in np.linspace(keep, 1.0, 501):  # q = 1.0 keeps everything, so the loop always returns
        thresholds = {name: float(np.quantile(values, q)) for name, values in raw.items()}
        kept = float(np.mean(np.all([raw[name] <= thresholds[name] for name in SCORES], axis=0)))
        if kept >= keep:
            break
    scales = {name: max(float(np.subtract(*np.quantile(values, [0.75, 0.25]))), 1e-6) for name, values in raw.items()}
    return thresholds, scales, {"keep_target": keep, "quantile": float(q), "held_out_kept": kept}
