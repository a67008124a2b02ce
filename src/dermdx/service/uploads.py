"""Checking an uploaded image before anything stores or decodes it for the model.

Every rejection is an ``UploadError`` carrying the HTTP status and a message that names the
problem and the fix: empty (422), too many bytes (413), not an accepted image type (415), too
many pixels or a decompression bomb (413, found from the header before decoding), truncated or
corrupt (422, found by a full decode).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from dermdx.service.settings import IMAGE_TYPES, ServiceSettings


class UploadError(ValueError):
    """An upload the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class CheckedImage:
    data: bytes
    media_type: str
    width: int
    height: int


def _megabytes(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB"


def check_image(data: bytes, settings: ServiceSettings) -> CheckedImage:
    """Accept ``data`` if it is a whole JPEG/PNG (per ``settings``) within the size and pixel limits.

    The content decides the type; the file name and the client's content type are ignored.

    Raises:
        UploadError: with status 413, 415 or 422 and a message naming the problem.
    """
    allowed = " or ".join(settings.image_types)
    if not data:
        raise UploadError(422, "the image file is empty (0 bytes); choose the photo again")
    if len(data) > settings.max_upload_bytes:
        raise UploadError(413, f"the image file is {_megabytes(len(data))}; the limit is {_megabytes(settings.max_upload_bytes)}. Upload a smaller JPEG")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise UploadError(413, f"the image declares too many pixels ({error}); the limit is {settings.max_pixels:,} pixels") from None
    except UnidentifiedImageError:
        raise UploadError(415, f"the file is not an image dermdx accepts; upload a {allowed} photo") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise UploadError(422, f"the image is truncated or corrupt ({error}); take or export the photo again") from None
    with image:
        if image.format not in settings.image_types:
            raise UploadError(415, f"the file is a {image.format} image; upload a {allowed} photo")
        width, height = image.size
        if width < 1 or height < 1:
            raise UploadError(422, f"the image has no pixels ({width}x{height}); take or export the photo again")
        if width * height > settings.max_pixels:
            raise UploadError(
                413,
                f"the image is {width}x{height} = {width * height:,} pixels, more than the limit of {settings.max_pixels:,} "
                "(an oversized photo or a decompression bomb); resize it and upload again",
            )
        try:
            image.load()  # a full decode: a truncated file fails here, not inside the model
        except Image.DecompressionBombError as error:
            raise UploadError(413, f"the image expands to too many pixels ({error})") from None
        except (OSError, SyntaxError, ValueError) as error:
            raise UploadError(422, f"the image is truncated or corrupt ({error}); take or export the photo again") from None
        return CheckedImage(data=data, media_type=IMAGE_TYPES[image.format], width=width, height=height)
