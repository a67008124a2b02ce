"""ABCD measurements and CAM-in-lesion measures on drawn shapes with known answers, plus PH2 expert masks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("skimage")

from dermdx.explain import DERMOSCOPIC_COLOURS, abcd, cam_energy_in_mask, mask_fraction, pointing_game
from dermdx.explain.abcd import asymmetry_scores


def canvas(colour=(220, 180, 160), size=(240, 320)) -> np.ndarray:
    return np.full((*size, 3), colour, np.uint8)


def ellipse_mask(angle: float = 30.0, axes=(100, 40), size=(240, 320)) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    cv2.ellipse(mask, (size[1] // 2, size[0] // 2), axes, angle, 0, 360, 1, -1)
    return mask.astype(bool)


@pytest.mark.parametrize("angle", [0.0, 30.0, 75.0])
def test_an_ellipse_is_symmetric_about_both_axes(angle: float):
    result = abcd(canvas(), ellipse_mask(angle))
    assert max(result.asymmetry_axes) < 0.02
    assert result.asymmetric_axes == 0


def test_a_triangle_is_symmetric_about_its_long_axis_only():
    mask = np.zeros((200, 300), np.uint8)
    cv2.fillPoly(mask, [np.array([[30, 70], [30, 130], [270, 100]])], 1)
    major, minor = asymmetry_scores(mask.astype(bool))
    assert major < 0.02 and minor > 0.25
    assert abcd(canvas(size=(200, 300)), mask.astype(bool)).asymmetric_axes == 1


def test_diameter_is_the_long_axis_and_scales_to_millimetres():
    result = abcd(canvas(), ellipse_mask(axes=(100, 40)), mm_per_pixel=0.05)
    assert result.diameter_px == pytest.approx(201, abs=2)
    assert result.diameter_mm == pytest.approx(result.diameter_px * 0.05)
    assert abcd(canvas(), ellipse_mask()).diameter_mm is None


def test_a_disk_is_compact_and_a_star_is_not():
    disk = np.zeros((240, 240), np.uint8)
    cv2.circle(disk, (120, 120), 80, 1, -1)
    star = np.zeros((240, 240), np.uint8)
    angles = np.linspace(0, 2 * np.pi, 17)[:-1]
    radius = np.where(np.arange(16) % 2 == 0, 100, 45)
    points = np.stack([120 + radius * np.cos(angles), 120 + radius * np.sin(angles)], axis=1).astype(np.int32)
    cv2.fillPoly(star, [points], 1)
    round_ = abcd(canvas(size=(240, 240)), disk.astype(bool))
    spiky = abcd(canvas(size=(240, 240)), star.astype(bool))
    assert round_.compactness == pytest.approx(1.0, abs=0.05) and round_.solidity > 0.98
    assert spiky.compactness > 2.0 and spiky.solidity < 0.8


def test_colours_are_counted_when_they_cover_enough_of_the_lesion():
    image = canvas()
    mask = np.zeros(image.shape[:2], bool)
    mask[40:200, 60:260] = True  # 160 x 200 lesion
    image[40:200, 60:160] = DERMOSCOPIC_COLOURS["dark_brown"]
    image[40:200, 160:250] = DERMOSCOPIC_COLOURS["blue_gray"]
    image[40:200, 250:260] = DERMOSCOPIC_COLOURS["black"]  # 5% of the lesion: counted
    image[40:45, 60:80] = DERMOSCOPIC_COLOURS["red"]  # well under 5%: not counted
    result = abcd(image, mask)
    assert result.colours_present == ["dark_brown", "blue_gray", "black"]
    assert result.n_colours == 3
    assert result.colour_fractions["red"] == pytest.approx(100 / 32000)
    assert sum(result.colour_fractions.values()) == pytest.approx(1.0)


def test_pixels_far_from_every_reference_match_no_colour():
    image = canvas(colour=(0, 200, 0))  # green: no dermoscopic colour
    result = abcd(image, ellipse_mask())
    assert result.n_colours == 0 and sum(result.colour_fractions.values()) == 0.0


def test_result_is_json_safe():
    import json

    values = abcd(canvas(), ellipse_mask(), mm_per_pixel=0.1).to_dict()
    assert json.loads(json.dumps(values))["asymmetric_axes"] == 0


@pytest.mark.parametrize(
    ("image", "mask", "match"),
    [
        (canvas(), np.zeros((240, 320), bool), "the lesion mask is empty"),
        (canvas(), np.ones((10, 10), bool), r"mask must be 2-D with the image's size \(240, 320\)"),
        (canvas()[..., 0], ellipse_mask(), r"RGB uint8 array \[H, W, 3\]"),
        (canvas().astype(np.float32), ellipse_mask(), "got float32"),
        (canvas(), ellipse_mask().astype(np.uint8) * 7, "must be boolean"),
    ],
)
def test_bad_inputs_name_the_problem(image, mask, match):
    with pytest.raises(ValueError, match=match):
        abcd(image, mask)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_bad_scale_is_refused(scale: float):
    with pytest.raises(ValueError, match="mm_per_pixel must be a positive number"):
        abcd(canvas(), ellipse_mask(), mm_per_pixel=scale)


def test_uint8_masks_are_accepted():
    assert abcd(canvas(), ellipse_mask().astype(np.uint8) * 255).area_px == ellipse_mask().sum()


# ----------------------------------------------------------------------------- CAM in the lesion


def test_energy_in_mask_and_pointing_game_on_a_cam_at_model_size():
    mask = np.zeros((100, 200), bool)
    mask[:, :100] = True  # left half of the image
    cam = np.zeros((10, 10), np.float32)
    cam[:, :3] = 1.0  # energy on the left, at a smaller size than the mask
    assert cam_energy_in_mask(cam, mask) > 0.95
    assert pointing_game(cam, mask)
    assert not pointing_game(cam[:, ::-1].copy(), mask)
    assert cam_energy_in_mask(np.ones((10, 10)), mask) == pytest.approx(mask_fraction(mask))


@pytest.mark.parametrize(
    ("cam", "mask", "match"),
    [
        (np.ones((4, 4)), np.zeros((4, 4)), "mask is empty"),
        (np.zeros((4, 4)), np.ones((4, 4)), "zero everywhere"),
        (-np.ones((4, 4)), np.ones((4, 4)), "non-negative"),
        (np.ones(4), np.ones((4, 4)), "cam must be 2-D"),
    ],
)
def test_energy_in_mask_errors(cam, mask, match):
    with pytest.raises(ValueError, match=match):
        cam_energy_in_mask(cam, mask)


@pytest.mark.realdata
def test_ph2_expert_masks_measure_without_error(data_root: Path):
    """A few real lesions: every measurement is finite and in range (not an agreement figure)."""
    from dermdx.data.images import load_image
    from dermdx.segmentation_training import load_mask

    labels = pd.read_csv(data_root / "ph2" / "labels.csv").iloc[::40]
    for row in labels.itertuples():
        image = load_image(data_root / "ph2" / row.image_path)
        result = abcd(image, load_mask(data_root / "ph2" / row.mask_path))
        assert all(0.0 <= s <= 1.0 for s in result.asymmetry_axes)
        assert result.compactness >= 0.9 and 0 < result.solidity <= 1
        assert 0 < result.diameter_px < np.hypot(*image.shape[:2])
