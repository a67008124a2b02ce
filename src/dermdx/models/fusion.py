"""Image + metadata fusion heads on a timm backbone: ``forward(image, meta=None)``.

Both heads take the backbone's pooled features (``forward_head(..., pre_logits=True)``):
- ``concat``: metadata through a small MLP, concatenated with the image features, then a linear
  classifier.
- ``metablock``: after MetaBlock (Pacheco & Krohling, IEEE JBHI 2021): metadata produces a gate
  and a shift for every image feature, so metadata modulates which image features count rather
  than voting beside them. Here in residual form, ``f * (1 + tanh(a(meta))) + b(meta)`` with ``a``
  and ``b`` starting at zero: the head starts as the plain image classifier and metadata learns
  to re-weight from there. The paper's ``sigmoid(tanh(f * a(meta)) + b(meta))`` squashes every
  pretrained feature into (0, 1) under a random gate from the first step; trained that way on
  HAM10000 fold 0 it reached 0.47 balanced accuracy against 0.73 for concat (docs/benchmarks.md).

``meta=None`` means "no metadata": the caller's all-missing vector must then be supplied by the
head, so the head keeps it as a buffer (set from the schema when the model is built).
timm has no fusion heads, hence this module.
"""

from __future__ import annotations

import torch
from torch import nn

FUSIONS = ("concat", "metablock")


class FusionClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, *, meta_dim: int, num_classes: int, fusion: str = "concat", hidden: int = 64, drop_rate: float = 0.2) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose from {', '.join(FUSIONS)}")
        if meta_dim < 1:
            raise ValueError(f"meta_dim must be positive for a fusion model, got {meta_dim}")
        self.backbone = backbone
        self.fusion = fusion
        self.meta_dim = meta_dim
        features = backbone.num_features
        self.register_buffer("absent_meta", torch.zeros(meta_dim))
        if fusion == "concat":
            self.meta_net = nn.Sequential(nn.Linear(meta_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(drop_rate))
            self.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(features + hidden, num_classes))
        else:
            self.gate = nn.Linear(meta_dim, features)
            self.shift = nn.Linear(meta_dim, features)
            for layer in (self.gate, self.shift):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
            self.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(features, num_classes))

    def set_absent_meta(self, vector: torch.Tensor) -> None:
        """The encoding used when ``forward`` gets no metadata (the schema's all-missing vector)."""
        self.absent_meta.copy_(torch.as_tensor(vector, dtype=torch.float32).reshape(self.meta_dim))

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(image), pre_logits=True)

    def forward(self, image: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        features = self.image_features(image)
        if meta is None:
            meta = self.absent_meta.expand(image.shape[0], -1)
        if meta.shape != (image.shape[0], self.meta_dim):
            raise ValueError(f"meta must have shape ({image.shape[0]}, {self.meta_dim}), got {tuple(meta.shape)}")
        if self.fusion == "concat":
            return self.classifier(torch.cat([features, self.meta_net(meta)], dim=1))
        return self.classifier(features * (1 + torch.tanh(self.gate(meta))) + self.shift(meta))


def run_model(model: nn.Module, image: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
    """Logits from an image-only model or a fusion model, with metadata when there is some.

    ``model`` may also be an exported :class:`dermdx.onnx_backend.OnnxModel` (``accepts_meta``).
    """
    if meta is None:
        return model(image)
    if not (isinstance(model, FusionClassifier) or getattr(model, "accepts_meta", False)):
        raise ValueError("metadata was given, but this model does not use metadata (it was trained on images only)")
    return model(image, meta)


def pooled_features(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The backbone's pooled image features ``[N, D]`` (before the classifier), for heads built on them.

    Concept, staging, management and out-of-distribution heads reuse what the diagnosis model
    already computes instead of training a second backbone; metadata is not part of these features.
    """
    if isinstance(model, FusionClassifier):
        return model.image_features(image)
    if not hasattr(model, "forward_head"):
        raise ValueError(f"{type(model).__name__} has no forward_head; pooled features need a timm backbone or a dermdx fusion model")
    return model.forward_head(model.forward_features(image), pre_logits=True)
