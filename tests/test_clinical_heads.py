"""Clinical heads: fitting on synthetic features, safe files checked by SHA-256, tied to one classifier."""

import json

import numpy as np
import pytest

from dermdx.clinical.checklist import CRITERION_NAMES, MANAGEMENT_CLASSES, THICKNESS_CATEGORIES
from dermdx.clinical.fit import fit_clinical_heads
from dermdx.clinical.heads import DEFAULT_HEADS, ClinicalHeads, record_path

CLASSIFIER = "a" * 64


@pytest.fixture(scope="module")
def synthetic() -> dict:
    """80 cases, 6 features; criterion k and the labels depend on a few features, so heads can learn them."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6))
    criteria = (x[:, [0, 1, 2, 3, 4, 5, 0]] + rng.normal(0, 0.5, (80, 7)) > 0.3).astype(int)
    thickness = np.where(np.arange(80) % 2 == 0, np.digitize(x[:, 1], [-0.7, 0.0, 0.7]), -1)
    management = np.digitize(x[:, 2], [-0.5, 0.5])
    return {"x": x, "criteria": criteria, "thickness": thickness, "management": management, "groups": np.arange(80).astype(str)}


@pytest.fixture(scope="module")
def fitted(synthetic) -> ClinicalHeads:
    s = synthetic
    return fit_clinical_heads(s["x"], s["criteria"], s["thickness"], s["management"], s["groups"], classifier_sha256=CLASSIFIER)


def test_fitted_heads_learn_and_describe_themselves(fitted, synthetic) -> None:
    out = fitted.predict(synthetic["x"])
    assert len(out) == 80
    case = out[0]
    assert list(case["concepts"]) == list(CRITERION_NAMES)
    assert list(case["thickness"]["probabilities"]) == list(THICKNESS_CATEGORIES)
    assert list(case["management"]) == list(MANAGEMENT_CLASSES)
    assert np.isclose(sum(case["thickness"]["probabilities"].values()), 1) and np.isclose(sum(case["management"].values()), 1)
    present = np.array([[c["concepts"][n]["present"] for n in CRITERION_NAMES] for c in out])
    assert (present == synthetic["criteria"]).mean() > 0.7
    scores = [c["seven_point_score"] for c in out]
    assert scores == [sum(c["concepts"][n]["points"] for n in CRITERION_NAMES if c["concepts"][n]["present"]) for c in out]
    assert all(c["seven_point_suggests_melanoma"] == (c["seven_point_score"] >= 3) for c in out)
    greater = fitted.raw(synthetic["x"])["thickness_greater"]
    assert (np.diff(greater, axis=1) <= 0).all()
    assert set(fitted.record["fit"]["concepts"]) == set(CRITERION_NAMES)


def test_save_and_load_round_trip(fitted, synthetic, tmp_path) -> None:
    path = tmp_path / "heads.safetensors"
    sha = fitted.save(path)
    record = json.loads(record_path(path).read_text())
    assert record["sha256"] == sha and record["classifier_sha256"] == CLASSIFIER
    loaded = ClinicalHeads.from_file(path, classifier_sha256=CLASSIFIER)
    np.testing.assert_allclose(loaded.raw(synthetic["x"])["concepts"], fitted.raw(synthetic["x"])["concepts"], atol=1e-5)


def test_heads_refuse_another_classifier(fitted, tmp_path) -> None:
    path = tmp_path / "heads.safetensors"
    fitted.save(path)
    with pytest.raises(ValueError, match=r"fitted on the features of classifier a{64}, not of b{64}; the heads are only valid on that backbone"):
        ClinicalHeads.from_file(path, classifier_sha256="b" * 64)


def test_a_damaged_or_replaced_file_is_refused(fitted, tmp_path) -> None:
    path = tmp_path / "heads.safetensors"
    fitted.save(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="heads.safetensors: SHA-256 .* differs .* damaged or replaced"):
        ClinicalHeads.from_file(path, classifier_sha256=CLASSIFIER)
    record_path(path).unlink()
    with pytest.raises(FileNotFoundError, match=r"heads.json; fit them with scripts/fit_clinical_heads.py"):
        ClinicalHeads.from_file(path, classifier_sha256=CLASSIFIER)


def test_features_of_the_wrong_shape_or_not_finite_are_refused(fitted) -> None:
    with pytest.raises(ValueError, match=r"features must be \[N, 6\]"):
        fitted.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(np.full((1, 6), np.nan))
    assert len(fitted.predict(np.zeros(6))) == 1  # one case as a vector


def test_heads_check_their_shapes() -> None:
    rng = np.random.default_rng(0)
    good = {"concepts": (rng.normal(size=(7, 4)), np.zeros(7)), "thickness": (rng.normal(size=(3, 4)), np.zeros(3)), "management": (rng.normal(size=(3, 4)), np.zeros(3))}
    with pytest.raises(ValueError, match="'management'"):
        ClinicalHeads({**good, "management": (rng.normal(size=(2, 4)), np.zeros(2))}, CLASSIFIER)
    with pytest.raises(ValueError, match="feature size"):
        ClinicalHeads({**good, "thickness": (rng.normal(size=(3, 5)), np.zeros(3))}, CLASSIFIER)


@pytest.mark.realdata
def test_the_shipped_heads_run_on_the_shipped_classifier(data_root) -> None:
    import torch

    from dermdx.data.adapters import read_derm7pt
    from dermdx.default_model import default_model_path
    from dermdx.inference import Predictor

    if not DEFAULT_HEADS.is_file():
        pytest.skip("no clinical heads ship in this version")
    torch.set_num_threads(1)
    predictor = Predictor.from_checkpoint(default_model_path(), tta="none")
    heads = ClinicalHeads.default(classifier_sha256=predictor.sha256)
    manifest = read_derm7pt(data_root / "derm7pt" / "labels.csv")
    few = manifest.subset(np.arange(4))
    out = heads.predict(predictor.predict_features(few))
    assert len(out) == 4
    for case in out:
        assert set(case["concepts"]) == set(CRITERION_NAMES)
        assert all(0.0 <= c["probability"] <= 1.0 for c in case["concepts"].values())
        assert 0 <= case["seven_point_score"] <= 10
    with pytest.raises(ValueError, match="only valid on that backbone"):
        ClinicalHeads.default(classifier_sha256="0" * 64)
