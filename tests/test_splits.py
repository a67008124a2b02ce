"""Grouped splits: no patient or lesion crosses a fold, saved splits are verified on reuse."""

from __future__ import annotations

import numpy as np
import pytest

from dermdx.config import SplitConfig
from dermdx.data.adapters import read_ham10000
from dermdx.data.manifest import Manifest, empty_frame
from dermdx.data.splits import (
    assert_no_group_leak,
    centre_split,
    group_ids,
    kfold_split,
    load_split,
    save_split,
    train_val_indices,
)


def make_manifest(rows: list[tuple[str, str, str, str]]) -> Manifest:
    """rows: (patient_id, lesion_id, label, centre); image ids are img0, img1, ..."""
    frame = empty_frame(len(rows))
    frame["image_id"] = [f"img{i}" for i in range(len(rows))]
    frame["image"] = [f"img{i}.jpg" for i in range(len(rows))]
    frame["patient_id"], frame["lesion_id"], frame["label"], frame["centre"] = (list(c) for c in zip(*rows, strict=True))
    frame["modality"] = "dermoscopy"
    return Manifest(frame, "/data", source="synthetic")


def tangled_manifest(n_simple: int = 60) -> Manifest:
    """Simple one-image patients plus the hard cases: a patient with several lesions, a lesion
    filed under two patient ids, a chain joining three patients, and rows with no ids at all."""
    rng = np.random.default_rng(0)
    labels = ["nv", "mel", "bcc"]
    rows = [(f"p{i}", f"L{i}", labels[i % 3], ["a", "b", "c"][rng.integers(3)]) for i in range(n_simple)]
    rows += [
        ("P_multi", "LA", "nv", "a"), ("P_multi", "LB", "mel", "a"), ("P_multi", "LC", "bcc", "a"),
        ("Q1", "L_shared", "mel", "b"), ("Q2", "L_shared", "mel", "b"),
        ("R1", "LR1", "nv", "c"), ("R2", "LR1", "nv", "c"), ("R2", "LR2", "bcc", "c"), ("R3", "LR2", "bcc", "c"),
        ("", "", "nv", "a"), ("", "", "mel", "b"), ("S", "", "nv", "c"), ("S", "", "mel", "c"),
    ]  # fmt: skip
    return make_manifest(rows)


def test_group_ids_merge_patients_and_lesions():
    m = tangled_manifest(n_simple=0)
    g = group_ids(m)
    assert g[0] == g[1] == g[2]  # one patient, three lesions
    assert g[3] == g[4]  # one lesion under two patient ids
    assert g[5] == g[6] == g[7] == g[8]  # R1-LR1-R2-LR2-R3 chain
    assert g[11] == g[12]  # same patient, no lesion id
    assert len({g[0], g[3], g[5], g[9], g[10], g[11]}) == 6  # rows without ids stand alone


@pytest.mark.parametrize("seed", [0, 1])
def test_kfold_no_patient_or_lesion_crosses(seed):
    m = tangled_manifest()
    folds = kfold_split(m, n_folds=4, seed=seed)
    assert set(folds) == {0, 1, 2, 3}
    f = m.frame
    for column in ("patient_id", "lesion_id"):
        for key, rows in f[f[column] != ""].groupby(column):
            assert len(set(folds[rows.index])) == 1, f"{column} {key} crosses folds"
    for fold in range(4):
        assert_no_group_leak(m, np.flatnonzero(folds != fold), np.flatnonzero(folds == fold))
        assert set(f.loc[folds == fold, "label"]) == {"nv", "mel", "bcc"}
    assert np.array_equal(folds, kfold_split(m, n_folds=4, seed=seed))


def test_kfold_bad_n_folds():
    with pytest.raises(ValueError, match=r"n_folds must be between 2 and the number of patient/lesion groups \(3\); got 5"):
        kfold_split(make_manifest([("p1", "l1", "nv", "a"), ("p2", "l2", "nv", "a"), ("p3", "l3", "nv", "a")]), 5)


def test_assert_no_group_leak_names_the_group():
    m = tangled_manifest(n_simple=0)
    with pytest.raises(ValueError, match=r"patient_id 'P_multi' leaks across the split: 1 training and 2 validation"):
        assert_no_group_leak(m, [0], [1, 2])
    with pytest.raises(ValueError, match=r"lesion_id 'L_shared' leaks"):
        assert_no_group_leak(m, [3], [4])
    with pytest.raises(ValueError, match=r"row 5 .* in both"):
        assert_no_group_leak(m, [5], [5])
    assert_no_group_leak(m, [0, 1, 2], [3, 4])


def test_centre_split_and_leave_one_centre_out(tmp_path):
    m = tangled_manifest()
    held = centre_split(m, "b")
    assert set(m.frame.loc[held == 1, "centre"]) == {"b"} and "b" not in set(m.frame.loc[held == 0, "centre"])
    with pytest.raises(ValueError, match=r"centre 'bb' not in the manifest; did you mean 'b'\? Centres present: \['a', 'b', 'c'\]"):
        centre_split(m, "bb")
    train, val = train_val_indices(m, SplitConfig(kind="centre", centre="c", file=str(tmp_path / "loco.csv")))
    assert set(m.frame.loc[val, "centre"]) == {"c"} and "c" not in set(m.frame.loc[train, "centre"])
    assert len(train) + len(val) == len(m)
    with pytest.raises(ValueError, match=r"needs split.centre; centres present: \['a', 'b', 'c'\]"):
        train_val_indices(m, SplitConfig(kind="centre"))


def test_centre_split_refuses_a_patient_seen_at_two_centres():
    m = make_manifest([("p1", "l1", "nv", "a"), ("p1", "l2", "nv", "b"), ("p2", "l3", "nv", "b")])
    with pytest.raises(ValueError, match="patient_id 'p1' leaks"):
        train_val_indices(m, SplitConfig(kind="centre", centre="a"))


def test_save_and_load_round_trip(tmp_path):
    m = tangled_manifest()
    folds = kfold_split(m, n_folds=3, seed=7)
    path = tmp_path / "splits" / "folds.csv"
    save_split(path, m, folds, kind="kfold", seed=7)
    loaded, info = load_split(path, m)
    assert np.array_equal(loaded, folds)
    assert info["kind"] == "kfold" and info["seed"] == 7 and info["n_folds"] == 3
    assert info["fingerprint"] == m.fingerprint()
    # Rows in another order: matched by image id.
    order = np.random.default_rng(1).permutation(len(m))
    reloaded, _ = load_split(path, m.subset(order))
    assert np.array_equal(reloaded, folds[order])


def test_load_split_rejects_other_data(tmp_path):
    m = tangled_manifest()
    path = tmp_path / "folds.csv"
    save_split(path, m, kfold_split(m, 3), kind="kfold", seed=0)
    with pytest.raises(ValueError, match=r"made for other images: 0 manifest images are not in it.*1 of its images are not in the manifest"):
        load_split(path, m.subset(np.arange(len(m) - 1)))
    relabelled = m.subset(np.arange(len(m)))
    relabelled.frame.loc[0, "label"] = "bcc"
    with pytest.raises(ValueError, match=r"other labels: image img0 was 'nv', is now 'bcc'.*delete .*folds.csv"):
        load_split(path, relabelled)
    (tmp_path / "folds.csv.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"folds.csv.json"):
        load_split(path, m)


def test_save_split_needs_unique_ids(tmp_path):
    m = make_manifest([("p1", "l1", "nv", "a"), ("p2", "l2", "nv", "a")])
    m.frame["image_id"] = ["same", "same"]
    with pytest.raises(ValueError, match="image id 'same' occurs more than once"):
        save_split(tmp_path / "f.csv", m, np.array([0, 1]), kind="kfold", seed=0)


def test_train_val_indices_saves_then_reuses(tmp_path):
    m = tangled_manifest()
    file = tmp_path / "folds.csv"
    config = SplitConfig(kind="kfold", n_folds=3, fold=1, seed=2, file=str(file))
    train, val = train_val_indices(m, config)
    assert file.is_file() and (tmp_path / "folds.csv.json").is_file()
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(m)
    again = train_val_indices(m, config)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    with pytest.raises(ValueError, match=r"other settings \(seed: file 2 vs config 3\)"):
        train_val_indices(m, SplitConfig(kind="kfold", n_folds=3, fold=1, seed=3, file=str(file)))
    with pytest.raises(ValueError, match=r"split.fold 3 is out of range for n_folds=3; use 0..2"):
        train_val_indices(m, SplitConfig(n_folds=3, fold=3))
    without_file = train_val_indices(m, SplitConfig(kind="kfold", n_folds=3, fold=1, seed=2))
    assert np.array_equal(without_file[1], val)


@pytest.mark.realdata
def test_real_ham10000_five_folds(data_root):
    m = read_ham10000(data_root / "ham10000" / "metadata.csv")
    folds = kfold_split(m, n_folds=5, seed=0)
    for fold in range(5):
        val = np.flatnonzero(folds == fold)
        assert_no_group_leak(m, np.flatnonzero(folds != fold), val)
        assert sorted(set(m.frame.loc[val, "label"])) == m.classes
        assert 0.15 < len(val) / len(m) < 0.25
