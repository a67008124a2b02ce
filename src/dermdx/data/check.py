"""Check a manifest before training on it: balance, centres, missing metadata, duplicates, bad files.

Backs ``dermdx data check PATH``. Every image is opened and fully decoded, because a JPEG cut
short opens fine and only fails on decode, often hours into training. Problems are collected and
reported together (the report is the point), and ``CheckReport.ok`` says whether any was fatal.

Example:
    >>> report = check_path("../shared/data/ph2/labels.csv")
    >>> print(report.to_text())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dermdx.config import data_root
from dermdx.data.adapters import (
    FORMATS,
    _did_you_mean,
    _read_csv,
    read_derm7pt,
    read_generic_csv,
    read_ham10000,
    read_image_folder,
    read_isic_groundtruth,
    read_ph2,
)
from dermdx.data.manifest import Manifest
from dermdx.data.images import load_image

METADATA_FIELDS = ("age", "sex", "site")
_SHOW = 20  # rows of a problem list printed in the text report


@dataclass
class CheckReport:
    """What ``check_manifest`` found. ``ok`` is False when a file is unreadable or an id repeats."""

    source: str
    root: str
    n_images: int
    class_counts: pd.DataFrame  # index: label ("(none)" for unlabelled); columns: count, percent
    centre_table: pd.DataFrame  # centre x label counts, with totals
    missing: dict[str, int]  # metadata field -> rows without a value
    duplicate_ids: dict[str, int]  # image id -> number of rows carrying it
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    images_verified: bool = True

    @property
    def ok(self) -> bool:
        return not self.unreadable and not self.duplicate_ids

    def to_text(self) -> str:
        """A plain-text report for the terminal."""
        lines = [f"Manifest: {self.source}", f"Image root: {self.root}", f"Images: {self.n_images}", ""]
        lines += ["Class balance:", self.class_counts.to_string(), ""]
        lines += ["Images per centre and class:", self.centre_table.to_string(), ""]
        lines.append("Missing metadata:")
        for name, count in self.missing.items():
            share = 100 * count / self.n_images if self.n_images else 0.0
            lines.append(f"  {name}: {count} ({share:.1f}%)")
        lines.append("")
        if self.duplicate_ids:
            lines.append(f"Duplicate image ids: {len(self.duplicate_ids)}")
            lines += [f"  {i} ({n} rows)" for i, n in list(self.duplicate_ids.items())[:_SHOW]]
            lines += [f"  ... and {len(self.duplicate_ids) - _SHOW} more"] if len(self.duplicate_ids) > _SHOW else []
        else:
            lines.append("Duplicate image ids: none")
        if not self.images_verified:
            lines.append("Image files: not opened (verify_images=False)")
        elif self.unreadable:
            lines.append(f"Unreadable images: {len(self.unreadable)}")
            lines += [f"  {path}: {reason}" for path, reason in self.unreadable[:_SHOW]]
            lines += [f"  ... and {len(self.unreadable) - _SHOW} more"] if len(self.unreadable) > _SHOW else []
        else:
            lines.append(f"Unreadable images: none ({self.n_images} opened and decoded)")
        verdict = "OK" if self.images_verified else "OK as far as checked (images not opened)"
        lines += ["", verdict if self.ok else "PROBLEMS FOUND: fix the files or ids listed above before training"]
        return "\n".join(lines)


def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it decodes fully (same reader as training)."""
    try:
        load_image(path)
    except (OSError, ValueError) as error:
        return str(error)
    return None


def check_manifest(manifest: Manifest, *, verify_images: bool = True, progress: bool = True) -> CheckReport:
    """Summarise a manifest and find the files and ids that would break training.

    Args:
        manifest: the manifest to check.
        verify_images: open and decode every image (slow on big sets, but the only real check).
        progress: show a tqdm progress bar while decoding.

    Returns:
        A ``CheckReport``; ``report.ok`` is False when an image is unreadable (missing, empty,
        truncated, not an image) or an image id occurs more than once.
    """
    frame = manifest.frame
    labels = frame["label"].fillna("").replace("", "(none)")
    counts = labels.value_counts().sort_index()
    class_counts = pd.DataFrame({"count": counts, "percent": (100 * counts / max(len(frame), 1)).round(1)})
    class_counts.index.name = "label"
    centres = frame["centre"].fillna("").replace("", "(none)")
    centre_table = pd.crosstab(centres, labels, margins=True, margins_name="total")
    centre_table.index.name, centre_table.columns.name = "centre", "label"
    missing = {
        "age": int(frame["age"].isna().sum()),
        "sex": int((frame["sex"].fillna("") == "").sum()),
        "site": int((frame["site"].fillna("") == "").sum()),
    }
    id_counts = frame["image_id"].value_counts()
    duplicates = {str(i): int(n) for i, n in id_counts[id_counts > 1].items()}
    unreadable: list[tuple[str, str]] = []
    if verify_images:
        from tqdm.auto import tqdm

        for path in tqdm(manifest.paths(), desc="checking images", unit="img", disable=not progress):
            problem = image_problem(path)
            if problem is not None:
                unreadable.append((str(path), problem))
    return CheckReport(
        source=manifest.source,
        root=str(manifest.root),
        n_images=len(frame),
        class_counts=class_counts,
        centre_table=centre_table,
        missing=missing,
        duplicate_ids=duplicates,
        unreadable=unreadable,
        images_verified=verify_images,
    )


# Columns that identify each published CSV format.
_SIGNATURES: dict[str, set[str]] = {
    "ham10000": {"lesion_id", "image_id", "dx", "localization", "dataset"},
    "derm7pt": {"case_num", "diagnosis", "diag5", "derm_path", "clinic_path"},
    "ph2": {"image_id", "diagnosis", "image_path", "mask_path"},
    "isic": {"image", "MEL", "NV"},
}


def guess_format(path: str | Path) -> str:
    """The adapter format for ``path``: a folder is ``folder``; a CSV is matched by its columns.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a CSV whose columns match no known format.
    """
    path = Path(path)
    if path.is_dir():
        return "folder"
    columns = set(_read_csv(path).columns)
    for name, needed in _SIGNATURES.items():
        if needed <= columns:
            return name
    raise ValueError(
        f"{path}: columns {sorted(columns)} match no known format (HAM10000, ISIC one-hot, Derm7pt, PH2); "
        "pass --format csv with a column map, e.g. --column image=<path column> --column label=<class column>"
    )


def check_path(
    path: str | Path,
    format: str | None = None,  # noqa: A002 - mirrors the CLI option and DataConfig.format
    *,
    column_map: dict[str, str] | None = None,
    image_root: str | Path | None = None,
    verify_images: bool = True,
    progress: bool = True,
) -> CheckReport:
    """Read ``path`` with the right adapter and check it (``dermdx data check PATH``).

    Args:
        path: a CSV or an image folder; tried as given, then under ``data_root()``.
        format: one of ``FORMATS``; guessed from the file when None.
        column_map: for format ``csv`` (manifest column -> CSV column).
        image_root: image folder, for ``isic`` (default: ``images`` beside the CSV, else its
            folder), ``ham10000`` and ``csv``.
        verify_images, progress: as in ``check_manifest``.

    Raises:
        FileNotFoundError: ``path`` exists neither as given nor under the data root.
        ValueError: an unknown format, an unrecognised CSV, or the adapter's own errors.
    """
    given = Path(path)
    if not given.exists():
        under_root = data_root() / given
        if not under_root.exists():
            raise FileNotFoundError(f"{given} not found (also looked for {under_root})")
        given = under_root
    if format is None:
        format = guess_format(given)
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {list(FORMATS)}{_did_you_mean(format, FORMATS)}")
    if format == "isic":
        if image_root is None:
            image_root = given.parent / "images" if (given.parent / "images").is_dir() else given.parent
        manifest = read_isic_groundtruth(given, image_root)
    elif format == "ham10000":
        manifest = read_ham10000(given, image_root)
    elif format == "derm7pt":
        manifest = read_derm7pt(given)
    elif format == "ph2":
        manifest = read_ph2(given)
    elif format == "folder":
        manifest = read_image_folder(given)
    elif column_map:
        manifest = read_generic_csv(given, column_map, image_root)
    else:
        raise ValueError(f"format 'csv' needs a column map for {given}, e.g. --column image=file --column label=dx")
    return check_manifest(manifest, verify_images=verify_images, progress=progress)


__all__ = ["CheckReport", "check_manifest", "check_path", "guess_format", "image_problem"]
