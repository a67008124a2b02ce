import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from dermdx.calibration import apply_temperature, calibrate_model, fit_temperature, negative_log_likelihood, predict_logits, selection_rows
from dermdx.checkpoint import ModelInfo, file_sha256, read_info, rewrite_info
from dermdx.config import ISIC2018_CLASSES
from dermdx.data.adapters import read_images
from dermdx.inference import Predictor
from dermdx.metrics import expected_calibration_error


def _calibrated_logits(n: int = 4000, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true label distribution: a perfectly calibrated model."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (n, classes))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in probs])
    return logits, labels


def test_over_confident_logits_get_a_temperature_above_one_and_a_lower_ece() -> None:
    logits, labels = _calibrated_logits()
    sharp = 3.0 * logits
    t = fit_temperature(sharp, labels)
    assert 2.5 < t < 3.5
    before = expected_calibration_error(labels, apply_temperature(sharp, 1.0))
    after = expected_calibration_error(labels, apply_temperature(sharp, t))
    assert after < before / 3
    assert negative_log_likelihood(sharp, labels, t) < negative_log_likelihood(sharp, labels, 1.0)


def test_well_calibrated_logits_keep_a_temperature_near_one() -> None:
    logits, labels = _calibrated_logits(seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)


def test_under_confident_logits_get_a_temperature_below_one() -> None:
    logits, labels = _calibrated_logits(seed=2)
    assert fit_temperature(logits / 2.0, labels) == pytest.approx(0.5, abs=0.08)


def test_temperature_never_changes_the_predicted_class() -> None:
    logits, _ = _calibrated_logits(n=500)
    for t in (0.3, 1.0, 4.0):
        assert np.array_equal(apply_temperature(logits, t).argmax(axis=1), logits.argmax(axis=1))
    assert np.allclose(apply_temperature(logits, 2.0).sum(axis=1), 1.0)


def test_separable_data_sharpens_within_the_bounds() -> None:
    from dermdx.calibration import MIN_TEMPERATURE

    logits = np.array([[5.0, 0.0], [0.0, 5.0]] * 10)
    labels = np.array([0, 1] * 10)
    assert MIN_TEMPERATURE <= fit_temperature(logits, labels) < 1.0


def test_bad_inputs_are_named() -> None:
    logits = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"one class index per logits row \(4\)"):
        fit_temperature(logits, np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"labels\[1\] = 3 is outside 0..2"):
        fit_temperature(logits, np.array([0, 3, 1, 2]))
    with pytest.raises(TypeError, match="integer class indices"):
        fit_temperature(logits, np.array(["mel", "nv", "mel", "nv"]))
    with pytest.raises(ValueError, match="non-finite"):
        fit_temperature(np.array([[0.0, np.nan], [1.0, 0.0]]), np.array([0, 1]))
    with pytest.raises(ValueError, match="validation rows are empty"):
        fit_temperature(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="positive number"):
        apply_temperature(logits, 0.0)


def test_model_info_round_trips_calibration_and_reads_old_files() -> None:
    from dermdx.config import PreprocessConfig

    info = ModelInfo(model_name="m", classes=["a", "b"], preprocess=PreprocessConfig(), calibration={"temperature": 1.7, "abstention": {"min_confidence": 0.6}})
    assert ModelInfo.from_json(info.to_json(), where="x").calibration == info.calibration
    old = json.loads(info.to_json())
    del old["calibration"]
    assert ModelInfo.from_json(json.dumps(old), where="x").calibration is None


@pytest.fixture
def labelled_images(tmp_path: Path, jpeg):
    classes = sorted(ISIC2018_CLASSES)
    paths = [jpeg(tmp_path / "val" / f"{name}_{k}.jpg", size=32, seed=10 * i + k) for i, name in enumerate(classes) for k in range(2)]
    manifest = read_images(paths)
    manifest.frame["label"] = [p.stem.rsplit("_", 1)[0] for p in paths]
    return manifest


def test_calibrate_model_stores_the_temperature_and_predictions_follow_it(isic_model_file, labelled_images, tmp_path: Path) -> None:
    weights = load_file(str(isic_model_file))
    plain = Predictor.from_checkpoint(isic_model_file).predict_manifest(labelled_images, progress=False)
    old_sha = file_sha256(isic_model_file)

    result = calibrate_model(isic_model_file, labelled_images, tmp_path / "cal", description="test rows")

    for name in ("calibration.json", "reliability_before.png", "reliability_after.png", "risk_coverage.png"):
        assert (tmp_path / "cal" / name).is_file(), name
    assert result["sha256_before"] == old_sha != result["sha256_after"] == file_sha256(isic_model_file)
    stored = read_info(isic_model_file).calibration
    assert stored["temperature"] == result["temperature"]
    assert stored["abstention"]["target_coverage"] == 0.8 and "test rows" in stored["abstention"]["source"]
    assert stored["n_images"] == 14 and stored["ece_before"] >= 0 and stored["ece_after"] >= 0
    # Weights unchanged, byte for byte.
    after = load_file(str(isic_model_file))
    assert weights.keys() == after.keys() and all((weights[k] == after[k]).all() for k in weights)

    predictor = Predictor.from_checkpoint(isic_model_file)
    assert predictor.temperature == result["temperature"]
    calibrated = predictor.predict_manifest(labelled_images, progress=False)
    expected = apply_temperature(predict_logits(predictor, labelled_images), result["temperature"])
    assert np.allclose(calibrated.probs, expected, atol=1e-5)
    assert np.array_equal(calibrated.probs.argmax(axis=1), plain.probs.argmax(axis=1))
    if abs(result["temperature"] - 1.0) > 1e-3:
        assert not np.allclose(calibrated.probs, plain.probs, atol=1e-6)


def test_save_as_leaves_the_original_alone(isic_model_file, labelled_images, tmp_path: Path) -> None:
    old_sha = file_sha256(isic_model_file)
    result = calibrate_model(isic_model_file, labelled_images, tmp_path / "cal", save_as=tmp_path / "calibrated.safetensors")
    assert file_sha256(isic_model_file) == old_sha and read_info(isic_model_file).calibration is None
    assert read_info(tmp_path / "calibrated.safetensors").calibration["temperature"] == result["temperature"]


def test_rewrite_info_refuses_another_network(isic_model_file) -> None:
    info = read_info(isic_model_file)
    info.classes = list(reversed(info.classes))
    with pytest.raises(ValueError, match="changes classes"):
        rewrite_info(isic_model_file, info)


def test_calibrate_cli_fits_on_the_selection_split(tiny_run_config, tmp_path: Path) -> None:
    from dermdx.cli import main
    from dermdx.config import save_config
    from dermdx.training import fit, prepare_data

    fit(tiny_run_config, stop_after=1)
    model = Path(tiny_run_config.output_dir) / "model.safetensors"
    config_file = tmp_path / "run.yaml"
    save_config(tiny_run_config, config_file)

    rows = selection_rows(tiny_run_config, read_info(model))
    data = prepare_data(tiny_run_config)
    held_out = set(data.manifest.subset(data.test_idx).frame["image_id"])
    assert len(rows) > 0 and not held_out & set(rows.frame["image_id"])

    assert main(["calibrate", "--model", str(model), "--config", str(config_file), "--out", str(tmp_path / "cal")]) == 0
    written = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert written["n_images"] == len(rows)
    assert read_info(model).calibration["temperature"] == written["temperature"]

    other = read_info(model)
    other.data_fingerprint = "0" * 16
    with pytest.raises(ValueError, match="trained on other rows"):
        selection_rows(tiny_run_config, other)

    # Several --model: one temperature for their mean, on the same selection rows, in its own file.
    ensemble_args = ["calibrate", "--model", str(model), "--model", str(model), "--config", str(config_file), "--tta", "flip"]
    assert main([*ensemble_args, "--out", str(tmp_path / "ens")]) == 0
    ensemble = json.loads((tmp_path / "ens" / "ensemble_calibration.json").read_text())
    assert ensemble["n_images"] == len(rows) and ensemble["tta"] == "flip" and ensemble["temperature"] > 0
    assert ensemble["members_sha256"] == [file_sha256(model)] * 2
    assert main([*ensemble_args, "--out", str(tmp_path / "ens2"), "--save-as", str(tmp_path / "x.safetensors")]) == 2


def test_class_bias_recovers_a_shifted_rare_class() -> None:
    from dermdx.calibration import fit_class_bias
    from dermdx.metrics import balanced_accuracy

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(400, int), np.ones(40, int)]
    scores = rng.normal(0, 1, (440, 2))
    scores[labels == 1, 1] += 2.0
    scores[:, 1] -= 2.5  # the rare class is under-called, as after imbalanced training
    log_probs = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
    bias = fit_class_bias(log_probs, labels)
    assert balanced_accuracy(labels, (log_probs + bias).argmax(1)) > balanced_accuracy(labels, log_probs.argmax(1)) + 0.1
    assert bias[1] - bias[0] > 1.0


def test_predictor_applies_the_stored_class_bias(isic_model_file, tmp_path, jpeg) -> None:
    from dermdx.checkpoint import read_info, rewrite_info
    from dermdx.data.adapters import read_images
    from dermdx.inference import Predictor

    images = read_images([jpeg(tmp_path / "a.jpg", size=40)])
    plain = Predictor.from_checkpoint(isic_model_file).predict_manifest(images, progress=False).probs[0]
    info = read_info(isic_model_file)
    bias = np.zeros(len(info.classes))
    bias[0] = 1.0
    info.calibration = {"method": "temperature", "temperature": 1.0, "class_bias": bias.tolist()}
    rewrite_info(isic_model_file, info)
    adjusted = Predictor.from_checkpoint(isic_model_file).predict_manifest(images, progress=False).probs[0]
    expected = plain * np.exp(bias)
    assert np.allclose(adjusted, expected / expected.sum(), atol=1e-5)


def _copy_with_other_weights(source: Path, target: Path, seed: int) -> Path:
    import torch

    from dermdx.checkpoint import save_model
    from dermdx.models import create_model

    info = read_info(source)
    torch.manual_seed(seed)
    save_model(target, create_model(info.model_name, num_classes=len(info.classes)), info)
    return target


def test_calibrate_ensemble_fits_one_temperature_for_the_mean(isic_model_file, labelled_images, tmp_path: Path) -> None:
    from dermdx.calibration import calibrate_ensemble, read_ensemble_calibration
    from dermdx.ensemble import EnsemblePredictor

    other = _copy_with_other_weights(isic_model_file, tmp_path / "other.safetensors", seed=1)
    ensemble = EnsemblePredictor.from_checkpoints([isic_model_file, other])
    result = calibrate_ensemble(ensemble, labelled_images, tmp_path / "cal", description="test rows")
    written = tmp_path / "cal" / "ensemble_calibration.json"
    assert written.is_file() and (tmp_path / "cal" / "reliability_after.png").is_file()
    assert result["n_images"] == 14 and result["tta"] == "none" and "test rows" in result["fitted_on"]
    assert result["nll_after"] <= result["nll_before"] + 1e-9, "the fitted temperature minimises the NLL on these rows"
    mean = ensemble.member_mean(labelled_images, progress=False).probs
    assert result["temperature"] == pytest.approx(fit_temperature(np.log(mean), labelled_images.label_indices(ensemble.classes)))

    record = read_ensemble_calibration(written, [m.sha256 for m in ensemble.members])
    assert record["temperature"] == result["temperature"]
    with pytest.raises(ValueError, match="fitted for other member models"):
        read_ensemble_calibration(written, [m.sha256 for m in reversed(ensemble.members)])
    (tmp_path / "bad.json").write_text("{\"temperature\": 2}")
    with pytest.raises(ValueError, match="not an ensemble calibration"):
        read_ensemble_calibration(tmp_path / "bad.json", [])


def test_calibrate_ensemble_with_a_fusion_member_fits_a_second_temperature_without_metadata(
    fusion_model_file, isic_model_file, labelled_images, tmp_path: Path
) -> None:
    from dermdx.calibration import calibrate_ensemble, read_ensemble_calibration
    from dermdx.ensemble import EnsemblePredictor

    labelled_images.frame["age"] = [30.0 + 3 * k for k in range(len(labelled_images.frame))]
    labelled_images.frame["sex"] = ["female", "male"] * (len(labelled_images.frame) // 2)
    labelled_images.frame["site"] = ["back", "face"] * (len(labelled_images.frame) // 2)
    ensemble = EnsemblePredictor.from_checkpoints([fusion_model_file, isic_model_file])
    result = calibrate_ensemble(ensemble, labelled_images, tmp_path / "cal", description="test rows")
    labels = labelled_images.label_indices(ensemble.classes)
    given = ensemble.member_mean(labelled_images, progress=False).probs
    hidden = ensemble.member_mean(labelled_images.without_metadata(), progress=False).probs
    assert not np.allclose(given, hidden), "the fusion members must react to metadata for this test to mean anything"
    assert result["temperature"] == pytest.approx(fit_temperature(np.log(given), labels))
    assert result["temperature_without_metadata"] == pytest.approx(fit_temperature(np.log(hidden), labels))
    assert result["without_metadata"]["nll_after"] <= result["without_metadata"]["nll_before"] + 1e-9
    assert (tmp_path / "cal" / "reliability_after_without_metadata.png").is_file()
    record = read_ensemble_calibration(tmp_path / "cal" / "ensemble_calibration.json", [m.sha256 for m in ensemble.members])
    assert record["temperature_without_metadata"] == result["temperature_without_metadata"]
    record["temperature_without_metadata"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="temperature_without_metadata 0 is not a positive number"):
        read_ensemble_calibration(tmp_path / "bad.json", record["members_sha256"])


def test_image_only_ensembles_get_no_second_temperature(isic_model_file, labelled_images, tmp_path: Path) -> None:
    from dermdx.calibration import calibrate_ensemble
    from dermdx.ensemble import EnsemblePredictor

    ensemble = EnsemblePredictor.from_checkpoints([isic_model_file, _copy_with_other_weights(isic_model_file, tmp_path / "o.safetensors", seed=1)])
    result = calibrate_ensemble(ensemble, labelled_images, tmp_path / "cal")
    assert result["temperature_without_metadata"] is None and result["without_metadata"] is None


def test_predict_applies_an_ensemble_calibration_only_to_its_members(isic_model_file, labelled_images, tmp_path: Path, capsys) -> None:
    import pandas as pd

    from dermdx.cli import main

    other = _copy_with_other_weights(isic_model_file, tmp_path / "other.safetensors", seed=1)
    cal = tmp_path / "cal"
    models = ["--model", str(isic_model_file), "--model", str(other)]
    images = [str(p) for p in labelled_images.paths()[:3]]
    common = [*images, *models, "--workers", "0", "--tta", "none", "--format", "isic2018"]
    assert main(["predict", *common, "--out", str(tmp_path / "plain.csv")]) == 0
    record = {"temperature": 0.3, "members_sha256": [file_sha256(isic_model_file), file_sha256(other)]}
    cal.mkdir()
    (cal / "ensemble_calibration.json").write_text(json.dumps(record))
    assert main(["predict", *common, "--ensemble-calibration", str(cal / "ensemble_calibration.json"), "--out", str(tmp_path / "t.csv")]) == 0
    plain = pd.read_csv(tmp_path / "plain.csv").iloc[:, 1:].to_numpy(float)
    tempered = pd.read_csv(tmp_path / "t.csv").iloc[:, 1:].to_numpy(float)
    np.testing.assert_allclose(tempered, apply_temperature(np.log(plain), 0.3), atol=1e-4)
    swapped = [*images, "--model", str(other), "--model", str(isic_model_file), "--workers", "0", "--tta", "none"]
    assert main(["predict", *swapped, "--ensemble-calibration", str(cal / "ensemble_calibration.json"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "fitted for other member models" in capsys.readouterr().err
    assert main(["predict", images[0], "--model", str(other), "--ensemble-calibration", str(cal / "ensemble_calibration.json"), "--out", str(tmp_path / "x.csv")]) == 2
    assert "for several --model files" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
