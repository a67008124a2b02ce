"""Knowledge distillation: a light student learns a teacher ensemble's soft labels (Hinton et al. 2015).

The teachers (model files, e.g. an ensemble over backbones or scales) predict every *training* row
once, on the clean view and with their own preprocessing; the mean of their probabilities is the
soft label of that row. The student then minimises

    alpha * T^2 * KL(teacher^(1/T) || softmax(student / T)) + (1 - alpha) * hard-label loss

(``T`` the temperature, the teacher distribution sharpened or softened the same way). Only
training rows are given to the teachers, so the selection and held-out rows stay unseen by the
soft labels; the teachers themselves must not have trained on the student's held-out rows, which
a caller guarantees by using teachers trained on the same split (their data fingerprints are
recorded). The soft labels are cached beside the run, keyed by the teachers' SHA-256 and the
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
    """

    needs_index = True

    def __init__(self, hard_loss: nn.Module, teacher_probs: np.ndarray, *, temperature: float = 2.0, alpha: float = 0.7) -> None:
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
        self.hard_loss = hard_loss
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        target = torch.softmax(self.teacher_log_probs[index] / t, dim=1)
        soft = nn.functional.kl_div(torch.log_softmax(logits / t, dim=1), target, reduction="batchmean") * t * t
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
