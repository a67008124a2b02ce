"""Classifier backbones (timm) and their offline ImageNet weights."""

from dermdx.models.fusion import FusionClassifier, pooled_features, run_model
from dermdx.models.registry import DEFAULT_MODEL, available_models, create_model, default_normalisation

__all__ = ["FusionClassifier", "pooled_features", "run_model", "DEFAULT_MODEL", "available_models", "create_model", "default_normalisation"]
