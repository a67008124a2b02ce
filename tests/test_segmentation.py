"""Lesion segmenter: network, offline encoder weights, model file, post-processing, training, shipped model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

pytest.importorskip("segmentation_models_pytorch")

from dermdx import segmentation as seg
from dermdx.checkpoint import file_sha256
from dermdx.data.manifest import Manifest, empty_frame
from dermdx.models.segmentation import SegmentationNetConfig, create_segmentation_model, encoder_features
from dermdx.segmentation import Segmenter, SegmentationInfo, largest_component, save_segmentation_model
from dermdx.segmentation_training import (
    MaskedImages,
    SegmentationTrainConfig,
    dice_iou,
    load_masked_images,
    score_masks,
    train_segmenter,
)

TINY = SegmentationNetConfig(encoder="test_efficientnet", decoder_channels=(16, 8, 8, 8, 8))


def disk_image(height: int = 48, width: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A skin-coloured noisy image with a dark disk, and the disk as the mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    cy, cx = height / 2 + rng.uniform(-4, 4), width / 2 + rng.uniform(-4, 4)
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (min(height, width) / 4) ** 2
    image = np.where(mask[..., None], (90, 50, 30), (220, 170, 150)) + rng.normal(0, 10, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = create_segmentation_model(TINY)
    path = tmp_path / "seg.safetensors"
    save_segmentation_model(path, model, SegmentationInfo(net=TINY, image_size=32))
    return path


def test_tiny_unet_gives_one_logit_per_pixel():
    model = create_segmentation_model(TINY).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 64, 64))
    assert out.shape == (2, 1, 64, 64)
    assert torch.isfinite(out).all()


def test_encoder_gets_the_classifier_backbones_imagenet_weights():
    from dermdx.models import create_model

    unet = create_segmentation_model(pretrained=True)
    classifier = create_model("tf_efficientnet_lite0", num_classes=7, pretrained=True).state_dict()
    encoder = encoder_features(unet).state_dict()
    assert len(encoder) > 250
    for key, tensor in encoder.items():
        assert torch.equal(tensor, classifier[key]), key


def test_unknown_encoder_and_missing_offline_weights_are_named():
    with pytest.raises(ValueError, match="unknown encoder 'tf_efficientnet_lite9'"):
        create_segmentation_model(SegmentationNetConfig(encoder="tf_efficientnet_lite9"))
    with pytest.raises(ValueError, match="no offline ImageNet weights for encoder 'test_efficientnet'"):
        create_segmentation_model(TINY, pretrained=True)
    with pytest.raises(ValueError, match="decoder_channels needs 5 widths"):
        create_segmentation_model(SegmentationNetConfig(decoder_channels=(16, 8)))


def test_largest_component_keeps_the_biggest_region_with_holes_filled():
    mask = np.zeros((40, 40), bool)
    mask[5:25, 5:25] = True
    mask[12:16, 12:16] = False  # a hole
    mask[30:35, 30:35] = True  # a smaller island
    out = largest_component(mask)
    assert out[14, 14] and not out[32, 32]
    assert out.sum() == 400
    assert not largest_component(np.zeros((5, 5), bool)).any()


def test_segment_returns_a_bool_mask_at_the_images_size(tiny_model_file: Path):
    segmenter = Segmenter.from_file(tiny_model_file)
    image, _ = disk_image(50, 70)
    mask = segmenter.segment(image)
    assert mask.shape == (50, 70) and mask.dtype == bool
    probs = segmenter.probabilities(image)
    assert probs.shape == (50, 70) and 0.0 <= probs.min() <= probs.max() <= 1.0
    assert segmenter.sha256 == file_sha256(tiny_model_file)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((32, 32), np.uint8), ValueError, r"RGB uint8 array \[H, W, 3\], got uint8 \(32, 32\)"),
        (np.zeros((32, 32, 3), np.float32), ValueError, "got float32"),
        (np.zeros((32, 32, 4), np.uint8), ValueError, r"\(32, 32, 4\)"),
        ([[0, 0, 0]], TypeError, "must be a numpy array"),
    ],
)
def test_bad_images_are_refused(tiny_model_file: Path, image, error, match):
    with pytest.raises(error, match=match):
        Segmenter.from_file(tiny_model_file).segment(image)


def test_missing_corrupt_and_replaced_files_are_refused(tiny_model_file: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="segmentation model file not found"):
        Segmenter.from_file(tmp_path / "nope.safetensors")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(tiny_model_file.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Segmenter.from_file(broken)
    with pytest.raises(ValueError, match="differs from the expected"):
        Segmenter.from_file(tiny_model_file, expected_sha256="0" * 64)


def test_weights_that_do_not_fit_the_description_are_refused(tmp_path: Path):
    path = tmp_path / "wrong.safetensors"
    other = SegmentationNetConfig(encoder="test_efficientnet", decoder_channels=(8, 8, 8, 8, 8))
    save_segmentation_model(path, create_segmentation_model(other), SegmentationInfo(net=TINY, image_size=32))
    with pytest.raises(ValueError, match="weights do not fit the described network"):
        Segmenter.from_file(path)


def test_default_segmenter_checks_the_released_sha(tiny_model_file: Path, tmp_path: Path, monkeypatch):
    weights = tmp_path / "segmentation.safetensors"
    weights.write_bytes(tiny_model_file.read_bytes())
    record = tmp_path / "segmentation.json"
    record.write_text(json.dumps({"sha256": file_sha256(weights)}))
    monkeypatch.setattr(seg, "DEFAULT_SEGMENTER", weights)
    monkeypatch.setattr(seg, "DEFAULT_SEGMENTER_RECORD", record)
    assert Segmenter.default().info.image_size == 32
    record.write_text(json.dumps({"sha256": "f" * 64}))
    with pytest.raises(ValueError, match="differs from the released"):
        Segmenter.default()
    record.unlink()
    with pytest.raises(FileNotFoundError, match="no segmentation model ships"):
        Segmenter.default()


def test_dice_and_iou_on_known_overlaps():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :5] = True
    b[:, :5] = True
    assert dice_iou(a, b) == (1.0, 1.0)
    b[:] = False
    b[:, 2:7] = True  # 30 shared of 50 + 50
    assert dice_iou(a, b) == pytest.approx((0.6, 30 / 70))
    assert dice_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == (1.0, 1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        dice_iou(a, np.zeros((5, 5), bool))
    with pytest.raises(ValueError, match="2 predicted masks for 1"):
        score_masks([a, a], [a])


def test_training_a_tiny_unet_learns_a_dark_disk():
    pairs = [disk_image(seed=s) for s in range(8)]
    data = MaskedImages([f"img{s}" for s in range(8)], [p[0] for p in pairs], [p[1] for p in pairs], "fp")
    config = SegmentationTrainConfig(encoder="test_efficientnet", decoder_channels=(16, 8, 8, 8, 8), pretrained=False, image_size=32, epochs=25, batch_size=4, lr=1e-2)
    model, info = train_segmenter(config, data)
    assert info.data_fingerprint == "fp" and info.image_size == 32
    masks = [Segmenter(model, info).segment(image) for image in data.images]
    assert score_masks(masks, data.masks)["dice"].mean() > 0.6


def test_segmenter_training_on_a_missing_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    pairs = [disk_image(seed=s) for s in range(2)]
    data = MaskedImages(["a", "b"], [p[0] for p in pairs], [p[1] for p in pairs], "fp")
    config = SegmentationTrainConfig(encoder="test_efficientnet", pretrained=False, image_size=32, epochs=1, device="cuda")
    with pytest.raises(ValueError, match="no usable CUDA GPU"):
        train_segmenter(config, data)


def _manifest(tmp_path: Path, mask: np.ndarray | None) -> Manifest:
    image, _ = disk_image(20, 30)
    Image.fromarray(image).save(tmp_path / "a.png")
    frame = empty_frame(1)
    frame["image"], frame["image_id"] = "a.png", "a"
    if mask is not None:
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "a_mask.png")
        frame["mask_path"] = "a_mask.png"
    return Manifest(frame, tmp_path, source="fake.csv")


def test_masks_that_do_not_fit_their_image_are_named(tmp_path: Path):
    with pytest.raises(ValueError, match="no 'mask_path' column"):
        load_masked_images(_manifest(tmp_path, None))
    with pytest.raises(ValueError, match=r"a_mask.png: mask is 10x10 but .*a.png is 30x20"):
        load_masked_images(_manifest(tmp_path, np.ones((10, 10), bool)))
    with pytest.raises(ValueError, match="empty mask"):
        load_masked_images(_manifest(tmp_path, np.zeros((20, 30), bool)))
    data = load_masked_images(_manifest(tmp_path, np.ones((20, 30), bool)))
    assert data.masks[0].all() and data.images[0].shape == (20, 30, 3)


@pytest.mark.realdata
def test_shipped_segmenter_on_ph2_training_images(data_root: Path):
    """Smoke test, not a measurement: the shipped model was trained on all 80 PH2 images."""
    if not seg.DEFAULT_SEGMENTER_RECORD.is_file():
        pytest.fail("no shipped segmenter: run scripts/ship_segmentation_model.py")
    from dermdx.data.images import load_image
    from dermdx.segmentation_training import load_mask

    labels = pd.read_csv(data_root / "ph2" / "labels.csv").iloc[::20]  # 4 images
    segmenter = Segmenter.default()
    dice = []
    for row in labels.itertuples():
        image = load_image(data_root / "ph2" / row.image_path)
        mask = segmenter.segment(image)
        dice.append(dice_iou(mask, load_mask(data_root / "ph2" / row.mask_path))[0])
    assert np.mean(dice) > 0.8, dice

