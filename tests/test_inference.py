from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermdx.checkpoint import file_sha256, load_model
from dermdx.data.adapters import read_images
from dermdx.inference import Predictor, predictions_frame


@pytest.fixture
def image_dir(tmp_path: Path, jpeg) -> Path:
    for k in range(5):
        jpeg(tmp_path / "imgs" / f"ISIC_{k:07d}.jpg", size=40, seed=k)
    return tmp_path / "imgs"


def test_isic2018_format_has_the_exact_header_and_rows_summing_to_one(isic_model_file, image_dir) -> None:
    result = Predictor.from_checkpoint(isic_model_file, batch_size=2).predict_manifest(read_images([image_dir]), progress=False)
    frame = predictions_frame(result, output_format="isic2018")
    assert list(frame.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert sorted(frame["image"]) == [f"ISIC_{k:07d}" for k in range(5)]
    assert np.allclose(frame.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-6)


def test_isic2018_columns_follow_class_names_not_positions(isic_model_file, image_dir) -> None:
    result = Predictor.from_checkpoint(isic_model_file).predict_manifest(read_images([image_dir]), progress=False)
    plain = predictions_frame(result)
    isic = predictions_frame(result, output_format="isic2018")
    assert np.allclose(plain["mel"].to_numpy(), isic["MEL"].to_numpy())
    assert np.allclose(plain["vasc"].to_numpy(), isic["VASC"].to_numpy())


def test_batch_size_does_not_change_predictions(isic_model_file, image_dir) -> None:
    manifest = read_images([image_dir])
    one = Predictor.from_checkpoint(isic_model_file, batch_size=1).predict_manifest(manifest, progress=False)
    four = Predictor.from_checkpoint(isic_model_file, batch_size=4).predict_manifest(manifest, progress=False)
    assert np.allclose(one.probs, four.probs, atol=1e-5)


def test_corrupt_image_raises_naming_it_unless_told_to_continue(isic_model_file, image_dir) -> None:
    bad = image_dir / "broken.jpg"
    data = (image_dir / "ISIC_0000000.jpg").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    (image_dir / "empty.png").write_bytes(b"")
    predictor = Predictor.from_checkpoint(isic_model_file)
    with pytest.raises(ValueError, match="broken.jpg: truncated or corrupt"):
        predictor.predict_manifest(read_images([image_dir]), progress=False)
    result = predictor.predict_manifest(read_images([image_dir]), continue_on_error=True, progress=False)
    assert len(result.probs) == 5
    assert {Path(p).name for p in result.errors} == {"broken.jpg", "empty.png"}
    assert "empty file" in result.errors[str(image_dir / "empty.png")]


def test_isic2018_needs_the_seven_classes(tiny_run_config, isic_model_file, image_dir) -> None:
    from dermdx.training import fit

    fit(tiny_run_config, stop_after=1)
    result = Predictor.from_checkpoint(Path(tiny_run_config.output_dir) / "model.safetensors").predict_manifest(read_images([image_dir]), progress=False)
    with pytest.raises(ValueError, match="needs a model with classes"):
        predictions_frame(result, output_format="isic2018")


def test_checkpoint_hash_is_checked(isic_model_file) -> None:
    load_model(isic_model_file, expected_sha256=file_sha256(isic_model_file))
    with pytest.raises(ValueError, match="differs from the expected"):
        load_model(isic_model_file, expected_sha256="0" * 64)


def test_a_non_model_file_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a safetensors model file"):
        load_model(fake)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(tmp_path / "missing.safetensors")


def test_unknown_output_format_is_named(isic_model_file, image_dir) -> None:
    result = Predictor.from_checkpoint(isic_model_file).predict_manifest(read_images([image_dir]), progress=False)
    with pytest.raises(ValueError, match="unknown output format 'isic2019'"):
        predictions_frame(result, output_format="isic2019")
    assert isinstance(predictions_frame(result), pd.DataFrame)


def test_tta_views_average_and_d4_is_rotation_invariant(isic_model_file, image_dir, tmp_path) -> None:
    from PIL import Image

    manifest = read_images([image_dir])
    plain = Predictor.from_checkpoint(isic_model_file).predict_manifest(manifest, progress=False).probs
    d4 = Predictor.from_checkpoint(isic_model_file, tta="d4").predict_manifest(manifest, progress=False).probs
    assert d4.shape == plain.shape and np.allclose(d4.sum(axis=1), 1.0) and not np.allclose(d4, plain)
    # Rotating the input by 90 degrees permutes the D4 views, so the averaged answer is unchanged.
    source = image_dir / "ISIC_0000001.jpg"
    rotated = tmp_path / "rot" / "ISIC_0000001.png"
    rotated.parent.mkdir()
    Image.open(source).rotate(90).save(rotated)
    lossless = tmp_path / "orig" / "ISIC_0000001.png"
    lossless.parent.mkdir()
    Image.open(source).save(lossless)
    predictor = Predictor.from_checkpoint(isic_model_file, tta="d4")
    a = predictor.predict_manifest(read_images([lossless]), progress=False).probs
    b = predictor.predict_manifest(read_images([rotated]), progress=False).probs
    assert np.allclose(a, b, atol=1e-5)


def test_unknown_tta_is_named(isic_model_file) -> None:
    with pytest.raises(ValueError, match="unknown test-time augmentation 'd8'"):
        Predictor.from_checkpoint(isic_model_file, tta="d8")


def test_features_are_the_input_of_the_classifier(isic_model_file, image_dir) -> None:
    import torch

    predictor = Predictor.from_checkpoint(isic_model_file, batch_size=2)
    manifest = read_images([image_dir])
    features = predictor.predict_features(manifest)
    assert features.shape[0] == 5 and features.ndim == 2
    classifier = predictor.model.get_classifier()
    with torch.no_grad():
        logits = classifier(torch.from_numpy(features)).numpy()
    assert np.allclose(logits, predictor.predict_logits(manifest), atol=1e-4)
