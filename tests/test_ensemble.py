from pathlib import Path

import numpy as np
import pytest
import torch

from dermdx.checkpoint import ModelInfo, save_model
from dermdx.config import PreprocessConfig
from dermdx.data.adapters import read_images
from dermdx.ensemble import EnsemblePredictor
from dermdx.inference import Predictor
from dermdx.models import create_model


def _model_file(path: Path, classes: list[str], size: int, seed: int) -> Path:
    torch.manual_seed(seed)
    model = create_model("test_efficientnet", num_classes=len(classes))
    save_model(path, model, ModelInfo("test_efficientnet", classes, PreprocessConfig(image_size=size)))
    return path


@pytest.fixture
def images(tmp_path, jpeg) -> Path:
    for k in range(4):
        jpeg(tmp_path / "imgs" / f"i{k}.jpg", size=40, seed=k)
    return tmp_path / "imgs"


def test_ensemble_is_the_weighted_mean_with_classes_matched_by_name(tmp_path, images) -> None:
    a = _model_file(tmp_path / "a.safetensors", ["bcc", "mel", "nv"], 32, 0)
    b = _model_file(tmp_path / "b.safetensors", ["nv", "bcc", "mel"], 48, 1)  # other order and size
    manifest = read_images([images])
    pa = Predictor.from_checkpoint(a).predict_manifest(manifest, progress=False)
    pb = Predictor.from_checkpoint(b).predict_manifest(manifest, progress=False)
    pb_aligned = pb.probs[:, [pb.classes.index(c) for c in pa.classes]]
    ensemble = EnsemblePredictor.from_checkpoints([a, b], weights=[3, 1]).predict_manifest(manifest, progress=False)
    assert ensemble.classes == ["bcc", "mel", "nv"]
    assert np.allclose(ensemble.probs, 0.75 * pa.probs + 0.25 * pb_aligned)


def test_members_with_other_classes_are_refused(tmp_path) -> None:
    a = _model_file(tmp_path / "a.safetensors", ["bcc", "mel", "nv"], 32, 0)
    b = _model_file(tmp_path / "b.safetensors", ["mel", "nv"], 32, 0)
    with pytest.raises(ValueError, match="must share classes"):
        EnsemblePredictor.from_checkpoints([a, b])
    with pytest.raises(ValueError, match="one non-negative weight per member"):
        EnsemblePredictor.from_checkpoints([a, a], weights=[1.0])


def test_unreadable_image_is_listed_once(tmp_path, images) -> None:
    (images / "bad.jpg").write_bytes(b"\xff\xd8nope")
    a = _model_file(tmp_path / "a.safetensors", ["bcc", "mel", "nv"], 32, 0)
    result = EnsemblePredictor.from_checkpoints([a, a]).predict_manifest(read_images([images]), continue_on_error=True, progress=False)
    assert len(result.probs) == 4 and list(result.errors) == [str(images / "bad.jpg")]


def test_the_ensemble_temperature_rescales_the_mean_and_keeps_the_class(tmp_path, images) -> None:
    from dermdx.calibration import apply_temperature

    a = _model_file(tmp_path / "a.safetensors", ["bcc", "mel", "nv"], 32, 0)
    b = _model_file(tmp_path / "b.safetensors", ["bcc", "mel", "nv"], 48, 1)
    manifest = read_images([images])
    plain = EnsemblePredictor.from_checkpoints([a, b]).predict_manifest(manifest, progress=False)
    sharp = EnsemblePredictor.from_checkpoints([a, b], temperature=0.25)
    tempered = sharp.predict_manifest(manifest, progress=False)
    np.testing.assert_allclose(tempered.probs, apply_temperature(np.log(plain.probs), 0.25), atol=1e-9)
    assert np.array_equal(tempered.probs.argmax(axis=1), plain.probs.argmax(axis=1))
    assert (tempered.probs.max(axis=1) > plain.probs.max(axis=1)).all(), "T < 1 must sharpen every row"
    assert sharp.sha256 != EnsemblePredictor.from_checkpoints([a, b]).sha256
    with pytest.raises(ValueError, match="positive number"):
        EnsemblePredictor.from_checkpoints([a, b], temperature=0.0)


def test_rows_without_metadata_get_their_own_temperature(tmp_path, images) -> None:
    from dermdx.calibration import apply_temperature

    a = _model_file(tmp_path / "a.safetensors", ["bcc", "mel", "nv"], 32, 0)
    b = _model_file(tmp_path / "b.safetensors", ["bcc", "mel", "nv"], 48, 1)
    manifest = read_images([images])
    manifest.frame["age"] = [55.0, np.nan, np.nan, np.nan]
    manifest.frame["sex"] = ["", "female", "", "unknown"]
    manifest.frame["site"] = ["", "", "back", ""]
    assert manifest.metadata_given().tolist() == [True, True, True, False]
    plain = EnsemblePredictor.from_checkpoints([a, b]).predict_manifest(manifest, progress=False)
    both = EnsemblePredictor.from_checkpoints([a, b], temperature=0.5, temperature_without_metadata=2.0)
    tempered = both.predict_manifest(manifest, progress=False)
    log_plain = np.log(plain.probs)
    np.testing.assert_allclose(tempered.probs[:3], apply_temperature(log_plain[:3], 0.5), atol=1e-9)
    np.testing.assert_allclose(tempered.probs[3:], apply_temperature(log_plain[3:], 2.0), atol=1e-9)
    blank = both.predict_manifest(manifest.without_metadata(), progress=False)
    np.testing.assert_allclose(blank.probs, apply_temperature(log_plain, 2.0), atol=1e-9)
    assert both.sha256 != EnsemblePredictor.from_checkpoints([a, b], temperature=0.5).sha256
    with pytest.raises(ValueError, match="without metadata must be a positive number"):
        EnsemblePredictor.from_checkpoints([a, b], temperature_without_metadata=-1.0)
