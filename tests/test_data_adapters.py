"""Adapters: every format on tiny synthetic files, every bad input with its message, real CSVs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dermdx.config import DataConfig
from dermdx.data.adapters import (
    load_manifest,
    read_derm7pt,
    read_generic_csv,
    read_ham10000,
    read_image_folder,
    read_images,
    read_isic_groundtruth,
    read_ph2,
    stratified_sample,
)
from dermdx.data.manifest import MANIFEST_COLUMNS


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(line.strip() for line in text.strip().splitlines()) + "\n")
    return path


HAM = """
lesion_id,image_id,dx,dx_type,age,sex,localization,dataset
HAM_1,ISIC_1,nv,follow_up,45.0,male,trunk,vidir_molemax
HAM_2,ISIC_2,MEL,histo,,unknown,unknown,rosendahl
HAM_3,ISIC_3,bkl,histo,70,female,Lower Extremity,vienna_dias
"""

DERM7PT = """
case_num,diagnosis,diag5,sex,location,management,split,pigment_network,derm_path,clinic_path
1,basal cell carcinoma,BCC,female,abdomen,excision,train,absent,images/a/d1.jpg,images/a/c1.jpg
2,melanoma (in situ),MEL,male,back,excision,valid,atypical,images/a/d2.jpg,images/a/c2.jpg
3,clark nevus,NEV,male,back,clinical follow up,train,typical,images/a/d3.jpg,images/a/c3.jpg
4,melanosis,MISC,female,head neck,excision,train,absent,images/a/d4.jpg,images/a/c4.jpg
5,lentigo,MISC,female,lower limbs,no further examination,train,typical,images/a/d5.jpg,images/a/c5.jpg
6,melanoma metastasis,MEL,male,chest,excision,valid,absent,images/a/d6.jpg,images/a/c6.jpg
"""

PH2 = """
image_id,diagnosis,label_idx,melanoma,asymmetry,image_path,mask_path
IMD001,common_nevus,0,0,0,images/IMD001.jpg,masks/IMD001_lesion.png
IMD002,melanoma,2,1,2,images/IMD002.jpg,masks/IMD002_lesion.png
"""

ISIC = """
image,MEL,NV,BCC,AKIEC,BKL,DF,VASC
ISIC_1,1.0,0.0,0.0,0.0,0.0,0.0,0.0
ISIC_2,0,1,0,0,0,0,0
ISIC_3,0,0,0,0,0,0,1
"""

GENERIC = """
file,dx,years,gender,where,person
a/x.jpg,mel,50,female,back,p1
b/y.png,nv,,male,,p1
"""


def check_schema(manifest) -> None:
    assert set(MANIFEST_COLUMNS) <= set(manifest.frame.columns)
    assert manifest.frame["age"].dtype == float
    assert set(manifest.frame["sex"]) <= {"male", "female", ""}
    assert (manifest.frame["modality"] != "").all()


# ---------------------------------------------------------------- each format


def test_ham10000(tmp_path):
    manifest = read_ham10000(write_csv(tmp_path / "metadata.csv", HAM))
    check_schema(manifest)
    f = manifest.frame
    assert manifest.root == tmp_path / "images"
    assert list(f["image"]) == ["ISIC_1.jpg", "ISIC_2.jpg", "ISIC_3.jpg"]
    assert list(f["label"]) == ["nv", "mel", "bkl"]
    assert list(f["patient_id"]) == list(f["lesion_id"]) == ["HAM_1", "HAM_2", "HAM_3"]
    assert list(f["centre"]) == ["vidir_molemax", "rosendahl", "vienna_dias"]
    assert list(f["sex"]) == ["male", "", "female"]
    assert list(f["site"]) == ["trunk", "", "lower extremity"]
    assert f["age"].iloc[0] == 45.0 and math.isnan(f["age"].iloc[1])
    assert list(f["dx_type"]) == ["follow_up", "histo", "histo"]
    assert read_ham10000(tmp_path / "metadata.csv", image_root=tmp_path / "x").root == tmp_path / "x"


def test_isic_groundtruth_and_metadata(tmp_path):
    csv = write_csv(tmp_path / "gt.csv", ISIC)
    manifest = read_isic_groundtruth(csv, tmp_path / "img")
    check_schema(manifest)
    assert list(manifest.frame["label"]) == ["mel", "nv", "vasc"]
    assert list(manifest.frame["image"]) == ["ISIC_1.jpg", "ISIC_2.jpg", "ISIC_3.jpg"]
    meta = write_csv(
        tmp_path / "meta.csv",
        """
        image,age_approx,anatom_site_general,lesion_id,sex
        ISIC_3,,,,
        ISIC_1,55.0,anterior torso,L1,male
        ISIC_2,30,head/neck,L1,female
        """,
    )
    f = read_isic_groundtruth(csv, tmp_path / "img", metadata_csv=meta, extension=".png").frame
    assert list(f["lesion_id"]) == ["L1", "L1", "ISIC_3"]  # empty lesion id falls back to the image
    assert list(f["sex"]) == ["male", "female", ""]
    assert list(f["site"]) == ["anterior torso", "head/neck", ""]
    assert f["age"].iloc[1] == 30.0 and math.isnan(f["age"].iloc[2])
    assert f["image"].iloc[0] == "ISIC_1.png"


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("ISIC_4,0,0,0,0,0,0,0", r"row 4 \(line 5\).*ISIC_4.*exactly one class marked 1, found 0"),
        ("ISIC_4,1,1,0,0,0,0,0", r"row 4.*found 2 \(\['MEL', 'NV'\]\)"),
        ("ISIC_4,0,2,0,0,0,0,0", r"row 4.*must be 0 or 1"),
        ("ISIC_4,0,yes,0,0,0,0,0", r"row 4.*must be 0 or 1"),
    ],
)
def test_isic_bad_rows(tmp_path, row, match):
    csv = write_csv(tmp_path / "gt.csv", ISIC + row)
    with pytest.raises(ValueError, match=match):
        read_isic_groundtruth(csv, tmp_path)


def test_isic_metadata_missing_image(tmp_path):
    csv = write_csv(tmp_path / "gt.csv", ISIC)
    meta = write_csv(tmp_path / "meta.csv", "image,sex\nISIC_1,male\nISIC_2,male")
    with pytest.raises(ValueError, match=r"meta.csv: no metadata row for image 'ISIC_3'"):
        read_isic_groundtruth(csv, tmp_path, metadata_csv=meta)


def test_derm7pt_diag5_and_modalities(tmp_path):
    csv = write_csv(tmp_path / "labels.csv", DERM7PT)
    manifest = read_derm7pt(csv)
    check_schema(manifest)
    f = manifest.frame
    assert manifest.root == tmp_path
    assert list(f["label"]) == ["bcc", "mel", "nev", "misc", "misc", "mel"]
    assert f["image"].iloc[0] == "images/a/d1.jpg" and f["image_id"].iloc[0] == "d1"
    assert list(f["lesion_id"]) == list(f["patient_id"]) == ["1", "2", "3", "4", "5", "6"]
    assert set(f["centre"]) == {"derm7pt"} and set(f["modality"]) == {"dermoscopy"}
    assert f["site"].iloc[3] == "head neck"
    assert f["site"].iloc[4] == "lower extremity", "Derm7pt's site names map onto HAM10000's"
    assert {"diagnosis", "management", "split", "pigment_network"} <= set(f.columns)
    clinical = read_derm7pt(csv, modality="clinical").frame
    assert clinical["image"].iloc[0] == "images/a/c1.jpg" and set(clinical["modality"]) == {"clinical"}


def test_derm7pt_isic_scheme_drops_and_counts(tmp_path):
    csv = write_csv(tmp_path / "labels.csv", DERM7PT)
    with pytest.warns(UserWarning, match=r"dropped 1 Derm7pt cases.*melanosis"):
        manifest = read_derm7pt(csv, label_scheme="isic")
    assert list(manifest.frame["label"]) == ["bcc", "mel", "nv", "bkl", "mel"]
    assert manifest.frame.attrs["dropped"] == {"melanosis": 1}
    assert "4" not in set(manifest.frame["case_num"])


def test_derm7pt_bad_options_and_unknown_diagnosis(tmp_path):
    csv = write_csv(tmp_path / "labels.csv", DERM7PT)
    with pytest.raises(ValueError, match=r"not 'dermoscopi'.*did you mean 'dermoscopy'"):
        read_derm7pt(csv, modality="dermoscopi")
    with pytest.raises(ValueError, match=r"label_scheme 'isc'.*did you mean 'isic'"):
        read_derm7pt(csv, label_scheme="isc")
    bad = write_csv(tmp_path / "bad.csv", DERM7PT + "7,clark nevvus,NEV,male,back,x,train,a,d7.jpg,c7.jpg")
    with pytest.raises(ValueError, match=r"row 7 \(line 8\): diagnosis 'clark nevvus' has no ISIC mapping; did you mean 'clark nevus'"):
        read_derm7pt(bad, label_scheme="isic")


def test_ph2(tmp_path):
    manifest = read_ph2(write_csv(tmp_path / "labels.csv", PH2))
    check_schema(manifest)
    f = manifest.frame
    assert list(f["label"]) == ["common_nevus", "melanoma"]
    assert set(f["centre"]) == {"ph2"}
    assert f["mask_path"].iloc[1] == "masks/IMD002_lesion.png"
    assert f["asymmetry"].iloc[1] == "2"
    assert "label_idx" not in f.columns


def test_image_folder(tiny_images, jpeg):
    jpeg(tiny_images / "nv" / "nested" / "UPPER.JPG")
    (tiny_images / "nv" / "notes.txt").write_text("not an image")
    manifest = read_image_folder(tiny_images, modality="clinical")
    check_schema(manifest)
    f = manifest.frame
    assert len(f) == 10
    assert f["label"].value_counts().to_dict() == {"nv": 4, "mel": 3, "bcc": 3}
    assert "nv/nested/UPPER.JPG" in set(f["image"])
    assert (f["lesion_id"] == f["image_id"]).all() and (f["patient_id"] == f["image_id"]).all()
    assert set(f["modality"]) == {"clinical"} and set(f["centre"]) == {"images"}


def test_image_folder_errors(tmp_path, jpeg):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        read_image_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class subfolders"):
        read_image_folder(tmp_path / "empty")
    (tmp_path / "empty" / "mel").mkdir()
    with pytest.raises(ValueError, match=r"mel: class folder holds no images"):
        read_image_folder(tmp_path / "empty")
    jpeg(tmp_path / "loose" / "a.png")
    jpeg(tmp_path / "loose" / "nv" / "b.jpg")
    with pytest.raises(ValueError, match=r"1 images \(e.g. a.png\) lie directly in the root"):
        read_image_folder(tmp_path / "loose")
    with pytest.raises(ValueError, match=r"modality 'xray' is not one of"):
        read_image_folder(tmp_path / "loose", modality="xray")


def test_generic_csv(tmp_path):
    csv = write_csv(tmp_path / "mydata" / "list.csv", GENERIC)
    column_map = {"image": "file", "label": "dx", "age": "years", "sex": "gender", "site": "where", "patient_id": "person"}
    manifest = read_generic_csv(csv, column_map, image_root=tmp_path / "pix")
    check_schema(manifest)
    f = manifest.frame
    assert manifest.root == tmp_path / "pix"
    assert list(f["image_id"]) == ["x", "y"] and list(f["label"]) == ["mel", "nv"]
    assert list(f["patient_id"]) == ["p1", "p1"] and list(f["lesion_id"]) == ["", ""]
    assert set(f["centre"]) == {"mydata"}
    unlabelled = read_generic_csv(csv, {"image": "file"}, centre="clinic_a").frame
    assert list(unlabelled["label"]) == ["", ""] and set(unlabelled["centre"]) == {"clinic_a"}
    assert "dx" in unlabelled.columns  # unmapped CSV columns stay as extras


def test_generic_csv_bad_map(tmp_path):
    csv = write_csv(tmp_path / "list.csv", GENERIC)
    with pytest.raises(ValueError, match=r"column 'diagnosis' \(mapped to 'label'\) not found.*Columns present: \['file', 'dx'"):
        read_generic_csv(csv, {"image": "file", "label": "diagnosis"})
    with pytest.raises(ValueError, match=r"key 'lable' is not a manifest column; did you mean 'label'"):
        read_generic_csv(csv, {"image": "file", "lable": "dx"})
    with pytest.raises(ValueError, match=r"must map 'image'"):
        read_generic_csv(csv, {"label": "dx"})


def test_read_images(tmp_path, jpeg):
    a = jpeg(tmp_path / "in" / "a.jpg")
    jpeg(tmp_path / "in" / "sub" / "b.PNG")
    jpeg(tmp_path / "in" / "sub" / "deeper" / "a.jpg")
    (tmp_path / "in" / "sub" / "readme.md").write_text("x")
    manifest = read_images([tmp_path / "in" / "sub", a])
    assert manifest.root == (tmp_path / "in").resolve()
    assert list(manifest.frame["image"]) == ["sub/b.PNG", "sub/deeper/a.jpg", "a.jpg"]
    assert list(manifest.frame["image_id"]) == ["sub/b", "sub/deeper/a", "a"]
    assert set(manifest.frame["label"]) == {""}
    assert all(p.is_file() for p in manifest.paths())
    single = read_images(str(a))
    assert single.root == a.parent.resolve() and list(single.frame["image"]) == ["a.jpg"]
    with pytest.raises(FileNotFoundError, match=r"image path not found: .*missing.jpg"):
        read_images([a, tmp_path / "missing.jpg"])
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        read_images(tmp_path / "none")


# ---------------------------------------------------------------- validation shared by the CSV adapters

CSV_READERS = {
    "ham10000": (HAM, lambda p: read_ham10000(p)),
    "derm7pt": (DERM7PT, lambda p: read_derm7pt(p)),
    "ph2": (PH2, lambda p: read_ph2(p)),
    "isic": (ISIC, lambda p: read_isic_groundtruth(p, p.parent)),
    "generic": (GENERIC, lambda p: read_generic_csv(p, {"image": "file", "label": "dx", "age": "years", "sex": "gender"})),
}


@pytest.mark.parametrize("name", list(CSV_READERS))
def test_missing_csv(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=r"CSV file not found: .*absent.csv"):
        CSV_READERS[name][1](tmp_path / "absent.csv")


@pytest.mark.parametrize(
    ("name", "column"),
    [("ham10000", "dx"), ("ham10000", "dataset"), ("derm7pt", "derm_path"), ("ph2", "diagnosis"), ("isic", "image")],
)
def test_missing_column(tmp_path, name, column):
    text, reader = CSV_READERS[name]
    header, *rows = text.strip().splitlines()
    position = header.split(",").index(column)
    drop = lambda line: ",".join(v for k, v in enumerate(line.split(",")) if k != position)  # noqa: E731
    csv = write_csv(tmp_path / "x.csv", "\n".join(drop(line) for line in [header, *rows]))
    with pytest.raises(ValueError, match=rf"x.csv: missing column '{column}'.*Columns present: \["):
        reader(csv)


@pytest.mark.parametrize(
    ("name", "edit", "match"),
    [
        ("ham10000", ("45.0", "forty"), r"metadata.csv, row 1 \(line 2\): age 'forty' is not a number"),
        ("ham10000", ("45.0", "-3"), r"row 1.*age '-3' is outside"),
        ("generic", (",50,", ",fifty,"), r"row 1 \(line 2\): age 'fifty' is not a number"),
        ("ham10000", ("female", "F"), r"row 3 \(line 4\): sex 'f' is not one of"),
        ("derm7pt", ("male,back,excision", "other,back,excision"), r"row 2 \(line 3\): sex 'other'"),
        ("generic", (",male,", ",x,"), r"row 2.*sex 'x'"),
        ("ham10000", (",nv,", ",,"), r"row 1 \(line 2\): empty label in column 'dx'"),
        ("derm7pt", (",BCC,", ",,"), r"row 1.*empty label in column 'diag5'"),
        ("ph2", ("IMD002,melanoma,", "IMD002,,"), r"row 2 \(line 3\): empty label in column 'diagnosis'"),
        ("generic", (",nv,", ",,"), r"row 2.*empty label in column 'dx'"),
    ],
)
def test_bad_values_name_the_row(tmp_path, name, edit, match):
    text, reader = CSV_READERS[name]
    csv = write_csv(tmp_path / "metadata.csv", text.replace(*edit, 1))
    with pytest.raises(ValueError, match=match):
        reader(csv)


def test_empty_and_header_only_csv(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv is empty"):
        read_ph2(tmp_path / "empty.csv")
    write_csv(tmp_path / "header.csv", PH2.strip().splitlines()[0])
    with pytest.raises(ValueError, match="header but no data rows"):
        read_ph2(tmp_path / "header.csv")


# ---------------------------------------------------------------- load_manifest


def test_load_manifest_dispatch_relative_paths(tmp_path, monkeypatch, tiny_images):
    monkeypatch.setenv("DERMDX_DATA", str(tmp_path))
    write_csv(tmp_path / "ham" / "metadata.csv", HAM)
    write_csv(tmp_path / "gt.csv", ISIC)
    write_csv(tmp_path / "d7" / "labels.csv", DERM7PT)
    write_csv(tmp_path / "ph2" / "labels.csv", PH2)
    write_csv(tmp_path / "generic.csv", GENERIC)
    cases = [
        DataConfig(format="ham10000", path="ham/metadata.csv"),
        DataConfig(format="isic", path="gt.csv", image_root="isic_images"),
        DataConfig(format="derm7pt", path="d7/labels.csv"),
        DataConfig(format="ph2", path="ph2/labels.csv"),
        DataConfig(format="folder", path="images"),
        DataConfig(format="csv", path="generic.csv", column_map={"image": "file", "label": "dx"}),
    ]
    sizes = [len(load_manifest(c)) for c in cases]
    assert sizes == [3, 3, 6, 2, 9, 2]
    assert load_manifest(cases[1]).root == tmp_path / "isic_images"
    with pytest.raises(ValueError, match=r"'ham1000' is not one of.*did you mean 'ham10000'"):
        load_manifest(DataConfig(format="ham1000"))
    with pytest.raises(ValueError, match="'isic' needs data.image_root"):
        load_manifest(DataConfig(format="isic", path="gt.csv"))
    with pytest.raises(ValueError, match="'csv' needs data.column_map"):
        load_manifest(DataConfig(format="csv", path="generic.csv"))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.csv")):
        load_manifest(DataConfig(format="ph2", path="nope.csv"))


def test_load_manifest_classes(tmp_path):
    csv = write_csv(tmp_path / "metadata.csv", HAM)
    assert len(load_manifest(DataConfig(path=str(csv), classes=["NV", "mel", "bkl", "bcc"]))) == 3
    with pytest.raises(ValueError, match=r"row 2 \(image ISIC_2.jpg\) has label 'mel', not one of data.classes \['nv', 'bkl'\]"):
        load_manifest(DataConfig(path=str(csv), classes=["nv", "bkl"]))


def test_load_manifest_limit_is_stratified_and_seeded(tiny_images):
    config = DataConfig(format="folder", path=str(tiny_images), limit=4)
    first, second = load_manifest(config), load_manifest(config)
    assert len(first) == 4 and set(first.frame["label"]) == {"mel", "nv", "bcc"}
    assert list(first.frame["image_id"]) == list(second.frame["image_id"])
    assert len(load_manifest(DataConfig(format="folder", path=str(tiny_images), limit=100))) == 9
    with pytest.raises(ValueError, match="data.limit must be a positive"):
        load_manifest(DataConfig(format="folder", path=str(tiny_images), limit=0))


def test_stratified_sample_proportions():
    labels = np.array(["nv"] * 80 + ["mel"] * 15 + ["df"] * 5)
    chosen = stratified_sample(labels, 20, seed=3)
    counts = {c: int((labels[chosen] == c).sum()) for c in ("nv", "mel", "df")}
    assert counts == {"nv": 16, "mel": 3, "df": 1}
    assert list(chosen) == sorted(chosen) and len(set(chosen)) == 20


# ---------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_ham10000(data_root):
    manifest = read_ham10000(data_root / "ham10000" / "metadata.csv")
    f = manifest.frame
    assert len(f) == 5984
    assert manifest.classes == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert sorted(set(f["centre"])) == ["rosendahl", "vidir_modern", "vidir_molemax", "vienna_dias"]
    assert f["age"].isna().sum() == 36 and (f["sex"] == "").sum() == 36
    assert f["label"].value_counts()["nv"] == 4323
    assert all(p.is_file() for p in manifest.paths()[:20])


@pytest.mark.realdata
def test_real_derm7pt(data_root):
    csv = data_root / "derm7pt" / "labels.csv"
    manifest = read_derm7pt(csv)
    assert len(manifest) == 616
    assert manifest.classes == ["bcc", "mel", "misc", "nev", "sk"]
    assert manifest.frame["image_id"].is_unique and manifest.paths()[0].is_file()
    assert read_derm7pt(csv, modality="clinical").paths()[0].is_file()
    with pytest.warns(UserWarning, match="dropped 16 Derm7pt cases"):
        isic = read_derm7pt(csv, label_scheme="isic")
    assert len(isic) == 600 and isic.frame.attrs["dropped"] == {"melanosis": 10, "miscellaneous": 6}
    assert isic.classes == ["bcc", "bkl", "df", "mel", "nv", "vasc"]


@pytest.mark.realdata
def test_real_ph2(data_root):
    manifest = read_ph2(data_root / "ph2" / "labels.csv")
    assert len(manifest) == 80
    assert manifest.frame["label"].value_counts().to_dict() == {"common_nevus": 32, "atypical_nevus": 32, "melanoma": 16}
    assert (manifest.root / manifest.frame["mask_path"].iloc[0]).is_file()


@pytest.mark.realdata
def test_load_manifest_reaches_derm7pt_clinical_images_with_isic_labels(data_root):
    from dermdx.config import DataConfig
    from dermdx.data.adapters import load_manifest

    with pytest.warns(UserWarning, match="dropped 16"):
        manifest = load_manifest(DataConfig(format="derm7pt", path="derm7pt/labels.csv", modality="clinical", label_scheme="isic"))
    assert len(manifest) == 600 and set(manifest.frame["modality"]) == {"clinical"}
    assert set(manifest.classes) <= {"mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"}


def _two_folders(tmp_path, jpeg):
    for source, labels in (("a", ("nevus", "mel")), ("b", ("nv", "mel"))):
        for label in labels:
            for k in range(2):
                jpeg(tmp_path / source / label / f"{label}{k}.jpg", size=16, seed=k)
    return tmp_path / "a", tmp_path / "b"


def test_extra_sources_join_with_prefixed_ids_and_mapped_labels(tmp_path, jpeg) -> None:
    from dermdx.config import DataConfig, from_dict

    a, b = _two_folders(tmp_path, jpeg)
    config = from_dict(DataConfig, {"format": "folder", "path": str(a), "name": "siteA", "label_map": {"nevus": "nv"},
                                    "extra": [{"format": "folder", "path": str(b), "name": "siteB"}]})
    manifest = load_manifest(config)
    assert len(manifest) == 8 and sorted(manifest.classes) == ["mel", "nv"]
    assert all(p.is_file() for p in manifest.paths())
    ids = manifest.frame["image_id"].tolist()
    assert len(set(ids)) == 8 and {i.split(":")[0] for i in ids} == {"siteA", "siteB"}  # mel0.jpg in both: two ids
    assert set(manifest.frame["source"]) == {"siteA", "siteB"}


def test_multi_source_errors_are_named(tmp_path, jpeg) -> None:
    from dermdx.config import DataConfig, from_dict

    a, b = _two_folders(tmp_path, jpeg)
    same_names = from_dict(DataConfig, {"format": "folder", "path": str(a), "extra": [{"format": "folder", "path": str(b)}]})
    with pytest.raises(ValueError, match="distinct name"):
        load_manifest(same_names)
    bad_map = from_dict(DataConfig, {"format": "folder", "path": str(a), "label_map": {"naevus": "nv"}})
    with pytest.raises(ValueError, match=r"label_map renames labels \['naevus'\]"):
        load_manifest(bad_map)
    with pytest.raises(ValueError, match=r"data.extra\[0\]: unknown option 'pth'"):
        from_dict(DataConfig, {"extra": [{"pth": "x"}]}, where="data")


def test_multi_source_real_data_splits_keep_sources_apart(data_root) -> None:
    import warnings

    from dermdx.config import DataConfig, from_dict

    config = from_dict(DataConfig, {"classes": ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"], "extra": [
        {"format": "derm7pt", "path": "derm7pt/labels.csv", "label_scheme": "isic"},
        {"format": "ph2", "path": "ph2/labels.csv", "label_map": {"common_nevus": "nv", "atypical_nevus": "nv", "melanoma": "mel"}}]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        manifest = load_manifest(config)
    counts = manifest.frame.groupby("source").size().to_dict()
    assert counts == {"ham10000": 5984, "derm7pt": 600, "ph2": 80}
    assert {"derm7pt", "ph2"} <= set(manifest.frame["centre"])  # each can be the held-out centre
