"""PH2 lesion segmentation: K-fold cross-validated Dice and IoU of the dermdx U-Net.

    nice -n 10 python benchmarks/ph2_segmentation.py --out runs/ph2_seg

PH2 has one image per lesion (and per patient, as far as the data tells), so folds over images are
already grouped by lesion; they are stratified by diagnosis (``dermdx.data.splits.kfold_split``).
Each fold trains a fresh U-Net on the other folds and predicts its held-out images; Dice and IoU
are computed per image at the image's own resolution (766x576) against the expert mask, then
averaged over images. The out-of-fold masks are written to ``OUT/oof_masks`` for the ABCD
benchmark (``benchmarks/ph2_abcd.py``). Finished folds are skipped on a rerun (``OUT/foldK.csv``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from dermdx.config import data_root
from dermdx.data.adapters import read_ph2
from dermdx.data.splits import assert_no_group_leak, kfold_split
from dermdx.segmentation import Segmenter
from dermdx.segmentation_training import (
    SegmentationTrainConfig,
    dice_iou,
    load_masked_images,
    raw_and_postprocessed,
    train_segmenter,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/ph2_seg")
    parser.add_argument("--labels", default=None, help="PH2 labels.csv (default: DATA_ROOT/ph2/labels.csv)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", type=int, nargs="*", help="run just these folds (the summary then covers the folds done so far)")
    parser.add_argument("--epochs", type=int, default=SegmentationTrainConfig.epochs)
    parser.add_argument("--image-size", type=int, default=SegmentationTrainConfig.image_size)
    parser.add_argument("--batch-size", type=int, default=SegmentationTrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=SegmentationTrainConfig.lr)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=SegmentationTrainConfig.device, help="auto (a CUDA GPU when there is one), cpu, cuda, cuda:N or mps")
    return parser.parse_args()


def run_fold(fold: int, folds: np.ndarray, manifest, data, config: SegmentationTrainConfig, out: Path) -> pd.DataFrame:
    train_idx, val_idx = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    assert_no_group_leak(manifest, train_idx, val_idx)
    start = time.perf_counter()
    model, info = train_segmenter(config, data.subset(train_idx), progress=True)
    train_s = time.perf_counter() - start
    segmenter = Segmenter(model, info)
    rows = []
    (out / "oof_masks").mkdir(parents=True, exist_ok=True)
    for i in val_idx:
        raw, post = raw_and_postprocessed(segmenter.probabilities(data.images[i]), info.threshold)
        Image.fromarray(post.astype(np.uint8) * 255).save(out / "oof_masks" / f"{data.image_ids[i]}.png")
        dice_raw, iou_raw = dice_iou(raw, data.masks[i])
        dice, iou = dice_iou(post, data.masks[i])
        rows.append({"image_id": data.image_ids[i], "fold": fold, "dice": dice, "iou": iou, "dice_raw": dice_raw, "iou_raw": iou_raw, "train_s": train_s})
    frame = pd.DataFrame(rows)
    frame.to_csv(out / f"fold{fold}.csv", index=False)
    return frame


def summarise(per_image: pd.DataFrame) -> dict:
    summary = {"n_images": len(per_image), "folds_done": sorted(int(f) for f in per_image["fold"].unique())}
    for column in ("dice", "iou", "dice_raw", "iou_raw"):
        values = per_image[column].to_numpy()
        summary[column] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "median": float(np.median(values)), "min": float(values.min())}
    summary["per_fold_dice"] = {int(f): float(g["dice"].mean()) for f, g in per_image.groupby("fold")}
    summary["per_fold_train_s"] = {int(f): float(g["train_s"].iloc[0]) for f, g in per_image.groupby("fold")}
    return summary


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = Path(args.labels) if args.labels else data_root() / "ph2" / "labels.csv"
    manifest = read_ph2(labels)
    data = load_masked_images(manifest)
    config = SegmentationTrainConfig(epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size, lr=args.lr, seed=args.seed, threads=args.threads, device=args.device)
    folds = kfold_split(manifest, n_folds=args.folds, seed=args.seed)
    pd.DataFrame({"image_id": data.image_ids, "fold": folds}).to_csv(out / "folds.csv", index=False)
    resolved = {"config": asdict(config), "folds": args.folds, "labels": str(labels), "data_fingerprint": data.fingerprint}
    saved = out / "config.json"
    if saved.is_file() and json.loads(saved.read_text()) != json.loads(json.dumps(resolved)):
        raise SystemExit(f"{saved} holds another configuration; use a new --out or delete {out} to start over")
    saved.write_text(json.dumps(resolved, indent=2))

    frames = []
    todo = args.only_folds if args.only_folds else range(args.folds)
    for fold in tqdm(list(todo), desc="folds"):
        done = out / f"fold{fold}.csv"
        frames.append(pd.read_csv(done) if done.is_file() else run_fold(fold, folds, manifest, data, config, out))
    for fold in range(args.folds):  # folds finished by earlier runs count in the summary too
        done = out / f"fold{fold}.csv"
        if fold not in todo and done.is_file():
            frames.append(pd.read_csv(done))
    per_image = pd.concat(frames).sort_values("image_id")
    per_image.to_csv(out / "per_image.csv", index=False)
    summary = {**summarise(per_image), **resolved}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"PH2 segmentation, {summary['n_images']} out-of-fold images, folds {summary['folds_done']} of {args.folds}")
    print("| mask | Dice mean ± SD | Dice median | Dice min | IoU mean ± SD | IoU median |")
    print("|---|---|---|---|---|---|")
    for name, suffix in (("post-processed (largest region, holes filled)", ""), ("raw threshold 0.5", "_raw")):
        d, j = summary["dice" + suffix], summary["iou" + suffix]
        print(f"| {name} | {d['mean']:.3f} ± {d['std']:.3f} | {d['median']:.3f} | {d['min']:.3f} | {j['mean']:.3f} ± {j['std']:.3f} | {j['median']:.3f} |")
    print("per-fold Dice:", {k: round(v, 3) for k, v in summary["per_fold_dice"].items()})
    print("per-fold training seconds:", {k: round(v) for k, v in summary["per_fold_train_s"].items()})


if __name__ == "__main__":
    main()
