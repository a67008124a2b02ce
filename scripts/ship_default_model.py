"""Copy a trained, calibrated model into the package as the default model and record its hash.

    python scripts/ship_default_model.py runs/default_model/model.safetensors \
        --config configs/default_model.yaml --cv-summary runs/bench/summary.md

Writes src/dermdx/weights/default.safetensors and default.json (SHA-256, size, model
description, config and the commands that made it). Refuses files over 25 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import date
from pathlib import Path

from dermdx.checkpoint import file_sha256, read_info
from dermdx.default_model import DEFAULT_MODEL, DEFAULT_RECORD

MAX_BYTES = 25 * 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--config", default="configs/default_model.yaml")
    args = parser.parse_args()
    source = Path(args.model)
    if source.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{source} is {source.stat().st_size / 1e6:.1f} MB; shipped files must be at most 25 MB")
    info = read_info(source)
    DEFAULT_MODEL.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, DEFAULT_MODEL)
    record = {
        "file": DEFAULT_MODEL.name,
        "sha256": file_sha256(DEFAULT_MODEL),
        "size_bytes": DEFAULT_MODEL.stat().st_size,
        "released": str(date.today()),
        "model_name": info.model_name,
        "classes": info.classes,
        "training_data_fingerprint": info.data_fingerprint,
        "selection_metrics": info.metrics,
        "calibration": info.calibration,
        "config": args.config,
        "commands": [
            f"dermdx train {args.config}",
            f"dermdx calibrate --model {source} --config {args.config} --out {source.parent / 'calibration'}",
            f"python scripts/ship_default_model.py {source} --config {args.config}",
        ],
        "licence": "weights trained on HAM10000 (CC BY-NC 4.0): non-commercial use only",
    }
    DEFAULT_RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print(f"shipped {DEFAULT_MODEL} ({record['size_bytes'] / 1e6:.1f} MB, sha256 {record['sha256']})")


if __name__ == "__main__":
    main()
