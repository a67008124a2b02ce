"""Classifier backbones (timm) and their offline ImageNet weights."""

from dermdx.models.registry import DEFAULT_MODEL, available_models, create_model, default_normalisation

__all__ = ["DEFAULT_MODEL", "available_models", "create_model", "default_normalisation"]
