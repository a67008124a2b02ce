"""The shipped single network and classifier ensemble: present with matching hashes, or a clear 'none ships yet'."""

import shutil

import pytest

import dermdx.default_model as default_model
from dermdx.checkpoint import file_sha256


def test_a_shipped_model_matches_its_recorded_hash_and_size_limit() -> None:
    if not default_model.DEFAULT_RECORD.is_file():
        with pytest.raises(FileNotFoundError, match="no default model ships"):
            default_model.default_model_path()
        pytest.skip("no default model ships in this version")
    record = default_model.default_model_record()
    path = default_model.default_model_path()
    assert file_sha256(path) == record["sha256"]
    assert path.stat().st_size <= 25 * 1024 * 1024
    assert record["classes"] == ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"]


def test_a_replaced_default_model_is_refused(tmp_path, isic_model_file, monkeypatch) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    shutil.copyfile(isic_model_file, weights / "default.safetensors")
    (weights / "default.json").write_text('{"sha256": "%s"}' % ("0" * 64))
    monkeypatch.setattr(default_model, "DEFAULT_MODEL", weights / "default.safetensors")
    monkeypatch.setattr(default_model, "DEFAULT_RECORD", weights / "default.json")
    with pytest.raises(ValueError, match="damaged or replaced"):
        default_model.default_model_path()
    (weights / "default.json").write_text('{"sha256": "%s"}' % file_sha256(isic_model_file))
    assert default_model.default_model_path() == weights / "default.safetensors"


def _ship_script():
    """scripts/ship_default_model.py as a module (it is a script, not part of the package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "ship_default_model.py"
    spec = importlib.util.spec_from_file_location("ship_default_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _calibrated_copy(source, target, temperature: float):
    """``source`` with a calibration temperature recorded, as ``dermdx calibrate`` would leave it."""
    from safetensors.torch import load_file

    from dermdx.checkpoint import read_info, save_model
    from dermdx.models import create_model

    info = read_info(source)
    info.calibration = {"method": "temperature", "temperature": temperature}
    model = create_model(info.model_name, num_classes=len(info.classes))
    model.load_state_dict(load_file(str(source)))
    save_model(target, model, info)
    return target


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    """The package's weights folder, moved to tmp_path for the script and the loader alike."""
    weights = tmp_path / "weights"
    weights.mkdir()
    ship = _ship_script()
    for module in (default_model, ship):
        monkeypatch.setattr(module, "WEIGHTS_DIR", weights)
        monkeypatch.setattr(module, "DEFAULT_ENSEMBLE_RECORD", weights / "default_ensemble.json")
    return weights, ship


def test_the_shipped_classifier_matches_its_recorded_hashes() -> None:
    if not default_model.DEFAULT_ENSEMBLE_RECORD.is_file():
        pytest.skip("no default classifier ships in this version")
    record = default_model.default_classifier_record()
    paths = default_model.default_classifier_paths()
    assert len(paths) == len(record["members"]) >= 1
    for path, member in zip(paths, record["members"], strict=True):
        assert file_sha256(path) == member["sha256"]
        assert path.stat().st_size <= 25 * 1024 * 1024
        assert member["classes"] == record["classes"] == ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"]
        assert member["calibration"]["temperature"] > 0


def test_an_ensemble_ships_and_a_replaced_member_is_refused(tmp_path, isic_model_file, weights_dir) -> None:
    _, ship = weights_dir
    with pytest.raises(FileNotFoundError, match="no default classifier ships"):
        default_model.default_classifier_paths()
    first = _calibrated_copy(isic_model_file, tmp_path / "a.safetensors", 1.5)
    second = _calibrated_copy(isic_model_file, tmp_path / "b.safetensors", 2.0)
    ship.ship_ensemble([str(first), str(second)], ["a.yaml", "b.yaml"], None)
    paths = default_model.default_classifier_paths()
    assert [p.name for p in paths] == ["default_ensemble_0.safetensors", "default_ensemble_1.safetensors"]
    record = default_model.default_classifier_record()
    assert [m["config"] for m in record["members"]] == ["a.yaml", "b.yaml"]
    assert [m["calibration"]["temperature"] for m in record["members"]] == [1.5, 2.0]
    paths[1].write_bytes(paths[0].read_bytes())
    with pytest.raises(ValueError, match="damaged or replaced"):
        default_model.default_classifier_paths()
    paths[1].unlink()
    with pytest.raises(FileNotFoundError, match="default_ensemble_1.safetensors is missing"):
        default_model.default_classifier_paths()


def test_the_ship_script_refuses_uncalibrated_or_unmatched_input(tmp_path, isic_model_file, weights_dir) -> None:
    _, ship = weights_dir
    calibrated = _calibrated_copy(isic_model_file, tmp_path / "a.safetensors", 1.5)
    ship.ship_ensemble([str(calibrated), str(calibrated)], ["a.yaml", "b.yaml"], None)
    shipped = default_model.default_classifier_record()
    with pytest.raises(SystemExit, match="not calibrated"):
        ship.ship_ensemble([str(calibrated), str(isic_model_file)], ["a.yaml", "b.yaml"], None)
    with pytest.raises(SystemExit, match="one --config per model"):
        ship.ship_ensemble([str(calibrated), str(calibrated)], ["a.yaml"], None)
    with pytest.raises(SystemExit, match="no such model file"):
        ship.ship_ensemble([str(calibrated), str(tmp_path / "nope.safetensors")], ["a.yaml", "b.yaml"], None)
    # a refused release leaves the shipped classifier as it was
    assert default_model.default_classifier_record() == shipped
    assert len(default_model.default_classifier_paths()) == 2


def test_predict_without_a_model_uses_every_member_of_the_default_classifier(tmp_path, isic_model_file, weights_dir, jpeg) -> None:
    import numpy as np
    import pandas as pd

    from dermdx.cli import main

    _, ship = weights_dir
    first = _calibrated_copy(isic_model_file, tmp_path / "a.safetensors", 0.5)
    second = _calibrated_copy(isic_model_file, tmp_path / "b.safetensors", 4.0)
    ship.ship_ensemble([str(first), str(second)], ["a.yaml", "b.yaml"], None)
    jpeg(tmp_path / "ISIC_1.jpg", size=64)
    args = [str(tmp_path / "ISIC_1.jpg"), "--format", "isic2018", "--workers", "0", "--tta", "none"]
    assert main(["predict", *args, "--out", str(tmp_path / "default.csv")]) == 0
    assert main(["predict", *args, "--model", str(first), "--model", str(second), "--out", str(tmp_path / "both.csv")]) == 0
    assert main(["predict", *args, "--model", str(first), "--out", str(tmp_path / "one.csv")]) == 0
    default, both, one = (pd.read_csv(tmp_path / f"{name}.csv").iloc[0, 1:].to_numpy(float) for name in ("default", "both", "one"))
    np.testing.assert_allclose(default, both, atol=1e-6)
    assert not np.allclose(default, one, atol=1e-4)


def test_one_network_ships_as_the_default_classifier_and_replaces_an_ensemble(tmp_path, isic_model_file, weights_dir, jpeg) -> None:
    """A single well-trained network can beat an ensemble (v5): shipping it must remove the old
    members' files, and `predict` without --model must give exactly that network's output."""
    import numpy as np
    import pandas as pd

    from dermdx.cli import main

    weights, ship = weights_dir
    first = _calibrated_copy(isic_model_file, tmp_path / "a.safetensors", 0.5)
    second = _calibrated_copy(isic_model_file, tmp_path / "b.safetensors", 4.0)
    ship.ship_ensemble([str(first), str(second)], ["a.yaml", "b.yaml"], None)
    ship.ship_ensemble([str(second)], ["b.yaml"], None)
    assert sorted(p.name for p in weights.glob("*.safetensors")) == ["default_ensemble_0.safetensors"]
    record = default_model.default_classifier_record()
    assert record["kind"].startswith("one network") and len(record["members"]) == 1
    with pytest.raises(SystemExit, match="at least one model file"):
        ship.ship_ensemble([], [], None)
    with pytest.raises(SystemExit, match="carries its own calibration"):
        ship.ship_ensemble([str(second)], ["b.yaml"], None, str(tmp_path / "ensemble_calibration.json"))
    jpeg(tmp_path / "ISIC_1.jpg", size=64)
    args = [str(tmp_path / "ISIC_1.jpg"), "--format", "isic2018", "--workers", "0", "--tta", "none"]
    assert main(["predict", *args, "--out", str(tmp_path / "default.csv")]) == 0
    assert main(["predict", *args, "--model", str(second), "--out", str(tmp_path / "one.csv")]) == 0
    default, one = (pd.read_csv(tmp_path / f"{name}.csv").iloc[0, 1:].to_numpy(float) for name in ("default", "one"))
    np.testing.assert_allclose(default, one, atol=1e-6)


def test_the_shipped_ensemble_temperature_is_checked_and_applied(tmp_path, isic_model_file, weights_dir, jpeg, capsys) -> None:
    import json

    import numpy as np
    import pandas as pd

    from dermdx.calibration import apply_temperature
    from dermdx.cli import main

    _, ship = weights_dir
    first = _calibrated_copy(isic_model_file, tmp_path / "a.safetensors", 0.5)
    second = _calibrated_copy(isic_model_file, tmp_path / "b.safetensors", 4.0)
    calibration = tmp_path / "ensemble_calibration.json"
    calibration.write_text(json.dumps({"temperature": 0.4, "members_sha256": [file_sha256(second), file_sha256(first)], "tta": "d4"}))
    with pytest.raises(SystemExit, match="fitted for other member models"):
        ship.ship_ensemble([str(first), str(second)], ["a.yaml", "b.yaml"], None, str(calibration))
    record = {"temperature": 0.4, "members_sha256": [file_sha256(first), file_sha256(second)], "tta": "d4", "fitted_on": "test",
              "n_images": 3, "ece_before": 0.2, "ece_after": 0.1, "nll_before": 1.0, "nll_after": 0.9,
              "mean_confidence_before": 0.5, "mean_confidence_after": 0.6, "accuracy": 0.6, "abstention": None}
    calibration.write_text(json.dumps(record))
    ship.ship_ensemble([str(first), str(second)], ["a.yaml", "b.yaml"], None, str(calibration))
    assert default_model.default_classifier_temperatures() == (0.4, None), "a calibration from before the second temperature ships without one"
    assert "--ensemble-calibration" in default_model.default_classifier_record()["ship_command"]

    jpeg(tmp_path / "ISIC_1.jpg", size=64)
    args = [str(tmp_path / "ISIC_1.jpg"), "--format", "isic2018", "--workers", "0", "--tta", "none"]
    assert main(["predict", *args, "--out", str(tmp_path / "default.csv")]) == 0
    assert main(["predict", *args, "--model", str(first), "--model", str(second), "--out", str(tmp_path / "mean.csv")]) == 0
    default, mean = (pd.read_csv(tmp_path / f"{name}.csv").iloc[:, 1:].to_numpy(float) for name in ("default", "mean"))
    np.testing.assert_allclose(default, apply_temperature(np.log(mean), 0.4), atol=1e-4)
    assert main(["predict", *args, "--ensemble-calibration", str(calibration), "--out", str(tmp_path / "x.csv")]) == 2
    assert "brings its own" in capsys.readouterr().err

    # A calibration with a second temperature ships it; predict uses it for images given without metadata.
    calibration.write_text(json.dumps({**record, "temperature_without_metadata": 2.5, "without_metadata": {"ece_after": 0.05}}))
    ship.ship_ensemble([str(first), str(second)], ["a.yaml", "b.yaml"], None, str(calibration))
    assert default_model.default_classifier_temperatures() == (0.4, 2.5)
    assert default_model.default_classifier_record()["ensemble_calibration"]["without_metadata"] == {"ece_after": 0.05}
    assert main(["predict", *args, "--out", str(tmp_path / "blind.csv")]) == 0
    blind = pd.read_csv(tmp_path / "blind.csv").iloc[:, 1:].to_numpy(float)
    np.testing.assert_allclose(blind, apply_temperature(np.log(mean), 2.5), atol=1e-4)
