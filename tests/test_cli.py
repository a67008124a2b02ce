"""The CLI as a user runs it: train, evaluate, predict and data check, on tiny data."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermdx.cli import main
from dermdx.config import save_config


@pytest.fixture
def trained(tiny_run_config, tmp_path: Path) -> tuple[Path, Path]:
    config_path = tmp_path / "run.yaml"
    save_config(tiny_run_config, config_path)
    assert main(["train", str(config_path), "--bootstrap", "20"]) == 0
    return config_path, Path(tiny_run_config.output_dir)


def test_train_writes_model_and_held_out_report(trained) -> None:
    _, out = trained
    assert (out / "model.safetensors").is_file()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 12
    for name in ("report.html", "confusion_matrix.png", "roc.png", "reliability.png", "predictions.csv"):
        assert (out / "eval" / name).is_file()


def test_evaluate_on_a_config_split_and_on_a_folder(trained, learnable_folder, tmp_path) -> None:
    config_path, out = trained
    model = str(out / "model.safetensors")
    assert main(["evaluate", "--model", model, "--config", str(config_path), "--out", str(tmp_path / "e1"), "--bootstrap", "20", "--workers", "0"]) == 0
    assert json.loads((tmp_path / "e1" / "metrics.json").read_text())["overall"]["n"] == 12
    assert main(["evaluate", "--model", model, "--data", str(learnable_folder), "--format", "folder", "--out", str(tmp_path / "e2"), "--bootstrap", "20", "--workers", "0"]) == 0
    assert json.loads((tmp_path / "e2" / "metrics.json").read_text())["overall"]["n"] == 36


def test_evaluate_scores_an_ensemble_of_models_given_twice(trained, tmp_path) -> None:
    config_path, out = trained
    model = str(out / "model.safetensors")
    common = ["--config", str(config_path), "--bootstrap", "20", "--workers", "0"]
    assert main(["evaluate", "--model", model, *common, "--out", str(tmp_path / "one")]) == 0
    assert main(["evaluate", "--model", model, "--model", model, *common, "--out", str(tmp_path / "two")]) == 0
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    # the mean of a model with itself is the model: same scores, but recorded as a 2-member ensemble
    assert two["overall"]["balanced_accuracy"] == pytest.approx(one["overall"]["balanced_accuracy"])
    assert "ensemble of 2" in json.dumps(two) and "ensemble" not in json.dumps(one)


def test_predict_writes_one_row_per_image_and_lists_failures(trained, learnable_folder, tmp_path, capsys) -> None:
    _, out = trained
    model = str(out / "model.safetensors")
    assert main(["predict", str(learnable_folder), "--model", model, "--out", str(tmp_path / "p.csv"), "--workers", "0"]) == 0
    frame = pd.read_csv(tmp_path / "p.csv")
    assert len(frame) == 36 and {"bcc", "mel", "nv", "predicted"} <= set(frame.columns)
    (learnable_folder / "nv" / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    assert main(["predict", str(learnable_folder), "--model", model, "--out", str(tmp_path / "p2.csv"), "--workers", "0"]) == 2
    assert "bad.jpg" in capsys.readouterr().err
    assert main(["predict", str(learnable_folder), "--model", model, "--out", str(tmp_path / "p3.csv"), "--workers", "0", "--continue-on-error"]) == 1
    assert len(pd.read_csv(tmp_path / "p3.csv")) == 36
    assert "bad.jpg" in capsys.readouterr().err


def test_predict_averages_models_given_several_times(trained, learnable_folder, tmp_path, capsys) -> None:
    _, out = trained
    model = str(out / "model.safetensors")
    common = [str(learnable_folder), "--workers", "0", "--tta", "none"]
    assert main(["predict", *common, "--model", model, "--out", str(tmp_path / "one.csv")]) == 0
    assert main(["predict", *common, "--model", model, "--model", model, "--out", str(tmp_path / "two.csv")]) == 0
    one, two = pd.read_csv(tmp_path / "one.csv"), pd.read_csv(tmp_path / "two.csv")
    assert np.allclose(one[["bcc", "mel", "nv"]], two[["bcc", "mel", "nv"]], atol=1e-6)
    # The same ensemble on ONNX Runtime (converted in memory) and forced onto PyTorch agree.
    assert main(["predict", *common, "--model", model, "--model", model, "--backend", "onnx", "--out", str(tmp_path / "ort.csv")]) == 0
    assert main(["predict", *common, "--model", model, "--model", model, "--backend", "torch", "--out", str(tmp_path / "pt.csv")]) == 0
    ort, pt = pd.read_csv(tmp_path / "ort.csv"), pd.read_csv(tmp_path / "pt.csv")
    assert (ort["image"] == pt["image"]).all()
    assert np.allclose(ort[["bcc", "mel", "nv"]], pt[["bcc", "mel", "nv"]], atol=1e-4)


def test_predict_without_a_model_uses_the_shipped_one(tmp_path, jpeg) -> None:
    jpeg(tmp_path / "ISIC_1.jpg", size=64)
    assert main(["predict", str(tmp_path / "ISIC_1.jpg"), "--out", str(tmp_path / "p.csv"), "--format", "isic2018", "--workers", "0"]) == 0
    frame = pd.read_csv(tmp_path / "p.csv")
    assert frame["image"].tolist() == ["ISIC_1"] and np.isclose(frame.iloc[0, 1:].sum(), 1.0, atol=1e-5)


def test_missing_input_is_a_clear_error(tmp_path, isic_model_file, capsys) -> None:
    assert main(["predict", str(tmp_path / "nope.jpg"), "--model", str(isic_model_file), "--out", str(tmp_path / "p.csv")]) == 2
    assert "nope.jpg" in capsys.readouterr().err


def test_data_check_reports_counts_and_unreadable_files(learnable_folder, capsys) -> None:
    assert main(["data", "check", str(learnable_folder)]) == 0
    text = capsys.readouterr().out
    assert "36" in text and "mel" in text
    (learnable_folder / "mel" / "broken.jpg").write_bytes(b"")
    assert main(["data", "check", str(learnable_folder)]) == 1
    assert "broken.jpg" in capsys.readouterr().out


def test_bad_config_option_is_reported(tmp_path, capsys) -> None:
    (tmp_path / "c.yaml").write_text("trian: {}\n")
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    assert "did you mean 'train'" in capsys.readouterr().err


def test_predict_with_metadata_changes_a_fusion_models_output(tiny_run_config, learnable_folder, tmp_path, capsys) -> None:
    from dermdx.training import fit

    tiny_run_config.model.fusion = "concat"
    fit(tiny_run_config, stop_after=1)
    model = str(tmp_path / "run" / "model.safetensors")
    images = sorted(learnable_folder.glob("mel/*.jpg"))[:3]
    meta = tmp_path / "meta.csv"
    meta.write_text("image,age,sex,site\n" + "".join(f"{p.stem},85,female,face\n" for p in images))
    args = [*map(str, images), "--model", model, "--workers", "0"]
    assert main(["predict", *args, "--out", str(tmp_path / "plain.csv")]) == 0
    capsys.readouterr()
    assert main(["predict", *args, "--out", str(tmp_path / "meta.csv.out"), "--metadata", str(meta)]) == 0
    assert "site(s) ['face'] are not among the sites" in capsys.readouterr().err, "a site the model never saw is named, not silently dropped"
    plain, with_meta = pd.read_csv(tmp_path / "plain.csv"), pd.read_csv(tmp_path / "meta.csv.out")
    assert not np.allclose(plain[["bcc", "mel", "nv"]].to_numpy(), with_meta[["bcc", "mel", "nv"]].to_numpy())
    meta.write_text("image,age\nnot_there,40\n")
    assert main(["predict", *args, "--out", str(tmp_path / "x.csv"), "--metadata", str(meta)]) == 2
    assert "match no given image" in capsys.readouterr().err
    meta.write_text(f"image,age\n{images[0].stem},forty\n")
    assert main(["predict", *args, "--out", str(tmp_path / "x.csv"), "--metadata", str(meta)]) == 2
    assert "row 1" in capsys.readouterr().err


def test_metadata_for_an_image_only_model_is_refused(isic_model_file, tmp_path, jpeg, capsys) -> None:
    jpeg(tmp_path / "a.jpg")
    (tmp_path / "m.csv").write_text("image,age\na,40\n")
    assert main(["predict", str(tmp_path / "a.jpg"), "--model", str(isic_model_file), "--out", str(tmp_path / "p.csv"), "--metadata", str(tmp_path / "m.csv")]) == 2
    assert "trained on images only" in capsys.readouterr().err


def test_evaluate_without_metadata_hides_it_from_a_fusion_model_only(tiny_run_config, learnable_folder, tmp_path) -> None:
    from dermdx.config import DataConfig
    from dermdx.data.adapters import load_manifest
    from dermdx.evaluation import evaluate
    from dermdx.inference import Predictor
    from dermdx.training import fit

    tiny_run_config.model.fusion = "concat"
    fit(tiny_run_config, stop_after=1)
    predictor = Predictor.from_checkpoint(tmp_path / "run" / "model.safetensors")
    manifest = load_manifest(DataConfig(format="folder", path=str(learnable_folder)))
    manifest.frame["age"] = 85.0
    manifest.frame["sex"] = ["female", "male"] * (len(manifest.frame) // 2) + ["female"] * (len(manifest.frame) % 2)
    with_meta = evaluate(predictor, manifest, tmp_path / "with", n_bootstrap=10)
    without = evaluate(predictor, manifest, tmp_path / "without", n_bootstrap=10, use_metadata=False)
    assert with_meta["extra"]["metadata_given_to_model"] and not without["extra"]["metadata_given_to_model"]
    assert set(without["subgroups"]["sex"]) == {"female", "male"}  # subgroups still read the metadata
    probs = [pd.read_csv(tmp_path / name / "predictions.csv").filter(like="prob_").to_numpy() for name in ("with", "without")]
    assert not np.allclose(*probs, atol=1e-4)
    assert manifest.frame["age"].eq(85.0).all()  # the caller's manifest is untouched
