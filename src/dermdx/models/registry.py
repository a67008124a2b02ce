"""One factory for every classifier: ``create_model(name, num_classes=..., pretrained=...)``.

Names are timm model names. ``pretrained=True`` loads ImageNet weights offline from PyPI packages
where they exist (``tf_efficientnet_lite0/1/2``) and otherwise through timm's hub loader, which
needs a network connection.
"""

from __future__ import annotations

import difflib

import timm
from torch import nn

from dermdx.models.fusion import FusionClassifier
from dermdx.models.offline_weights import OFFLINE_MEAN_STD, OFFLINE_PACKAGES, load_offline_weights

DEFAULT_MODEL = "tf_efficientnet_lite0"


def available_models(pattern: str = "*") -> list[str]:
    """timm model names matching ``pattern`` (fnmatch style)."""
    return timm.list_models(pattern)


def _check_name(name: str) -> None:
    names = timm.list_models()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} Any timm model name works; offline ImageNet weights exist for "
            f"{', '.join(sorted(OFFLINE_PACKAGES))}."
        )


def create_model(
    name: str = DEFAULT_MODEL,
    *,
    num_classes: int,
    pretrained: bool = False,
    drop_rate: float = 0.0,
    meta_dim: int = 0,
    fusion: str = "concat",
) -> nn.Module:
    """Build a timm classifier with ``num_classes`` outputs, fused with metadata when ``meta_dim`` > 0.

    Args:
        name: a timm model name, e.g. ``tf_efficientnet_lite0``.
        num_classes: number of output logits.
        pretrained: load ImageNet weights (offline for the EfficientNet-Lite family).
        drop_rate: dropout before the classifier.
        meta_dim: length of the metadata vector; 0 gives a plain image classifier.
        fusion: ``concat`` or ``metablock`` (see ``dermdx.models.fusion``), used when ``meta_dim`` > 0.

    Raises:
        ValueError: unknown name (close matches listed) or ``num_classes`` < 2.

    Example:
        >>> model = create_model("tf_efficientnet_lite0", num_classes=7, pretrained=True)
    """
    _check_name(name)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    online = pretrained and name not in OFFLINE_PACKAGES
    model = timm.create_model(name, pretrained=online, num_classes=num_classes, drop_rate=drop_rate)
    if pretrained and not online:
        load_offline_weights(model, name)
    if meta_dim:
        model.reset_classifier(0)
        return FusionClassifier(model, meta_dim=meta_dim, num_classes=num_classes, fusion=fusion, drop_rate=drop_rate)
    return model


def default_normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input mean/std the model's pretrained weights expect."""
    if name in OFFLINE_PACKAGES:
        return OFFLINE_MEAN_STD
    _check_name(name)
    cfg = timm.get_pretrained_cfg(name)
    if cfg is None:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return tuple(cfg.mean), tuple(cfg.std)
