"""Explanations of a classifier's output: class activation maps (pytorch-grad-cam adapter).

Needs the ``[explain]`` extra (``pip install 'dermdx[explain]'``); nothing is imported from
pytorch-grad-cam until a CAM is computed.
"""

from dermdx.explain.cam import CAM_METHODS, compute_cam, find_target_layer, overlay_cam

__all__ = ["CAM_METHODS", "compute_cam", "find_target_layer", "overlay_cam"]
