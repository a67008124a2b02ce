"""ABCD measurements against PH2's expert dermoscopic criteria, on expert and predicted masks.

    python benchmarks/ph2_abcd.py --oof runs/ph2_seg/oof_masks --out runs/ph2_abcd

For each of PH2's 80 images, :func:`dermdx.explain.abcd` runs twice: on the expert lesion mask and
on the out-of-fold mask predicted by ``benchmarks/ph2_segmentation.py`` (the segmenter never saw
that image). Compared with the expert labels in ``labels.csv``:

- asymmetry (0/1/2 axes): Spearman correlation of the mean axis score with the expert grade,
  and accuracy and linearly weighted Cohen's kappa of the 0/1/2 count;
- each of the six colours: accuracy, sensitivity, specificity and Cohen's kappa of "present";
- number of colours: Spearman correlation and exact agreement;
- as context, the melanoma-vs-rest AUC of each measurement (16 melanomas of 80).

The thresholds (asymmetry 0.1, colour share 5%, ΔE 40) are the library defaults, fixed before
these figures were computed; nothing here is fitted to PH2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from tqdm.auto import tqdm

from dermdx.config import data_root
from dermdx.data.images import load_image
from dermdx.explain.abcd import DERMOSCOPIC_COLOURS, abcd
from dermdx.segmentation_training import load_mask

COLOURS = list(DERMOSCOPIC_COLOURS)


def measure(image: np.ndarray, mask: np.ndarray, prefix: str) -> dict:
    result = abcd(image, mask)
    row = {
        f"{prefix}asym_major": result.asymmetry_axes[0],
        f"{prefix}asym_minor": result.asymmetry_axes[1],
        f"{prefix}asym_mean": float(np.mean(result.asymmetry_axes)),
        f"{prefix}asym_axes": result.asymmetric_axes,
        f"{prefix}compactness": result.compactness,
        f"{prefix}solidity": result.solidity,
        f"{prefix}diameter_px": result.diameter_px,
        f"{prefix}n_colours": result.n_colours,
    }
    for colour in COLOURS:
        row[f"{prefix}color_{colour}"] = int(colour in result.colours_present)
        row[f"{prefix}share_{colour}"] = result.colour_fractions[colour]
    return row


def agreement(frame: pd.DataFrame, prefix: str) -> dict:
    expert_asym = frame["asymmetry"].astype(int)
    out = {
        "asymmetry_spearman": float(spearmanr(frame[f"{prefix}asym_mean"], expert_asym).statistic),
        "asymmetry_accuracy": float((frame[f"{prefix}asym_axes"] == expert_asym).mean()),
        "asymmetry_weighted_kappa": float(cohen_kappa_score(expert_asym, frame[f"{prefix}asym_axes"], weights="linear")),
        "asymmetry_confusion": pd.crosstab(expert_asym, frame[f"{prefix}asym_axes"]).to_dict(),
    }
    expert_count = frame[[f"color_{c}" for c in COLOURS]].astype(int).sum(axis=1)
    out["n_colours_spearman"] = float(spearmanr(frame[f"{prefix}n_colours"], expert_count).statistic)
    out["n_colours_exact"] = float((frame[f"{prefix}n_colours"] == expert_count).mean())
    out["n_colours_mean"] = float(frame[f"{prefix}n_colours"].mean())
    out["expert_n_colours_mean"] = float(expert_count.mean())
    colours = {}
    for colour in COLOURS:
        truth = frame[f"color_{colour}"].astype(int).to_numpy()
        pred = frame[f"{prefix}color_{colour}"].to_numpy()
        colours[colour] = {
            "expert_present": int(truth.sum()),
            "measured_present": int(pred.sum()),
            "accuracy": float((truth == pred).mean()),
            "sensitivity": float(pred[truth == 1].mean()) if truth.any() else None,
            "specificity": float(1 - pred[truth == 0].mean()) if (truth == 0).any() else None,
            "kappa": float(cohen_kappa_score(truth, pred)) if len(set(truth) | set(pred)) > 1 else None,
        }
    out["colours"] = colours
    melanoma = frame["melanoma"].astype(int)
    out["melanoma_auc"] = {
        name: float(roc_auc_score(melanoma, frame[f"{prefix}{name}"]))
        for name in ("asym_mean", "compactness", "n_colours", "diameter_px")
    } | {"solidity (lower = melanoma)": float(roc_auc_score(melanoma, -frame[f"{prefix}solidity"]))}
    return out


def fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", default=None, help="PH2 labels.csv (default: DATA_ROOT/ph2/labels.csv)")
    parser.add_argument("--oof", default="runs/ph2_seg/oof_masks", help="out-of-fold predicted masks (IMDxxx.png); skipped when absent")
    parser.add_argument("--out", default="runs/ph2_abcd")
    args = parser.parse_args()
    labels_path = Path(args.labels) if args.labels else data_root() / "ph2" / "labels.csv"
    labels = pd.read_csv(labels_path)
    root = labels_path.parent
    oof = Path(args.oof)
    use_oof = oof.is_dir()
    rows = []
    for record in tqdm(labels.to_dict("records"), desc="images"):
        image = load_image(root / record["image_path"])
        row = {**record, **measure(image, load_mask(root / record["mask_path"]), "expert_")}
        if use_oof:
            predicted = oof / f"{record['image_id']}.png"
            if not predicted.is_file():
                raise SystemExit(f"{predicted} is missing: finish benchmarks/ph2_segmentation.py (all folds) or drop --oof")
            mask = load_mask(predicted)
            row |= measure(image, mask, "pred_") if mask.any() else {"pred_empty": True}
        rows.append(row)
    frame = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "per_image.csv", index=False)
    summary = {"n_images": len(frame), "expert_masks": agreement(frame, "expert_")}
    if use_oof:
        summary["predicted_masks"] = agreement(frame, "pred_")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    sources = [k for k in ("expert_masks", "predicted_masks") if k in summary]
    print(f"PH2 ABCD vs expert criteria, {len(frame)} images; masks: {', '.join(sources)}")
    print("| measure | " + " | ".join(sources) + " |")
    print("|---|" + "---|" * len(sources))
    for key, label in (
        ("asymmetry_spearman", "asymmetry: Spearman (mean axis score vs grade 0/1/2)"),
        ("asymmetry_accuracy", "asymmetry: accuracy of 0/1/2 axes"),
        ("asymmetry_weighted_kappa", "asymmetry: linearly weighted kappa"),
        ("n_colours_spearman", "number of colours: Spearman"),
        ("n_colours_exact", "number of colours: exact agreement"),
        ("n_colours_mean", "number of colours: mean measured"),
        ("expert_n_colours_mean", "number of colours: mean expert"),
    ):
        print(f"| {label} | " + " | ".join(fmt(summary[s][key]) for s in sources) + " |")
    print()
    print("| colour (expert present / 80) | " + " | ".join(f"{s}: measured present, acc, sens, spec, kappa" for s in sources) + " |")
    print("|---|" + "---|" * len(sources))
    for colour in COLOURS:
        cells = []
        for s in sources:
            c = summary[s]["colours"][colour]
            cells.append(f"{c['measured_present']}, {fmt(c['accuracy'])}, {fmt(c['sensitivity'])}, {fmt(c['specificity'])}, {fmt(c['kappa'])}")
        print(f"| {colour} ({summary['expert_masks']['colours'][colour]['expert_present']}) | " + " | ".join(cells) + " |")
    print()
    print("melanoma-vs-rest AUC per measurement:")
    for s in sources:
        print(f"  {s}: " + ", ".join(f"{k} {v:.2f}" for k, v in summary[s]["melanoma_auc"].items()))


if __name__ == "__main__":
    main()
