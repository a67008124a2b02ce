"""Train the lesion segmenter on all 80 PH2 images and ship it inside the package.

    nice -n 10 python scripts/ship_segmentation_model.py --cv-summary runs/ph2_seg/summary.json

Uses the training configuration recorded by ``benchmarks/ph2_segmentation.py`` (so the shipped
model is the one the cross-validated figures describe, refitted on every image), stores those
figures in the model file, and writes ``src/dermdx/weights/segmentation.safetensors`` plus
``segmentation.json`` (SHA-256, size, how it was made), which ``Segmenter.default()`` checks.
Refuses files over 25 MB. ``--model PATH`` ships an already trained file instead of training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import date
from pathlib import Path

import torch

from dermdx.checkpoint import file_sha256
from dermdx.config import data_root, from_dict
from dermdx.data.adapters import read_ph2
from dermdx.segmentation import DEFAULT_SEGMENTER, DEFAULT_SEGMENTER_RECORD, read_segmentation_info, save_segmentation_model
from dermdx.segmentation_training import SegmentationTrainConfig, load_masked_images, train_segmenter

MAX_BYTES = 25 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cv-summary", default="runs/ph2_seg/summary.json")
    parser.add_argument("--out", default="runs/ph2_seg/final/segmentation.safetensors", help="where the trained file is written before it is copied")
    parser.add_argument("--model", help="ship this trained file instead of training one")
    args = parser.parse_args()
    summary_path = Path(args.cv_summary)
    if not summary_path.is_file():
        raise SystemExit(f"{summary_path} not found: run benchmarks/ph2_segmentation.py first (its figures ship with the model)")
    summary = json.loads(summary_path.read_text())
    config = from_dict(SegmentationTrainConfig, summary["config"], where=str(summary_path))
    metrics = {
        "cross_validation": {k: summary[k] for k in ("n_images", "folds_done", "dice", "iou", "dice_raw", "iou_raw", "per_fold_dice")},
        "folds": summary["folds"],
        "note": "out-of-fold Dice/IoU per image at full resolution, averaged over PH2's 80 images; the shipped model is refitted on all 80",
    }
    source = Path(args.model) if args.model else Path(args.out)
    if not args.model:
        torch.set_num_threads(config.threads or 1)
        labels = Path(summary["labels"])
        data = load_masked_images(read_ph2(labels if labels.is_file() else data_root() / "ph2" / "labels.csv"))
        if data.fingerprint != summary["data_fingerprint"]:
            raise SystemExit(f"PH2 data fingerprint {data.fingerprint} differs from the cross-validated {summary['data_fingerprint']}")
        start = time.perf_counter()
        model, info = train_segmenter(config, data, progress=True)
        info.metrics = metrics | {"final_fit_seconds": round(time.perf_counter() - start)}
        info.config = summary["config"]
        save_segmentation_model(source, model, info)
    if source.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{source} is {source.stat().st_size / 1e6:.1f} MB; shipped files must be at most 25 MB")
    info = read_segmentation_info(source)
    DEFAULT_SEGMENTER.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, DEFAULT_SEGMENTER)
    record = {
        "file": DEFAULT_SEGMENTER.name,
        "sha256": file_sha256(DEFAULT_SEGMENTER),
        "size_bytes": DEFAULT_SEGMENTER.stat().st_size,
        "released": str(date.today()),
        "encoder": info.net.encoder,
        "decoder_channels": list(info.net.decoder_channels),
        "image_size": info.image_size,
        "normalisation": {"mean": list(info.mean), "std": list(info.std)},
        "threshold": info.threshold,
        "training_data": "PH2 (80 dermoscopic images with expert lesion masks)",
        "training_data_fingerprint": info.data_fingerprint,
        "metrics": info.metrics,
        "config": info.config,
        "commands": [
            "python benchmarks/ph2_segmentation.py --out runs/ph2_seg",
            f"python scripts/ship_segmentation_model.py --cv-summary {summary_path}",
        ],
        "licence": "weights trained on PH2 (free for research and benchmarking; cite Mendonça et al., EMBC 2013)",
    }
    DEFAULT_SEGMENTER_RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print(f"shipped {DEFAULT_SEGMENTER} ({record['size_bytes'] / 1e6:.1f} MB, sha256 {record['sha256']})")


if __name__ == "__main__":
    main()
