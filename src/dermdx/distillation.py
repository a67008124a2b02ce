"""Knowledge distillation: a light student learns a teacher ensemble's soft labels (Hinton et al. 2015).

The teachers (model files, e.g. an ensemble over backbones or scales) predict every *training* row
once, on the clean view and with their own preprocessing; the mean of their probabilities is the
soft label of that row. The student then minimises

    alpha * T^2 * KL(teacher^(1/T) || softmax(student / T)) + (1 - alpha) * hard-label loss

(``T`` the temperature, the teacher distribution sharpened or softened the same way). With
class weights (the run's ``weighted_ce`` weights), each row's KL term is weighted by its true
class's weight, exactly as the weighted cross-entropy weights its rows: an unweighted soft term
let the 70% nevi dominate again (HAM10000 fold 0: nv recall up, akiec and df down, balanced
accuracy 0.653 -> 0.604; docs/benchmarks.md).

Only training rows are given to the teachers, so the selection and held-out rows stay unseen by
the soft labels; the teachers themselves must not have trained on the student's held-out rows,
which a caller guarantees by using teachers trained on the same split (their data fingerprints
are recorded). The soft labels are cached beside the run, keyed by the teachers' SHA-256 and the
training rows, so a resumed run reuses them. timm and torch have no distillation loss over a
dataset's rows, hence this module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dermdx.checkpoint import file_sha256
from dermdx.data.manifest import Manifest

SOFT_LABELS_FILE = "teacher_probs.npz"


class DistillationLoss(nn.Module):
    """Soft-label KL (on row indices into ``teacher_probs``) mixed with the hard-label loss.

    Args:
        hard_loss: the usual loss on labels (class-weighted cross-entropy, focal, ...).
        teacher_probs: ``[N_train, C]`` teacher probabilities, row ``i`` for training row ``i``.
        temperature: ``T`` > 0.
        alpha: the soft labels' weight in [0, 1].
        class_weights: ``[C]`` weights of the rows' true classes for the soft term (None: equal).
    """

    needs_index = True

    def __init__(self, hard_loss: nn.Module, teacher_probs: np.ndarray, *, temperature: float = 2.0, alpha: float = 0.7, class_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"distill_temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1], got {alpha}")
        probs = torch.as_tensor(teacher_probs, dtype=torch.float32)
        if probs.ndim != 2 or not torch.isfinite(probs).all() or (probs < 0).any():
            raise ValueError("teacher probabilities must be a finite, non-negative [N, C] array")
        # Teacher "logits" are log-probabilities, so softmax(log p / T) is p^(1/T), renormalised.
        self.register_buffer("teacher_log_probs", torch.log(probs.clamp_min(1e-8)))
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
            if class_weights.shape != (probs.shape[1],) or (class_weights < 0).any():
                raise ValueError(f"class_weights must be {probs.shape[1]} non-negative numbers, got shape {tuple(class_weights.shape)}")
        self.register_buffer("class_weights", class_weights)
        self.hard_loss = hard_loss
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        target = torch.softmax(self.teacher_log_probs[index] / t, dim=1)
        per_row = nn.functional.kl_div(torch.log_softmax(logits / t, dim=1), target, reduction="none").sum(dim=1)
        if self.class_weights is None:
            soft = per_row.mean() * t * t
        else:
            weights = self.class_weights[labels]
            soft = (weights * per_row).sum() / weights.sum().clamp_min(1e-12) * t * t
        if self.alpha == 1.0:
            return soft
        return self.alpha * soft + (1.0 - self.alpha) * self.hard_loss(logits, labels)


def teacher_soft_labels(teachers: list[str | Path], rows: Manifest, classes: list[str], out_dir: str | Path) -> np.ndarray:
    """Mean teacher probabilities ``[len(rows), len(classes)]`` for the training rows, cached in ``out_dir``.

    Raises:
        FileNotFoundError: a teacher file does not exist.
        ValueError: a teacher whose classes differ from the student's.
    """
    from dermdx.ensemble import EnsemblePredictor

    paths = [Path(p) for p in teachers]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"distillation teacher not found: {path}")
    shas = [file_sha256(p) for p in paths]
    key = hashlib.sha256(json.dumps({"teachers": shas, "rows": rows.fingerprint(), "classes": classes}).encode()).hexdigest()
    cache = Path(out_dir) / SOFT_LABELS_FILE
    if cache.is_file():
        saved = np.load(cache)
        if str(saved["key"]) == key:
            return saved["probs"]
    ensemble = EnsemblePredictor.from_checkpoints(paths)
    if sorted(ensemble.classes) != sorted(classes):
        raise ValueError(f"teacher classes {ensemble.classes} differ from the student's {classes}; distil from teachers trained on the same classes")
    result = ensemble.predict_manifest(rows, progress=True)
    order = [ensemble.classes.index(c) for c in classes]
    probs = result.probs[:, order].astype(np.float32)
    np.savez(cache, probs=probs, key=np.array(key), teachers=np.array([str(p) for p in paths]), teacher_sha256=np.array(shas))
    return probs
