"""Adapters: each published data-set format becomes one ``Manifest``.

Every adapter checks its input the same way and fails loudly, naming the file, the row and the
fix: a missing CSV, a missing column, a non-numeric age, an unknown sex value or an empty label is
an error, never a silently dropped sample. Row numbers in messages count data rows from 1 and also
give the line in the file (the header is line 1), so the row can be found in an editor.

Metadata is normalised here once, so nothing downstream re-parses it: labels and sites are lower
case, sex is ``male``/``female``/empty, age is a float or NaN, paths are relative to the root.
Columns beyond ``MANIFEST_COLUMNS`` (concepts, masks, management, ...) are kept as extras.

Example:
    >>> manifest = read_ham10000("../shared/data/ham10000/metadata.csv")
    >>> manifest.classes
    ['akiec', 'bcc', 'bkl', 'df', 'mel', 'nv', 'vasc']
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dermdx.config import DataConfig, data_root
from dermdx.data.manifest import MANIFEST_COLUMNS, MODALITIES, Manifest, concat_manifests, empty_frame

from dermdx.data.images import IMAGE_EXTENSIONS
from dermdx.data.meta import normalise_site

# Values that mean "not recorded" in the published metadata files.
_MISSING = {"", "unknown", "nan", "na", "n/a", "none"}

DERM7PT_SCHEMES = ("diag5", "isic")

# Derm7pt diagnosis -> ISIC 2018 class. Melanosis and "miscellaneous" are absent on purpose:
# no ISIC class describes them honestly, so those cases are dropped (and counted) under "isic".
DERM7PT_TO_ISIC: dict[str, str] = {
    "melanoma": "mel",
    "melanoma (in situ)": "mel",
    "melanoma (less than 0.76 mm)": "mel",
    "melanoma (0.76 to 1.5 mm)": "mel",
    "melanoma (more than 1.5 mm)": "mel",
    "melanoma metastasis": "mel",
    "clark nevus": "nv",
    "reed or spitz nevus": "nv",
    "dermal nevus": "nv",
    "blue nevus": "nv",
    "congenital nevus": "nv",
    "combined nevus": "nv",
    "recurrent nevus": "nv",
    "basal cell carcinoma": "bcc",
    "seborrheic keratosis": "bkl",
    "lentigo": "bkl",
    "dermatofibroma": "df",
    "vascular lesion": "vasc",
}
DERM7PT_DROPPED_FOR_ISIC = ("melanosis", "miscellaneous")

# Derm7pt columns worth carrying: concepts for explanations, management for recommendations.
_DERM7PT_EXTRAS = (
    "case_num", "diagnosis", "diag5", "melanoma", "seven_point_score", "pigment_network", "streaks",
    "pigmentation", "regression_structures", "dots_and_globules", "blue_whitish_veil",
    "vascular_structures", "level_of_diagnostic_difficulty", "elevation", "management", "split",
    "notes",
)  # fmt: skip


# --------------------------------------------------------------------------- shared validation


def _row(path: Path | str, i: int) -> str:
    return f"{path}, row {i + 1} (line {i + 2})"


def _did_you_mean(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _read_csv(path: str | Path, required: Sequence[str] = ()) -> pd.DataFrame:
    """Read a CSV as strings (so we, not pandas, decide what is missing) and check its columns."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"CSV file not found: {path}; check the path (data.path is taken from the data root)")
    if not path.is_file():
        raise ValueError(f"{path} is a directory, not a CSV file; use format 'folder' for a folder of class subfolders")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"{path} is empty; expected a CSV with a header row") from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable CSV file: {error}") from error
    frame.columns = [str(c).strip() for c in frame.columns]
    for column in required:
        if column not in frame.columns:
            raise ValueError(
                f"{path}: missing column {column!r}{_did_you_mean(column, frame.columns)} "
                f"Columns present: {list(frame.columns)}"
            )
    if frame.empty:
        raise ValueError(f"{path} has a header but no data rows")
    return frame.apply(lambda col: col.str.strip())


def _ages(values: Iterable[str], path: Path) -> np.ndarray:
    out = []
    for i, value in enumerate(values):
        if value.lower() in _MISSING:
            out.append(np.nan)
            continue
        try:
            age = float(value)
        except ValueError:
            raise ValueError(
                f"{_row(path, i)}: age {value!r} is not a number; write the age in years (e.g. 45) or leave it empty"
            ) from None
        if not 0 <= age <= 130:
            raise ValueError(f"{_row(path, i)}: age {value!r} is outside 0-130 years; fix the value or leave it empty")
        out.append(age)
    return np.asarray(out, dtype=float)


def _sexes(values: Iterable[str], path: Path) -> list[str]:
    out = []
    for i, value in enumerate(values):
        value = value.lower()
        if value in ("male", "female"):
            out.append(value)
        elif value in ("", "unknown", "nan"):
            out.append("")
        else:
            raise ValueError(
                f"{_row(path, i)}: sex {value!r} is not one of 'male', 'female', 'unknown' or empty; fix the value"
            )
    return out


def _sites(values: Iterable[str]) -> list[str]:
    return [normalise_site("" if v.lower() in _MISSING else v) for v in values]


def _labels(values: Iterable[str], path: Path, column: str) -> list[str]:
    out = []
    for i, value in enumerate(values):
        if not value:
            raise ValueError(
                f"{_row(path, i)}: empty label in column {column!r}; give every row a class, or use "
                "read_images for unlabelled images"
            )
        out.append(value.lower())
    return out


def _check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} is not one of {list(MODALITIES)}{_did_you_mean(modality, MODALITIES)}")
    return modality


def _relative(paths: Iterable[str]) -> list[str]:
    # Manifests store POSIX-style relative paths so they read the same on every OS.
    return [Path(p).as_posix() for p in paths]


def _add_extras(frame: pd.DataFrame, source: pd.DataFrame, columns: Iterable[str]) -> None:
    for column in columns:
        if column in source.columns and column not in MANIFEST_COLUMNS:
            frame[column] = source[column].to_numpy()


# --------------------------------------------------------------------------- published formats


def read_ham10000(csv_path: str | Path, image_root: str | Path | None = None) -> Manifest:
    """Read the HAM10000 ``metadata.csv`` (lesion_id, image_id, dx, dx_type, age, sex, localization, dataset).

    The centre is the ``dataset`` column (the four source collections), so leave-one-centre-out
    works directly. ``dx_type`` (how the label was confirmed) is kept as an extra column.

    Args:
        csv_path: the metadata CSV.
        image_root: folder holding ``<image_id>.jpg``; defaults to ``<csv folder>/images``.

    Returns:
        A manifest rooted at ``image_root``.

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: a column is missing, or a row has a bad age, sex or empty label.
    """
    csv_path = Path(csv_path)
    raw = _read_csv(csv_path, ["lesion_id", "image_id", "dx", "age", "sex", "localization", "dataset"])
    root = Path(image_root) if image_root is not None else csv_path.parent / "images"
    frame = empty_frame(len(raw))
    frame["image"] = [f"{i}.jpg" for i in raw["image_id"]]
    frame["image_id"] = raw["image_id"].to_numpy()
    frame["label"] = _labels(raw["dx"], csv_path, "dx")
    frame["lesion_id"] = raw["lesion_id"].to_numpy()
    # HAM10000 publishes no patient id. Grouping by lesion is the best available proxy, so the
    # patient id is the lesion id (this subset holds one image per lesion).
    frame["patient_id"] = raw["lesion_id"].to_numpy()
    frame["centre"] = raw["dataset"].to_numpy()
    frame["modality"] = "dermoscopy"
    frame["age"] = _ages(raw["age"], csv_path)
    frame["sex"] = _sexes(raw["sex"], csv_path)
    frame["site"] = _sites(raw["localization"])
    _add_extras(frame, raw, ["dx_type"])
    return Manifest(frame, root, source=str(csv_path))


def read_isic_groundtruth(
    csv_path: str | Path,
    image_root: str | Path,
    *,
    extension: str = ".jpg",
    metadata_csv: str | Path | None = None,
) -> Manifest:
    """Read an ISIC one-hot ground truth CSV (``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC``).

    Every column other than ``image`` is a class; the label is the lower-cased name of the column
    holding the row's single 1. A row with no 1 or several is an error, since guessing would put
    a wrong label into training.

    Args:
        csv_path: the ground truth CSV (values 0/1 or 0.0/1.0).
        image_root: folder holding ``<image><extension>``.
        extension: image file extension.
        metadata_csv: optional ISIC 2019-style metadata (image, age_approx, anatom_site_general,
            lesion_id, sex; ``patient_id`` too when present) merged by image name. Without it, or
            where an id is empty, lesion and patient fall back to the image, i.e. per-image grouping.

    Raises:
        FileNotFoundError: a CSV does not exist.
        ValueError: a missing column, a non-0/1 value, a row without exactly one 1, an image absent
            from the metadata, or bad metadata values.
    """
    csv_path = Path(csv_path)
    raw = _read_csv(csv_path, ["image"])
    classes = [c for c in raw.columns if c != "image"]
    if len(classes) < 2:
        raise ValueError(
            f"{csv_path}: expected one-hot class columns beside 'image' (e.g. MEL,NV,BCC,AKIEC,BKL,DF,VASC); "
            f"columns present: {list(raw.columns)}"
        )
    labels = []
    for i, row in enumerate(raw[classes].itertuples(index=False)):
        try:
            values = [float(v) for v in row]
        except ValueError:
            raise ValueError(f"{_row(csv_path, i)}: class values must be 0 or 1, got {list(row)}") from None
        if any(v not in (0.0, 1.0) for v in values):
            raise ValueError(f"{_row(csv_path, i)}: class values must be 0 or 1, got {list(row)}")
        hot = [c for c, v in zip(classes, values, strict=True) if v == 1.0]
        if len(hot) != 1:
            raise ValueError(
                f"{_row(csv_path, i)} (image {raw['image'].iat[i]!r}): expected exactly one class marked 1, "
                f"found {len(hot)} ({hot}); fix the ground truth"
            )
        labels.append(hot[0].lower())
    frame = empty_frame(len(raw))
    frame["image"] = [f"{i}{extension}" for i in raw["image"]]
    frame["image_id"] = raw["image"].to_numpy()
    frame["label"] = labels
    frame["centre"] = "isic"
    frame["modality"] = "dermoscopy"
    frame["lesion_id"] = raw["image"].to_numpy()
    frame["patient_id"] = raw["image"].to_numpy()
    if metadata_csv is not None:
        _merge_isic_metadata(frame, Path(metadata_csv))
    return Manifest(frame, Path(image_root), source=str(csv_path))


def _merge_isic_metadata(frame: pd.DataFrame, path: Path) -> None:
    meta = _read_csv(path, ["image"])
    meta = meta.drop_duplicates("image").set_index("image")
    absent = frame.loc[~frame["image_id"].isin(meta.index), "image_id"]
    if len(absent):
        raise ValueError(
            f"{path}: no metadata row for image {absent.iat[0]!r} ({len(absent)} images in all); "
            "pass the metadata file that belongs to this ground truth"
        )
    meta = meta.loc[frame["image_id"]].reset_index()
    if "age_approx" in meta.columns:
        frame["age"] = _ages(meta["age_approx"], path)
    if "sex" in meta.columns:
        frame["sex"] = _sexes(meta["sex"], path)
    site_column = next((c for c in ("anatom_site_general", "anatom_site_general_challenge") if c in meta.columns), None)
    if site_column:
        frame["site"] = _sites(meta[site_column])
    if "lesion_id" in meta.columns:
        frame["lesion_id"] = np.where(meta["lesion_id"] != "", meta["lesion_id"], frame["image_id"])
        frame["patient_id"] = frame["lesion_id"]
    if "patient_id" in meta.columns:  # ISIC 2020 has real patient ids
        frame["patient_id"] = np.where(meta["patient_id"] != "", meta["patient_id"], frame["lesion_id"])


def read_derm7pt(csv_path: str | Path, *, modality: str = "dermoscopy", label_scheme: str = "diag5") -> Manifest:
    """Read Derm7pt ``labels.csv``; one case is one lesion and one patient (``case_num``).

    Args:
        csv_path: the labels CSV; image paths in it are relative to its folder.
        modality: ``"dermoscopy"`` uses ``derm_path``, ``"clinical"`` uses ``clinic_path``.
        label_scheme: ``"diag5"`` gives the authors' five groups (bcc, nev, mel, misc, sk);
            ``"isic"`` maps diagnoses onto the seven ISIC classes (``DERM7PT_TO_ISIC``). Melanosis
            and miscellaneous have no honest ISIC class and are dropped: a ``UserWarning`` gives
            the count and ``manifest.frame.attrs["dropped"]`` maps each dropped diagnosis to its count.

    Extra columns: diagnosis, diag5, melanoma, management, split, the seven-point concepts, ...

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: an unknown modality or scheme, a missing column, a bad sex value, an empty
            label, or (scheme "isic") a diagnosis missing from the mapping.
    """
    csv_path = Path(csv_path)
    path_column = {"dermoscopy": "derm_path", "clinical": "clinic_path"}.get(modality)
    if path_column is None:
        raise ValueError(
            f"Derm7pt has modalities 'dermoscopy' and 'clinical', not {modality!r}"
            f"{_did_you_mean(modality, ['dermoscopy', 'clinical'])}"
        )
    if label_scheme not in DERM7PT_SCHEMES:
        raise ValueError(
            f"label_scheme {label_scheme!r} is not one of {list(DERM7PT_SCHEMES)}"
            f"{_did_you_mean(label_scheme, DERM7PT_SCHEMES)}"
        )
    raw = _read_csv(csv_path, ["case_num", "diagnosis", "diag5", "sex", "location", path_column])
    frame = empty_frame(len(raw))
    frame["image"] = _relative(raw[path_column])
    frame["image_id"] = [Path(p).stem for p in raw[path_column]]
    frame["label"] = _labels(raw["diag5"], csv_path, "diag5")
    frame["lesion_id"] = raw["case_num"].to_numpy()
    frame["patient_id"] = raw["case_num"].to_numpy()
    frame["centre"] = "derm7pt"
    frame["modality"] = modality
    frame["sex"] = _sexes(raw["sex"], csv_path)
    frame["site"] = _sites(raw["location"])
    if "age" in raw.columns:
        frame["age"] = _ages(raw["age"], csv_path)
    _add_extras(frame, raw, _DERM7PT_EXTRAS)
    frame.attrs["dropped"] = {}
    if label_scheme == "isic":
        frame = _derm7pt_to_isic(frame, raw, csv_path)
    return Manifest(frame, csv_path.parent, source=str(csv_path))


def _derm7pt_to_isic(frame: pd.DataFrame, raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    diagnoses = raw["diagnosis"].str.lower()
    known = diagnoses.isin(list(DERM7PT_TO_ISIC) + list(DERM7PT_DROPPED_FOR_ISIC))
    if not known.all():
        i = int(np.flatnonzero(~known.to_numpy())[0])
        raise ValueError(
            f"{_row(path, i)}: diagnosis {diagnoses.iat[i]!r} has no ISIC mapping"
            f"{_did_you_mean(diagnoses.iat[i], DERM7PT_TO_ISIC)} Known: {sorted(DERM7PT_TO_ISIC)}"
        )
    dropped = diagnoses.isin(DERM7PT_DROPPED_FOR_ISIC).to_numpy()
    counts = {d: int((diagnoses == d).sum()) for d in DERM7PT_DROPPED_FOR_ISIC if (diagnoses == d).any()}
    frame = frame.loc[~dropped].copy()
    frame["label"] = diagnoses[~dropped].map(DERM7PT_TO_ISIC).to_numpy()
    if dropped.any():
        warnings.warn(
            f"{path}: dropped {int(dropped.sum())} Derm7pt cases with no honest ISIC class ({counts}); "
            "use label_scheme='diag5' to keep them",
            UserWarning,
            stacklevel=3,
        )
    frame.attrs["dropped"] = counts
    return frame


def read_ph2(csv_path: str | Path) -> Manifest:
    """Read PH2 ``labels.csv`` (image_id, diagnosis, image_path, mask_path, criteria columns).

    Labels are common_nevus, atypical_nevus or melanoma. PH2 gives no patient or lesion ids, so
    both are the image id (per-image grouping). ``mask_path`` (relative to the same root) and the
    dermoscopic criteria and colour flags are kept as extra columns.

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: a missing column or an empty diagnosis.
    """
    csv_path = Path(csv_path)
    raw = _read_csv(csv_path, ["image_id", "diagnosis", "image_path", "mask_path"])
    frame = empty_frame(len(raw))
    frame["image"] = _relative(raw["image_path"])
    frame["image_id"] = raw["image_id"].to_numpy()
    frame["label"] = _labels(raw["diagnosis"], csv_path, "diagnosis")
    frame["lesion_id"] = raw["image_id"].to_numpy()
    frame["patient_id"] = raw["image_id"].to_numpy()
    frame["centre"] = "ph2"
    frame["modality"] = "dermoscopy"
    skip = {"image_id", "diagnosis", "image_path", "label_idx"}
    _add_extras(frame, raw, [c for c in raw.columns if c not in skip])
    return Manifest(frame, csv_path.parent, source=str(csv_path))


# --------------------------------------------------------------------------- folders and generic CSVs


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if _is_image(p) and not p.name.startswith("."))


def read_image_folder(root: str | Path, *, modality: str = "dermoscopy") -> Manifest:
    """Read ``root/<class>/**/<image>`` (one subfolder per class, any image extension in ``IMAGE_EXTENSIONS``).

    Nothing is known about lesions or patients here, so lesion id = patient id = image id and
    grouped splits are per image: if one lesion has several images, use a CSV with a lesion column.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: no class folders, a class folder without images, or images directly in ``root``.
    """
    root = Path(root)
    _check_modality(modality)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    loose = [p for p in root.iterdir() if _is_image(p)]
    if loose:
        raise ValueError(
            f"{root}: {len(loose)} images (e.g. {loose[0].name}) lie directly in the root; put each image "
            "in a subfolder named after its class, or use read_images for unlabelled images"
        )
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{root}: no class subfolders found; expected {root}/<class name>/<image files>")
    rows = []
    for class_dir in class_dirs:
        images = _images_under(class_dir)
        if not images:
            raise ValueError(
                f"{class_dir}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)}); add images or remove it"
            )
        rows += [(p.relative_to(root).as_posix(), p.stem, class_dir.name.lower()) for p in images]
    frame = empty_frame(len(rows))
    frame["image"], frame["image_id"], frame["label"] = (list(col) for col in zip(*rows, strict=True))
    frame["lesion_id"] = frame["image_id"]
    frame["patient_id"] = frame["image_id"]
    frame["centre"] = root.resolve().name
    frame["modality"] = modality
    return Manifest(frame, root, source=str(root))


def read_generic_csv(
    csv_path: str | Path,
    column_map: dict[str, str],
    image_root: str | Path | None = None,
    *,
    modality: str = "dermoscopy",
    centre: str | None = None,
) -> Manifest:
    """Read any CSV given which of its columns holds each manifest field.

    Args:
        csv_path: the CSV.
        column_map: manifest column -> CSV column, e.g. ``{"image": "file", "label": "dx"}``.
            ``image`` is required; unmapped fields stay empty (ids: the split then groups by
            image), ``image_id`` defaults to the file name without extension. When ``label`` is
            mapped every row needs one.
        image_root: folder the image paths start from; defaults to the CSV's folder.
        modality: used when ``modality`` is not mapped.
        centre: used when ``centre`` is not mapped; defaults to the CSV's folder name.

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: an unknown manifest column in ``column_map``, a mapped column missing from
            the CSV, or bad values (age, sex, empty label or image, unknown modality).
    """
    csv_path = Path(csv_path)
    for key in column_map:
        if key not in MANIFEST_COLUMNS:
            raise ValueError(
                f"column_map key {key!r} is not a manifest column{_did_you_mean(key, MANIFEST_COLUMNS)} "
                f"Allowed: {list(MANIFEST_COLUMNS)}"
            )
    if "image" not in column_map:
        raise ValueError(f"column_map must map 'image' to the CSV column holding image paths; got {column_map}")
    raw = _read_csv(csv_path)
    for key, column in column_map.items():
        if column not in raw.columns:
            raise ValueError(
                f"{csv_path}: column {column!r} (mapped to {key!r}) not found{_did_you_mean(column, raw.columns)} "
                f"Columns present: {list(raw.columns)}"
            )
    _check_modality(modality)
    frame = empty_frame(len(raw))
    images = raw[column_map["image"]]
    empty = np.flatnonzero((images == "").to_numpy())
    if len(empty):
        raise ValueError(f"{_row(csv_path, int(empty[0]))}: empty image path in column {column_map['image']!r}")
    frame["image"] = _relative(images)
    if "image_id" in column_map:
        frame["image_id"] = raw[column_map["image_id"]].to_numpy()
    else:
        frame["image_id"] = [Path(p).stem for p in images]
    parsers: dict[str, Callable] = {
        "label": lambda v: _labels(v, csv_path, column_map["label"]),
        "age": lambda v: _ages(v, csv_path),
        "sex": lambda v: _sexes(v, csv_path),
        "site": _sites,
    }
    for key in ("label", "lesion_id", "patient_id", "centre", "age", "sex", "site", "modality"):
        if key in column_map:
            values = raw[column_map[key]]
            frame[key] = parsers[key](values) if key in parsers else values.to_numpy()
    if "modality" in column_map:
        for i, value in enumerate(frame["modality"]):
            if value not in MODALITIES:
                raise ValueError(f"{_row(csv_path, i)}: modality {value!r} is not one of {list(MODALITIES)}")
    else:
        frame["modality"] = modality
    if "centre" not in column_map:
        frame["centre"] = centre if centre is not None else csv_path.resolve().parent.name
    _add_extras(frame, raw, [c for c in raw.columns if c not in column_map.values()])
    root = Path(image_root) if image_root is not None else csv_path.parent
    return Manifest(frame, root, source=str(csv_path))


def read_images(paths: str | Path | Sequence[str | Path]) -> Manifest:
    """An unlabelled manifest for prediction from files and/or folders (searched recursively, sorted).

    The root is the deepest folder common to all images ("/" at worst); ``image_id`` is the path
    below it without extension, so two ``img.jpg`` in different folders stay distinct. Files named
    explicitly are taken whatever their extension; in folders only ``IMAGE_EXTENSIONS`` count.
    Label, centre and ids are empty: nothing is known about these images. Modality is set to
    dermoscopy (the only one the default models take); change ``frame["modality"]`` otherwise.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: no images were found.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise FileNotFoundError(f"image path not found: {path}")
        files += _images_under(path) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {[str(p) for p in paths]}")
    files = [f.resolve() for f in files]
    root = Path(os.path.commonpath([f.parent for f in files]))
    frame = empty_frame(len(files))
    frame["image"] = [f.relative_to(root).as_posix() for f in files]
    frame["image_id"] = [f.relative_to(root).with_suffix("").as_posix() for f in files]
    frame["modality"] = "dermoscopy"
    return Manifest(frame, root, source="images")


# --------------------------------------------------------------------------- config dispatch

FORMATS = ("ham10000", "isic", "derm7pt", "ph2", "folder", "csv")


def _resolve(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else data_root() / path


def load_manifest(config: DataConfig) -> Manifest:
    """Build the manifest a ``DataConfig`` describes (one source, or several with ``extra``).

    Relative ``path`` and ``image_root`` start at ``data_root()``. ``label_map`` renames a
    source's labels (e.g. PH2 ``common_nevus`` -> ``nv``). With ``extra`` sources the manifests are
    joined by :func:`~dermdx.data.manifest.concat_manifests` (ids prefixed by each source's
    ``name``, default its format). With ``classes`` set, every label must be one of them; with
    ``limit`` set, a label-stratified, seeded subset of that many rows is kept (smoke runs only,
    never for reported figures).

    Raises:
        ValueError: an unknown format (with a suggestion), a missing option the format needs, a
            label outside ``classes``, two sources with one name, or a bad ``limit``; plus the
            adapter's own errors.
    """
    manifest = _load_source(config)
    if config.extra:
        sources = [config, *config.extra]
        manifest = concat_manifests([manifest, *(_load_source(extra) for extra in config.extra)], [s.name or s.format for s in sources])
    if config.classes is not None:
        _check_classes(manifest, config.classes)
    if config.limit is not None:
        if config.limit < 1:
            raise ValueError(f"data.limit must be a positive number of images, got {config.limit}")
        manifest = manifest.subset(stratified_sample(manifest.frame["label"].to_numpy(), config.limit))
    return manifest


def _load_source(config: DataConfig) -> Manifest:
    """One source's manifest, its labels renamed by ``label_map``."""
    if config.format not in FORMATS:
        raise ValueError(
            f"data.format {config.format!r} is not one of {list(FORMATS)}{_did_you_mean(config.format, FORMATS)}"
        )
    path = _resolve(config.path)
    image_root = _resolve(config.image_root) if config.image_root else None
    if config.format == "ham10000":
        manifest = read_ham10000(path, image_root)
    elif config.format == "isic":
        if image_root is None:
            raise ValueError("data.format 'isic' needs data.image_root: the folder holding the ISIC images")
        metadata = _resolve(config.metadata_path) if config.metadata_path else None
        manifest = read_isic_groundtruth(path, image_root, metadata_csv=metadata)
    elif config.format == "derm7pt":
        manifest = read_derm7pt(path, modality=config.modality, label_scheme=config.label_scheme)
    elif config.format == "ph2":
        manifest = read_ph2(path)
    elif config.format == "folder":
        manifest = read_image_folder(path, modality=config.modality)
    else:
        if not config.column_map:
            raise ValueError(
                "data.format 'csv' needs data.column_map (manifest column -> CSV column), "
                "e.g. {image: file, label: diagnosis}"
            )
        manifest = read_generic_csv(path, config.column_map, image_root, modality=config.modality)
    if config.label_map:
        unused = sorted(set(config.label_map) - set(manifest.frame["label"]))
        if unused:
            raise ValueError(f"{path}: data.label_map renames labels {unused} that this source does not have (its labels: {manifest.classes})")
        manifest.frame["label"] = manifest.frame["label"].replace(config.label_map)
    return manifest


def _check_classes(manifest: Manifest, classes: Sequence[str]) -> None:
    allowed = [c.lower() for c in classes]
    outside = ~manifest.frame["label"].isin(allowed)
    if outside.any():
        i = int(np.flatnonzero(outside.to_numpy())[0])
        row = manifest.frame.iloc[i]
        raise ValueError(
            f"{manifest.source}: row {i + 1} (image {row['image']}) has label {row['label']!r}, not one of "
            f"data.classes {allowed}; {int(outside.sum())} rows in all. Fix data.classes or the labels"
        )


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` rows whose label mix follows the whole (every class first, if n allows).

    Each row's key is its rank within its class (in a seeded random order) divided by the class
    size; taking the ``n`` smallest keys gives every class its first member before any class its
    second, then proportional shares.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    order = np.random.default_rng(seed).permutation(len(labels))
    key = np.empty(len(labels))
    for label in np.unique(labels):
        members = order[labels[order] == label]
        key[members] = np.arange(len(members)) / len(members)
    # Stable sort over the permuted order breaks ties randomly but reproducibly.
    chosen = order[np.argsort(key[order], kind="stable")[:n]]
    return np.sort(chosen)
