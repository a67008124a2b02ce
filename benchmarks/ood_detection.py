"""AUROC and rejection rates of the shipped OOD detector, against logit and Mahalanobis baselines.

    python benchmarks/ood_detection.py --out runs/ood [--threads 1]

In distribution (dermoscopy neither the classifier nor the detector saw): Derm7pt VALID split
dermoscopic images and PH2. Out of distribution:
  (a) generated images, seed 1 (the fitting script never uses generated images; seed 0 is kept
      for exploration): uniform colours, Gaussian / uniform noise, gradients, checkerboards,
      smooth random fields;
  (b) the photos bundled with scikit-image (no download);
  (c) wrong modality: Derm7pt VALID split clinical photos (cases disjoint from the fitting cases).
Baselines are thresholded like the detector, at 95% of the Derm7pt TRAIN dermoscopic images;
Mahalanobis (Ledoit-Wolf shrinkage) is fitted on all HAM10000 features. AUROCs carry 95%
bootstrap intervals (2,000 resamples of both sides). Also reported: the shipped detector at
stricter and looser operating points, and the whole gate a report would apply, "quality check
failed OR out of distribution" (``dermdx.quality.check_quality`` on the raw image first).
Writes ``summary.md`` and ``scores.csv``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from dermdx.config import data_root
from dermdx.data.adapters import read_derm7pt, read_ham10000, read_images, read_ph2
from dermdx.data.images import load_image
from dermdx.default_model import default_model_path
from dermdx.inference import Predictor
from dermdx.ood import OodDetector
from dermdx.ood_sets import (
    cached_features,
    generated_images,
    skimage_samples,
    write_images,
)
from dermdx.quality import check_quality

OPERATING_POINTS = (-0.5, 0.0, 0.5, 1.0)  # normalised score thresholds; 0 = shipped


def auroc_with_interval(inside: np.ndarray, outside: np.ndarray, *, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """AUROC (outside = positive) and a 95% percentile bootstrap interval."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    point = roc_auc_score(labels, np.r_[inside, outside])
    draws = [roc_auc_score(labels, np.r_[rng.choice(inside, len(inside)), rng.choice(outside, len(outside))]) for _ in range(reps)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(point), float(low), float(high)


def load_sets(predictor: Predictor, cache: Path, work: Path) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Features, logits and names of every set, and the Derm7pt train / HAM features the baselines fit on."""
    root, tag = data_root(), predictor.sha256[:12]
    derm7pt = {m: read_derm7pt(root / "derm7pt/labels.csv", modality=m) for m in ("dermoscopy", "clinical")}
    valid = (derm7pt["dermoscopy"].frame["split"] == "valid").to_numpy()
    sources = {
        "derm7pt_dermoscopy": lambda: derm7pt["dermoscopy"],
        "derm7pt_clinical": lambda: derm7pt["clinical"],
        "ph2": lambda: read_ph2(root / "ph2/labels.csv"),
        "generated_seed1": lambda: read_images(write_images(generated_images(seed=1), work / "generated_seed1")),
        "skimage": lambda: read_images(write_images(skimage_samples(), work / "skimage")),
        "ham10000": lambda: read_ham10000(root / "ham10000/metadata.csv"),
    }
    loaded = {}
    for name, make in tqdm(sources.items(), desc="feature sets", dynamic_ncols=True):
        manifest = make()
        out = cached_features(predictor, manifest, cache / f"{name}_{tag}.npz")
        out["names"] = manifest.frame["image_id"].astype(str).to_numpy()
        loaded[name] = out
    pick = lambda d, rows: {k: v[rows] for k, v in d.items()}
    sets = {
        "in: Derm7pt valid dermoscopy": pick(loaded["derm7pt_dermoscopy"], valid),
        "in: PH2": loaded["ph2"],
        "out (a): generated": loaded["generated_seed1"],
        "out (b): scikit-image photos": loaded["skimage"],
        "out (c): Derm7pt valid clinical": pick(loaded["derm7pt_clinical"], valid),
        "info: HAM10000 (classifier's training data)": loaded["ham10000"],
    }
    fitting = {"derm7pt_train_dermoscopy": loaded["derm7pt_dermoscopy"]["features"][~valid],
               "derm7pt_train_logits": loaded["derm7pt_dermoscopy"]["logits"][~valid],
               "ham10000": loaded["ham10000"]["features"]}
    return sets, fitting


def scorers(detector: OodDetector, fitting: dict[str, np.ndarray], temperature: float) -> dict:
    """name -> (score(features, logits), threshold); higher = more out of distribution."""
    from scipy.special import logsumexp, softmax
    from sklearn.covariance import LedoitWolf

    mahalanobis = LedoitWolf().fit(fitting["ham10000"])
    methods = {
        "shipped: unfamiliar OR clinical_photo": lambda f, z: detector.combined_score(f),
        "shipped: unfamiliar (kNN) alone": lambda f, z: detector.normalised_scores(f)["unfamiliar"],
        "shipped: clinical_photo alone": lambda f, z: detector.normalised_scores(f)["clinical_photo"],
        "baseline: max softmax (T-scaled)": lambda f, z: -softmax(z / temperature, axis=1).max(axis=1),
        "baseline: energy": lambda f, z: -logsumexp(z, axis=1),
        "baseline: Mahalanobis (Ledoit-Wolf, HAM10000)": lambda f, z: mahalanobis.mahalanobis(f),
    }
    out = {}
    for name, fn in methods.items():
        # The shipped scores are already thresholded at 0; the baselines at 95% of Derm7pt train dermoscopy.
        threshold = 0.0 if name.startswith("shipped") else float(np.quantile(fn(fitting["derm7pt_train_dermoscopy"], fitting["derm7pt_train_logits"]), 0.95))
        out[name] = (fn, threshold)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/ood")
    parser.add_argument("--cache", default="runs/features")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    predictor = Predictor.from_checkpoint(default_model_path())
    detector = OodDetector.default(classifier_sha256=predictor.sha256)
    sets, fitting = load_sets(predictor, Path(args.cache), out / "images")
    methods = scorers(detector, fitting, predictor.temperature)

    inside_names = [n for n in sets if n.startswith("in:")]
    lines = ["| method | " + " | ".join(f"AUROC {n.split(': ')[1]}" for n in sets if n.startswith("out")) + " |",
             "|---|" + "---|" * sum(n.startswith("out") for n in sets)]
    rates = ["| method | " + " | ".join(f"{n} (n={len(sets[n]['features'])})" for n in sets) + " |", "|---|" + "---|" * len(sets)]
    rows = []
    for method, (fn, threshold) in tqdm(methods.items(), desc="methods", dynamic_ncols=True):
        scores = {name: fn(s["features"], s["logits"]) for name, s in sets.items()}
        inside = np.concatenate([scores[n] for n in inside_names])
        cells = []
        for name in sets:
            if name.startswith("out"):
                auc, low, high = auroc_with_interval(inside, scores[name])
                cells.append(f"{auc:.3f} [{low:.3f}, {high:.3f}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
        rates.append(f"| {method} | " + " | ".join(f"{(scores[n] > threshold).mean():.1%}" for n in sets) + " |")
        for name, s in sets.items():
            rows += [{"method": method, "set": name, "image": image, "score": float(v), "rejected": bool(v > threshold)}
                     for image, v in zip(s["names"], scores[name], strict=True)]
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "scores.csv", index=False)

    shipped_scores = {name: detector.combined_score(s["features"]) for name, s in sets.items()}
    points = ["| shipped detector, reject when normalised score > t | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for t in OPERATING_POINTS:
        label = f"t = {t:+.1f}" + (" (shipped)" if t == 0 else "")
        points.append(f"| {label} | " + " | ".join(f"{(shipped_scores[n] > t).mean():.1%}" for n in sets) + " |")
    gate = []
    for name, s in tqdm(sets.items(), desc="quality gate", dynamic_ncols=True):
        quality_ok = np.array([check_quality(load_image(p)).ok for p in s["paths"]])
        gate.append(f"{(~quality_ok).mean():.1%} / {((~quality_ok) | (shipped_scores[name] > 0)).mean():.1%}")
    points.append("| quality check alone / quality OR shipped detector | " + " | ".join(gate) + " |")

    shipped = frame[frame["method"] == "shipped: unfamiliar OR clinical_photo"]
    generated = shipped[shipped["set"] == "out (a): generated"]
    per_kind = generated.groupby(generated["image"].str.rsplit("_", n=1).str[0])["rejected"].mean()
    photos = shipped[shipped["set"] == "out (b): scikit-image photos"]
    summary = "\n".join([
        f"In distribution for every AUROC: {' + '.join(inside_names)} ({sum(len(sets[n]['features']) for n in inside_names)} images).",
        "", *lines, "", "Share rejected at the shipped threshold (rows = method; in-distribution columns are false rejections):", "",
        *rates, "", ("Operating points (the thresholds' scale is one interquartile range of held-out Derm7pt train dermoscopy) "
         "and the full gate:"), "", *points, "", "Shipped detector, generated images rejected per kind: " + ", ".join(f"{k} {v:.0%}" for k, v in per_kind.items()),
        "", "Shipped detector, scikit-image photos accepted (missed): " + (", ".join(photos.loc[~photos["rejected"], "image"]) or "none"),
    ]) + "\n"
    (out / "summary.md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
