"""Lesion masks from a dermoscopic image: ``Segmenter.default().segment(image)``.

A segmentation model file is one ``.safetensors`` whose metadata holds a JSON description
(:class:`SegmentationInfo`: network, input size and scaling, threshold, training-data fingerprint,
cross-validated metrics), so inference needs nothing else. The shipped file
``weights/segmentation.safetensors`` is checked against the SHA-256 in ``weights/segmentation.json``
before it is used, as the default classifier is (:mod:`dermdx.default_model`).

The mask is post-processed for measurement: the largest connected region is kept and its holes
are filled, since the ABCD measurements (:mod:`dermdx.explain.abcd`) describe one lesion.

Example:
    >>> segmenter = Segmenter.default()
    >>> mask = segmenter.segment(load_image("lesion.jpg"))  # bool [H, W], the image's size
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from dermdx import __version__
from dermdx.checkpoint import check_sha256, file_sha256
from dermdx.models.segmentation import SegmentationNetConfig, create_segmentation_model

FORMAT = "dermdx-segmentation/1"
METADATA_KEY = "dermdx-segmentation"
WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_SEGMENTER = WEIGHTS_DIR / "segmentation.safetensors"
DEFAULT_SEGMENTER_RECORD = WEIGHTS_DIR / "segmentation.json"


@dataclass
class SegmentationInfo:
    """What travels with the segmentation weights."""

    net: SegmentationNetConfig = field(default_factory=SegmentationNetConfig)
    # Square input side in pixels; images are resized to it (aspect ratio not kept, as the classifier does).
    image_size: int = 160
    # The offline EfficientNet-Lite weights expect inputs scaled to [-1, 1].
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # Probability above which a pixel is lesion.
    threshold: float = 0.5
    data_fingerprint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    dermdx_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "encoder": self.net.encoder,
                "decoder_channels": list(self.net.decoder_channels),
                "image_size": self.image_size,
                "mean": list(self.mean),
                "std": list(self.std),
                "threshold": self.threshold,
                "data_fingerprint": self.data_fingerprint,
                "metrics": self.metrics,
                "config": self.config,
                "dermdx_version": self.dermdx_version,
            }
        )

    @classmethod
    def from_json(cls, text: str, *, where: str) -> SegmentationInfo:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: segmentation description is not valid JSON ({error})") from error
        if payload.get("format") != FORMAT:
            raise ValueError(f"{where}: unsupported segmentation format {payload.get('format')!r}; expected {FORMAT}")
        return cls(
            net=SegmentationNetConfig(encoder=payload["encoder"], decoder_channels=tuple(payload["decoder_channels"])),
            image_size=int(payload["image_size"]),
            mean=tuple(payload["mean"]),
            std=tuple(payload["std"]),
            threshold=float(payload["threshold"]),
            data_fingerprint=payload.get("data_fingerprint", ""),
            metrics=payload.get("metrics", {}),
            config=payload.get("config", {}),
            dermdx_version=payload.get("dermdx_version", ""),
        )


def save_segmentation_model(path: str | Path, model: nn.Module, info: SegmentationInfo) -> str:
    """Write weights + description to ``path`` atomically; returns the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={METADATA_KEY: info.to_json()})
    tmp.replace(path)
    return file_sha256(path)


def read_segmentation_info(path: str | Path) -> SegmentationInfo:
    """The description stored in a segmentation model file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a safetensors file (corrupt or truncated), or one without a segmentation description.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmentation model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error}); the file is damaged, re-create or reinstall it") from error
    if METADATA_KEY not in metadata:
        raise ValueError(f"{path}: a safetensors file without a {METADATA_KEY} description; was it written by save_segmentation_model?")
    return SegmentationInfo.from_json(metadata[METADATA_KEY], where=str(path))


def load_segmentation_model(path: str | Path, *, expected_sha256: str | None = None) -> tuple[nn.Module, SegmentationInfo]:
    """Rebuild the network described in ``path`` and load its weights (eval mode, CPU).

    Raises:
        FileNotFoundError: no such file.
        ValueError: damaged file, SHA-256 differing from ``expected_sha256``, or weights that do not fit the network.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmentation model file not found: {path}")
    if expected_sha256 is not None:
        check_sha256(path, expected_sha256, fix=", reinstall dermdx")
    info = read_segmentation_info(path)
    model = create_segmentation_model(info.net, pretrained=False)
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except (RuntimeError, SafetensorError) as error:
        raise ValueError(f"{path}: weights do not fit the described network ({info.net}): {error}") from error
    return model.eval(), info


def default_segmenter_record() -> dict[str, Any]:
    """The release record (SHA-256, how it was trained, cross-validated figures) of the shipped segmenter."""
    if not DEFAULT_SEGMENTER_RECORD.is_file():
        raise FileNotFoundError(f"no segmentation model ships with this dermdx ({DEFAULT_SEGMENTER_RECORD} is missing); pass a model file to Segmenter.from_file")
    return json.loads(DEFAULT_SEGMENTER_RECORD.read_text())


def default_segmenter_path() -> Path:
    """The shipped segmentation model file, after checking its SHA-256 against the release record.

    Raises:
        FileNotFoundError: no segmenter ships, or its file is missing.
        ValueError: the file's SHA-256 differs from the recorded one.
    """
    record = default_segmenter_record()
    if not DEFAULT_SEGMENTER.is_file():
        raise FileNotFoundError(f"the shipped segmentation model {DEFAULT_SEGMENTER} is missing; reinstall dermdx or use Segmenter.from_file")
    check_sha256(DEFAULT_SEGMENTER, record["sha256"], expected_from="the released", fix=", reinstall dermdx")
    return DEFAULT_SEGMENTER


def check_rgb_image(image: Any, *, name: str = "image") -> np.ndarray:
    """``image`` as an RGB uint8 ``[H, W, 3]`` array, or a ValueError/TypeError saying what it is instead."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (RGB uint8 [H, W, 3], e.g. dermdx.data.images.load_image), got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be an RGB uint8 array [H, W, 3], got {image.dtype} {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"{name} is {image.shape[0]}x{image.shape[1]} pixels; too small to segment")
    return image


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of a boolean mask, its holes filled; an empty mask stays empty."""
    binary = np.asarray(mask, dtype=bool)
    if not binary.any():
        return binary.copy()
    _, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    # Drawing the outer contour filled closes every hole inside the region.
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(region, contours, -1, 1, thickness=cv2.FILLED)
    return region.astype(bool)


def to_input(image: np.ndarray, info: SegmentationInfo) -> torch.Tensor:
    """Resize to the model's square input and scale as it was trained: ``[1, 3, S, S]`` float."""
    size = info.image_size
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    scaled = (resized.astype(np.float32) / 255.0 - np.asarray(info.mean, np.float32)) / np.asarray(info.std, np.float32)
    return torch.from_numpy(scaled.transpose(2, 0, 1).copy())[None]


class Segmenter:
    """A segmentation network and its preprocessing, loaded once.

    Example:
        >>> segmenter = Segmenter.default()
        >>> mask = segmenter.segment(image)  # image: RGB uint8 [H, W, 3]; mask: bool [H, W]
    """

    def __init__(self, model: nn.Module, info: SegmentationInfo, *, sha256: str = "") -> None:
        self.model = model.eval()
        self.info = info
        self.sha256 = sha256

    @classmethod
    def from_file(cls, path: str | Path, *, expected_sha256: str | None = None) -> Segmenter:
        """Load a model file written by :func:`save_segmentation_model` (see its errors)."""
        model, info = load_segmentation_model(path, expected_sha256=expected_sha256)
        return cls(model, info, sha256=file_sha256(path))

    @classmethod
    def default(cls) -> Segmenter:
        """The segmenter that ships with dermdx (SHA-256 checked; trained on PH2's 80 images)."""
        path = default_segmenter_path()
        return cls.from_file(path, expected_sha256=default_segmenter_record()["sha256"])

    def probabilities(self, image_rgb_uint8: np.ndarray) -> np.ndarray:
        """Lesion probability per pixel, float32 ``[H, W]`` at the image's size.

        Raises:
            TypeError / ValueError: ``image_rgb_uint8`` is not an RGB uint8 ``[H, W, 3]`` array.
        """
        image = check_rgb_image(image_rgb_uint8, name="image_rgb_uint8")
        with torch.inference_mode():
            logits = self.model(to_input(image, self.info))[0, 0]
        probs = torch.sigmoid(logits).numpy().astype(np.float32)
        return cv2.resize(probs, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)

    def segment(self, image_rgb_uint8: np.ndarray, *, postprocess: bool = True) -> np.ndarray:
        """The lesion mask: bool ``[H, W]`` at the image's size.

        Args:
            image_rgb_uint8: RGB uint8 ``[H, W, 3]`` (``dermdx.data.images.load_image``).
            postprocess: keep the largest connected region and fill its holes.

        Returns:
            The mask; all False when no pixel reaches the threshold (no lesion found; callers
            measuring the lesion should report that rather than measure nothing).

        Raises:
            TypeError / ValueError: ``image_rgb_uint8`` is not an RGB uint8 ``[H, W, 3]`` array.
        """
        mask = self.probabilities(image_rgb_uint8) >= self.info.threshold
        return largest_component(mask) if postprocess else mask
