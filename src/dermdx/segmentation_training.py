"""Training and scoring the lesion segmenter on images with expert masks (PH2).

Functions on objects: :func:`load_masked_images` reads a manifest with a ``mask_path`` column,
:func:`train_segmenter` fits a U-Net (:mod:`dermdx.models.segmentation`) from a
:class:`SegmentationTrainConfig`, :func:`score_masks` gives Dice and IoU per image at the image's
own resolution. Cross-validation and shipping are scripts (``benchmarks/ph2_segmentation.py``,
``scripts/ship_segmentation_model.py``) that call these.

The whole data set is held in memory, already resized to the training size: PH2 has 80 images,
and resizing 766x576 photographs once instead of every epoch is most of the saving on CPU.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dermdx.data.images import ImageReadError, load_image
from dermdx.data.manifest import Manifest
from dermdx.devices import resolve_device
from dermdx.models.segmentation import DEFAULT_DECODER_CHANNELS, SegmentationNetConfig, create_segmentation_model
from dermdx.segmentation import SegmentationInfo, largest_component

MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


@dataclass
class SegmentationTrainConfig:
    """How the segmenter is trained; saved with the weights.

    Defaults were chosen to fit PH2 cross-validation plus a final fit in about half an hour on a
    2-core CPU; they are not tuned.
    """

    encoder: str = "tf_efficientnet_lite0"
    decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS
    pretrained: bool = True
    image_size: int = 160
    epochs: int = 25
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    threshold: float = 0.5
    seed: int = 0
    # torch CPU threads while training; None leaves torch's setting alone.
    threads: int | None = None
    # auto (a CUDA GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps (dermdx.devices).
    device: str = "auto"

    def net(self) -> SegmentationNetConfig:
        return SegmentationNetConfig(encoder=self.encoder, decoder_channels=tuple(self.decoder_channels))


@dataclass
class MaskedImages:
    """Images and their expert masks at full size, plus the ids that name them in errors and tables."""

    image_ids: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    fingerprint: str = ""

    def __len__(self) -> int:
        return len(self.image_ids)

    def subset(self, index: np.ndarray | list[int]) -> MaskedImages:
        index = [int(i) for i in index]
        return MaskedImages(
            [self.image_ids[i] for i in index], [self.images[i] for i in index], [self.masks[i] for i in index], self.fingerprint
        )


def load_mask(path: str | Path) -> np.ndarray:
    """A lesion mask file (0 background, nonzero lesion) as bool ``[H, W]``.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask not found: {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 127
    except OSError as error:
        raise ImageReadError(f"{path}: not a readable mask image ({error}); re-export it") from error


def load_masked_images(manifest: Manifest, *, mask_column: str = "mask_path") -> MaskedImages:
    """Read every image and its mask (paths relative to the manifest root), failing on the first bad one.

    Raises:
        ValueError: the manifest has no ``mask_column``, a mask is empty, or its size differs from the image's.
        FileNotFoundError / ImageReadError: a missing or unreadable image or mask (the file is named).
    """
    if mask_column not in manifest.frame.columns:
        raise ValueError(f"{manifest.source or manifest.root}: no {mask_column!r} column; segmentation needs a mask per image (PH2 labels.csv has one)")
    images, masks = [], []
    for image_path, mask_rel in zip(manifest.paths(), manifest.frame[mask_column], strict=True):
        mask_path = manifest.root / str(mask_rel)
        image, mask = load_image(image_path), load_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but {image_path} is {image.shape[1]}x{image.shape[0]}; masks must match their image")
        if not mask.any():
            raise ValueError(f"{mask_path}: empty mask (no lesion pixel); fix the mask or drop the image from the manifest")
        images.append(image)
        masks.append(mask)
    return MaskedImages(manifest.frame["image_id"].astype(str).tolist(), images, masks, manifest.fingerprint())


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU (Jaccard) of two boolean masks of one shape; both empty counts as perfect agreement.

    Raises:
        ValueError: the shapes differ.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, truth {truth.shape}")
    inter = float(np.logical_and(pred, truth).sum())
    total = float(pred.sum() + truth.sum())
    union = total - inter
    if total == 0:
        return 1.0, 1.0
    return 2 * inter / total, inter / union


def _augmentation(seed: int) -> Callable[..., dict]:
    import albumentations as A

    pipeline = A.Compose(
        [
            A.HorizontalFlip(),
            A.VerticalFlip(),
            A.RandomRotate90(),
            A.Affine(rotate=(-30, 30), scale=(0.85, 1.15), translate_percent=(-0.05, 0.05), border_mode=cv2.BORDER_REFLECT_101, p=0.7),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=0.8),
        ]
    )
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return pipeline


def _resize_pairs(data: MaskedImages, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    images = [cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in data.images]
    # Area-averaging then 0.5 keeps thin parts of the mask that nearest-neighbour might drop.
    masks = [cv2.resize(m.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5 for m in data.masks]
    return images, masks


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    mean, std = (np.asarray(v, np.float32) for v in MEAN_STD)
    batch = (np.stack(images).astype(np.float32) / 255.0 - mean) / std
    return torch.from_numpy(batch.transpose(0, 3, 1, 2).copy()).contiguous(memory_format=torch.channels_last)


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice: BCE gives per-pixel gradients, Dice counters the background majority."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    probs = torch.sigmoid(logits)
    inter = (probs * target).sum(dim=(1, 2, 3))
    dice = (2 * inter + 1.0) / (probs.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1.0)
    return bce + (1.0 - dice).mean()


def train_segmenter(
    config: SegmentationTrainConfig, data: MaskedImages, *, progress: bool = False
) -> tuple[nn.Module, SegmentationInfo]:
    """Fit a U-Net on ``data`` for ``config.epochs`` epochs (no early stopping: no validation set is used).

    Args:
        config: network, input size and optimisation settings.
        data: training images with their masks (:func:`load_masked_images`).
        progress: show a tqdm bar over epochs.

    Returns:
        The trained network (eval mode, CPU) and the description to save with it (metrics empty).

    Raises:
        ValueError: fewer images than one batch, a non-positive epoch count, or a device this machine lacks.
    """
    if len(data) < 2:
        raise ValueError(f"training needs at least 2 images with masks, got {len(data)}")
    if config.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {config.epochs}")
    device = resolve_device(config.device, setting="segmentation device")
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = create_segmentation_model(config.net(), pretrained=config.pretrained).to(device=device, memory_format=torch.channels_last)
    images, masks = _resize_pairs(data, config.image_size)
    augment = _augmentation(config.seed)
    batch = min(config.batch_size, len(data))
    steps_per_epoch = math.ceil(len(data) / batch)
    total = steps_per_epoch * config.epochs
    warmup = max(1, int(config.warmup_epochs * steps_per_epoch))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    epochs = range(config.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="epochs", leave=False)
    model.train()
    for _ in epochs:
        order = torch.randperm(len(data), generator=generator).tolist()
        running = 0.0
        for start in range(0, len(order), batch):
            chosen = order[start : start + batch]
            if len(chosen) < 2:  # BatchNorm cannot train on a batch of one
                continue
            pairs = [augment(image=images[i], mask=masks[i].astype(np.uint8)) for i in chosen]
            x = _to_tensor([p["image"] for p in pairs]).to(device)
            y = torch.from_numpy(np.stack([p["mask"] for p in pairs]).astype(np.float32))[:, None].to(device)
            loss = _loss(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += float(loss.item()) * len(chosen)
        if progress:
            epochs.set_postfix(loss=f"{running / len(data):.3f}")
    info = SegmentationInfo(
        net=config.net(),
        image_size=config.image_size,
        mean=MEAN_STD[0],
        std=MEAN_STD[1],
        threshold=config.threshold,
        data_fingerprint=data.fingerprint,
    )
    return model.eval().to(device="cpu", memory_format=torch.contiguous_format), info


def score_masks(predicted: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Dice and IoU per image: ``{"dice": [...], "iou": [...]}``.

    Raises:
        ValueError: the lists differ in length, or a pair differs in shape.
    """
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predicted masks for {len(truth)} expert masks")
    pairs = [dice_iou(p, t) for p, t in zip(predicted, truth, strict=True)]
    return {"dice": np.array([d for d, _ in pairs]), "iou": np.array([j for _, j in pairs])}


def raw_and_postprocessed(probabilities: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The thresholded mask, and the same after :func:`dermdx.segmentation.largest_component`."""
    raw = probabilities >= threshold
    return raw, largest_component(raw)
