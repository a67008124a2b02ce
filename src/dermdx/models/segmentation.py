"""The lesion segmentation network: a segmentation-models-pytorch U-Net on a timm encoder.

The encoder is timm's ``tf_efficientnet_lite0`` through smp's "timm universal" encoder
(``tu-<timm name>``), so the segmenter and the classifier share one backbone family and one input
scaling (mean 0.5, std 0.5). ImageNet weights come offline from the PyPI package the classifier
uses (:mod:`dermdx.models.offline_weights`): smp's encoder wraps a timm ``features_only`` model
whose parameter names are the classifier's minus ``conv_head``/``bn2``/``classifier``, so the same
key mapping applies and the load is strict.

Needs the ``[explain]`` extra (segmentation-models-pytorch); it is imported when a network is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dermdx.models.offline_weights import OFFLINE_PACKAGES, map_lite_state_dict, offline_weights_path

# A smaller decoder than smp's default (256, 128, 64, 32, 16): a third of the parameters and
# about 2.5x faster on CPU, with room to spare for PH2's large, well-contrasted lesions.
DEFAULT_DECODER_CHANNELS = (128, 64, 32, 16, 16)
# Parts of the classifier that a features-only encoder does not have.
_CLASSIFIER_ONLY = ("conv_head.", "bn2.", "classifier.")


@dataclass
class SegmentationNetConfig:
    """What rebuilds the network; saved with the weights.

    Attributes:
        encoder: a timm model name (without smp's ``tu-`` prefix).
        decoder_channels: U-Net decoder widths, one per upsampling stage (5).
    """

    encoder: str = "tf_efficientnet_lite0"
    decoder_channels: tuple[int, ...] = DEFAULT_DECODER_CHANNELS


def _smp():
    try:
        import segmentation_models_pytorch as smp
    except ImportError as error:
        raise ImportError("lesion segmentation needs segmentation-models-pytorch: pip install 'dermdx[explain]'") from error
    return smp


def create_segmentation_model(config: SegmentationNetConfig | None = None, *, pretrained: bool = False) -> nn.Module:
    """A U-Net with one output channel (lesion logit) at the input's resolution.

    Args:
        config: encoder and decoder widths; default EfficientNet-Lite0 with a small decoder.
        pretrained: load the encoder's offline ImageNet weights (EfficientNet-Lite0/1/2 only).

    Raises:
        ValueError: an encoder timm does not know, or ``pretrained`` for one without offline weights.
        ImportError: segmentation-models-pytorch is not installed.

    Example:
        >>> net = create_segmentation_model(pretrained=True)
        >>> net(torch.zeros(1, 3, 160, 160)).shape
        torch.Size([1, 1, 160, 160])
    """
    import timm

    config = config or SegmentationNetConfig()
    if config.encoder not in timm.list_models():
        raise ValueError(f"unknown encoder {config.encoder!r}: use a timm model name without the 'tu-' prefix, e.g. 'tf_efficientnet_lite0'")
    if len(config.decoder_channels) != 5:
        raise ValueError(f"decoder_channels needs 5 widths (one per U-Net stage), got {list(config.decoder_channels)}")
    if pretrained and config.encoder not in OFFLINE_PACKAGES:
        raise ValueError(f"no offline ImageNet weights for encoder {config.encoder!r}; offline weights exist for {sorted(OFFLINE_PACKAGES)}. Use pretrained=False.")
    smp = _smp()
    model = smp.Unet(
        encoder_name=f"tu-{config.encoder}",
        encoder_weights=None,
        classes=1,
        decoder_channels=tuple(config.decoder_channels),
    )
    if pretrained:
        load_offline_encoder_weights(model, config.encoder)
    return model


def encoder_features(model: nn.Module) -> nn.Module:
    """The timm ``features_only`` network inside smp's timm-universal encoder."""
    return model.encoder.model


def load_offline_encoder_weights(model: nn.Module, encoder: str) -> None:
    """Load the offline ImageNet weights of ``encoder`` into the U-Net's encoder, strictly, in place.

    Raises:
        ValueError: the weights do not map one-to-one onto the encoder (names or shapes differ).
    """
    source = torch.load(offline_weights_path(encoder), map_location="cpu", weights_only=True)
    features = encoder_features(model)
    block_names = [name for name, _ in features.named_modules() if name.count(".") == 2 and name.startswith("blocks.")]
    mapped = {k: v for k, v in map_lite_state_dict(source, block_names).items() if not k.startswith(_CLASSIFIER_ONLY)}
    try:
        features.load_state_dict(mapped, strict=True)
    except RuntimeError as error:
        raise ValueError(f"offline weights for {encoder} do not fit the U-Net encoder: {error}") from error
