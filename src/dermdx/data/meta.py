"""Patient metadata (age, sex, body site) as a fixed-length vector, with explicit missing flags.

The schema (age scaling, known sexes and sites) is fitted on training rows and saved with the
model, so inference encodes exactly as training did. Missing values never become a fake value:
each field has a "missing" flag, and a wholly absent record is the all-missing vector, which is
what a model sees when no metadata is given at prediction time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

SEXES = ("male", "female")


@dataclass
class MetaSchema:
    age_mean: float = 50.0
    age_std: float = 20.0
    sites: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        # age_z, age_missing, one-hot sexes, sex_missing, one-hot sites, site_missing
        return 2 + len(SEXES) + 1 + len(self.sites) + 1

    def feature_names(self) -> list[str]:
        return ["age_z", "age_missing", *(f"sex_{s}" for s in SEXES), "sex_missing", *(f"site_{s}" for s in self.sites), "site_missing"]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> MetaSchema:
        return cls(**values)


def fit_meta_schema(frame: pd.DataFrame, *, min_site_count: int = 5) -> MetaSchema:
    """Age scaling and the body sites seen at least ``min_site_count`` times in ``frame``."""
    ages = pd.to_numeric(frame["age"], errors="coerce").dropna()
    sites = frame["site"].fillna("").astype(str).str.lower()
    counts = sites[sites != ""].value_counts()
    return MetaSchema(
        age_mean=float(ages.mean()) if len(ages) else 50.0,
        age_std=float(ages.std()) if len(ages) > 1 and ages.std() > 0 else 20.0,
        sites=sorted(counts[counts >= min_site_count].index.tolist()),
    )


def encode_meta(frame: pd.DataFrame, schema: MetaSchema) -> np.ndarray:
    """``[len(frame), schema.dim]`` float32. A site outside the schema counts as missing.

    Raises:
        ValueError: a non-numeric age or an unknown sex value, naming the row.
    """
    n = len(frame)
    out = np.zeros((n, schema.dim), dtype=np.float32)
    ages = pd.to_numeric(frame["age"], errors="coerce") if "age" in frame else pd.Series([np.nan] * n)
    raw_ages = frame["age"] if "age" in frame else ages
    bad = ages.isna() & raw_ages.notna() & (raw_ages.astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"metadata row {row + 1}: age {raw_ages.iloc[row]!r} is not a number of years; leave it empty if unknown")
    age = ages.to_numpy(dtype=np.float64)
    known = ~np.isnan(age)
    out[known, 0] = (age[known] - schema.age_mean) / schema.age_std
    out[~known, 1] = 1.0
    sexes = frame["sex"].fillna("").astype(str).str.lower().str.strip().to_numpy() if "sex" in frame else np.array([""] * n)
    column = 2
    for k, sex in enumerate(SEXES):
        out[sexes == sex, column + k] = 1.0
    unknown = ~np.isin(sexes, [*SEXES, "", "unknown"])
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise ValueError(f"metadata row {row + 1}: sex {sexes[row]!r} is not one of {list(SEXES)} (or empty for unknown)")
    out[~np.isin(sexes, SEXES), column + len(SEXES)] = 1.0
    column += len(SEXES) + 1
    sites = frame["site"].fillna("").astype(str).str.lower().str.strip().to_numpy() if "site" in frame else np.array([""] * n)
    for k, site in enumerate(schema.sites):
        out[sites == site, column + k] = 1.0
    out[~np.isin(sites, schema.sites), column + len(schema.sites)] = 1.0
    return out


def missing_meta(schema: MetaSchema, n: int = 1) -> np.ndarray:
    """The encoding of ``n`` records with nothing known."""
    return encode_meta(pd.DataFrame({"age": [np.nan] * n, "sex": [""] * n, "site": [""] * n}), schema)
