"""The dermoscopic 7-point checklist: its criteria, their weights, and labels read from Derm7pt / PH2.

Argenziano G, Fabbrocini G, Carli P, De Giorgi V, Sammarco E, Delfino M. Epiluminescence
microscopy for the diagnosis of doubtful melanocytic skin lesions: comparison of the ABCD rule of
dermatoscopy and a new 7-point checklist based on pattern analysis. Arch Dermatol 1998;134:1563-70.

Three major criteria score 2 points each, four minor criteria 1 point each; a total of 3 or more
suggests melanoma. Each criterion here is binary in that 7-point sense (e.g. "atypical pigment
network", not the three-valued pigment_network column). The mapping from Derm7pt's columns is
the one that reproduces Derm7pt's own ``seven_point_score`` for all 616 cases (checked in
``tests/test_clinical_checklist.py``): atypical vascular pattern = dotted or linear irregular
vessels; irregular pigmentation = diffuse or localized irregular; regression = any regression
structure (blue areas, white areas or both).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

SEVEN_POINT_CUTOFF = 3


@dataclass(frozen=True)
class Criterion:
    """One 7-point criterion: its name, weight, display text and the Derm7pt values that make it present."""

    name: str
    weight: int
    text: str
    derm7pt_column: str
    derm7pt_present: frozenset[str]


CRITERIA: tuple[Criterion, ...] = (
    Criterion("atypical_pigment_network", 2, "atypical pigment network", "pigment_network", frozenset({"atypical"})),
    Criterion("blue_whitish_veil", 2, "blue-whitish veil", "blue_whitish_veil", frozenset({"present"})),
    Criterion("atypical_vascular_pattern", 2, "atypical vascular pattern", "vascular_structures", frozenset({"dotted", "linear irregular"})),
    Criterion("irregular_streaks", 1, "irregular streaks", "streaks", frozenset({"irregular"})),
    Criterion("irregular_pigmentation", 1, "irregular pigmentation", "pigmentation", frozenset({"diffuse irregular", "localized irregular"})),
    Criterion("irregular_dots_globules", 1, "irregular dots/globules", "dots_and_globules", frozenset({"irregular"})),
    Criterion("regression_structures", 1, "regression structures", "regression_structures", frozenset({"blue areas", "white areas", "combinations"})),
)
CRITERION_NAMES: tuple[str, ...] = tuple(c.name for c in CRITERIA)
WEIGHTS = np.array([c.weight for c in CRITERIA])

# Every value Derm7pt uses per column; anything else is a data error, not "absent".
DERM7PT_VALUES: dict[str, frozenset[str]] = {
    "pigment_network": frozenset({"absent", "typical", "atypical"}),
    "blue_whitish_veil": frozenset({"absent", "present"}),
    "vascular_structures": frozenset({"absent", "arborizing", "comma", "hairpin", "within regression", "wreath", "dotted", "linear irregular"}),
    "streaks": frozenset({"absent", "regular", "irregular"}),
    "pigmentation": frozenset({"absent", "diffuse regular", "diffuse irregular", "localized regular", "localized irregular"}),
    "dots_and_globules": frozenset({"absent", "regular", "irregular"}),
    "regression_structures": frozenset({"absent", "blue areas", "white areas", "combinations"}),
}

# PH2's expert criteria that correspond to a 7-point criterion (A absent, T typical, AT atypical,
# P present). PH2 has no pigmentation-pattern or vascular criterion; its streaks are only absent /
# present (not regular / irregular), so they match "irregular streaks" only loosely and are kept
# apart as PH2_LOOSE.
PH2_MAP: dict[str, tuple[str, frozenset[str]]] = {
    "atypical_pigment_network": ("pigment_network", frozenset({"AT"})),
    "irregular_dots_globules": ("dots_globules", frozenset({"AT"})),
    "regression_structures": ("regression_areas", frozenset({"P"})),
    "blue_whitish_veil": ("blue_whitish_veil", frozenset({"P"})),
}
PH2_LOOSE: dict[str, tuple[str, frozenset[str]]] = {"irregular_streaks": ("streaks", frozenset({"P"}))}
PH2_VALUES: dict[str, frozenset[str]] = {
    "pigment_network": frozenset({"T", "AT"}),
    "dots_globules": frozenset({"A", "T", "AT"}),
    "streaks": frozenset({"A", "P"}),
    "regression_areas": frozenset({"A", "P"}),
    "blue_whitish_veil": frozenset({"A", "P"}),
}

# Derm7pt's melanoma thickness, as an ordered category (Breslow bands of the data set).
THICKNESS_CATEGORIES: tuple[str, ...] = ("in situ", "< 0.76 mm", "0.76-1.5 mm", "> 1.5 mm")
DERM7PT_THICKNESS: dict[str, int] = {
    "melanoma (in situ)": 0,
    "melanoma (less than 0.76 mm)": 1,
    "melanoma (0.76 to 1.5 mm)": 2,
    "melanoma (more than 1.5 mm)": 3,
}
MANAGEMENT_CLASSES: tuple[str, ...] = ("excision", "clinical follow up", "no further examination")


def seven_point_score(present: np.ndarray) -> np.ndarray:
    """The weighted sum of the criteria: ``present`` is ``[N, 7]`` (0/1, or probabilities for an expected score)."""
    present = np.asarray(present, dtype=np.float64)
    if present.ndim != 2 or present.shape[1] != len(CRITERIA):
        raise ValueError(f"expected criteria of shape [N, {len(CRITERIA)}] in the order {list(CRITERION_NAMES)}, got {present.shape}")
    return present @ WEIGHTS


def _check_values(frame: pd.DataFrame, allowed: Mapping[str, Iterable[str]], source: str) -> None:
    for column, values in allowed.items():
        if column not in frame.columns:
            raise ValueError(f"{source}: missing column {column!r}; the 7-point criteria need {sorted(allowed)}")
        bad = ~frame[column].isin(values)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{source}: row {row + 1} has {column}={frame[column].iat[row]!r}, not one of {sorted(values)}; fix the labels")


def derm7pt_criteria(frame: pd.DataFrame, source: str = "Derm7pt") -> np.ndarray:
    """The 7 binary criteria ``[N, 7]`` (int) from a Derm7pt frame (``read_derm7pt(...).frame``)."""
    _check_values(frame, DERM7PT_VALUES, source)
    return np.stack([frame[c.derm7pt_column].isin(c.derm7pt_present).to_numpy() for c in CRITERIA], axis=1).astype(int)


def derm7pt_thickness(frame: pd.DataFrame) -> np.ndarray:
    """Thickness category index per row (0..3), -1 where the diagnosis carries none (non-melanomas, metastases)."""
    return np.array([DERM7PT_THICKNESS.get(d, -1) for d in frame["diagnosis"]])


def derm7pt_management(frame: pd.DataFrame, source: str = "Derm7pt") -> np.ndarray:
    """Management class index per row, in :data:`MANAGEMENT_CLASSES` order."""
    _check_values(frame, {"management": MANAGEMENT_CLASSES}, source)
    return np.array([MANAGEMENT_CLASSES.index(m) for m in frame["management"]])


def ph2_criteria(frame: pd.DataFrame, *, loose: bool = False, source: str = "PH2") -> dict[str, np.ndarray]:
    """PH2 expert criteria as 7-point criteria, ``{criterion name: 0/1 array}`` for those that map.

    ``loose=True`` adds the loose matches (PH2 streaks present vs irregular streaks).
    """
    _check_values(frame, PH2_VALUES, source)
    table = {**PH2_MAP, **(PH2_LOOSE if loose else {})}
    return {name: frame[column].isin(present).to_numpy().astype(int) for name, (column, present) in table.items()}
