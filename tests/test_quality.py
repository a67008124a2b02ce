"""Image-quality checks: synthetic faults are caught with the right reason, a good image passes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dermdx.quality import REASON_LABELS, QualityConfig, check_quality, quality_measures


def textured(size: int = 400, seed: int = 0) -> np.ndarray:
    """A sharp, skin-coloured image: fine noise texture, a darker brown 'lesion' with a hard edge."""
    rng = np.random.default_rng(seed)
    image = np.array([205.0, 150.0, 125.0]) + rng.normal(0, 18, (size, size, 3))
    y, x = np.mgrid[0:size, 0:size]
    lesion = (y - size / 2) ** 2 + (x - size / 2) ** 2 < (size / 4) ** 2
    image[lesion] = np.array([110.0, 70.0, 50.0]) + rng.normal(0, 18, (int(lesion.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def reasons(image: np.ndarray, config: QualityConfig | None = None) -> list[str]:
    return [r.split(":")[0] for r in check_quality(image, config).reasons]


def test_sharp_textured_image_passes():
    result = check_quality(textured())
    assert result.ok, result.reasons
    assert result.reasons == []
    assert set(result.measures) >= {"contrast", "sharpness", "dark_fraction", "bright_fraction", "mean_chroma"}


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda im: np.full_like(im, 128), "blank"),
        (lambda im: np.clip(np.full(im.shape, 140.0) + np.random.default_rng(1).normal(0, 1, im.shape), 0, 255).astype(np.uint8), "blank"),
        (lambda im: cv2.GaussianBlur(im, (0, 0), sigmaX=8), "blurred"),
        (lambda im: (im * 0.15).astype(np.uint8), "under-exposed"),
        (lambda im: np.clip(im.astype(np.float32) * 3, 0, 255).astype(np.uint8), "over-exposed"),
        (lambda im: np.repeat(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2), "greyscale"),
        (lambda im: np.ascontiguousarray(im[..., ::-1]), "colour cast"),
        (lambda im: im[:40, :40], "too small"),
    ],
    ids=["uniform", "uniform+noise", "blur", "dark", "bright", "grey", "bgr", "small"],
)
def test_faults_are_rejected_with_their_reason(make, expected):
    found = reasons(make(textured()))
    assert expected in found, found
    assert set(found) <= set(REASON_LABELS)


def test_noise_is_not_a_quality_fault_but_blank_overrides_blur():
    # Noise is sharp and well exposed: the OOD detector, not the quality check, rejects it.
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    assert "blurred" not in reasons(noise)
    # A blank frame is reported as blank, not also as blurred or grey.
    assert reasons(np.full((200, 200, 3), 100, np.uint8)) == ["blank"]


def test_measures_do_not_depend_on_resolution():
    # The same scene photographed at twice the resolution (each pixel becomes 2 x 2).
    image = textured(400)
    large = cv2.resize(image, (800, 800), interpolation=cv2.INTER_NEAREST)
    a, b = quality_measures(large), quality_measures(image)
    assert a["sharpness"] == pytest.approx(b["sharpness"], rel=0.1)
    assert a["mean_brightness"] == pytest.approx(b["mean_brightness"], abs=1)


def test_config_thresholds_are_used():
    assert reasons(textured(), QualityConfig(min_side=1000)) == ["too small"]


@pytest.mark.parametrize(("image", "error", "match"), [
    (np.zeros((10, 10, 3), np.float32), TypeError, "uint8"),
    ([[0]], TypeError, "uint8"),
    (np.zeros((10, 10), np.uint8), ValueError, r"\(H, W, 3\)"),
    (np.zeros((10, 10, 4), np.uint8), ValueError, "RGBA"),
])
def test_bad_input_names_the_problem(image, error, match):
    with pytest.raises(error, match=match):
        check_quality(image)


@pytest.mark.realdata
def test_real_dermoscopic_images_pass(data_root):
    from dermdx.data.adapters import read_derm7pt, read_ph2
    from dermdx.data.images import load_image

    paths = read_ph2(data_root / "ph2/labels.csv").paths()[:10]
    paths += read_derm7pt(data_root / "derm7pt/labels.csv", modality="dermoscopy").paths()[:10]
    rejected = [p.name for p in paths if not check_quality(load_image(p)).ok]
    assert len(rejected) <= 1, rejected
