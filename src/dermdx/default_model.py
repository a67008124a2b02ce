"""The models that ship with dermdx: where they are, and a check that they are the files we released.

Two things ship, because two jobs need different things:

* the **default classifier** (``weights/default_ensemble.json``): the most accurate measured
  recipe: one network or the mean of several (``default_classifier_paths()``). ``dermdx predict`` and
  ``dermdx evaluate`` use it when ``--model`` is left out.
* the **default single network** (``weights/default.json``, ``default_model_path()``): one
  network, for what needs one network's gradients or features (``diagnose`` heatmaps, the
  out-of-distribution detector and the clinical heads fitted on its features, ``serve``, ONNX
  export for phones).

Each record holds the SHA-256 of its files and how they were made; a file whose hash differs is
refused (damaged or replaced weights).
"""

from __future__ import annotations

import json
from pathlib import Path

from dermdx.checkpoint import check_sha256

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = WEIGHTS_DIR / "default.safetensors"
DEFAULT_RECORD = WEIGHTS_DIR / "default.json"
DEFAULT_ENSEMBLE_RECORD = WEIGHTS_DIR / "default_ensemble.json"


def default_model_record() -> dict:
    """The release record (SHA-256, config, commands, validation figures) of the shipped model."""
    if not DEFAULT_RECORD.is_file():
        raise FileNotFoundError("no default model ships with this dermdx yet: pass --model PATH (a model.safetensors written by dermdx train)")
    return json.loads(DEFAULT_RECORD.read_text())


def default_model_path() -> Path:
    """The shipped model file, after checking its SHA-256 against the release record.

    Raises:
        FileNotFoundError: no default model ships, or its file is missing.
        ValueError: the file's SHA-256 differs from the recorded one.
    """
    record = default_model_record()
    if not DEFAULT_MODEL.is_file():
        raise FileNotFoundError(f"the default model file {DEFAULT_MODEL} is missing; reinstall dermdx or pass --model PATH")
    check_sha256(DEFAULT_MODEL, record["sha256"], expected_from="the released", fix=", reinstall dermdx")
    return DEFAULT_MODEL


def default_classifier_record() -> dict:
    """The release record of the default classifier: its members (file, SHA-256, config, commands) and validation."""
    if not DEFAULT_ENSEMBLE_RECORD.is_file():
        raise FileNotFoundError(f"no default classifier ships with this dermdx ({DEFAULT_ENSEMBLE_RECORD} is missing): pass --model PATH")
    record = json.loads(DEFAULT_ENSEMBLE_RECORD.read_text())
    if not record.get("members"):
        raise ValueError(f"{DEFAULT_ENSEMBLE_RECORD} lists no member models; reinstall dermdx or pass --model PATH")
    return record


def default_classifier_paths() -> list[Path]:
    """The default classifier's member files, each checked against its recorded SHA-256.

    Raises:
        FileNotFoundError: no default classifier ships, or a member file is missing.
        ValueError: a member's SHA-256 differs from the recorded one, or the record lists none.
    """
    paths = []
    for member in default_classifier_record()["members"]:
        path = WEIGHTS_DIR / member["file"]
        if not path.is_file():
            raise FileNotFoundError(f"the default classifier's member {path} is missing; reinstall dermdx or pass --model PATH")
        check_sha256(path, member["sha256"], expected_from="the released", fix=", reinstall dermdx")
        paths.append(path)
    return paths


def default_classifier_temperatures() -> tuple[float, float | None]:
    """The temperatures for the default classifier's mean: with metadata given (1.0 for records from
    before it existed) and without any (None where the record has none: the first one serves)."""
    calibration = default_classifier_record().get("ensemble_calibration") or {}
    blind = calibration.get("temperature_without_metadata")
    return float(calibration.get("temperature", 1.0)), None if blind is None else float(blind)
