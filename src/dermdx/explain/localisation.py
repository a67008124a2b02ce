"""Does a class activation map point at the lesion? Energy inside the mask and the pointing game.

Both compare a CAM (``dermdx.explain.compute_cam``, values 0..1 at the model's input size) with a
lesion mask (expert or ``Segmenter.segment``). The CAM is first resized to the mask's size, which
undoes the square resize the classifier's preprocessing applied.

- :func:`cam_energy_in_mask`: share of the CAM's total value inside the lesion (Wang et al.,
  Score-CAM, CVPR-W 2020, "energy-based pointing game"). Compare with the lesion's share of the
  image (:func:`mask_fraction`): a map that ignores the lesion scores about that.
- :func:`pointing_game`: whether the CAM's maximum lies in the lesion (Zhang et al., "Top-down
  neural attention by excitation backprop", ECCV 2016).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def _check(cam: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    heat = np.asarray(cam, dtype=np.float32)
    region = np.asarray(mask)
    if heat.ndim != 2:
        raise ValueError(f"cam must be 2-D [H, W], got shape {heat.shape}")
    if region.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {region.shape}")
    if not np.isfinite(heat).all() or heat.min() < 0:
        raise ValueError("cam must hold finite, non-negative values (compute_cam's output is 0..1)")
    region = region > 0
    if not region.any():
        raise ValueError("the lesion mask is empty: there is no lesion to compare the CAM with")
    if heat.shape != region.shape:
        heat = cv2.resize(heat, (region.shape[1], region.shape[0]), interpolation=cv2.INTER_LINEAR)
    return heat, region


def cam_energy_in_mask(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share (0..1) of the CAM's summed value that falls inside the lesion mask.

    Raises:
        ValueError: a CAM or mask that is not 2-D, a CAM with negative or non-finite values, an
            empty mask, or a CAM that is zero everywhere (no energy to share).
    """
    heat, region = _check(cam, mask)
    total = float(heat.sum())
    if total <= 0:
        raise ValueError("the CAM is zero everywhere: it highlights nothing, so no share can be computed")
    return float(heat[region].sum() / total)


def pointing_game(cam: np.ndarray, mask: np.ndarray) -> bool:
    """True when the CAM's highest value lies inside the lesion mask (first maximum on ties)."""
    heat, region = _check(cam, mask)
    row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return bool(region[row, col])


def mask_fraction(mask: np.ndarray) -> float:
    """The lesion's share of the image: what :func:`cam_energy_in_mask` gives for a uniform CAM."""
    return float(np.asarray(mask).astype(bool).mean())
