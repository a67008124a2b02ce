"""The model that ships with dermdx: where it is, and a check that it is the file we released.

``weights/default.json`` records the SHA-256 of ``weights/default.safetensors`` and how it was
made; ``default_model_path()`` refuses a file whose hash differs (damaged or replaced weights).
"""

from __future__ import annotations

import json
from pathlib import Path

from dermdx.checkpoint import check_sha256

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = WEIGHTS_DIR / "default.safetensors"
DEFAULT_RECORD = WEIGHTS_DIR / "default.json"


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
