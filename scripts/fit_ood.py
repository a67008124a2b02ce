"""Fit the out-of-distribution detector on a classifier's features and write it beside the model.

    python scripts/fit_ood.py                       # the shipped model -> src/dermdx/weights/ood.npz
    python scripts/fit_ood.py --model runs/x/model.safetensors --out runs/x/ood.npz

Data (all offline, read from ``dermdx.config.data_root()``):
  * reference dermoscopy: a class-stratified sample of HAM10000 (at most ``--per-class`` images
    per class; rare classes whole), the data the shipped classifier was trained on. Their
    features are the kNN bank saved in the file (HAM10000 is CC BY-NC, like the shipped weights);
  * paired cases: the Derm7pt official TRAIN split, each case's dermoscopic image and clinical
    photo: they fit the clinical-photo classifier and the thresholds, and join the bank only as
    k-means centroids of >= 5 images each; no per-image feature of them is saved (Derm7pt may
    not be redistributed). The VALID split is never read here:
    benchmarks/ood_detection.py tests on it.
Thresholds keep ``--keep`` of the Derm7pt train dermoscopic images out of fold (see
``OodDetector.fit``). Features are cached in ``--cache`` (keyed by model SHA-256 and image list).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch

from dermdx.config import data_root
from dermdx.data.adapters import read_derm7pt, read_ham10000
from dermdx.default_model import default_model_path
from dermdx.inference import Predictor
from dermdx.ood import DEFAULT_OOD, OodDetector
from dermdx.ood_sets import cached_features

MAX_BYTES = 8 * 1024 * 1024


def stratified_sample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted row indices: up to ``per_class`` random rows of each label."""
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == label), size=min(per_class, int((labels == label).sum())), replace=False)
              for label in sorted(set(labels))]
    return np.sort(np.concatenate(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="classifier (.safetensors); default: the shipped model")
    parser.add_argument("--out", default=str(DEFAULT_OOD))
    parser.add_argument("--cache", default="runs/features")
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--centroids", type=int, default=32, help="k-means centroids of Derm7pt train dermoscopy added to the bank")
    parser.add_argument("--keep", type=float, default=0.95)
    parser.add_argument("--c", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model_path = Path(args.model) if args.model else default_model_path()
    predictor = Predictor.from_checkpoint(model_path)
    tag, cache, root = predictor.sha256[:12], Path(args.cache), data_root()

    ham = read_ham10000(root / "ham10000/metadata.csv")
    ham_features = cached_features(predictor, ham, cache / f"ham10000_{tag}.npz")["features"]
    reference_rows = stratified_sample(ham.frame["label"].to_numpy(), args.per_class, args.seed)
    paired = {}
    for modality in ("dermoscopy", "clinical"):
        manifest = read_derm7pt(root / "derm7pt/labels.csv", modality=modality)
        features = cached_features(predictor, manifest, cache / f"derm7pt_{modality}_{tag}.npz")["features"]
        paired[modality] = features[(manifest.frame["split"] == "train").to_numpy()]

    detector = OodDetector.fit(ham_features[reference_rows], paired["dermoscopy"], paired["clinical"], knn_k=args.k,
                               centroids=args.centroids, keep=args.keep, c=args.c, seed=args.seed, classifier_sha256=predictor.sha256)
    record = {
        "released": str(date.today()),
        "classifier_file": model_path.name,
        "method": "k-NN cosine distance on sqrt pooled features + logistic regression clinical-vs-dermoscopy; see dermdx.ood",
        "data": {
            "reference": f"HAM10000, {len(reference_rows)} images (<= {args.per_class} per class, seed {args.seed})",
            "paired": f"Derm7pt official train split, {len(paired['dermoscopy'])} cases (dermoscopy + clinical); "
                      f"in the bank only as {detector.calibration['n_centroids']} k-means centroids of >= 5 images",
            "never_used": "Derm7pt valid split, PH2 (test sets of benchmarks/ood_detection.py)",
        },
        "commands": [" ".join(["python", "scripts/fit_ood.py", *sys.argv[1:]])],
        "licence": "kNN bank = features of HAM10000 images (CC BY-NC 4.0): non-commercial use only, like the shipped classifier",
        "figures": "docs/benchmarks.md, 'Out-of-distribution rejection' (python benchmarks/ood_detection.py)",
    }
    info = detector.save(args.out, record=record)
    size = Path(args.out).stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{args.out} is {size / 1e6:.1f} MB; a shipped detector must be at most {MAX_BYTES / 1e6:.0f} MB: lower --per-class")
    print(f"wrote {args.out} ({size / 1e6:.2f} MB, sha256 {info['sha256']}); thresholds {info['thresholds']}; {info['calibration']}")


if __name__ == "__main__":
    main()
