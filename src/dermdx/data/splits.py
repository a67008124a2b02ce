"""Grouped splits: no patient and no lesion ever sits on both sides.

Splitting by image leaks: in full HAM10000 nearly half the images share a lesion with another, so
a random split validates on near-copies of training images. Folds here are stratified by label and
grouped by patient *and* lesion, saved to a file with the manifest's fingerprint, and checked
again when reused, so a run can never silently validate on a different split or data set.

Example:
    >>> folds = kfold_split(manifest, n_folds=5, seed=0)
    >>> save_split("runs/folds.csv", manifest, folds, kind="kfold", seed=0)
    >>> train_idx, val_idx = train_val_indices(manifest, SplitConfig(fold=0, file="runs/folds.csv"))
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dermdx.config import SplitConfig
from dermdx.data.manifest import Manifest

SPLIT_KINDS = ("kfold", "centre")


def _ids(manifest: Manifest, column: str) -> np.ndarray:
    return manifest.frame[column].fillna("").astype(str).to_numpy()


def group_ids(manifest: Manifest) -> np.ndarray:
    """One integer group per row: rows sharing a patient *or* a lesion land in the same group.

    sklearn's group splitters take a single key, but two keys must hold at once (one patient
    with several lesions; one lesion photographed at visits filed under different patient ids),
    so the groups are the connected components of "shares a patient or a lesion", found with a
    small union-find. A row with neither id is its own group, keyed by its image id.
    """
    n = len(manifest)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps the trees flat
            i = parent[i]
        return i

    first_seen: dict[tuple[str, str], int] = {}
    patients, lesions, images = _ids(manifest, "patient_id"), _ids(manifest, "lesion_id"), _ids(manifest, "image_id")
    for i in range(n):
        keys = [("patient", patients[i]) if patients[i] else None, ("lesion", lesions[i]) if lesions[i] else None]
        keys = [k for k in keys if k] or [("image", images[i])]
        for key in keys:
            j = first_seen.setdefault(key, i)
            root_i, root_j = find(i), find(j)
            if root_i != root_j:
                parent[root_i] = root_j
    roots = np.array([find(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1]


def kfold_split(manifest: Manifest, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold index (0..n_folds-1) per row, stratified by label and grouped by ``group_ids``.

    Raises:
        ValueError: ``n_folds`` < 2 or more folds than groups.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    groups = group_ids(manifest)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if n_folds < 2 or n_folds > n_groups:
        raise ValueError(
            f"n_folds must be between 2 and the number of patient/lesion groups ({n_groups}); got {n_folds}"
        )
    labels = manifest.frame["label"].fillna("").astype(str).to_numpy()
    folds = np.full(len(manifest), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, val) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        folds[val] = fold
    return folds


def centre_split(manifest: Manifest, centre: str) -> np.ndarray:
    """1 for rows from ``centre`` (held out), 0 for the rest (train).

    Raises:
        ValueError: ``centre`` is not in the manifest (lists the centres present).
    """
    centres = manifest.frame["centre"].fillna("").astype(str).to_numpy()
    present = sorted(set(centres))
    if centre not in present:
        close = difflib.get_close_matches(str(centre), present, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"centre {centre!r} not in the manifest{hint} Centres present: {present}")
    return (centres == centre).astype(np.int64)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def save_split(
    path: str | Path,
    manifest: Manifest,
    folds: np.ndarray,
    *,
    kind: str,
    seed: int,
    n_folds: int | None = None,
    centre: str | None = None,
) -> None:
    """Write ``image_id,label,fold`` to ``path`` and ``kind``/``seed``/``n_folds``/``centre`` plus
    the manifest fingerprint to ``<path>.json``.

    For kind "centre" the fold is 1 for the held-out centre, 0 otherwise.

    Raises:
        ValueError: an unknown kind, ``folds`` of the wrong length, or repeated image ids (a
            saved split is matched by image id, so ids must be unique).
    """
    if kind not in SPLIT_KINDS:
        raise ValueError(f"split kind {kind!r} is not one of {list(SPLIT_KINDS)}")
    folds = np.asarray(folds)
    if len(folds) != len(manifest):
        raise ValueError(f"folds has {len(folds)} entries but the manifest has {len(manifest)} rows")
    ids = manifest.frame["image_id"].astype(str)
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise ValueError(
            f"image id {repeated.iat[0]!r} occurs more than once in {manifest.source}; a split is saved by "
            "image id, so make ids unique (run `dermdx data check` to list them)"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = manifest.frame["label"].fillna("").astype(str)
    pd.DataFrame({"image_id": ids, "label": labels, "fold": folds.astype(np.int64)}).to_csv(path, index=False)
    info = {
        "kind": kind,
        "seed": seed,
        "n_folds": int(n_folds if n_folds is not None else folds.max() + 1) if kind == "kfold" else 2,
        "centre": centre,
        "fingerprint": manifest.fingerprint(),
        "n_images": len(manifest),
        "source": manifest.source,
    }
    _sidecar(path).write_text(json.dumps(info, indent=2) + "\n")


def load_split(path: str | Path, manifest: Manifest) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a split saved by ``save_split`` and check it belongs to ``manifest``.

    Rows are matched by image id, so a reordered manifest still works; a different set of
    images or a changed label does not.

    Returns:
        ``(folds, info)``: fold per manifest row, and the sidecar (kind, seed, n_folds, centre, ...).

    Raises:
        FileNotFoundError: the split CSV or its ``.json`` sidecar is missing.
        ValueError: the images or labels differ from the manifest (says which, and how to fix).
    """
    path = Path(path)
    for needed in (path, _sidecar(path)):
        if not needed.is_file():
            raise FileNotFoundError(f"split file not found: {needed}")
    info = json.loads(_sidecar(path).read_text())
    saved = pd.read_csv(path, dtype={"image_id": str, "label": str}, keep_default_na=False)
    fix = f"delete {path} (and its .json) to recompute the split, or point split.file elsewhere"
    if info.get("fingerprint") != manifest.fingerprint():
        ids = manifest.frame["image_id"].astype(str)
        extra, absent = sorted(set(ids) - set(saved["image_id"])), sorted(set(saved["image_id"]) - set(ids))
        if extra or absent:
            raise ValueError(
                f"split {path} was made for other images: {len(extra)} manifest images are not in it "
                f"(e.g. {extra[:3]}), {len(absent)} of its images are not in the manifest (e.g. {absent[:3]}); {fix}"
            )
        labels = dict(zip(saved["image_id"], saved["label"], strict=True))
        now = manifest.frame["label"].fillna("")
        changed = [(i, labels[i], new) for i, new in zip(ids, now, strict=True) if labels[i] != new]
        if changed:
            i, old, new = changed[0]
            raise ValueError(
                f"split {path} was made with other labels: image {i} was {old!r}, is now {new!r} "
                f"({len(changed)} changed); {fix}"
            )
        # Same images and labels, other order: the fingerprint is order-sensitive, the split is not.
    if saved["image_id"].duplicated().any() or len(saved) != len(manifest):
        raise ValueError(f"split {path} has {len(saved)} rows for {len(manifest)} images or repeats an id; {fix}")
    folds = saved.set_index("image_id")["fold"].loc[manifest.frame["image_id"].astype(str)].to_numpy(np.int64)
    return folds, info


def train_val_indices(manifest: Manifest, split_config: SplitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Row indices for training and validation under ``split_config``.

    A saved ``split_config.file`` is reused after checking it matches the manifest and the
    config; otherwise the split is computed and, if ``file`` is set, saved there. Either way the
    result is checked for patient/lesion leaks.

    Raises:
        ValueError: an unknown kind, ``fold`` out of range, a missing or unknown centre, a saved
            split made with other settings or data, or a group that crosses the split.
    """
    cfg = split_config
    if cfg.kind == "none":
        # Train on every row (a final model); its expected performance comes from the same
        # recipe's cross-validation, never from rows it trained on.
        return np.arange(len(manifest)), np.zeros(0, dtype=np.int64)
    if cfg.kind not in SPLIT_KINDS:
        raise ValueError(f"split.kind {cfg.kind!r} is not one of {[*SPLIT_KINDS, 'none']}")
    if cfg.kind == "kfold" and not 0 <= cfg.fold < cfg.n_folds:
        raise ValueError(f"split.fold {cfg.fold} is out of range for n_folds={cfg.n_folds}; use 0..{cfg.n_folds - 1}")
    if cfg.kind == "centre" and not cfg.centre:
        centres = sorted(set(manifest.frame["centre"].astype(str)))
        raise ValueError(f"split.kind 'centre' needs split.centre; centres present: {centres}")
    file = Path(cfg.file) if cfg.file else None
    if file is not None and file.exists():
        folds, info = load_split(file, manifest)
        wanted = {"kind": cfg.kind, "seed": cfg.seed, "n_folds": cfg.n_folds} if cfg.kind == "kfold" else {
            "kind": cfg.kind, "centre": cfg.centre}  # fmt: skip
        differ = {k: (info.get(k), v) for k, v in wanted.items() if info.get(k) != v}
        if differ:
            detail = ", ".join(f"{k}: file {a!r} vs config {b!r}" for k, (a, b) in differ.items())
            raise ValueError(
                f"split file {file} was made with other settings ({detail}); delete it or change split.file"
            )
    else:
        if cfg.kind == "kfold":
            folds = kfold_split(manifest, cfg.n_folds, cfg.seed)
        else:
            folds = centre_split(manifest, cfg.centre)
        if file is not None:
            save_split(file, manifest, folds, kind=cfg.kind, seed=cfg.seed, n_folds=cfg.n_folds, centre=cfg.centre)
    held_out = cfg.fold if cfg.kind == "kfold" else 1
    val_idx = np.flatnonzero(folds == held_out)
    train_idx = np.flatnonzero(folds != held_out)
    assert_no_group_leak(manifest, train_idx, val_idx)
    return train_idx, val_idx


def assert_no_group_leak(manifest: Manifest, train_idx: np.ndarray, val_idx: np.ndarray) -> None:
    """Raise if any patient, lesion or image id appears on both sides of a split.

    Checking the ids directly suffices: a crossing patient/lesion component always has at least
    one shared id on both sides.

    Raises:
        ValueError: names the first leaking id and the number of rows on each side.
    """
    train_idx, val_idx = np.asarray(train_idx, dtype=np.int64), np.asarray(val_idx, dtype=np.int64)
    both = np.intersect1d(train_idx, val_idx)
    if len(both):
        raise ValueError(f"row {both[0]} ({len(both)} rows in all) is in both training and validation")
    for column in ("patient_id", "lesion_id", "image_id"):
        ids = _ids(manifest, column)
        shared = sorted((set(ids[train_idx]) & set(ids[val_idx])) - {""})
        if shared:
            name = shared[0]
            raise ValueError(
                f"{column} {name!r} leaks across the split: {int((ids[train_idx] == name).sum())} training and "
                f"{int((ids[val_idx] == name).sum())} validation images ({len(shared)} leaking ids in all); "
                "split with kfold_split/train_val_indices, which group by patient and lesion"
            )
