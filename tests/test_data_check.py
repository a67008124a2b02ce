"""check_manifest / check_path: summaries, and every kind of bad file reported, never skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import ImageFile

from dermdx.data.adapters import read_generic_csv, read_ham10000, stratified_sample
from dermdx.data.check import check_manifest, check_path, guess_format
from dermdx.data.manifest import Manifest, empty_frame


def manifest_of(root: Path, images: list[str], labels: list[str] | None = None) -> Manifest:
    frame = empty_frame(len(images))
    frame["image"] = images
    frame["image_id"] = [Path(i).stem for i in images]
    frame["label"] = labels or ["nv"] * len(images)
    frame["centre"] = "test"
    frame["modality"] = "dermoscopy"
    return Manifest(frame, root, source="synthetic")


def test_summary_of_a_clean_folder(tiny_images):
    report = check_path(str(tiny_images), progress=False)
    assert report.ok and report.n_images == 9 and not report.unreadable
    assert report.class_counts.loc["mel", "count"] == 3
    assert report.class_counts.loc["mel", "percent"] == pytest.approx(33.3)
    assert report.centre_table.loc["images", "total"] == 9
    assert report.missing == {"age": 9, "sex": 9, "site": 9}
    text = report.to_text()
    assert "Class balance" in text and "Unreadable images: none (9 opened" in text and text.endswith("OK")


def test_bad_files_are_all_reported(tmp_path, jpeg):
    good = jpeg(tmp_path / "good.jpg", size=64)
    data = jpeg(tmp_path / "whole.jpg", size=64).read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    (tmp_path / "text.png").write_text("this is not an image")
    names = [good.name, "truncated.jpg", "empty.jpg", "corrupt.jpg", "text.png", "missing.jpg"]
    report = check_manifest(manifest_of(tmp_path, names), progress=False)
    reasons = {Path(path).name: reason for path, reason in report.unreadable}
    assert set(reasons) == set(names) - {"good.jpg"}
    assert "truncated" in reasons["truncated.jpg"]
    assert "empty file (0 bytes)" in reasons["empty.jpg"]
    assert "image not found" in reasons["missing.jpg"]
    assert "not a readable image" in reasons["text.png"]
    assert not report.ok
    text = report.to_text()
    assert "Unreadable images: 5" in text and str(tmp_path / "truncated.jpg") in text
    assert text.endswith("before training")


def test_truncation_caught_even_if_pil_was_set_tolerant(tmp_path, jpeg, monkeypatch):
    data = jpeg(tmp_path / "whole.jpg", size=64).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    report = check_manifest(manifest_of(tmp_path, ["cut.jpg"]), progress=False)
    assert len(report.unreadable) == 1
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored afterwards


def test_duplicates_and_skipping_image_checks(tmp_path):
    manifest = manifest_of(tmp_path, ["a/x.jpg", "b/x.jpg", "y.jpg"], ["nv", "mel", "mel"])
    report = check_manifest(manifest, verify_images=False)
    assert report.duplicate_ids == {"x": 2} and not report.unreadable and not report.ok
    text = report.to_text()
    assert "Duplicate image ids: 1" in text and "x (2 rows)" in text and "not opened" in text


def test_missing_metadata_counts(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("file,dx,age,sex,site\na.jpg,nv,40,male,back\nb.jpg,mel,,unknown,\nc.jpg,mel,50,,unknown\n")
    manifest = read_generic_csv(csv, {"image": "file", "label": "dx", "age": "age", "sex": "sex", "site": "site"})
    report = check_manifest(manifest, verify_images=False)
    assert report.missing == {"age": 1, "sex": 2, "site": 2}
    assert "age: 1 (33.3%)" in report.to_text()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("lesion_id,image_id,dx,dx_type,age,sex,localization,dataset", "ham10000"),
        ("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC", "isic"),
        ("case_num,diagnosis,diag5,sex,location,derm_path,clinic_path", "derm7pt"),
        ("image_id,diagnosis,image_path,mask_path", "ph2"),
    ],
)
def test_guess_format(tmp_path, header, expected):
    csv = tmp_path / "x.csv"
    csv.write_text(header + "\n" + ",".join(["1"] * len(header.split(","))) + "\n")
    assert guess_format(csv) == expected


def test_check_path_errors(tmp_path):
    csv = tmp_path / "mine.csv"
    csv.write_text("file,dx\na.jpg,nv\n")
    with pytest.raises(ValueError, match=r"match no known format.*pass --format csv with a column map"):
        check_path(str(csv))
    with pytest.raises(ValueError, match=r"format 'cvs'.*did you mean 'csv'"):
        check_path(str(csv), "cvs")
    with pytest.raises(ValueError, match="format 'csv' needs a column map"):
        check_path(str(csv), "csv")
    report = check_path(str(csv), "csv", column_map={"image": "file", "label": "dx"}, progress=False)
    assert "image not found" in report.unreadable[0][1]
    with pytest.raises(FileNotFoundError, match="nowhere.csv not found"):
        check_path(str(tmp_path / "nowhere.csv"))


@pytest.mark.realdata
def test_real_ham_images_readable(data_root):
    manifest = read_ham10000(data_root / "ham10000" / "metadata.csv")
    sample = manifest.subset(stratified_sample(manifest.frame["label"].to_numpy(), 40))
    report = check_manifest(sample, progress=False)
    assert report.n_images == 40 and report.ok, report.to_text()
    assert len(report.class_counts) == 7
