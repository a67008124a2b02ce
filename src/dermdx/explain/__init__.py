"""Explanations of a classifier's output and measurements of the lesion.

- class activation maps (pytorch-grad-cam adapter) and whether they point at the lesion;
- ABCD measurements (asymmetry, border, colours, diameter) from an image and its lesion mask.

Needs the ``[explain]`` extra (``pip install 'dermdx[explain]'``); pytorch-grad-cam and
scikit-image are imported only when a CAM or a measurement is computed.
"""

from dermdx.explain.abcd import DERMOSCOPIC_COLOURS, ABCDResult, abcd
from dermdx.explain.cam import CAM_METHODS, compute_cam, find_target_layer, overlay_cam
from dermdx.explain.localisation import cam_energy_in_mask, mask_fraction, pointing_game

__all__ = [
    "CAM_METHODS",
    "DERMOSCOPIC_COLOURS",
    "ABCDResult",
    "abcd",
    "cam_energy_in_mask",
    "compute_cam",
    "find_target_layer",
    "mask_fraction",
    "overlay_cam",
    "pointing_game",
]
