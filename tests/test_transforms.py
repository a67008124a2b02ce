import numpy as np
import pytest
import torch

from dermdx.config import PreprocessConfig
from dermdx.data.transforms import build_transform, remove_hair, shades_of_gray


def test_shades_of_gray_removes_a_colour_cast() -> None:
    rng = np.random.default_rng(0)
    scene = rng.integers(60, 200, (64, 64, 3)).astype(np.float32)
    cast = np.clip(scene * np.array([1.3, 1.0, 0.7]), 0, 255).astype(np.uint8)
    corrected = shades_of_gray(cast).astype(np.float32)
    spread = lambda img: np.ptp(img.reshape(-1, 3).mean(axis=0))  # noqa: E731
    assert spread(corrected) < 0.25 * spread(cast.astype(np.float32))


def test_hair_removal_erases_a_dark_line_and_keeps_the_rest() -> None:
    skin = np.full((64, 64, 3), (200, 150, 130), dtype=np.uint8)
    hairy = skin.copy()
    hairy[:, 30:32] = 20
    cleaned = remove_hair(hairy)
    assert cleaned[:, 30:32].mean() > 150
    assert np.abs(cleaned.astype(int) - skin.astype(int))[:, :20].max() <= 2


@pytest.mark.parametrize("train", [True, False])
def test_preset_outputs_normalised_tensor_of_the_configured_size(train: bool) -> None:
    config = PreprocessConfig(image_size=48, hair_removal=True)
    image = np.random.default_rng(0).integers(0, 256, (100, 80, 3), dtype=np.uint8)
    tensor = build_transform(config, train=train)(image)
    assert tensor.shape == (3, 48, 48) and tensor.dtype == torch.float32
    assert tensor.min() >= -1.0 - 1e-5 and tensor.max() <= 1.0 + 1e-5


def test_evaluation_preset_is_deterministic_and_training_preset_follows_torch_seed() -> None:
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    evaluate = build_transform(PreprocessConfig(image_size=32), train=False)
    assert torch.equal(evaluate(image), evaluate(image))
    train = build_transform(PreprocessConfig(image_size=32), train=True)
    torch.manual_seed(3)
    a = train(image)
    torch.manual_seed(3)
    assert torch.equal(a, train(image))
    assert not torch.equal(a, train(image))


def test_unknown_modality_is_named() -> None:
    with pytest.raises(ValueError, match="no preprocessing preset for modality 'ultrasoud'"):
        build_transform(PreprocessConfig(modality="ultrasoud"), train=False)
