"""Copy trained, calibrated models into the package and record their hashes and how they were made.

The default single network (diagnose heatmaps, OOD detector, clinical heads, serve, export):

    python scripts/ship_default_model.py runs/default_model/model.safetensors --config configs/default_model.yaml

The default classifier (``dermdx predict`` / ``evaluate`` without ``--model``), one network or
the mean of several, with the held-out evaluation of the same recipe on one fold as its validation:

    python scripts/ship_default_model.py --ensemble \
        runs/default_ensemble_160/model.safetensors runs/default_ensemble_192/model.safetensors \
        --config configs/default_ensemble_160.yaml --config configs/default_ensemble_192.yaml \
        --validation runs/multisource_ensemble_eval_d4/metrics.json \
        [--ensemble-calibration runs/default_ensemble_calibration/ensemble_calibration.json]

Writes into src/dermdx/weights/: ``default.safetensors`` + ``default.json``, or
``default_ensemble_<i>.safetensors`` + ``default_ensemble.json``. Refuses files over 25 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import date
from pathlib import Path

from dermdx.calibration import read_ensemble_calibration
from dermdx.checkpoint import ModelInfo, file_sha256, read_info
from dermdx.default_model import (
    DEFAULT_ENSEMBLE_RECORD,
    DEFAULT_MODEL,
    DEFAULT_RECORD,
    WEIGHTS_DIR,
)

MAX_BYTES = 25 * 1024 * 1024
# What the release record keeps of an ensemble_calibration.json (the member hashes are the members' own).
ENSEMBLE_CALIBRATION_KEYS = ("temperature", "tta", "fitted_on", "n_images", "ece_before", "ece_after", "nll_before", "nll_after",
                             "mean_confidence_before", "mean_confidence_after", "accuracy", "abstention")
# Written by dermdx calibrate since the second temperature existed; older files lack them (kept as null).
OPTIONAL_ENSEMBLE_CALIBRATION_KEYS = ("temperature_without_metadata", "without_metadata")
LICENCE = ("weights trained on HAM10000 (CC BY-NC 4.0) and, where the config lists them, Derm7pt and PH2 "
           "(research use only): non-commercial research use only")


def _calibrate_command(source: Path, config: str) -> str:
    return f"dermdx calibrate --model {source} --config {config} --out {source.parent / 'calibration'}"


def _checked_source(path: str, config: str) -> tuple[Path, ModelInfo]:
    """The model file and its description, refused before anything shipped is touched if it
    is missing, over 25 MB or not calibrated."""
    source = Path(path)
    if not source.is_file():
        raise SystemExit(f"{source}: no such model file (train it first with dermdx train CONFIG)")
    if source.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{source} is {source.stat().st_size / 1e6:.1f} MB; shipped files must be at most 25 MB")
    info = read_info(source)
    if not info.calibration:
        raise SystemExit(f"{source} is not calibrated; run: {_calibrate_command(source, config)}")
    return source, info


def _describe(source: Path, info: ModelInfo, target: Path, config: str) -> dict:
    """What a record says of one shipped file: hash, size, model, data, selection and calibration."""
    return {
        "file": target.name,
        "sha256": file_sha256(target),
        "size_bytes": target.stat().st_size,
        "model_name": info.model_name,
        "image_size": info.preprocess.image_size,
        "classes": info.classes,
        "training_data_fingerprint": info.data_fingerprint,
        "selection_metrics": info.metrics,
        "calibration": info.calibration,
        "config": config,
        "commands": [f"dermdx train {config}", _calibrate_command(source, config)],
    }


def ship_single(model: str, config: str) -> None:
    source, info = _checked_source(model, config)
    DEFAULT_MODEL.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, DEFAULT_MODEL)
    record = _describe(source, info, DEFAULT_MODEL, config)
    record["released"] = str(date.today())
    record["commands"].append(f"python scripts/ship_default_model.py {source} --config {config}")
    record["licence"] = LICENCE
    DEFAULT_RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print(f"shipped {DEFAULT_MODEL} ({record['size_bytes'] / 1e6:.1f} MB, sha256 {record['sha256']})")


def _validation_summary(path: str) -> dict:
    """The figures of a ``dermdx evaluate`` of the same recipe on held-out rows (metrics.json)."""
    metrics = json.loads(Path(path).read_text())
    overall = metrics["overall"]
    keys = ("n", "balanced_accuracy", "mel_auc", "macro_auc", "accuracy", "ece", "mel_sensitivity_at_80_specificity")
    summary = {"metrics_file": str(path), "title": metrics.get("title"), "overall": {k: overall.get(k) for k in keys}, "ci95": overall.get("ci95")}
    summary["per_centre"] = {
        centre: {k: values.get(k) for k in ("n", "balanced_accuracy", "mel_auc")}
        for centre, values in metrics.get("subgroups", {}).get("centre", {}).items()
    }
    extra = metrics.get("extra", {})
    summary["models"] = {"model": extra.get("model"), "sha256": extra.get("member_sha256") or extra.get("model_sha256")}
    return summary


def ship_ensemble(models: list[str], configs: list[str], validation: str | None, calibration: str | None = None) -> None:
    if not models:
        raise SystemExit("--ensemble needs at least one model file")
    if calibration and len(models) == 1:
        raise SystemExit("--ensemble-calibration is for several models; a single model carries its own calibration")
    if len(configs) != len(models):
        raise SystemExit(f"--ensemble needs one --config per model ({len(models)} models, {len(configs)} configs)")
    checked = [_checked_source(m, c) for m, c in zip(models, configs, strict=True)]
    classes = [info.classes for _, info in checked]
    if any(c != classes[0] for c in classes):
        raise SystemExit(f"ensemble members must have the same classes in the same order: {classes}")
    summary = _validation_summary(validation) if validation else None
    ensemble_calibration = None
    if calibration:
        try:
            ensemble_calibration = read_ensemble_calibration(calibration, [file_sha256(source) for source, _ in checked])
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(str(error)) from error
    # Every check is done: only now are the shipped files replaced.
    for old in WEIGHTS_DIR.glob("default_ensemble_*.safetensors"):
        old.unlink()
    members = []
    for index, ((source, info), config) in enumerate(zip(checked, configs, strict=True)):
        target = WEIGHTS_DIR / f"default_ensemble_{index}.safetensors"
        shutil.copyfile(source, target)
        members.append(_describe(source, info, target, config))
    sources = [source for source, _ in checked]
    record = {
        "kind": "one network: its temperature-scaled probabilities" if len(members) == 1
                else "ensemble: mean of the members' temperature-scaled probabilities"
                + (", then one temperature for the mean" if ensemble_calibration else "")
                + (" (its own one where no age, sex or site is given)"
                   if ensemble_calibration and ensemble_calibration.get("temperature_without_metadata") else ""),
        "released": str(date.today()),
        "classes": classes[0],
        "members": members,
        "validation": summary,
        "ensemble_calibration": None if ensemble_calibration is None else {
            **{k: ensemble_calibration[k] for k in ENSEMBLE_CALIBRATION_KEYS},
            **{k: ensemble_calibration.get(k) for k in OPTIONAL_ENSEMBLE_CALIBRATION_KEYS}, "file": str(calibration),
        },
        "ship_command": " ".join(["python scripts/ship_default_model.py --ensemble", *map(str, sources),
                                  *(f"--config {c}" for c in configs), *([f"--validation {validation}"] if validation else []),
                                  *([f"--ensemble-calibration {calibration}"] if calibration else [])]),
        "licence": LICENCE,
    }
    DEFAULT_ENSEMBLE_RECORD.write_text(json.dumps(record, indent=2) + "\n")
    total = sum(m["size_bytes"] for m in members) / 1e6
    print(f"shipped the default classifier: {len(members)} members, {total:.1f} MB, record {DEFAULT_ENSEMBLE_RECORD}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="model.safetensors written by dermdx train and calibrated by dermdx calibrate")
    parser.add_argument("--config", action="append", help="the config that trained each model, in the same order")
    parser.add_argument("--ensemble", action="store_true", help="ship the models as the default classifier (their mean; one model is allowed)")
    parser.add_argument("--validation", help="metrics.json of a held-out evaluation of the same recipe (recorded with the ensemble)")
    parser.add_argument("--ensemble-calibration", help="ensemble_calibration.json (dermdx calibrate with these --ensemble models): one temperature for their mean")
    args = parser.parse_args()
    if args.ensemble:
        ship_ensemble(args.models, args.config or [], args.validation, args.ensemble_calibration)
    else:
        if len(args.models) != 1:
            raise SystemExit("the single default network is one model file; use --ensemble for several")
        ship_single(args.models[0], (args.config or ["configs/default_model.yaml"])[0])


if __name__ == "__main__":
    main()
