"""Average several models' probabilities: members may differ in backbone, resolution or fold.

Each member keeps its own preprocessing (from its model file), so a 160 px and a 224 px model can
be combined. Classes are matched by name, never by position.

Averaging already softens: members that are each calibrated give an under-confident mean. So an
ensemble has its own temperature, fitted on the mean (``dermdx.calibration.calibrate_ensemble``)
and applied to it as ``softmax(log(mean) / T)``; it never changes the predicted class. Metadata
fusion members are more confident when age, sex and site are given, so a second temperature may be
fitted with them hidden; it is applied to the rows that give none of the three.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from dermdx.calibration import apply_temperature
from dermdx.data.manifest import Manifest
from dermdx.inference import Predictions, Predictor


class EnsemblePredictor:
    """Weighted mean of member probabilities, with the ``Predictor.predict_manifest`` interface.

    Raises:
        ValueError: no members, members with different class sets, or bad weights.
    """

    def __init__(
        self, members: list[Predictor], weights: list[float] | None = None, *, temperature: float = 1.0, temperature_without_metadata: float | None = None
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member model")
        classes = members[0].classes
        for member in members[1:]:
            if sorted(member.classes) != sorted(classes):
                raise ValueError(f"ensemble members must share classes: {classes} vs {member.classes} ({member.info.model_name})")
        weights = [1.0] * len(members) if weights is None else list(weights)
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"need one non-negative weight per member ({len(members)}), not all zero; got {weights}")
        if not temperature > 0:
            raise ValueError(f"the ensemble temperature must be a positive number, got {temperature}")
        if temperature_without_metadata is not None and not temperature_without_metadata > 0:
            raise ValueError(f"the ensemble temperature without metadata must be a positive number, got {temperature_without_metadata}")
        self.members = members
        self.temperature = float(temperature)
        self.temperature_without_metadata = None if temperature_without_metadata is None else float(temperature_without_metadata)
        self.weights = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.classes = list(classes)

    @property
    def sha256(self) -> str:
        """One hash for the ensemble: its members' SHA-256 and weights, in order, and its temperature."""
        text = ";".join(f"{m.sha256}:{w:.6f}" for m, w in zip(self.members, self.weights, strict=True))
        if self.temperature != 1.0:
            text += f";T={self.temperature:.6f}"
        if self.temperature_without_metadata is not None:
            text += f";T0={self.temperature_without_metadata:.6f}"
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def model_name(self) -> str:
        return " + ".join(f"{m.info.model_name}@{m.info.preprocess.image_size}px" for m in self.members)

    @property
    def data_fingerprints(self) -> list[str | None]:
        return [m.info.data_fingerprint for m in self.members]

    @classmethod
    def from_checkpoints(
        cls, paths: list[str | Path], weights: list[float] | None = None, *, temperature: float = 1.0, temperature_without_metadata: float | None = None, **kwargs
    ) -> EnsemblePredictor:
        members = [Predictor.from_checkpoint(p, **kwargs) for p in paths]
        return cls(members, weights, temperature=temperature, temperature_without_metadata=temperature_without_metadata)

    def member_mean(self, manifest: Manifest, *, continue_on_error: bool = False, progress: bool = True) -> Predictions:
        """The weighted mean of the members' probabilities, before the ensemble temperature."""
        results = [m.predict_manifest(manifest, continue_on_error=continue_on_error, progress=progress) for m in self.members]
        errors: dict[str, str] = {}
        for result in results:
            errors.update(result.errors)
        keep = [p for p in results[0].paths if p not in errors]
        total = np.zeros((len(keep), len(self.classes)))
        for weight, result in zip(self.weights, results, strict=True):
            row = {p: i for i, p in enumerate(result.paths)}
            order = [result.classes.index(c) for c in self.classes]
            total += weight * result.probs[[row[p] for p in keep]][:, order]
        ids = dict(zip(results[0].paths, results[0].image_ids, strict=True))
        return Predictions([ids[p] for p in keep], keep, total, self.classes, errors)

    def predict_manifest(self, manifest: Manifest, *, continue_on_error: bool = False, progress: bool = True) -> Predictions:
        """Members predict in turn; an image any member could not read is left out and listed.

        Rows giving no age, sex or site get ``temperature_without_metadata`` when there is one."""
        mean = self.member_mean(manifest, continue_on_error=continue_on_error, progress=progress)
        log_mean = np.log(np.clip(mean.probs, 1e-12, None))
        temperatures = np.full(len(mean.paths), self.temperature)
        if self.temperature_without_metadata is not None:
            given = dict(zip(map(str, manifest.paths()), manifest.metadata_given(), strict=True))
            blank = np.array([not given[p] for p in mean.paths], dtype=bool)
            temperatures[blank] = self.temperature_without_metadata
        for temperature in np.unique(temperatures):
            if temperature != 1.0:
                rows = temperatures == temperature
                mean.probs[rows] = apply_temperature(log_mean[rows], float(temperature))
        return mean
