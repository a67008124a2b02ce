"""Prediction from a saved model: ``Predictor.from_checkpoint(path).predict_manifest(manifest)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dermdx.checkpoint import ModelInfo, check_sha256, file_sha256, load_model
from dermdx.config import ISIC2018_CLASSES
from dermdx.data.dataset import ImageDataset
from dermdx.data.manifest import Manifest
from dermdx.data.meta import MetaSchema, encode_meta
from dermdx.data.transforms import build_transform
from dermdx.models import pooled_features, run_model

OUTPUT_FORMATS = ("dermdx", "isic2018")
# Test-time augmentation: (quarter turns, horizontal flip) per view. Dermoscopic images have no
# canonical orientation, so the dihedral group's 8 views are all plausible inputs.
TTA_VIEWS: dict[str, list[tuple[int, bool]]] = {
    "none": [(0, False)],
    "flip": [(0, False), (0, True)],
    "d4": [(k, flip) for k in range(4) for flip in (False, True)],
}
# How a ``.safetensors`` model is run: PyTorch, or converted in memory to ONNX Runtime (faster on CPU).
ENGINES = ("torch", "onnxruntime")
DISCLAIMER = "dermdx is decision support for clinicians, not a diagnosis."


@dataclass
class Predictions:
    """Probabilities for the images that were read, and the errors of those that were not."""

    image_ids: list[str]
    paths: list[str]
    probs: np.ndarray
    classes: list[str]
    errors: dict[str, str]


class Predictor:
    """A model, its preprocessing and its class names, loaded once.

    Example:
        >>> predictor = Predictor.from_checkpoint("runs/ham/model.safetensors")
        >>> result = predictor.predict_manifest(read_images(["lesion.jpg"]))
    """

    def __init__(self, model: nn.Module, info: ModelInfo, *, sha256: str = "", batch_size: int = 32, num_workers: int = 0, tta: str = "none") -> None:
        if tta not in TTA_VIEWS:
            raise ValueError(f"unknown test-time augmentation {tta!r}; choose from {', '.join(TTA_VIEWS)}")
        self.tta = tta
        # NHWC is faster for torch's CPU convolutions; the ONNX backend takes any layout.
        self.model = model.eval().to(memory_format=torch.channels_last) if isinstance(model, nn.Module) else model.eval()
        self.info = info
        self.sha256 = sha256
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.transform = build_transform(info.preprocess, train=False)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, expected_sha256: str | None = None, engine: str = "torch", **kwargs) -> Predictor:
        """A ``.safetensors`` model, run by PyTorch (``engine="torch"``) or ONNX Runtime (``"onnxruntime"``).

        ONNX Runtime is several times faster on CPU; the model is converted in memory and checked
        against PyTorch first (``dermdx.export.onnxruntime_model``). It gives probabilities only:
        features, gradients and heatmaps need ``"torch"``.
        """
        if engine not in ENGINES:
            raise ValueError(f"unknown inference engine {engine!r}; choose from {', '.join(ENGINES)}")
        model, info = load_model(path, expected_sha256=expected_sha256)
        sha256 = file_sha256(path)
        if engine == "onnxruntime":
            from dermdx.export import onnxruntime_model

            model = onnxruntime_model(model, info, source_sha256=sha256, name=Path(path).name)
        return cls(model, info, sha256=sha256, **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, *, expected_sha256: str | None = None, **kwargs) -> Predictor:
        """A Predictor on ONNX Runtime for a ``.onnx`` written by ``dermdx export`` (needs the ``[onnx]`` extra).

        Same predictions as ``from_checkpoint`` on the source model, within the export's parity check.
        """
        from dermdx.onnx_backend import OnnxModel

        model = OnnxModel(path)
        sha256 = file_sha256(path) if expected_sha256 is None else check_sha256(path, expected_sha256)
        return cls(model, model.info, sha256=sha256, **kwargs)  # type: ignore[arg-type]  # OnnxModel is called like nn.Module

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    @property
    def class_bias(self) -> torch.Tensor:
        """Per-class log-probability offsets fitted for balanced accuracy (``dermdx calibrate --class-bias``); zeros if none."""
        bias = (self.info.calibration or {}).get("class_bias")
        return torch.zeros(len(self.classes)) if bias is None else torch.tensor(bias, dtype=torch.float32)

    @property
    def temperature(self) -> float:
        """The calibration temperature stored with the model (``dermdx calibrate``); 1.0 if uncalibrated."""
        return float((self.info.calibration or {}).get("temperature", 1.0))

    @torch.no_grad()
    def predict_manifest(self, manifest: Manifest, *, continue_on_error: bool = False, progress: bool = True) -> Predictions:
        """Probabilities for every image of ``manifest``, in manifest order.

        Args:
            continue_on_error: if False (default) the first unreadable image raises, naming it; if
                True unreadable images are left out of ``probs`` and listed in ``errors``.
        """
        loader = self._loader(manifest, continue_on_error=continue_on_error)
        probs, ids, paths, errors = [], [], [], {}
        all_paths = [str(p) for p in manifest.paths()]
        for batch in tqdm(loader, desc="predict", disable=not progress, dynamic_ncols=True):
            ok = np.array([not e for e in batch["error"]])
            for index, error in zip(batch["index"].tolist(), batch["error"], strict=True):
                if error:
                    errors[all_paths[index]] = error
            if ok.any():
                keep = torch.from_numpy(ok)
                meta_batch = batch["meta"][keep] if "meta" in batch else None
                probs.append(self._probs(batch["image"][keep], meta_batch).numpy())
                kept = batch["index"][torch.from_numpy(ok)].tolist()
                ids += [str(manifest.frame.at[i, "image_id"]) for i in kept]
                paths += [all_paths[i] for i in kept]
        stacked = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)), dtype=np.float32)
        return Predictions(ids, paths, stacked.astype(np.float64), self.classes, errors)


    @torch.no_grad()
    def predict_logits(self, manifest: Manifest) -> np.ndarray:
        """Raw logits ``[N, C]`` for every row: one view, no temperature or offsets (for fitting them).

        Every image must be readable: the first unreadable one raises, naming it.
        """
        out = []
        for batch in self._loader(manifest, continue_on_error=False):
            images = batch["image"].contiguous(memory_format=torch.channels_last)
            out.append(run_model(self.model, images, batch.get("meta")).float().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, len(self.classes)))

    @torch.no_grad()
    def predict_features(self, manifest: Manifest, *, progress: bool = False) -> np.ndarray:
        """Pooled backbone features ``[N, D]`` for every row (one view), the input of the add-on heads.

        Needs a PyTorch model. Every image must be readable: the first unreadable one raises, naming it.
        """
        if not isinstance(self.model, nn.Module):
            raise ValueError("features need the PyTorch model; an ONNX export only gives probabilities")
        out = []
        for batch in tqdm(self._loader(manifest, continue_on_error=False), desc="features", disable=not progress, dynamic_ncols=True):
            images = batch["image"].contiguous(memory_format=torch.channels_last)
            out.append(pooled_features(self.model, images).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def _loader(self, manifest: Manifest, *, continue_on_error: bool) -> DataLoader:
        """Batches of the model's preprocessing of ``manifest``, with encoded metadata for fusion models."""
        meta = None
        if self.info.meta_schema is not None:
            # Rows without metadata encode as "nothing known", which the model was trained to accept.
            meta = encode_meta(manifest.frame, MetaSchema.from_dict(self.info.meta_schema))
        dataset = ImageDataset(manifest, self.transform, None, record_errors=continue_on_error, image_size=self.info.preprocess.image_size, meta=meta)
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers)

    def _probs(self, images: torch.Tensor, meta: torch.Tensor | None) -> torch.Tensor:
        """Softmax probabilities, averaged over the test-time augmentation views."""
        views = TTA_VIEWS[self.tta]
        total = torch.zeros(())
        for rotations, flip in views:
            view = torch.rot90(images, rotations, dims=(2, 3))
            if flip:
                view = torch.flip(view, dims=(3,))
            logits = run_model(self.model, view.contiguous(memory_format=torch.channels_last), meta)
            total = total + torch.softmax(logits.float() / self.temperature + self.class_bias, dim=1)
        return total / len(views)


def predictions_frame(result: Predictions, *, output_format: str = "dermdx") -> pd.DataFrame:
    """A table of predictions. ``isic2018``: exactly ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``.

    Raises:
        ValueError: unknown format, or ``isic2018`` for a model without those seven classes.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {output_format!r}; choose from {', '.join(OUTPUT_FORMATS)}")
    probs = result.probs / np.clip(result.probs.sum(axis=1, keepdims=True), 1e-12, None)
    if output_format == "isic2018":
        if sorted(result.classes) != sorted(ISIC2018_CLASSES):
            raise ValueError(f"--format isic2018 needs a model with classes {list(ISIC2018_CLASSES)}; this model has {result.classes}")
        names = pd.Series([Path(p).stem for p in result.paths], dtype=str)
        if names.duplicated().any():
            raise ValueError(f"--format isic2018 names rows by file name, but {names[names.duplicated()].iloc[0]!r} occurs twice; predict each folder separately")
        order = [result.classes.index(c) for c in ISIC2018_CLASSES]
        frame = pd.DataFrame(probs[:, order], columns=[c.upper() for c in ISIC2018_CLASSES])
        frame.insert(0, "image", names)
        return frame
    frame = pd.DataFrame(probs, columns=result.classes)
    frame.insert(0, "predicted", [result.classes[i] for i in probs.argmax(axis=1)] if len(probs) else [])
    frame.insert(0, "path", result.paths)
    frame.insert(0, "image", result.image_ids)
    return frame
