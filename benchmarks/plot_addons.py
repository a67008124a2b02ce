"""Pictures of the add-on benchmarks, drawn from what the benchmark scripts saved.

    python benchmarks/plot_addons.py --runs runs --out runs/figures

Reads ``runs/ood/scores.csv`` (benchmarks/ood_detection.py), ``runs/ph2_seg/per_image.csv`` and
``runs/ph2_seg/oof_masks`` (benchmarks/ph2_segmentation.py) and ``runs/cam_localisation/summary.json``
(benchmarks/cam_localisation.py), and writes:

- ``ood_roc.png``: ROC of the shipped OOD score, in-distribution dermoscopy against each OOD set;
- ``ph2_segmentation.png``: out-of-fold Dice per image, and the worst, median and best cases with
  the expert outline (green) and the predicted one (magenta);
- ``cam_localisation.png``: heatmap energy inside the lesion and pointing-game hits per CAM method
  against the random and centred baselines.

``ph2_segmentation.png`` shows PH2 images, which must not enter the repository: keep ``--out``
under runs/ (git-ignored). The two charts hold no images; docs/figures has copies of them.
A picture is skipped, with a line saying so, when its benchmark has not been run. Nothing here
recomputes a figure; the numbers stay those recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

from dermdx.config import data_root
from dermdx.data.images import load_image

SHIPPED = "shipped: unfamiliar OR clinical_photo"


def plot_ood(scores_csv: Path, out: Path) -> Path:
    scores = pd.read_csv(scores_csv)
    shipped = scores[scores["method"] == SHIPPED]
    inside = shipped[shipped["set"].str.startswith("in:")]
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, group in shipped[shipped["set"].str.startswith("out")].groupby("set"):
        y = np.r_[np.zeros(len(inside)), np.ones(len(group))]
        s = np.r_[inside["score"].to_numpy(), group["score"].to_numpy()]
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(y, s):.3f}, n={len(group)})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel=f"in-distribution dermoscopy wrongly flagged (n={len(inside)})", ylabel="out-of-distribution images flagged",
           title="Shipped OOD detector")
    ax.legend(fontsize=7, loc="lower right")
    path = out / "ood_roc.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _outlined(image: np.ndarray, expert: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    shown = image.copy()
    for mask, colour in ((expert, (0, 200, 0)), (predicted, (230, 0, 230))):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(shown, contours, -1, colour, max(2, image.shape[1] // 150))
    return shown


def plot_segmentation(seg_dir: Path, out: Path) -> Path:
    per_image = pd.read_csv(seg_dir / "per_image.csv").sort_values("dice")
    labels = pd.read_csv(data_root() / "ph2" / "labels.csv").set_index("image_id")
    picks = [per_image.iloc[0], per_image.iloc[len(per_image) // 2], per_image.iloc[-1]]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    axes[0].hist(per_image["dice"], bins=20, color="#0969da")
    axes[0].set(xlabel="Dice (out-of-fold, full resolution)", ylabel="images", title=f"PH2, {len(per_image)} images")
    for ax, row, what in zip(axes[1:], picks, ("worst", "median", "best"), strict=True):
        image = load_image(data_root() / "ph2" / labels.at[row["image_id"], "image_path"])
        expert = load_image(data_root() / "ph2" / labels.at[row["image_id"], "mask_path"])[..., 0] > 127
        predicted = load_image(seg_dir / "oof_masks" / f"{row['image_id']}.png")[..., 0] > 127
        ax.imshow(_outlined(image, expert, predicted))
        ax.set(title=f"{what}: {row['image_id']} Dice {row['dice']:.3f}")
        ax.axis("off")
    fig.suptitle("Lesion segmentation: expert outline green, predicted magenta")
    path = out / "ph2_segmentation.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_cam(cam_dir: Path, out: Path) -> Path:
    maps = {}
    for csv in sorted(cam_dir.glob("*.csv")):
        frame = pd.read_csv(csv)
        maps[csv.stem] = frame
    names = list(maps)
    energy = [maps[n]["energy_in_mask"].mean() for n in names]
    pointing = [maps[n]["pointing_hit"].mean() for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = ["#8c959f" if n in ("random", "centre") else "#0969da" for n in names]
    axes[0].bar(names, energy, color=colours)
    axes[0].set(ylabel="share of heatmap energy inside the lesion", ylim=(0, 1), title="Energy in the PH2 lesion mask")
    axes[1].bar(names, pointing, color=colours)
    axes[1].set(ylabel="share of images whose maximum is in the lesion", ylim=(0, 1), title="Pointing game")
    for ax in axes:
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle("CAMs of the shipped classifier on 80 PH2 images (grey: baselines)")
    path = out / "cam_localisation.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("runs/figures"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (args.runs / "ood" / "scores.csv", plot_ood, "benchmarks/ood_detection.py"),
        (args.runs / "ph2_seg" / "per_image.csv", lambda p, o: plot_segmentation(p.parent, o), "benchmarks/ph2_segmentation.py"),
        (args.runs / "cam_localisation" / "summary.json", lambda p, o: plot_cam(p.parent, o), "benchmarks/cam_localisation.py"),
    ]
    for source, plot, script in jobs:
        if not source.is_file():
            print(f"skipped: {source} not found (run {script} first)")
            continue
        print(f"wrote {plot(source, args.out)}")


if __name__ == "__main__":
    main()
