"""External validation: HAM10000-trained models on Derm7pt and PH2, which no model here trained on.

    python benchmarks/external_validation.py --models src/dermdx/weights/default.safetensors \
        runs/bench/kfold*/model.safetensors --tta none --out runs/external

Derm7pt's dermoscopic images are mapped onto the seven ISIC classes (``read_derm7pt(...,
label_scheme="isic")``: melanosis and miscellaneous have no honest class and are dropped; akiec
does not occur, so balanced accuracy is the mean recall over the classes present). PH2 has
nevi (common and atypical -> nv) and melanomas. Every model is scored alone, then the equal-weight
mean of all of them (``EnsemblePredictor``), so an ensemble of fold models can be judged on images
from other centres without the leakage a HAM10000 evaluation of fold models would have.
Probabilities are cached per model and data set in ``--out`` so a rerun only adds new models.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

from dermdx.checkpoint import file_sha256
from dermdx.config import data_root
from dermdx.data.adapters import read_derm7pt, read_ph2
from dermdx.data.manifest import Manifest
from dermdx.inference import Predictor
from dermdx.metrics import balanced_accuracy, sensitivity_at_specificity


def external_sets() -> dict[str, Manifest]:
    root = data_root()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the dropped-diagnosis counts are reported below
        derm7pt = read_derm7pt(root / "derm7pt" / "labels.csv", label_scheme="isic")
    ph2 = read_ph2(root / "ph2" / "labels.csv")
    ph2.frame["label"] = ph2.frame["label"].map({"common_nevus": "nv", "atypical_nevus": "nv", "melanoma": "mel"})
    return {"derm7pt": derm7pt, "ph2": ph2}


def cached_probs(model: Path, name: str, manifest: Manifest, tta: str, out: Path) -> tuple[np.ndarray, list[str]]:
    sha = file_sha256(model)
    cache = out / f"{name}-{sha[:16]}-{tta}.npz"
    if cache.is_file():
        saved = np.load(cache)
        return saved["probs"], [str(c) for c in saved["classes"]]
    predictor = Predictor.from_checkpoint(model, tta=tta, num_workers=2)
    result = predictor.predict_manifest(manifest)
    np.savez(cache, probs=result.probs, classes=np.array(result.classes))
    return result.probs, result.classes


def score(probs: np.ndarray, classes: list[str], manifest: Manifest) -> dict[str, float | int]:
    y = manifest.label_indices(classes)
    predicted = probs.argmax(1)
    index = {c: k for k, c in enumerate(classes)}
    mel = (y == index["mel"]).astype(int)
    from sklearn.metrics import roc_auc_score

    return {
        "n": len(y),
        # Mean recall over the classes present: a class with no images (akiec here) has no recall.
        "balanced_accuracy": balanced_accuracy(y, predicted),
        "mel_auc": float(roc_auc_score(mel, probs[:, index["mel"]])),
        "mel_sensitivity_at_80_specificity": float(sensitivity_at_specificity(mel, probs[:, index["mel"]], 0.8)),
        "accuracy": float((predicted == y).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True, type=Path)
    parser.add_argument("--tta", default="none", choices=["none", "flip", "d4"])
    parser.add_argument("--out", default="runs/external", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sets = external_sets()
    results: dict[str, dict] = {}
    for set_name, manifest in sets.items():
        all_probs, classes0 = [], None
        for model in args.models:
            probs, classes = cached_probs(model, set_name, manifest, args.tta, args.out)
            if classes0 is None:
                classes0 = classes
            order = [classes.index(c) for c in classes0]
            all_probs.append(probs[:, order])
            results.setdefault(str(model), {})[set_name] = score(probs[:, order], classes0, manifest)
        if len(args.models) > 1:
            results.setdefault("ensemble (mean)", {})[set_name] = score(np.mean(all_probs, axis=0), classes0, manifest)
    dropped = sets["derm7pt"].frame.attrs.get("dropped", {})
    print(f"Derm7pt: {len(sets['derm7pt'])} cases mapped onto ISIC classes (dropped {dropped}); PH2: {len(sets['ph2'])} images; TTA {args.tta}")
    print("| model | Derm7pt balanced accuracy | Derm7pt melanoma AUC | PH2 melanoma AUC | PH2 mel sens. @80% spec. |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        d, p = row["derm7pt"], row["ph2"]
        print(f"| {name} | {d['balanced_accuracy']:.3f} | {d['mel_auc']:.3f} | {p['mel_auc']:.3f} | {p['mel_sensitivity_at_80_specificity']:.3f} |")
    (args.out / f"results-{args.tta}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
