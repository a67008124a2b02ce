"""Run an exported ``.onnx`` dermdx model with ONNX Runtime behind the torch model's interface.

``OnnxModel`` takes a normalised image batch as a torch tensor and returns logits as a torch
tensor, so :class:`dermdx.inference.Predictor` uses it unchanged (``Predictor.from_onnx``). The
model's description (classes, preprocessing, source SHA-256) is read from the file's own
``metadata_props``, written by :func:`dermdx.export.export_onnx`; nothing else travels with it.
Only ``onnxruntime`` is needed here, not ``onnx``: a service can run models without the exporter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dermdx.checkpoint import ModelInfo

METADATA_KEY = "dermdx"
INPUT_NAME = "image"
META_INPUT_NAME = "meta"
OUTPUT_NAME = "logits"


def require_onnxruntime() -> Any:
    """Import onnxruntime, or say which extra provides it."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError("ONNX models need onnxruntime, from the [onnx] extra: pip install 'dermdx[onnx]'") from error
    return onnxruntime


class OnnxModel:
    """An exported dermdx model on ONNX Runtime (CPU), callable like the torch model.

    Args:
        path: a ``.onnx`` file written by ``dermdx export``.

    Attributes:
        info: the :class:`ModelInfo` embedded at export.
        source_sha256: SHA-256 of the ``.safetensors`` file it was exported from.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a loadable ONNX model, or one without dermdx metadata.
        ImportError: onnxruntime is not installed.

    Example:
        >>> model = OnnxModel("model.onnx")
        >>> logits = model(torch.zeros(2, 3, model.image_size, model.image_size))
    """

    def __init__(self, path: str | Path, *, _model_bytes: bytes | None = None) -> None:
        ort = require_onnxruntime()
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        self.path = Path(path)
        if _model_bytes is None and not self.path.is_file():
            raise FileNotFoundError(f"ONNX model file not found: {self.path}")
        options = ort.SessionOptions()
        # Warnings such as unused initializers are about the exporter, not something a user can act on.
        options.log_severity_level = 3
        load_errors = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidProtobuf, ort_errors.InvalidGraph,
                       ort_errors.NoModel, ort_errors.NotImplemented, ort_errors.RuntimeException, OSError)
        try:
            source = str(self.path) if _model_bytes is None else _model_bytes
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except load_errors as error:
            raise ValueError(f"{self.path}: not a loadable ONNX model, possibly corrupt or truncated ({error}); export it again with dermdx export") from error
        metadata = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in metadata:
            raise ValueError(f"{self.path}: an ONNX model without dermdx metadata (no '{METADATA_KEY}' in metadata_props); it was not exported by dermdx export, so its classes and preprocessing are unknown")
        try:
            self.info = ModelInfo.from_json(metadata[METADATA_KEY], where=str(self.path))
            self.source_sha256 = str(json.loads(metadata[METADATA_KEY]).get("source_sha256", ""))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{self.path}: unreadable dermdx metadata ({error!r}); export it again with dermdx export") from error
        inputs = [i.name for i in self.session.get_inputs()]
        expected = [INPUT_NAME] if self.info.meta_schema is None else [INPUT_NAME, META_INPUT_NAME]
        if inputs != expected:
            raise ValueError(f"{self.path}: inputs {inputs}, expected {expected} for this model; export it again with dermdx export")
        self.absent_meta: np.ndarray | None = None
        if self.info.meta_schema is not None:
            from dermdx.data.meta import MetaSchema, missing_meta

            self.absent_meta = missing_meta(MetaSchema.from_dict(self.info.meta_schema))[0]

    @classmethod
    def from_bytes(cls, model_bytes: bytes, name: str) -> OnnxModel:
        """A model held in memory (``dermdx.export.onnxruntime_model`` converts without writing a file).

        ``name`` stands in for the file name in messages.
        """
        return cls(name, _model_bytes=model_bytes)

    @property
    def accepts_meta(self) -> bool:
        """True for an exported fusion model (second input ``meta``)."""
        return self.absent_meta is not None

    @property
    def image_size(self) -> int:
        return self.info.preprocess.image_size

    def eval(self) -> OnnxModel:
        """No-op; there so :class:`Predictor` can treat this like an ``nn.Module``."""
        return self

    def __call__(self, images: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (N, classes) for a normalised float batch (N, 3, size, size).

        Args:
            meta: (N, schema dim) metadata encodings for a fusion model; None means "nothing
                known" (the schema's all-missing encoding), like the PyTorch model.

        Raises:
            ValueError: the batch is not (N, 3, image_size, image_size), or metadata of the wrong
                shape, or metadata for a model that takes none.
        """
        expected = (3, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"{self.path.name} takes image batches of shape (N, {', '.join(map(str, expected))}), got {tuple(images.shape)}; "
                f"preprocess with build_transform(info.preprocess) (Predictor does) to resize to {self.image_size} px"
            )
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        feeds = {INPUT_NAME: array}
        if self.absent_meta is None:
            if meta is not None:
                raise ValueError(f"{self.path.name}: metadata was given, but this model does not use metadata (it was trained on images only)")
        else:
            if meta is None:
                values = np.broadcast_to(self.absent_meta, (len(array), len(self.absent_meta)))
            else:
                values = meta.detach().cpu().numpy() if isinstance(meta, torch.Tensor) else np.asarray(meta)
            if values.shape != (len(array), len(self.absent_meta)):
                raise ValueError(f"{self.path.name}: meta must have shape ({len(array)}, {len(self.absent_meta)}), got {tuple(values.shape)}")
            feeds[META_INPUT_NAME] = np.ascontiguousarray(values, dtype=np.float32)
        (logits,) = self.session.run([OUTPUT_NAME], feeds)
        return torch.from_numpy(logits)
