"""Evaluate a saved model on a labelled manifest: metrics, subgroup tables, plots, HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dermdx.data.manifest import Manifest
from dermdx.ensemble import EnsemblePredictor
from dermdx.inference import Predictor
from dermdx.metrics import age_band
from dermdx.reporting import write_evaluation


def evaluate(predictor: Predictor | EnsemblePredictor, manifest: Manifest, out_dir: str | Path, *, n_bootstrap: int = 1000, title: str = "dermdx evaluation", extra: dict[str, Any] | None = None, use_metadata: bool = True) -> dict[str, Any]:
    """Predict every image of ``manifest`` (an unreadable one raises: nothing is skipped) and write the report.

    Per-subgroup figures are given per centre, per sex and per age band. ``use_metadata=False``
    hides age, sex and site from the model (not from the subgroups): how a fusion model does when
    nobody enters them.
    """
    labels = manifest.label_indices(predictor.classes)
    result = predictor.predict_manifest(manifest if use_metadata else manifest.without_metadata(), continue_on_error=False)
    frame = manifest.frame
    groups = {"centre": frame["centre"].tolist(), "sex": frame["sex"].tolist(), "age_band": age_band(frame["age"].to_numpy())}
    if isinstance(predictor, EnsemblePredictor):
        model = {
            "model": f"ensemble of {len(predictor.members)}: {predictor.model_name}",
            "member_sha256": [m.sha256 for m in predictor.members],
            "member_weights": predictor.weights.tolist(),
            "ensemble_temperature": predictor.temperature,
            "ensemble_temperature_without_metadata": predictor.temperature_without_metadata,
            "training_data_fingerprint": predictor.data_fingerprints,
        }
    else:
        model = {"model": predictor.info.model_name, "training_data_fingerprint": predictor.info.data_fingerprint}
    details = {
        **model,
        "model_sha256": predictor.sha256,
        "data": manifest.source or str(manifest.root),
        "data_fingerprint": manifest.fingerprint(),
        "metadata_given_to_model": use_metadata,
        **(extra or {}),
    }
    return write_evaluation(out_dir, labels, result.probs, predictor.classes, groups=groups, image_ids=result.image_ids, n_bootstrap=n_bootstrap, title=title, extra=details)
