"""A torch Dataset over a manifest: each sample is a dict."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from dermdx.data.images import load_image
from dermdx.data.manifest import Manifest


class ImageDataset(Dataset):
    """Samples ``{"image", "label", "index", "image_id", "error"}`` from a manifest.

    Args:
        manifest: the rows to read.
        transform: array -> tensor preset from ``build_transform``.
        classes: class names; labels become indices into it. ``None`` for unlabelled data.
        record_errors: if True an unreadable image yields a zero image and its error message in
            ``error`` (prediction then lists it); if False (default) the error is raised.
    """

    def __init__(
        self,
        manifest: Manifest,
        transform: Callable[[np.ndarray], torch.Tensor],
        classes: Sequence[str] | None = None,
        *,
        record_errors: bool = False,
        image_size: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.paths = manifest.paths()
        self.transform = transform
        self.labels = manifest.label_indices(classes) if classes is not None else None
        self.record_errors = record_errors
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        error = ""
        try:
            image = self.transform(load_image(self.paths[index]))
        except (OSError, ValueError) as exc:
            if not self.record_errors or self.image_size is None:
                raise
            error = str(exc)
            image = torch.zeros(3, self.image_size, self.image_size)
        return {
            "image": image,
            "label": int(self.labels[index]) if self.labels is not None else -1,
            "index": index,
            "image_id": str(self.manifest.frame.at[index, "image_id"]),
            "error": error,
        }
