"""OOD detector: fitting on synthetic features, the saved file's checks, and the shipped detector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dermdx.ood import DEFAULT_OOD, OodDetector
from dermdx.ood_sets import (
    GENERATED_KINDS,
    SKIMAGE_SAMPLES,
    generated_images,
    to_rgb_uint8,
    write_images,
)

DIM = 32


def synthetic_features(n: int, centre: np.ndarray, seed: int) -> np.ndarray:
    """Non-negative (post-ReLU-like) features scattered around ``centre``."""
    return np.abs(centre + np.random.default_rng(seed).normal(0, 0.3, (n, DIM))).astype(np.float32)


@pytest.fixture(scope="module")
def toy():
    """Dermoscopy around one pattern, clinical photos around a pattern sharing half of it."""
    rng = np.random.default_rng(0)
    derm_centre = rng.uniform(0.5, 2, DIM)
    clin_centre = derm_centre.copy()
    clin_centre[: DIM // 2] = rng.uniform(0.5, 2, DIM // 2)
    far_centre = np.zeros(DIM)
    far_centre[:3] = 5.0  # a different direction entirely: 'not a skin lesion'
    detector = OodDetector.fit(
        synthetic_features(200, derm_centre, 1), synthetic_features(60, derm_centre, 2), synthetic_features(60, clin_centre, 3),
        knn_k=5, keep=0.9, folds=3, classifier_sha256="a" * 64,
    )
    return detector, {"derm": synthetic_features(50, derm_centre, 4), "clin": synthetic_features(50, clin_centre, 5),
                      "far": synthetic_features(20, far_centre, 6)}


def test_fitted_detector_flags_far_points_and_clinical_photos(toy):
    detector, data = toy
    derm, clin, far = (detector.score(data[k]) for k in ("derm", "clin", "far"))
    assert np.mean([r.in_distribution for r in derm]) >= 0.8
    assert all(not r.in_distribution for r in far)
    assert all(any("not like the dermoscopic" in reason for reason in r.reasons) for r in far)
    assert np.mean(["clinical (macroscopic) photo" in " ".join(r.reasons) for r in clin]) >= 0.9
    result = derm[0]
    assert set(result.scores) == {"unfamiliar", "clinical_photo", "knn_distance", "clinical_logit"}
    assert result.in_distribution == (max(result.scores["unfamiliar"], result.scores["clinical_photo"]) <= 0)


def test_thresholds_keep_the_requested_share_out_of_fold(toy):
    detector, _ = toy
    assert detector.calibration["held_out_kept"] >= 0.9
    assert detector.calibration["keep_target"] == 0.9


def test_bank_holds_paired_images_only_as_cluster_means():
    from dermdx.ood import _cluster_means

    rng = np.random.default_rng(0)
    unit = np.abs(rng.normal(0, 1, (40, 8)))
    unit[0] = 0.0
    unit[0, 0] = 50.0  # one outlier would be a cluster of its own: it must not be saved
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    centres = _cluster_means(unit, 6, 5, 0)
    assert 0 < len(centres) <= 6
    assert not np.isclose(centres @ unit[0], 1.0, atol=1e-4).any()
    assert len(_cluster_means(unit, 0, 5, 0)) == 0


def test_save_and_load_round_trip(toy, tmp_path: Path):
    detector, data = toy
    info = detector.save(tmp_path / "ood.npz", record={"note": "test"})
    assert json.loads((tmp_path / "ood.json").read_text())["note"] == "test"
    assert info["classifier_sha256"] == "a" * 64
    loaded = OodDetector.from_file(tmp_path / "ood.npz", classifier_sha256="a" * 64)
    np.testing.assert_allclose(loaded.combined_score(data["derm"]), detector.combined_score(data["derm"]), atol=1e-6)
    with np.load(tmp_path / "ood.npz", allow_pickle=False) as arrays:  # plain arrays, no pickle
        assert "bank" in arrays.files


def test_wrong_classifier_is_refused(toy, tmp_path: Path):
    detector, _ = toy
    detector.save(tmp_path / "ood.npz")
    with pytest.raises(ValueError, match="fitted on the features of classifier a{64}, not b{64}.*refit"):
        OodDetector.from_file(tmp_path / "ood.npz", classifier_sha256="b" * 64)


def test_changed_file_is_refused(toy, tmp_path: Path):
    detector, _ = toy
    path = tmp_path / "ood.npz"
    detector.save(path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="SHA-256 .* differs .*damaged or replaced"):
        OodDetector.from_file(path, classifier_sha256="a" * 64)


def test_missing_record_is_named(toy, tmp_path: Path):
    detector, _ = toy
    detector.save(tmp_path / "ood.npz")
    (tmp_path / "ood.json").unlink()
    with pytest.raises(FileNotFoundError, match="ood.json"):
        OodDetector.from_file(tmp_path / "ood.npz", classifier_sha256="a" * 64)


def test_features_of_the_wrong_size_are_refused(toy):
    detector, _ = toy
    with pytest.raises(ValueError, match=rf"\[N, {DIM}\].*got shape \(2, 7\)"):
        detector.score(np.zeros((2, 7)))


def test_fit_rejects_unpaired_cases():
    with pytest.raises(ValueError, match="one row per case"):
        OodDetector.fit(np.ones((10, 4)), np.ones((6, 4)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="keep=1.5"):
        OodDetector.fit(np.ones((10, 4)), np.ones((6, 4)), np.ones((6, 4)), keep=1.5)


def test_generated_images_are_reproducible_and_varied():
    a, b = generated_images(seed=3, per_kind=2, size=32), generated_images(seed=3, per_kind=2, size=32)
    assert list(a) == [f"{kind}_{k:03d}" for kind in GENERATED_KINDS for k in range(2)]
    assert all(np.array_equal(a[name], b[name]) and a[name].shape == (32, 32, 3) for name in a)
    assert not np.array_equal(a["uniform_noise_000"], generated_images(seed=4, per_kind=2, size=32)["uniform_noise_000"])


def test_to_rgb_uint8_handles_grey_bool_float_and_rgba():
    assert to_rgb_uint8(np.zeros((4, 5), bool)).shape == (4, 5, 3)
    assert to_rgb_uint8(np.ones((4, 5))).max() == 255
    rgba = np.zeros((2, 2, 4), np.uint8)  # fully transparent -> white
    assert (to_rgb_uint8(rgba) == 255).all()


# The shipped detector with the shipped classifier: both ship in the package, so no data is needed.

@pytest.fixture(scope="module")
def shipped():
    import torch

    from dermdx.default_model import default_model_path
    from dermdx.inference import Predictor

    torch.set_num_threads(1)
    predictor = Predictor.from_checkpoint(default_model_path())
    return predictor, OodDetector.default(classifier_sha256=predictor.sha256)


def test_shipped_file_is_small_and_refuses_other_classifiers():
    assert DEFAULT_OOD.stat().st_size < 4 * 1024 * 1024
    with pytest.raises(ValueError, match="fitted on the features of classifier"):
        OodDetector.default(classifier_sha256="0" * 64)


def test_shipped_detector_flags_generated_images(shipped, tmp_path: Path):
    from dermdx.data.adapters import read_images

    predictor, detector = shipped
    images = generated_images(seed=7, per_kind=1, size=160)
    results = detector.score(predictor.predict_features(read_images(write_images(images, tmp_path))))
    flagged = {name: not r.in_distribution for name, r in zip(images, results, strict=True)}
    assert sum(flagged.values()) >= len(flagged) - 1, flagged


@pytest.mark.realdata
def test_shipped_detector_on_real_images(shipped, data_root, tmp_path: Path):
    from dermdx.data.adapters import read_derm7pt, read_images, read_ph2
    from dermdx.data.manifest import Manifest

    predictor, detector = shipped
    head = lambda m, rows, n: Manifest(m.frame[rows].head(n), m.root)
    derm = read_derm7pt(data_root / "derm7pt/labels.csv", modality="dermoscopy")
    clinical = read_derm7pt(data_root / "derm7pt/labels.csv", modality="clinical")
    valid = (derm.frame["split"] == "valid").to_numpy()  # cases the detector never saw
    derm, clinical = head(derm, valid, 12), head(clinical, valid, 12)
    ph2 = read_ph2(data_root / "ph2/labels.csv")
    ph2 = head(ph2, slice(None), 8)

    accepted = [r.in_distribution for m in (derm, ph2) for r in detector.score(predictor.predict_features(m))]
    assert np.mean(accepted) >= 0.75, accepted
    clinical_flags = [not r.in_distribution for r in detector.score(predictor.predict_features(clinical))]
    assert np.mean(clinical_flags) >= 0.6, clinical_flags

    skimage = pytest.importorskip("skimage.data")
    assert "astronaut" in SKIMAGE_SAMPLES
    paths = write_images({"astronaut": to_rgb_uint8(skimage.astronaut())}, tmp_path)
    (astronaut,) = detector.score(predictor.predict_features(read_images(paths)))
    assert not astronaut.in_distribution
