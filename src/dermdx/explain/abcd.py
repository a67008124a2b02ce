"""ABCD measurements of a segmented lesion: asymmetry, border, colours, diameter.

These are measurements a clinician can check on the image, reported beside the classifier's
output; they are not a diagnosis and not the Stolz ABCD score (which also weighs dermoscopic
structures). What each one measures:

- **Asymmetry** (shape only): the lesion mask is mirrored about each of its two principal axes
  (through the centroid, from the mask's inertia tensor); the score per axis is the fraction of the
  lesion not covered by its mirror image, 0 for a perfectly symmetric shape. An axis counts as
  asymmetric above ``asymmetry_threshold`` (0.1, set before looking at any data), giving 0/1/2
  like PH2's expert grading. Experts also weigh colour and structure asymmetry; this does not.
- **Border**: compactness index perimeter² / (4π·area), 1.0 for a disk and larger for ragged or
  elongated borders (the perimeter is scikit-image's Crofton estimate, which gives 1.00-1.03 for
  digital disks where the pixel-edge perimeter gives 1.10); and solidity (area / convex-hull
  area), below 1 for notched borders.
- **Colours**: every lesion pixel is assigned to the nearest of the six dermoscopic colours in
  CIELAB (ΔE 1976), unless it is farther than ``max_colour_distance`` from all of them; a colour is
  present when it covers at least ``min_colour_fraction`` (5%) of the lesion. Reference colours
  (sRGB) from Kasmi R., Mokrani K. "Classification of malignant melanoma and benign skin lesions:
  implementation of automatic ABCD rule." IET Image Processing 10(6):448-455, 2016,
  doi:10.1049/iet-ipr.2015.0385: white (197, 188, 217), red (118, 21, 17), light brown
  (163, 82, 16), dark brown (135, 44, 5), blue-gray (113, 108, 139), black (41, 31, 30). They were
  fitted to one data set's camera; other devices shift colours, so counts are approximate.
- **Diameter**: the maximum Feret diameter (largest distance between two boundary points) in
  pixels, and in millimetres when the image scale (``mm_per_pixel``) is known, else None.

Uses scikit-image (``[explain]`` extra) for region properties and colour conversion.

Example:
    >>> mask = Segmenter.default().segment(image)
    >>> result = abcd(image, mask, mm_per_pixel=None)
    >>> result.asymmetry_axes, result.colours_present, result.diameter_px
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Kasmi & Mokrani 2016 (see the module docstring), sRGB 0..255.
DERMOSCOPIC_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (197, 188, 217),
    "red": (118, 21, 17),
    "light_brown": (163, 82, 16),
    "dark_brown": (135, 44, 5),
    "blue_gray": (113, 108, 139),
    "black": (41, 31, 30),
}
ASYMMETRY_THRESHOLD = 0.1
MIN_COLOUR_FRACTION = 0.05
MAX_COLOUR_DISTANCE = 40.0  # CIELAB ΔE; pixels farther from every reference count as no colour


@dataclass
class ABCDResult:
    """The measurements of one lesion (see the module docstring for definitions)."""

    asymmetry_axes: tuple[float, float]  # (major axis, minor axis) non-overlap fractions, 0..1
    asymmetric_axes: int  # 0, 1 or 2 axes above the threshold
    compactness: float  # perimeter² / (4π area), >= ~1
    solidity: float  # area / convex hull area, 0..1
    colour_fractions: dict[str, float]  # share of lesion pixels per reference colour
    colours_present: list[str]
    n_colours: int
    diameter_px: float
    diameter_mm: float | None
    area_px: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict for reports."""
        values = asdict(self)
        values["asymmetry_axes"] = list(self.asymmetry_axes)
        return values


def _skimage():
    try:
        import skimage.color
        import skimage.measure
    except ImportError as error:
        raise ImportError("ABCD measurements need scikit-image: pip install 'dermdx[explain]'") from error
    return skimage


def _check(image: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        described = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an RGB uint8 array [H, W, 3], got {described}")
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.shape != image.shape[:2]:
        raise ValueError(f"mask must be 2-D with the image's size {image.shape[:2]}, got shape {mask.shape}; resize it to the image (nearest neighbour)")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1, 255)).all():
            raise ValueError("mask must be boolean (or 0/1, 0/255); got other values")
        mask = mask > 0
    if not mask.any():
        raise ValueError("the lesion mask is empty (no lesion pixel): nothing to measure; the segmenter found no lesion, check the image")
    return image, mask


def asymmetry_scores(mask: np.ndarray) -> tuple[float, float]:
    """Non-overlap fraction of the mask with its mirror about the (major, minor) principal axis.

    Each lesion pixel is reflected across the axis line through the centroid; the score is the
    share of reflected pixels that fall outside the lesion.
    """
    skimage = _skimage()
    (region,) = skimage.measure.regionprops(mask.astype(np.uint8))
    centre = np.asarray(region.centroid)
    # Inertia tensor eigenvectors: the smallest eigenvalue's vector runs along the major axis.
    _, vectors = np.linalg.eigh(region.inertia_tensor)
    major, minor = vectors[:, 0], vectors[:, 1]
    points = region.coords - centre
    scores = []
    for axis in (major, minor):
        mirrored = centre + 2 * np.outer(points @ axis, axis) - points
        rows, cols = np.rint(mirrored).astype(int).T
        inside = (rows >= 0) & (rows < mask.shape[0]) & (cols >= 0) & (cols < mask.shape[1])
        covered = np.zeros(len(points), bool)
        covered[inside] = mask[rows[inside], cols[inside]]
        scores.append(float(1.0 - covered.mean()))
    return scores[0], scores[1]


def colour_fractions(image: np.ndarray, mask: np.ndarray, *, max_distance: float = MAX_COLOUR_DISTANCE) -> dict[str, float]:
    """Share of lesion pixels whose nearest reference colour (CIELAB, within ``max_distance``) is each colour."""
    skimage = _skimage()
    pixels = skimage.color.rgb2lab(image[mask][None].astype(np.float64) / 255.0)[0]
    names = list(DERMOSCOPIC_COLOURS)
    references = skimage.color.rgb2lab(np.array([list(DERMOSCOPIC_COLOURS.values())], np.float64) / 255.0)[0]
    distances = np.linalg.norm(pixels[:, None, :] - references[None, :, :], axis=2)
    nearest = distances.argmin(axis=1)
    close = distances.min(axis=1) <= max_distance
    counts = np.bincount(nearest[close], minlength=len(names))
    return {name: float(counts[i] / len(pixels)) for i, name in enumerate(names)}


def abcd(
    image_rgb_uint8: np.ndarray,
    mask: np.ndarray,
    *,
    mm_per_pixel: float | None = None,
    asymmetry_threshold: float = ASYMMETRY_THRESHOLD,
    min_colour_fraction: float = MIN_COLOUR_FRACTION,
    max_colour_distance: float = MAX_COLOUR_DISTANCE,
) -> ABCDResult:
    """Measure asymmetry, border, colours and diameter of the lesion in ``mask``.

    Args:
        image_rgb_uint8: RGB uint8 ``[H, W, 3]``.
        mask: the lesion, bool (or 0/1, 0/255) ``[H, W]``; one region is expected
            (``Segmenter.segment`` keeps the largest). Several regions are measured as one shape.
        mm_per_pixel: image scale, when known (dermatoscope calibration); gives ``diameter_mm``.
        asymmetry_threshold: per-axis score above which that axis counts as asymmetric.
        min_colour_fraction: share of the lesion a colour must cover to count as present.
        max_colour_distance: CIELAB ΔE beyond which a pixel matches no reference colour.

    Raises:
        ValueError: image not RGB uint8, mask of another size or not binary, empty mask, or a
            non-positive ``mm_per_pixel``.
        ImportError: scikit-image (``[explain]`` extra) is missing.
    """
    image, mask = _check(image_rgb_uint8, mask)
    if mm_per_pixel is not None and not (np.isfinite(mm_per_pixel) and mm_per_pixel > 0):
        raise ValueError(f"mm_per_pixel must be a positive number (millimetres per pixel) or None, got {mm_per_pixel!r}")
    skimage = _skimage()
    (region,) = skimage.measure.regionprops(mask.astype(np.uint8))
    axes = asymmetry_scores(mask)
    area = float(region.area)
    fractions = colour_fractions(image, mask, max_distance=max_colour_distance)
    present = [name for name, share in fractions.items() if share >= min_colour_fraction]
    diameter = float(region.feret_diameter_max)
    return ABCDResult(
        asymmetry_axes=axes,
        asymmetric_axes=int(sum(score > asymmetry_threshold for score in axes)),
        compactness=float(region.perimeter_crofton**2 / (4 * np.pi * area)),
        solidity=float(region.solidity),
        colour_fractions=fractions,
        colours_present=present,
        n_colours=len(present),
        diameter_px=diameter,
        diameter_mm=None if mm_per_pixel is None else diameter * float(mm_per_pixel),
        area_px=int(area),
    )
