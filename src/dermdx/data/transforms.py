"""Per-modality preprocessing presets: deterministic steps, training augmentation, normalisation.

A preset is built from a ``PreprocessConfig`` that is saved with the model, so inference repeats
training's preprocessing exactly. Augmentation uses albumentations; Shades-of-Gray colour constancy
and black-hat hair removal are not in albumentations, so they are small array functions here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from dermdx.config import PreprocessConfig


def shades_of_gray(image: np.ndarray, power: float = 6.0) -> np.ndarray:
    """Shades-of-Gray colour constancy (Finlayson & Trezzi 2004), as used in ISIC 2018 entries.

    Estimates the illuminant with the Minkowski p-norm of each channel and rescales the channels so
    the illuminant becomes grey; this evens out differences between dermatoscopes and centres.
    """
    pixels = image.astype(np.float32)
    illuminant = np.power(np.mean(np.power(pixels, power), axis=(0, 1)), 1.0 / power)
    norm = np.sqrt(np.sum(illuminant**2))
    if norm == 0:
        return image.copy()
    gains = 1.0 / (illuminant / norm * np.sqrt(3.0) + 1e-6)
    return np.clip(pixels * gains, 0, 255).astype(np.uint8)


def remove_hair(image: np.ndarray, *, kernel_size: int = 17, threshold: int = 10) -> np.ndarray:
    """Black-hat hair removal (DullRazor-like): find thin dark lines, inpaint them from around."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (kernel_size, kernel_size))
    blackhat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel)
    _, mask = cv2.threshold(blackhat, threshold, 255, cv2.THRESH_BINARY)
    if not mask.any():
        return image.copy()
    return cv2.inpaint(image, mask, 3, cv2.INPAINT_TELEA)


class ShadesOfGray(A.ImageOnlyTransform):
    """albumentations wrapper of :func:`shades_of_gray` (always applied)."""

    def __init__(self, power: float = 6.0) -> None:
        super().__init__(p=1.0)
        self.power = power

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return shades_of_gray(img, self.power)


class RemoveHair(A.ImageOnlyTransform):
    """albumentations wrapper of :func:`remove_hair` (always applied)."""

    def __init__(self) -> None:
        super().__init__(p=1.0)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        return remove_hair(img)


def _training_augmentation(size: int) -> list[A.BasicTransform]:
    return [
        A.RandomResizedCrop(size=(size, size), scale=(0.6, 1.0), ratio=(0.8, 1.25)),
        A.HorizontalFlip(),
        A.VerticalFlip(),
        A.RandomRotate90(),
        A.Affine(rotate=(-30, 30), scale=(0.9, 1.1), border_mode=cv2.BORDER_REFLECT_101, p=0.5),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=0.8),
    ]


def build_transform(config: PreprocessConfig, *, train: bool) -> Callable[[np.ndarray], torch.Tensor]:
    """The preset for ``config.modality``: RGB uint8 array in, normalised CHW float tensor out.

    Raises:
        ValueError: an unknown modality.
    """
    if config.modality not in PRESETS:
        raise ValueError(f"no preprocessing preset for modality {config.modality!r}; choose from {sorted(PRESETS)}")
    return PRESETS[config.modality](config, train=train)


def dermoscopy_preset(config: PreprocessConfig, *, train: bool) -> Callable[[np.ndarray], torch.Tensor]:
    """Resize to a square, optional colour constancy and hair removal, augmentation, normalisation."""
    size = config.image_size
    steps: list[A.BasicTransform] = [A.Resize(size, size, interpolation=cv2.INTER_AREA)]
    if config.color_constancy:
        steps.append(ShadesOfGray())
    if config.hair_removal:
        steps.append(RemoveHair())
    if train:
        steps.extend(_training_augmentation(size))
    steps += [A.Normalize(mean=config.mean, std=config.std, max_pixel_value=255.0), ToTensorV2()]
    pipeline = A.Compose(steps)

    def apply(image: np.ndarray) -> torch.Tensor:
        if train:
            # albumentations seeds itself from OS entropy; draw its state from torch's generator
            # instead, which fit() seeds per epoch and DataLoader seeds per worker, so runs repeat.
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
            pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
        return pipeline(image=image)["image"]

    return apply


PRESETS: dict[str, Callable[..., Callable[[np.ndarray], torch.Tensor]]] = {"dermoscopy": dermoscopy_preset}
