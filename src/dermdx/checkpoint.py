"""Checkpoints that describe themselves: safetensors weights plus everything inference needs.

The model file is one ``.safetensors`` whose metadata holds a JSON document: class names, model
name and arguments, preprocessing, training-data fingerprint, metrics and the run config.
Inference, export, explanation and the service read nothing else. Training state for resuming
(optimizer, scheduler, epoch) lives in a separate ``.pt`` loaded with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, safe_open
from torch import nn

from dermdx import __version__
from dermdx.config import PreprocessConfig, from_dict, to_dict
from dermdx.models import create_model

FORMAT = "dermdx-model/1"


@dataclass
class ModelInfo:
    """What travels with the weights."""

    model_name: str
    classes: list[str]
    preprocess: PreprocessConfig
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    # MetaSchema.to_dict() for models that fuse patient metadata; None for image-only models.
    meta_schema: dict[str, Any] | None = None
    dermdx_version: str = __version__
    # Post-hoc calibration fitted on validation rows (``dermdx.calibration``): ``temperature`` and
    # how it was fitted; the abstention threshold rides along. None for an uncalibrated model.
    calibration: dict[str, Any] | None = None

    def to_json(self) -> str:
        payload = {
            "format": FORMAT,
            "model_name": self.model_name,
            "classes": self.classes,
            "preprocess": to_dict(self.preprocess),
            "model_kwargs": self.model_kwargs,
            "data_fingerprint": self.data_fingerprint,
            "metrics": self.metrics,
            "config": self.config,
            "meta_schema": self.meta_schema,
            "dermdx_version": self.dermdx_version,
            "calibration": self.calibration,
        }
        return json.dumps(payload)

    @classmethod
    def from_json(cls, text: str, *, where: str) -> ModelInfo:
        payload = json.loads(text)
        if payload.get("format") != FORMAT:
            raise ValueError(f"{where}: unsupported checkpoint format {payload.get('format')!r}; expected {FORMAT}")
        return cls(
            model_name=payload["model_name"],
            classes=list(payload["classes"]),
            preprocess=from_dict(PreprocessConfig, payload["preprocess"], where=f"{where}:preprocess"),
            model_kwargs=payload.get("model_kwargs", {}),
            data_fingerprint=payload.get("data_fingerprint", ""),
            metrics=payload.get("metrics", {}),
            config=payload.get("config", {}),
            meta_schema=payload.get("meta_schema"),
            dermdx_version=payload.get("dermdx_version", ""),
            calibration=payload.get("calibration"),
        )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: str | Path, expected: str, *, expected_from: str = "the expected", fix: str = "") -> str:
    """The file's SHA-256, after checking it equals ``expected``; one check and one message for every weights file.

    Raises:
        ValueError: the hashes differ (the message names the file, both hashes and ``fix``).
    """
    actual = file_sha256(path)
    if actual != expected:
        raise ValueError(f"{path}: SHA-256 {actual} differs from {expected_from} {expected}; the file is damaged or replaced{fix}")
    return actual


def save_model(path: str | Path, model: nn.Module, info: ModelInfo) -> str:
    """Write weights + info to ``path`` (.safetensors) atomically; returns the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"dermdx": info.to_json()})
    tmp.replace(path)
    return file_sha256(path)


def rewrite_info(path: str | Path, info: ModelInfo) -> str:
    """Replace the description stored in model file ``path`` by ``info``; the weights stay byte-for-byte.

    For additions that do not change what the weights compute (calibration, say). The file is
    rewritten atomically; returns its new SHA-256.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a dermdx model file, or ``info`` describes another network (model name,
            arguments or classes differ), which the weights would not fit.
    """
    path = _existing(path)
    current = read_info(path)
    for name in ("model_name", "model_kwargs", "classes"):
        if getattr(current, name) != getattr(info, name):
            raise ValueError(f"{path}: the new description changes {name} ({getattr(current, name)!r} -> {getattr(info, name)!r}); save a new model instead")
    tensors = load_file(str(path))
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={"dermdx": info.to_json()})
    tmp.replace(path)
    return file_sha256(path)


def read_info(path: str | Path) -> ModelInfo:
    """Read only the description of a model file."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a safetensors model file ({error})") from error
    if "dermdx" not in metadata:
        raise ValueError(f"{path}: a safetensors file without dermdx metadata; was it written by dermdx train?")
    return ModelInfo.from_json(metadata["dermdx"], where=str(path))


def load_model(path: str | Path, *, expected_sha256: str | None = None) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the model described in ``path`` and load its weights (eval mode, CPU).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a dermdx model file, or its SHA-256 differs from ``expected_sha256``.
    """
    path = _existing(path)
    if expected_sha256 is not None:
        check_sha256(path, expected_sha256)
    info = read_info(path)
    model = create_model(info.model_name, num_classes=len(info.classes), pretrained=False, **info.model_kwargs)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), info


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return path


def save_training_state(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_training_state(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)
