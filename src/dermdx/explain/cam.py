"""Class activation maps through pytorch-grad-cam, for dermdx models (image-only or fused with metadata).

This module wraps pytorch-grad-cam instead of re-implementing it. What it adds:

- one name per method (:data:`CAM_METHODS`), with an error listing them for a bad name;
- the target layer picked for the backbone (:func:`find_target_layer`);
- metadata bound for :class:`~dermdx.models.FusionClassifier`, whose ``forward`` takes
  ``(image, meta)`` while pytorch-grad-cam calls ``model(image)``;
- the caller's model left as it was found: the CAM runs as a context manager (its hooks are
  removed on exit), and every module's train/eval mode, every parameter's ``requires_grad`` and
  ``.grad`` are restored afterwards. Parameters are frozen while the CAM runs and the *input*
  requires grad instead, so gradients reach the activations without accumulating in the model.

Example:
    >>> cam = compute_cam(model, predictor.transform(image)[None], method="gradcam++")
    >>> Image.fromarray(overlay_cam(image, cam)).save("cam.png")
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from dermdx.models import FusionClassifier

# dermdx name -> pytorch_grad_cam class name. Resolved when a CAM is computed, because
# pytorch-grad-cam is an optional extra. Left out on purpose: AblationCAM (swaps a layer of the
# caller's model while it runs), ShapleyCAM (second-order gradients through the parameters, which
# stay frozen here), FinerCAM (compares against similar classes; another target API), FullGrad
# (bias gradients of every layer, no single target layer) and RandomCAM (a baseline, not an
# explanation).
CAM_METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "gradcam-elementwise": "GradCAMElementWise",
    "scorecam": "ScoreCAM",
    "kpcacam": "KPCA_CAM",
}
DEFAULT_METHOD = "gradcam"


def cam_class(method: str) -> type:
    """The pytorch-grad-cam class for a dermdx method name.

    Raises:
        ValueError: an unknown name (the valid names and the closest match are listed).
        ImportError: pytorch-grad-cam is not installed (says which extra to install).
    """
    if method not in CAM_METHODS:
        close = difflib.get_close_matches(str(method), CAM_METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown CAM method {method!r}.{hint} Choose from: {', '.join(CAM_METHODS)}")
    try:
        import pytorch_grad_cam
    except ImportError as error:
        raise ImportError("CAM heatmaps need pytorch-grad-cam: pip install 'dermdx[explain]'") from error
    return getattr(pytorch_grad_cam, CAM_METHODS[method])


class _BoundMeta(nn.Module):
    """``forward(image)`` calls ``model(image, meta)``: pytorch-grad-cam passes the image only.

    ``meta`` of shape ``[1, D]`` is repeated over the batch (ScoreCAM feeds batches of masked
    copies of the one image); ``None`` lets the fusion model use its "nothing known" vector.
    """

    def __init__(self, model: nn.Module, meta: torch.Tensor | None) -> None:
        super().__init__()
        self.model = model
        self.meta = meta

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        meta = None if self.meta is None else self.meta.expand(image.shape[0], -1)
        return self.model(image, meta)


@contextmanager
def _borrowed(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration; modes, ``requires_grad`` and grads restored after."""
    modes = [(module, module.training) for module in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _, _ in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag, grad in params:
            p.requires_grad_(flag)
            p.grad = grad
        # Per module, so a caller's mixed state (e.g. frozen BatchNorm in a training model) survives.
        for module, mode in modes:
            module.training = mode


def _backbone(model: nn.Module) -> tuple[nn.Module, str]:
    if isinstance(model, FusionClassifier):
        return model.backbone, "backbone."
    return model, ""


def _last_4d_module(model: nn.Module, image: torch.Tensor) -> str:
    """Name of the last module (in completion order) whose output is a 4-D tensor, during ``forward_features``."""
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_module: nn.Module, _inputs: Any, output: Any, name: str = name) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                order.append(name)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            features = model.forward_features(image) if hasattr(model, "forward_features") else model(image)
    finally:
        for handle in handles:
            handle.remove()
    if hasattr(model, "forward_features") and not (isinstance(features, torch.Tensor) and features.dim() == 4):
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(
            f"{type(model).__name__}.forward_features returns {shape}, not a [N, C, H, W] feature map "
            "(a transformer?); CAM heatmaps here support convolutional backbones. Pass target_layer= to choose a layer yourself."
        )
    if not order:
        raise ValueError(f"{type(model).__name__} has no layer with a 4-D [N, C, H, W] output to compute a CAM on")
    return order[-1]


def find_target_layer(model: nn.Module, image: torch.Tensor | None = None) -> tuple[str, nn.Module]:
    """The layer whose activations the CAM weighs: the backbone's final feature map, before pooling.

    The rule, for timm backbones (inside a ``FusionClassifier``, its ``backbone``):

    - EfficientNet family (timm ``EfficientNet``: EfficientNet, EfficientNet-Lite, MixNet, the tiny
      ``test_efficientnet``): ``bn2``, i.e. ``conv_head`` followed by its normalisation and
      activation. That is what ``forward_features`` returns and the classifier pools; ``conv_head``
      alone would be the map before BatchNorm and activation.
    - ResNet family (timm ``ResNet``: ResNet, ResNeXt, SE-ResNet, ``test_resnet``): ``layer4``,
      the last residual stage.
    - anything else: one ``forward_features`` pass on ``image`` with a forward hook on every
      module; the last module to finish with a 4-D ``[N, C, H, W]`` output is the target: the
      one producing the final feature map (MobileNetV3 ``blocks``, RegNet ``final_conv``,
      DenseNet ``features``, ConvNeXt ``norm_pre``, an identity after the last stage). Models
      whose features are not a spatial map (vision transformers) raise ``ValueError``.

    Args:
        model: a dermdx classifier (timm model or ``FusionClassifier``).
        image: an input ``[1, 3, H, W]``, needed only for the forward-hook rule.

    Returns:
        ``(dotted name relative to model, module)``, e.g. ``("backbone.bn2", module)``.
    """
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet

    backbone, prefix = _backbone(model)
    if isinstance(backbone, EfficientNet):
        name = "bn2"
    elif isinstance(backbone, ResNet):
        name = "layer4"
    else:
        if image is None:
            raise ValueError(f"no built-in target layer for {type(backbone).__name__}; pass an example image to find one by forward hook")
        with _borrowed(backbone):
            name = _last_4d_module(backbone, image)
    return prefix + name, backbone.get_submodule(name)


def _check_image(image: Any) -> torch.Tensor:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image_tensor must be a torch.Tensor (the output of the model's transform), got {type(image).__name__}")
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"image_tensor must have shape [3, H, W] or [1, 3, H, W] (one RGB image), got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"image_tensor must be a float tensor (normalised by the model's transform), got {image.dtype}")
    if not torch.isfinite(image).all():
        raise ValueError("image_tensor holds NaN or infinite values")
    return image.detach()


def _check_meta(model: nn.Module, meta: Any, device: torch.device) -> torch.Tensor | None:
    if meta is None:
        return None
    if not isinstance(model, FusionClassifier):
        raise ValueError("meta was given, but this model does not use metadata (it was trained on images only); pass meta=None")
    tensor = torch.as_tensor(meta, dtype=torch.float32, device=device).reshape(1, -1)
    if tensor.shape[1] != model.meta_dim:
        raise ValueError(f"meta must hold {model.meta_dim} values (the model's metadata encoding), got {tensor.shape[1]}")
    return tensor


def compute_cam(
    model: nn.Module,
    image_tensor: torch.Tensor,
    *,
    target_class: int | None = None,
    method: str = DEFAULT_METHOD,
    meta: Any = None,
    target_layer: str | None = None,
) -> np.ndarray:
    """A class activation map for one image, as float32 ``[H, W]`` in 0..1 (H, W of the input).

    Args:
        model: a dermdx classifier; it is not changed (see the module docstring).
        image_tensor: ``[3, H, W]`` or ``[1, 3, H, W]``, preprocessed as the model expects.
        target_class: index of the class to explain; default the predicted class.
        method: a name from :data:`CAM_METHODS`.
        meta: for a ``FusionClassifier``, the encoded metadata ``[D]`` or ``[1, D]``
            (``dermdx.data.meta.encode_meta``); None means "nothing known".
        target_layer: dotted module name to override :func:`find_target_layer`.

    Raises:
        ValueError: unknown method, bad image shape, ``target_class`` out of range, metadata for
            an image-only model, or a model without a spatial feature map.
        ImportError: pytorch-grad-cam (the ``[explain]`` extra) is missing.

    Example:
        >>> cam = compute_cam(model, x, method="eigencam")  # x: [1, 3, 160, 160]
        >>> cam.shape, float(cam.min()) >= 0.0, float(cam.max()) <= 1.0
        ((160, 160), True, True)
    """
    cls = cam_class(method)
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    image = _check_image(image_tensor)
    device = next(model.parameters()).device
    image = image.to(device)
    bound = _check_meta(model, meta, device)
    wrapped = _BoundMeta(model, bound) if isinstance(model, FusionClassifier) else model
    with _borrowed(model), torch.enable_grad():
        if target_layer is None:
            _, layer = find_target_layer(model, image)
        else:
            try:
                layer = model.get_submodule(target_layer)
            except AttributeError as error:
                raise ValueError(f"target_layer {target_layer!r} is not a module of {type(model).__name__}: {error}") from None
        with torch.no_grad():
            logits = wrapped(image)
        n_classes = logits.shape[1]
        if target_class is None:
            target_class = int(logits.argmax(dim=1).item())
        elif isinstance(target_class, bool) or not isinstance(target_class, int | np.integer) or not 0 <= target_class < n_classes:
            raise ValueError(f"target_class must be a class index in 0..{n_classes - 1}, got {target_class!r}")
        # The input carries the gradient, so the activations get one while the parameters stay frozen.
        x = image.clone().requires_grad_(True)
        with cls(model=wrapped, target_layers=[layer]) as cam:
            try:
                grayscale = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(target_class))])
            except IndexError as error:
                # pytorch-grad-cam's __exit__ prints and swallows IndexError; do not let it vanish.
                raise RuntimeError(f"{method} failed inside pytorch-grad-cam: {error}") from error
    result = np.asarray(grayscale, dtype=np.float32)[0]
    if not np.isfinite(result).all():
        raise RuntimeError(f"{method} produced non-finite values for this image; try another method")
    return np.clip(result, 0.0, 1.0)


def overlay_cam(image_rgb_uint8: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The CAM as a JET heatmap over the image: uint8 RGB, same size as the image.

    ``cam`` may have another size (the model's square input); it is resized to the image, which
    undoes the square resize the preprocessing applied.

    Raises:
        ValueError: an image that is not ``[H, W, 3]`` uint8, a CAM outside 0..1 or not 2-D,
            or ``alpha`` outside [0, 1].
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image

    image = np.asarray(image_rgb_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be an RGB uint8 array [H, W, 3], got {image.dtype} {image.shape}")
    heat = np.asarray(cam, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"cam must be 2-D [H, W], got shape {heat.shape}")
    if not np.isfinite(heat).all() or heat.min() < 0.0 or heat.max() > 1.0:
        raise ValueError("cam must hold finite values in 0..1 (compute_cam's output)")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha (heatmap weight) must be in [0, 1], got {alpha!r}")
    if heat.shape != image.shape[:2]:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(image.astype(np.float32) / 255.0, np.clip(heat, 0.0, 1.0), use_rgb=True, image_weight=1.0 - float(alpha))
