import json
import re
from pathlib import Path

import numpy as np
import pytest

from dermdx.checkpoint import file_sha256, read_info, rewrite_info
from dermdx.cli import main
from dermdx.decision import MALIGNANT_CLASSES
from dermdx.diagnosis import check_patient
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
    assert abst["checks"]["out_of_distribution"] == "not available" and abst["checks"]["low_confidence"] == "refused"
    assert abst["checks"]["image_quality"] == "passed" and report["image_quality"]["ok"] is True

    # An uncertain case is referred, never reassured; the heads fitted on the shipped model's
    # features do not apply to this one, and the report says so instead of guessing.
    rec = report["recommendation"]
    assert report["triage"] == rec["triage"] and rec["triage"] in ("routine referral", "urgent referral")
    assert rec["next_step"] in ("refer to dermatologist", "excision") and rec["rationale"]
    assert set(report["not_available"]) == {"out_of_distribution_check", "seven_point_checklist"}
    assert all("shipped classifier" in why for why in report["not_available"].values())
    assert report["seven_point_checklist"] is None and report["out_of_distribution"] is None
    assert report["plain_language_explanation"].startswith("The system does not give a diagnosis")
    assert report["explanation"]["cam_method"] == "gradcam" and report["explanation"]["target_layer"] == "bn2"
    assert report["model"]["name"] == "test_efficientnet" and report["model"]["sha256"] == file_sha256(isic_model_file)
    assert report["disclaimer"] == DISCLAIMER and report["image"]["sha256"] == file_sha256(lesion)

    page = (out / "report.html").read_text()
    assert "REFER: UNCERTAIN" in page and DISCLAIMER in page and "data:image/png;base64," in page
    assert "Not available for this model" in page and "Checks before answering" in page and 'src="cam_overlay.png"' not in page  # inlined
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
        (["--mm-per-pixel", "-0.1"], "mm_per_pixel must be a positive number"),
        (["--clinical", "no_such_photo.jpg"], "no_such_photo.jpg"),
        (["--knowledge", "no_such_rules.yaml"], "no_such_rules.yaml"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(isic_model_file, lesion, tmp_path: Path, capsys, extra, message) -> None:
    code, _, err = _run(["diagnose", str(lesion), "--model", str(isic_model_file), "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2
    assert re.search(message, err), err
    assert not (tmp_path / "o" / "report.json").exists()


def test_invalid_knowledge_base_names_the_file_and_rule(isic_model_file, lesion, tmp_path: Path, capsys) -> None:
    from dermdx.clinical.knowledge import DEFAULT_KNOWLEDGE

    rules = tmp_path / "site.yaml"
    rules.write_text(DEFAULT_KNOWLEDGE.read_text().replace("seven_point_cutoff: 3", "seven_point_cutoff: 5"))
    code, _, err = _run(["diagnose", str(lesion), "--model", str(isic_model_file), "--out", str(tmp_path / "o"), "--knowledge", str(rules)], capsys)
    assert code == 2 and "site.yaml" in err and "seven_point_cutoff" in err
    assert not (tmp_path / "o").exists()


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


def test_a_blank_image_is_refused_for_quality_and_never_reassured(isic_model_file, tmp_path: Path, capsys) -> None:
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((300, 300, 3), 128, dtype=np.uint8)).save(blank)
    code, stdout, _ = _run(["diagnose", str(blank), "--model", str(isic_model_file), "--out", str(tmp_path / "out"), "--min-confidence", "0.01"], capsys)
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    abst = report["abstention"]
    # Confident enough by the threshold given, but the image itself is refused.
    assert abst["checks"]["low_confidence"] == "passed" and abst["checks"]["image_quality"] == "refused"
    assert abst["abstain"] is True and all(r.startswith("poor image quality: blank") for r in abst["reasons"])
    assert report["recommendation"]["triage"] != "reassure" and "poor image quality" in stdout


def test_full_report_with_the_shipped_model_on_real_images(data_root: Path, tmp_path: Path, capsys) -> None:
    """Every section with the shipped classifier and add-ons; a clinical photo sent as dermoscopy is refused."""
    derm7pt = data_root / "derm7pt" / "images"
    out = tmp_path / "ok"
    code, stdout, _ = _run(["diagnose", str(derm7pt / "Ael" / "Ael508.jpg"), "--clinical", str(derm7pt / "Ael" / "Ael507.jpg"),
                            "--mm-per-pixel", "0.02", "--out", str(out)], capsys)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["not_available"] == {}
    assert report["out_of_distribution"]["in_distribution"] is True and report["image_quality"]["ok"] is True
    checklist = report["seven_point_checklist"]
    assert len(checklist["criteria"]) == 7 and checklist["score"] == sum(c["points"] for c in checklist["criteria"].values() if c["present"])
    assert set(report["management_probabilities"]) == {"excision", "clinical follow up", "no further examination"}
    rec = report["recommendation"]
    assert rec["triage"] in ("urgent referral", "routine referral", "monitor", "reassure") and rec["explanation"]
    assert all(item["sources"] for item in rec["rationale"] if item["rule"] != "no_rule_fired")
    lesion = report["lesion"]
    assert lesion["found"] and (out / "lesion_outline.png").is_file() and 0 < lesion["area_fraction"] < 1
    assert lesion["abcd"]["diameter_mm"] == pytest.approx(lesion["abcd"]["diameter_px"] * 0.02)
    photo = report["clinical_photo"]
    assert photo["modality_check"]["looks_like_clinical_photo"] is True and (out / "clinical.png").is_file()
    page = (out / "report.html").read_text()
    assert "7-point checklist" in page and "ABCD measurements" in page and "Clinical photo" in page
    assert "triage:" in stdout

    wrong = tmp_path / "wrong"
    assert _run(["diagnose", str(derm7pt / "Ael" / "Ael468.jpg"), "--out", str(wrong)], capsys)[0] == 0
    refused = json.loads((wrong / "report.json").read_text())
    assert refused["abstention"]["abstain"] is True and refused["abstention"]["checks"]["out_of_distribution"] == "refused"
    assert any("clinical (macroscopic) photo" in r for r in refused["abstention"]["reasons"])
    assert refused["recommendation"]["triage"] != "reassure"


def test_a_model_without_melanoma_gets_no_invented_triage(lesion, tmp_path: Path, capsys) -> None:
    import torch

    from dermdx.checkpoint import ModelInfo, save_model
    from dermdx.config import PreprocessConfig
    from dermdx.models import create_model

    torch.manual_seed(0)
    path = tmp_path / "abc.safetensors"
    save_model(path, create_model("test_efficientnet", num_classes=3).eval(), ModelInfo("test_efficientnet", ["a", "b", "c"], PreprocessConfig(image_size=32)))
    code, stdout, _ = _run(["diagnose", str(lesion), "--model", str(path), "--out", str(tmp_path / "o"), "--no-segmentation"], capsys)
    assert code == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["triage"] is None and report["recommendation"] is None and report["lesion"] is None
    assert "no melanoma class" in report["not_available"]["recommendation"]
    assert "switched off" in report["not_available"]["lesion_outline"]
    assert "Triage level and recommended next step" in (tmp_path / "o" / "report.html").read_text()
