"""A torch Dataset over a manifest: each sample is a dict."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from dermdx.data.images import load_image
from dermdx.data.manifest import Manifest


class ImageDataset(Dataset):
    """Samples ``{"image", "label", "index", "image_id", "error"}`` (+ ``"meta"``) from a manifest.

    Args:
        manifest: the rows to read.
        transform: array -> tensor preset from ``build_transform``.
        classes: class names; labels become indices into it. ``None`` for unlabelled data.
        record_errors: if True an unreadable image yields a zero image and its error message in
            ``error`` (prediction then lists it); if False (default) the error is raised.
        meta: encoded metadata rows (``dermdx.data.meta.encode_meta``), one per manifest row.
        meta_dropout: chance of replacing a sample's metadata by ``absent_meta`` (training only).
        field_dropout: chance of hiding each field (``field_columns``, e.g. age alone) independently,
            for rows whose metadata was not dropped whole, so partial records are seen in training
            (it did not recover Derm7pt's rows, which never record age: docs/benchmarks.md).
        field_columns: the columns of each field (``MetaSchema.field_columns()``); needed with
            ``field_dropout``.
    """

    def __init__(
        self,
        manifest: Manifest,
        transform: Callable[[np.ndarray], torch.Tensor],
        classes: Sequence[str] | None = None,
        *,
        record_errors: bool = False,
        image_size: int | None = None,
        meta: np.ndarray | None = None,
        meta_dropout: float = 0.0,
        absent_meta: np.ndarray | None = None,
        field_dropout: float = 0.0,
        field_columns: Sequence[slice] = (),
    ) -> None:
        if meta is not None and len(meta) != len(manifest):
            raise ValueError(f"meta has {len(meta)} rows but the manifest has {len(manifest)}")
        for name, chance in (("meta_dropout", meta_dropout), ("field_dropout", field_dropout)):
            if not 0.0 <= chance <= 1.0:
                raise ValueError(f"{name} is a chance between 0 and 1, got {chance}")
        if meta_dropout and absent_meta is None:
            raise ValueError("meta_dropout needs absent_meta, the encoding of an unknown record")
        if field_dropout and (absent_meta is None or not field_columns):
            raise ValueError("field_dropout needs absent_meta and field_columns (MetaSchema.field_columns())")
        self.manifest = manifest
        self.paths = manifest.paths()
        self.transform = transform
        self.labels = manifest.label_indices(classes) if classes is not None else None
        self.record_errors = record_errors
        self.image_size = image_size
        self.meta = None if meta is None else torch.as_tensor(meta, dtype=torch.float32)
        self.meta_dropout = meta_dropout
        self.field_dropout = field_dropout
        self.field_columns = tuple(field_columns)
        self.absent_meta = None if absent_meta is None else torch.as_tensor(absent_meta, dtype=torch.float32).reshape(-1)

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
        sample = {
            "image": image,
            "label": int(self.labels[index]) if self.labels is not None else -1,
            "index": index,
            "image_id": str(self.manifest.frame.at[index, "image_id"]),
            "error": error,
        }
        if self.meta is not None:
            # torch's RNG, so the choice repeats under a fixed seed like the augmentation does.
            drop = self.meta_dropout and torch.rand(()).item() < self.meta_dropout
            sample["meta"] = self.absent_meta if drop else self._hide_fields(self.meta[index])
        return sample

    def _hide_fields(self, meta: torch.Tensor) -> torch.Tensor:
        if not self.field_dropout:
            return meta
        meta = meta.clone()
        for columns in self.field_columns:
            if torch.rand(()).item() < self.field_dropout:
                meta[columns] = self.absent_meta[columns]
        return meta
