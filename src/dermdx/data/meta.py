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

# Derm7pt names three body sites differently from HAM10000/ISIC; one vocabulary lets a fusion
# model trained on both sources learn one weight per site instead of one per source's spelling.
SITE_SYNONYMS = {"lower limbs": "lower extremity", "upper limbs": "upper extremity", "genital areas": "genital"}


def normalise_site(value: str) -> str:
    """Lower case, trimmed, Derm7pt's names mapped onto HAM10000's."""
    site = str(value).lower().strip()
    return SITE_SYNONYMS.get(site, site)


def unknown_sites(frame: pd.DataFrame, schema: MetaSchema) -> list[str]:
    """Sites given in ``frame`` that ``schema`` does not know (the model reads them as missing)."""
    if "site" not in frame:
        return []
    sites = {normalise_site(s) for s in frame["site"].fillna("").astype(str)} - {"", "unknown"}
    return sorted(sites - set(schema.sites))


@dataclass
class MetaSchema:
    age_mean: float = 50.0
    age_std: float = 20.0
    sites: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        # age_z, age_missing, one-hot sexes, sex_missing, one-hot sites, site_missing
        return 2 + len(SEXES) + 1 + len(self.sites) + 1

    def field_columns(self) -> dict[str, slice]:
        """The columns of each field (value(s) and its missing flag), so one field can be hidden alone.

        Read off ``feature_names`` (each name starts with its field), so the layout is written once.
        """
        fields = [name.split("_", 1)[0] for name in self.feature_names()]
        return {f: slice(fields.index(f), len(fields) - fields[::-1].index(f)) for f in dict.fromkeys(fields)}

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
    sites = frame["site"].fillna("").astype(str).map(normalise_site).to_numpy() if "site" in frame else np.array([""] * n)
    for k, site in enumerate(schema.sites):
        out[sites == site, column + k] = 1.0
    out[~np.isin(sites, schema.sites), column + len(schema.sites)] = 1.0
    return out


def missing_meta(schema: MetaSchema, n: int = 1) -> np.ndarray:
    """The encoding of ``n`` records with nothing known."""
    return encode_meta(pd.DataFrame({"age": [np.nan] * n, "sex": [""] * n, "site": [""] * n}), schema)


def attach_metadata(manifest, csv_path) -> None:
    """Fill ``age``, ``sex`` and ``site`` of ``manifest`` rows from a CSV keyed by image.

    The CSV needs an ``image`` column (file name without extension, as in ISIC files) and any of
    ``age``, ``sex``, ``site`` (``age_approx`` / ``anatom_site_general`` are accepted too). Images
    without a row keep "unknown"; rows naming no given image are reported, not ignored.

    Raises:
        FileNotFoundError: no such CSV.
        ValueError: no ``image`` column, a duplicated image, a non-numeric age (naming the row),
            or CSV rows that match no image.
    """
    from pathlib import Path

    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"metadata file not found: {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = table.rename(columns={"age_approx": "age", "anatom_site_general": "site", "localization": "site"})
    if "image" not in table.columns:
        raise ValueError(f"{path}: needs an 'image' column (file name without extension); columns are {list(table.columns)}")
    if table["image"].duplicated().any():
        raise ValueError(f"{path}: image {table['image'][table['image'].duplicated()].iloc[0]!r} has more than one row")
    if "age" in table.columns:
        raw = table["age"].str.strip()
        ages = pd.to_numeric(raw.where(raw != "", None), errors="coerce")
        bad = ages.isna() & (raw != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{path}: row {row + 1} (image {table['image'].iloc[row]}): age {raw.iloc[row]!r} is not a number; leave it empty if unknown")
        table["age"] = ages
    keys = manifest.frame["image_id"].astype(str).map(lambda value: Path(value).name)
    unmatched = sorted(set(table["image"]) - set(keys))
    if unmatched:
        raise ValueError(f"{path}: {len(unmatched)} row(s) match no given image, e.g. {unmatched[0]!r}; image must be the file name without extension")
    lookup = table.set_index("image")
    for column in ("age", "sex", "site"):
        if column in lookup.columns:
            values = keys.map(lookup[column])
            manifest.frame[column] = values.where(values.notna(), manifest.frame[column])
