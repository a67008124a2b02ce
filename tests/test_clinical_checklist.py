"""7-point criteria, weights and label mappings (Derm7pt, PH2); ordinal thickness outputs."""

import numpy as np
import pandas as pd
import pytest

from dermdx.clinical.checklist import (
    CRITERION_NAMES,
    derm7pt_criteria,
    derm7pt_management,
    derm7pt_thickness,
    ph2_criteria,
    seven_point_score,
)
from dermdx.clinical.ordinal import category_probs, cumulative_targets, median_category, monotone


def _derm7pt_row(**changes: str) -> dict:
    row = {
        "pigment_network": "typical", "blue_whitish_veil": "absent", "vascular_structures": "absent", "streaks": "absent",
        "pigmentation": "absent", "dots_and_globules": "absent", "regression_structures": "absent",
        "diagnosis": "clark nevus", "management": "clinical follow up",
    }  # fmt: skip
    return {**row, **changes}


def test_major_criteria_score_two_and_minor_one() -> None:
    assert CRITERION_NAMES[:3] == ("atypical_pigment_network", "blue_whitish_veil", "atypical_vascular_pattern")
    assert seven_point_score(np.eye(7)).tolist() == [2, 2, 2, 1, 1, 1, 1]
    assert seven_point_score(np.ones((1, 7))).tolist() == [10]
    with pytest.raises(ValueError, match=r"\[N, 7\]"):
        seven_point_score(np.ones((2, 6)))


def test_derm7pt_values_map_to_the_seven_point_sense() -> None:
    frame = pd.DataFrame([
        _derm7pt_row(),
        _derm7pt_row(pigment_network="atypical", vascular_structures="dotted", regression_structures="white areas"),
        _derm7pt_row(vascular_structures="arborizing", streaks="regular", pigmentation="localized irregular", diagnosis="melanoma (in situ)"),
    ])  # fmt: skip
    criteria = derm7pt_criteria(frame)
    assert seven_point_score(criteria).tolist() == [0, 5, 1]
    assert derm7pt_thickness(frame).tolist() == [-1, -1, 0]
    assert derm7pt_management(frame).tolist() == [1, 1, 1]


def test_an_unknown_derm7pt_value_names_the_row_and_column() -> None:
    frame = pd.DataFrame([_derm7pt_row(), _derm7pt_row(streaks="irregullar")])
    with pytest.raises(ValueError, match=r"row 2 has streaks='irregullar'"):
        derm7pt_criteria(frame, "labels.csv")


def test_ph2_maps_only_what_corresponds() -> None:
    frame = pd.DataFrame({"pigment_network": ["T", "AT"], "dots_globules": ["AT", "T"], "streaks": ["P", "A"], "regression_areas": ["A", "P"], "blue_whitish_veil": ["P", "A"]})
    mapped = ph2_criteria(frame)
    assert set(mapped) == {"atypical_pigment_network", "irregular_dots_globules", "regression_structures", "blue_whitish_veil"}
    assert mapped["atypical_pigment_network"].tolist() == [0, 1]
    assert ph2_criteria(frame, loose=True)["irregular_streaks"].tolist() == [1, 0]


@pytest.mark.realdata
def test_the_mapping_reproduces_derm7pt_seven_point_scores(data_root) -> None:
    from dermdx.data.adapters import read_derm7pt

    frame = read_derm7pt(data_root / "derm7pt" / "labels.csv").frame
    assert (seven_point_score(derm7pt_criteria(frame)) == frame["seven_point_score"].astype(int)).all()


@pytest.mark.parametrize("seed", range(5))
def test_ordinal_outputs_are_monotone_and_sum_to_one(seed: int) -> None:
    p = np.random.default_rng(seed).uniform(size=(200, 3))
    fixed = monotone(p)
    assert (np.diff(fixed, axis=1) <= 0).all()
    assert (fixed >= p).all()  # repairs only ever raise a "thicker than" probability
    bands = category_probs(p)
    assert (bands >= -1e-12).all() and np.allclose(bands.sum(axis=1), 1)
    median = median_category(p)
    assert ((median >= 0) & (median <= 3)).all()
    assert (np.cumsum(bands, axis=1)[np.arange(200), median] >= 0.5 - 1e-12).all()


def test_cumulative_targets_and_their_errors() -> None:
    assert cumulative_targets(np.array([0, 2, 3]), 4).tolist() == [[0, 0, 0], [1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="categories 0..3"):
        cumulative_targets(np.array([0, 4]), 4)
