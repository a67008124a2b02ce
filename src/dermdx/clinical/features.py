"""Classifier outputs for a manifest, computed once and cached on disk for fitting and benchmarks.

Fitting the clinical heads and reproducing their figures both need the frozen classifier's pooled
features and its class probabilities for the same few hundred images. Computing them takes
minutes on a CPU; fitting small heads on them takes seconds. So they are written once to an
``.npz`` (read back with ``allow_pickle=False``) keyed by the classifier's SHA-256, the
test-time augmentation and the manifest's image list: a different model or image set recomputes.
Cache files hold derived numbers, not images; keep them under the git-ignored ``runs/``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from dermdx.data.manifest import Manifest
from dermdx.inference import Predictor


def _cache_key(predictor: Predictor, manifest: Manifest) -> str:
    listing = "\n".join(f"{i}\t{p}" for i, p in zip(manifest.frame["image_id"], manifest.paths(), strict=True))
    return json.dumps(
        {"classifier_sha256": predictor.sha256, "tta": predictor.tta, "images": hashlib.sha256(listing.encode()).hexdigest()},
        sort_keys=True,
    )


def cached_outputs(predictor: Predictor, manifest: Manifest, cache_path: str | Path, *, progress: bool = True) -> dict[str, np.ndarray]:
    """Pooled features ``[N, D]``, probabilities ``[N, C]`` and image ids ``[N]`` for ``manifest``, in its order.

    Args:
        predictor: the classifier (a PyTorch model; features need it). Its ``tta`` applies to the
            probabilities; the features are always one view, as ``Predictor.predict_features`` gives.
        manifest: the images; every one must be readable (the first unreadable one raises).
        cache_path: the ``.npz`` to read if it matches, else to (re)write.

    Returns:
        ``{"features", "probs", "image_ids"}``.
    """
    cache_path = Path(cache_path)
    key = _cache_key(predictor, manifest)
    if cache_path.is_file():
        with np.load(cache_path, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                return {name: stored[name] for name in ("features", "probs", "image_ids")}
    features = predictor.predict_features(manifest, progress=progress)
    result = predictor.predict_manifest(manifest, progress=progress)
    ids = np.asarray([str(i) for i in manifest.frame["image_id"]])
    if list(result.image_ids) != list(ids):
        raise ValueError(f"{manifest.source}: probabilities came back for {len(result.image_ids)} of {len(ids)} images; every image must be readable")
    out = {"features": features.astype(np.float32), "probs": result.probs.astype(np.float32), "image_ids": ids}
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache_path, key=np.asarray(key), **out)
    return out
