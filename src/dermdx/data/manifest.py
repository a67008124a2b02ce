"""One manifest schema for every data source.

A manifest is a table with one row per image. Paths are stored relative to ``root`` so a manifest
moves with its data. Adapters (``dermdx.data.adapters``) turn each published format into it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# Column -> meaning. ``label`` may be empty for unlabelled images (prediction only).
MANIFEST_COLUMNS: dict[str, str] = {
    "image": "image path relative to the manifest root",
    "image_id": "image identifier (file name without extension unless the source gives one)",
    "label": "class name (lower case), empty when unknown",
    "lesion_id": "lesion identifier; images of one lesion never cross a split",
    "patient_id": "patient identifier; images of one patient never cross a split",
    "centre": "source centre / data set",
    "modality": "dermoscopy, clinical, ultrasound or histopathology",
    "age": "age in years (float, NaN when missing)",
    "sex": "male, female or empty",
    "site": "body site (lower case), empty when missing",
}
MODALITIES = ("dermoscopy", "clinical", "ultrasound", "histopathology")


@dataclass
class Manifest:
    """Rows of images plus the folder their relative paths start from.

    Example:
        >>> m = Manifest(frame, root=Path("../shared/data/ham10000"))
        >>> m.paths()[0]
    """

    frame: pd.DataFrame
    root: Path
    source: str = ""

    def __post_init__(self) -> None:
        missing = [c for c in MANIFEST_COLUMNS if c not in self.frame.columns]
        if missing:
            raise ValueError(f"manifest from {self.source or self.root} lacks columns {missing}")
        self.root = Path(self.root)
        self.frame = self.frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)

    def paths(self) -> list[Path]:
        return [self.root / p for p in self.frame["image"]]

    @property
    def classes(self) -> list[str]:
        """Sorted class names present in the labels."""
        return sorted(c for c in self.frame["label"].dropna().unique() if c != "")

    def subset(self, index: np.ndarray | list[int]) -> Manifest:
        return Manifest(self.frame.iloc[np.asarray(index)].copy(), self.root, self.source)

    def without_metadata(self) -> Manifest:
        """A copy with age, sex and site blanked: what a model sees when no metadata is given."""
        frame = self.frame.copy()
        frame["age"] = np.nan
        frame["sex"] = ""
        frame["site"] = ""
        return Manifest(frame, self.root, self.source)

    def metadata_given(self) -> np.ndarray:
        """Per row: is any of age, sex or site known? (What ``without_metadata`` takes away.)"""
        n = len(self.frame)
        known = np.zeros(n, dtype=bool)
        if "age" in self.frame:
            known |= pd.to_numeric(self.frame["age"], errors="coerce").notna().to_numpy()
        for column in ("sex", "site"):
            if column in self.frame:
                text = self.frame[column].fillna("").astype(str).str.strip().str.lower()
                known |= ~text.isin(["", "unknown", "nan"]).to_numpy()
        return known

    def label_indices(self, classes: list[str] | tuple[str, ...]) -> np.ndarray:
        """Labels as integer indices into ``classes``; raises naming the first unknown label."""
        lookup = {name: i for i, name in enumerate(classes)}
        labels = self.frame["label"]
        unknown = labels[~labels.isin(list(lookup))]
        if len(unknown):
            row = unknown.index[0]
            raise ValueError(
                f"{self.source or self.root}: row {row} (image {self.frame.at[row, 'image']}) has label "
                f"{unknown.iloc[0]!r}, not one of {list(classes)}; fix the label or set data.classes"
            )
        return labels.map(lookup).to_numpy(dtype=np.int64)

    def fingerprint(self) -> str:
        """A short hash of image ids and labels: tells whether two runs saw the same data."""
        payload = "\n".join(
            f"{i},{l}" for i, l in zip(self.frame["image_id"], self.frame["label"].fillna(""), strict=True)
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        self.frame[list(MANIFEST_COLUMNS)].to_csv(path, index=False)


def concat_manifests(manifests: list[Manifest], names: list[str]) -> Manifest:
    """One manifest from several sources (e.g. HAM10000 + Derm7pt + PH2) for multi-source training.

    Image paths become absolute (each source has its own root); ``image_id``, ``lesion_id`` and
    ``patient_id`` get the source name as a prefix, so ids that happen to coincide across sources
    never merge two lesions into one split group; ``centre`` keeps each source's own centres.

    Raises:
        ValueError: no manifests, a names list of another length, or a repeated name.
    """
    if not manifests or len(names) != len(manifests) or len(set(names)) != len(names):
        raise ValueError(f"need one distinct name per manifest; got {len(manifests)} manifests and names {names}")
    frames = []
    for manifest, name in zip(manifests, names, strict=True):
        frame = manifest.frame.copy()
        frame["image"] = [str((manifest.root / p).resolve()) for p in frame["image"]]
        for column in ("image_id", "lesion_id", "patient_id"):
            frame[column] = [f"{name}:{v}" if str(v) != "" else "" for v in frame[column]]
        frame["source"] = name
        frames.append(frame)
    combined = pd.concat(frames, ignore_index=True)
    return Manifest(combined, Path("/"), source=" + ".join(m.source or str(m.root) for m in manifests))


def empty_frame(n: int) -> pd.DataFrame:
    """A frame with every manifest column, filled with missing values, for adapters to fill."""
    frame = pd.DataFrame({c: [""] * n for c in MANIFEST_COLUMNS})
    frame["age"] = np.nan
    return frame
