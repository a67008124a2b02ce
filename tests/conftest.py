"""Shared fixtures: the real data root (skipped when absent) and tiny synthetic image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermdx.config import data_root as _data_root


@pytest.fixture
def data_root() -> Path:
    root = _data_root()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root.resolve()}; set DERMDX_DATA")
    return root


def write_jpeg(path: Path, size: int = 16, seed: int = 0) -> Path:
    """A small random RGB JPEG (noise compresses badly, so even 16 px gives a few hundred bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path


@pytest.fixture
def jpeg():
    """The ``write_jpeg(path, size=16, seed=0)`` helper, for tests that build their own layouts."""
    return write_jpeg


@pytest.fixture
def tiny_images(tmp_path: Path) -> Path:
    """``tmp_path/images/<class>/<class>_<k>.jpg``: 3 images in each of mel, nv, bcc."""
    root = tmp_path / "images"
    for c, name in enumerate(("mel", "nv", "bcc")):
        for k in range(3):
            write_jpeg(root / name / f"{name}_{k}.jpg", seed=10 * c + k)
    return root
