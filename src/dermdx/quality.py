"""Image-quality checks on the raw photo, before any diagnosis: a poor image is a reason to abstain.

The classifier gives a confident answer for any input, including a blank frame or a photo so
blurred that no dermoscopic structure is visible. These checks catch what a clinician would
retake: too small, nearly uniform (blank), over- or under-exposed, blurred, grey (no colour), or
a strong blue/green colour cast (skin and lesions are red-yellow in every dermoscope).

All measures are taken on a copy resized so its longer side is ``QualityConfig.working_size``
pixels, so they do not depend on the camera's resolution. The thresholds in ``QualityConfig``
were set on real dermoscopic images (HAM10000 sample, Derm7pt, PH2) and synthetic degradations of
them; ``benchmarks/quality_checks.py`` measures their false rejection and detection rates
(docs/benchmarks.md).

Example:
    >>> result = check_quality(load_image("lesion.jpg"))
    >>> if not result.ok: print("retake:", "; ".join(result.reasons))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Every reason starts with one of these labels and a colon, so callers can group them.
REASON_LABELS = ("too small", "blank", "under-exposed", "over-exposed", "blurred", "greyscale", "colour cast")


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of ``check_quality``; every measure is on 0-255 intensities at ``working_size``.

    Attributes:
        min_side: shortest side, in pixels of the original image, below which too little detail
            is left (the model sees 160 px; a 64 px image is upscaled 2.5 times).
        working_size: longer side, in pixels, of the copy every other measure is taken on: the
            classifier's input size, since detail finer than what the model sees cannot help it.
        min_contrast: standard deviation of the grey image below which the image is blank.
        max_dark_fraction: share of pixels darker than ``dark_level`` above which the image is
            under-exposed. Dermoscopes leave black corners outside the round field of view, so
            this is well above the 32% the darkest real image reached (Derm7pt, HAM10000 sample).
        max_bright_fraction: share of pixels with a channel at or above ``bright_level`` (clipped
            highlights) above which the image is over-exposed.
        min_mean_brightness / max_mean_brightness: mean grey level outside which the image is
            under- / over-exposed as a whole.
        min_sharpness: the Laplacian's variance in the sharpest tiles (90th percentile of an 8 x 8
            grid) divided by the whole image's grey variance, below which the image is blurred.
            Dividing by the variance keeps a dim image from being called blurred for its low
            contrast; taking the sharpest tiles keeps a lesion on smooth skin from being called
            blurred for the featureless skin around it.
        min_colour_cast: mean Lab a* or b* (signed, 0 = neutral) below which the image has a
            green (a*) or blue (b*) cast that no skin shows.
        min_chroma: mean Lab chroma sqrt(a*^2 + b*^2) below which the image is grey: skin under
            a dermoscope is always coloured, so a grey image is a scan, a screenshot or a
            black-and-white export (real dermoscopic images reached 2.8, grey ones are below 0.5).
    """

    min_side: int = 64
    working_size: int = 160
    min_contrast: float = 4.0
    dark_level: int = 20
    max_dark_fraction: float = 0.80
    bright_level: int = 250
    max_bright_fraction: float = 0.85
    min_mean_brightness: float = 50.0
    max_mean_brightness: float = 230.0
    min_sharpness: float = 0.025
    min_colour_cast: float = -15.0
    min_chroma: float = 1.5


@dataclass
class QualityResult:
    """Whether the image is good enough to diagnose, why not, and the measures behind the decision."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)


def quality_measures(image: np.ndarray, config: QualityConfig | None = None) -> dict[str, float]:
    """The raw measures ``check_quality`` compares with its thresholds (see ``QualityConfig``).

    Raises:
        TypeError: ``image`` is not a uint8 array.
        ValueError: ``image`` is not shaped (H, W, 3).
    """
    import cv2

    config = config or QualityConfig()
    image = _check_image(image)
    height, width = image.shape[:2]
    scale = config.working_size / max(height, width)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=interpolation)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    grey_var = float(grey.astype(np.float64).var())
    laplacian = cv2.Laplacian(grey, cv2.CV_64F)
    tile = max(1, config.working_size // 8)
    tile_vars = [
        laplacian[y : y + tile, x : x + tile].var()
        for y in range(0, max(1, laplacian.shape[0] - tile + 1), tile)
        for x in range(0, max(1, laplacian.shape[1] - tile + 1), tile)
    ]
    sharpest = float(np.percentile(tile_vars, 90))
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float64)
    return {
        "min_side": float(min(height, width)),
        "contrast": grey_var**0.5,
        "dark_fraction": float((grey < config.dark_level).mean()),
        "bright_fraction": float((small.max(axis=2) >= config.bright_level).mean()),
        "mean_brightness": float(grey.mean()),
        "sharpness": sharpest / grey_var if grey_var > 1e-6 else 0.0,
        # OpenCV's 8-bit Lab stores a* and b* offset by 128.
        "mean_a": float(lab[..., 1].mean() - 128),
        "mean_b": float(lab[..., 2].mean() - 128),
        "mean_chroma": float(np.hypot(lab[..., 1] - 128, lab[..., 2] - 128).mean()),
    }


def check_quality(image: np.ndarray, config: QualityConfig | None = None) -> QualityResult:
    """Check a raw RGB photo (uint8, H x W x 3) against ``config``'s thresholds.

    Args:
        image: the image as read from disk (``dermdx.data.images.load_image``), before any
            preprocessing.
        config: thresholds; ``QualityConfig()`` by default.

    Returns:
        ``QualityResult(ok, reasons, measures)``; ``reasons`` are sentences a clinician can act
        on, each starting with one of ``REASON_LABELS`` and a colon; empty when ``ok``.

    Raises:
        TypeError / ValueError: ``image`` is not an (H, W, 3) uint8 array.
    """
    config = config or QualityConfig()
    m = quality_measures(image, config)
    reasons = []
    if m["min_side"] < config.min_side:
        reasons.append(f"too small: shortest side {m['min_side']:.0f} px < {config.min_side} px; use the original photo")
    blank = m["contrast"] < config.min_contrast
    if blank:
        reasons.append(f"blank: nearly uniform image (grey standard deviation {m['contrast']:.1f} < {config.min_contrast}); photograph the lesion")
    if m["dark_fraction"] > config.max_dark_fraction or m["mean_brightness"] < config.min_mean_brightness:
        reasons.append(
            f"under-exposed: {m['dark_fraction']:.0%} of pixels dark, mean brightness {m['mean_brightness']:.0f}/255 "
            f"(limits {config.max_dark_fraction:.0%}, {config.min_mean_brightness:.0f}); retake with more light"
        )
    if m["bright_fraction"] > config.max_bright_fraction or m["mean_brightness"] > config.max_mean_brightness:
        reasons.append(
            f"over-exposed: {m['bright_fraction']:.0%} of pixels clipped, mean brightness {m['mean_brightness']:.0f}/255 "
            f"(limits {config.max_bright_fraction:.0%}, {config.max_mean_brightness:.0f}); retake with less light or glare"
        )
    # A blank frame has no edges and no colour: blur and cast would only repeat that it is blank.
    if not blank and m["sharpness"] < config.min_sharpness:
        reasons.append(f"blurred: sharpness {m['sharpness']:.3f} < {config.min_sharpness}; refocus and retake")
    if not blank and m["mean_chroma"] < config.min_chroma:
        reasons.append(f"greyscale: mean chroma {m['mean_chroma']:.1f} < {config.min_chroma}; send the colour photo")
    cast = min(m["mean_a"], m["mean_b"])
    if not blank and cast < config.min_colour_cast:
        colour = "green" if m["mean_a"] < m["mean_b"] else "blue"
        reasons.append(f"colour cast: strong {colour} cast (Lab {cast:.0f} < {config.min_colour_cast:.0f}); check white balance and channel order")
    return QualityResult(ok=not reasons, reasons=reasons, measures=m)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
        raise TypeError(f"check_quality needs a uint8 RGB array (dermdx.data.images.load_image), got {kind}")
    if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"check_quality needs an image shaped (H, W, 3), got {image.shape}; convert grey or RGBA images to RGB")
    return image
