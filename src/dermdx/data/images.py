"""Reading images from disk with errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """An image file exists (or should) but cannot be decoded."""


def load_image(path: str | Path) -> np.ndarray:
    """Decode ``path`` fully into an RGB uint8 array (H, W, 3), upright.

    A phone stores how it was held in the EXIF orientation tag instead of turning the pixels; the
    image is turned accordingly, so the model, the outline and the report see what the clinician saw.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: the file is empty, truncated, or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes); replace it or remove it from the manifest")
    # Another library may have set PIL to accept truncated files; a diagnosis must not see half an image.
    tolerant = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later in a worker
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except UnidentifiedImageError as error:
        raise ImageReadError(f"{path}: not a readable image ({error}); check the file type") from error
    except (OSError, SyntaxError) as error:
        raise ImageReadError(f"{path}: truncated or corrupt image ({error}); re-export or remove it") from error
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = tolerant
