import json
import re
from pathlib import Path

import numpy as np
import pytest

from dermdx.checkpoint import file_sha256, read_info, rewrite_info
from dermdx.cli import main
from dermdx.decision import MALIGNANT_CLASSES
from dermdx.diagnosis import FUTURE_SECTIONS, NOT_AVAILABLE, check_patient
from dermdx.inference import DISCLAIMER

pytest.importorskip("pytorch_grad_cam")


@pytest.fixture
def lesion(tmp_path: Path, jpeg) -> Path:
    return jpeg(tmp_path / "lesion.jpg", size=64, seed=3)


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_diagnose_writes_the_report(isic_model_file, lesion, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, _ = _run(["diagnose", str(lesion), "--model", str(isic_model_file), "--out", str(out)], capsys)
    assert code == 0
    for name in ("report.json", "report.html", "image.png", "cam_overlay.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())

    probs = report["probabilities"]
    assert set(probs) == set(read_info(isic_model_file).classes) and sum(probs.values()) == pytest.approx(1.0)
    ddx = report["differential"]
    assert [d["rank"] for d in ddx] == [1, 2, 3]
    assert [d["probability"] for d in ddx] == sorted(probs.values(), reverse=True)[:3]
    assert ddx[0]["class"] == max(probs, key=probs.get) and ddx[0]["name"]
    assert report["malignancy_risk"]["probability"] == pytest.approx(sum(probs[c] for c in MALIGNANT_CLASSES))
    assert report["probabilities_calibrated"] is False

    # An untrained model is close to uniform over 7 classes: below the default 0.5 threshold.
    abst = report["abstention"]
    assert abst["abstain"] is True and abst["decision"] == "refer: uncertain"
    assert abst["reasons"][0].startswith("low confidence") and abst["min_confidence"] == 0.5 and abst["threshold_source"] == "default"
    assert abst["checks"]["out_of_distribution"] == NOT_AVAILABLE

    assert report["triage"] is None and report["recommendation"] is None
    assert set(report["not_available"]) == set(FUTURE_SECTIONS)
    assert report["explanation"]["cam_method"] == "gradcam" and report["explanation"]["target_layer"] == "bn2"
    assert report["model"]["name"] == "test_efficientnet" and report["model"]["sha256"] == file_sha256(isic_model_file)
    assert report["disclaimer"] == DISCLAIMER and report["image"]["sha256"] == file_sha256(lesion)

    page = (out / "report.html").read_text()
    assert "REFER: UNCERTAIN" in page and DISCLAIMER in page and "data:image/png;base64," in page
    assert "Not available in this version" in page and 'src="cam_overlay.png"' not in page  # inlined
    assert "REFER: UNCERTAIN" in stdout and DISCLAIMER in stdout and str(out / "report.html") in stdout


def test_min_confidence_on_the_command_line_and_other_cam_methods(isic_model_file, lesion, tmp_path: Path, capsys) -> None:
    code, stdout, _ = _run(["diagnose", str(lesion), "--model", str(isic_model_file), "--out", str(tmp_path / "o"),
                            "--min-confidence", "0", "--cam-method", "eigencam"], capsys)
    assert code == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["abstention"]["abstain"] is False and report["abstention"]["reasons"] == []
    assert "command line" in report["abstention"]["threshold_source"]
    assert report["explanation"]["cam_method"] == "eigencam"
    assert "REFER" not in (tmp_path / "o" / "report.html").read_text() and "answered:" in stdout


def test_a_calibrated_model_reports_calibrated_probabilities_and_its_threshold(isic_model_file, lesion, tmp_path: Path, capsys) -> None:
    plain_out, cal_out = tmp_path / "plain", tmp_path / "cal"
    assert main(["diagnose", str(lesion), "--model", str(isic_model_file), "--out", str(plain_out)]) == 0
    info = read_info(isic_model_file)
    info.calibration = {"method": "temperature", "temperature": 0.05, "fitted_on": "test", "n_images": 10, "ece_before": 0.2, "ece_after": 0.05,
                        "abstention": {"min_confidence": 0.3, "target_coverage": 0.8, "source": "fitted for 80% coverage on test"}}
    rewrite_info(isic_model_file, info)
    assert main(["diagnose", str(lesion), "--model", str(isic_model_file), "--out", str(cal_out)]) == 0
    capsys.readouterr()
    plain = json.loads((plain_out / "report.json").read_text())
    cal = json.loads((cal_out / "report.json").read_text())
    assert cal["probabilities_calibrated"] is True and cal["model"]["temperature"] == 0.05
    assert cal["abstention"]["min_confidence"] == 0.3 and "fitted for 80%" in cal["abstention"]["threshold_source"]
    # Same ranking, sharper probabilities: log-probabilities scale by 1/T (up to a constant per image).
    assert [d["class"] for d in cal["differential"]] == [d["class"] for d in plain["differential"]]
    p, q = np.log(list(plain["probabilities"].values())), np.log(list(cal["probabilities"].values()))
    assert np.allclose(q - q.mean(), (p - p.mean()) / 0.05, atol=1e-3)
    assert "temperature 0.050" in (cal_out / "report.html").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--age", "abc"], "age 'abc' is not a number of years"),
        (["--age", "200"], "age '200' is outside 0..120 years"),
        (["--sex", "x"], r"sex 'x' is not one of \['male', 'female'\]"),
        (["--cam-method", "gradcam+++"], "unknown CAM method 'gradcam\\+\\+\\+'"),
        (["--min-confidence", "2"], r"min_confidence must be a probability in \[0, 1\]"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(isic_model_file, lesion, tmp_path: Path, capsys, extra, message) -> None:
    code, _, err = _run(["diagnose", str(lesion), "--model", str(isic_model_file), "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2
    assert re.search(message, err), err
    assert not (tmp_path / "o" / "report.json").exists()


def test_missing_and_corrupt_images_exit_2(isic_model_file, lesion, tmp_path: Path, capsys) -> None:
    code, _, err = _run(["diagnose", str(tmp_path / "nope.jpg"), "--model", str(isic_model_file), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "image not found" in err and "nope.jpg" in err
    broken = tmp_path / "broken.jpg"
    data = lesion.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    code, _, err = _run(["diagnose", str(broken), "--model", str(isic_model_file), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "broken.jpg: truncated or corrupt" in err
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    code, _, err = _run(["diagnose", str(text), "--model", str(isic_model_file), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "not a readable image" in err


def test_text_in_the_page_is_escaped(isic_model_file, tmp_path: Path, jpeg, capsys) -> None:
    odd = jpeg(tmp_path / "a<b>&c.jpg", size=40, seed=1)
    assert main(["diagnose", str(odd), "--model", str(isic_model_file), "--out", str(tmp_path / "o"), "--site", "<script>"]) == 0
    page = (tmp_path / "o" / "report.html").read_text()
    assert "a&lt;b&gt;&amp;c.jpg" in page and "<b>&" not in page
    assert "&lt;script&gt;" in page and "<script>" not in page


@pytest.fixture
def fusion_model_file(tmp_path: Path) -> Path:
    import torch

    from dermdx.checkpoint import ModelInfo, save_model
    from dermdx.config import ISIC2018_CLASSES, PreprocessConfig
    from dermdx.data.meta import MetaSchema, missing_meta
    from dermdx.models import create_model

    torch.manual_seed(0)
    schema = MetaSchema(age_mean=50.0, age_std=20.0, sites=["back", "face"])
    classes = sorted(ISIC2018_CLASSES)
    model = create_model("test_efficientnet", num_classes=len(classes), meta_dim=schema.dim)
    model.set_absent_meta(torch.from_numpy(missing_meta(schema)[0]))
    info = ModelInfo(model_name="test_efficientnet", classes=classes, preprocess=PreprocessConfig(image_size=32),
                     model_kwargs={"meta_dim": schema.dim, "fusion": "concat"}, meta_schema=schema.to_dict())
    path = tmp_path / "fusion.safetensors"
    save_model(path, model.eval(), info)
    return path


def test_metadata_reaches_a_fusion_model(fusion_model_file, lesion, tmp_path: Path, capsys) -> None:
    with_meta, without = tmp_path / "m", tmp_path / "n"
    assert main(["diagnose", str(lesion), "--model", str(fusion_model_file), "--out", str(with_meta), "--age", "54", "--sex", "Female", "--site", "back"]) == 0
    assert main(["diagnose", str(lesion), "--model", str(fusion_model_file), "--out", str(without)]) == 0
    a = json.loads((with_meta / "report.json").read_text())
    b = json.loads((without / "report.json").read_text())
    assert a["patient"] == {"age": 54.0, "sex": "female", "site": "back", "used_by_model": True}
    assert a["explanation"]["target_layer"] == "backbone.bn2"
    assert not np.allclose(list(a["probabilities"].values()), list(b["probabilities"].values()))
    code, _, err = _run(["diagnose", str(lesion), "--model", str(fusion_model_file), "--out", str(tmp_path / "x"), "--site", "moon"], capsys)
    assert code == 2 and "body site 'moon' is not one this model knows (back, face)" in err


def test_image_only_models_record_metadata_without_using_it() -> None:
    assert check_patient(" 54 ", "MALE", "Moon") == {"age": 54.0, "sex": "male", "site": "moon"}
    assert check_patient(None, "", None) == {"age": None, "sex": None, "site": None}
