"""Reading images: upright by their EXIF orientation, and clear errors."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermdx.data.images import ImageReadError, load_image


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A phone photo taken in portrait: pixels stored landscape, EXIF tag 6 (turn 90 degrees clockwise)."""
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :10] = 255  # a white band on the left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = load_image(tmp_path / "phone.jpg")
    assert upright.shape == (40, 20, 3)
    assert upright[:10].mean() > 200 and upright[-10:].mean() < 50  # the band is now at the top


def test_plain_images_are_unchanged(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (12, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "plain.png")
    assert np.array_equal(load_image(tmp_path / "plain.png"), pixels)


def test_empty_and_missing_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.jpg: empty file"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(FileNotFoundError, match="nothere.jpg"):
        load_image(tmp_path / "nothere.jpg")
