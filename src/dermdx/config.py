"""Typed run configuration: dataclasses loaded from and saved to YAML.

Every run writes its resolved config beside its outputs, and checkpoints carry the parts that
inference needs (preprocessing, model arguments), so nothing is matched by position across files.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

DATA_ROOT_ENV = "DERMDX_DATA"
DEFAULT_DATA_ROOT = "../shared/data"

# ISIC 2018 Task 3 order: the order of the submission columns MEL,NV,BCC,AKIEC,BKL,DF,VASC.
ISIC2018_CLASSES = ("mel", "nv", "bcc", "akiec", "bkl", "df", "vasc")


def data_root() -> Path:
    """Where the shared data sets live: ``$DERMDX_DATA``, else ``../shared/data`` from the cwd."""
    return Path(os.environ.get(DATA_ROOT_ENV, DEFAULT_DATA_ROOT)).expanduser()


@dataclass
class PreprocessConfig:
    """How an image becomes a tensor; saved with every model so inference repeats it exactly."""

    image_size: int = 160
    # The TF-derived EfficientNet-Lite weights expect inputs scaled to [-1, 1].
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    color_constancy: bool = True
    hair_removal: bool = False
    modality: str = "dermoscopy"


@dataclass
class DataConfig:
    """Which manifest to read. Relative paths are taken from the data root."""

    format: str = "ham10000"
    path: str = "ham10000/metadata.csv"
    image_root: str | None = None
    classes: list[str] | None = None
    column_map: dict[str, str] | None = None
    # Derm7pt: which image of a case (dermoscopy or clinical) and which labels (diag5 or isic).
    modality: str = "dermoscopy"
    label_scheme: str = "diag5"
    # ISIC: an optional metadata CSV (image, age_approx, sex, anatom_site_general, lesion_id).
    metadata_path: str | None = None
    # Keep only this many images (stratified by label); for smoke runs, never for reported figures.
    limit: int | None = None
    # Source label -> training label (e.g. PH2's common_nevus -> nv); labels not listed are kept.
    label_map: dict[str, str] | None = None
    # More sources trained on together with this one (multi-source / multi-centre training); each
    # is a data section of its own (format, path, label_map, ...), named by its ``name``.
    extra: list[DataConfig] = field(default_factory=list)
    name: str = ""


@dataclass
class SplitConfig:
    """A grouped split: K-fold stratified by label and grouped by patient/lesion, one centre held
    out, or ``none`` (train on every row: a final model whose figures come from cross-validation)."""

    kind: Literal["kfold", "centre", "none"] = "kfold"
    n_folds: int = 5
    fold: int = 0
    centre: str | None = None
    seed: int = 0
    # Where the fold assignment is saved; reused when it exists (after checking it matches the data).
    file: str | None = None


@dataclass
class ModelConfig:
    name: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    drop_rate: float = 0.2
    # Fuse patient metadata (age, sex, site) with the image: None, "concat" or "metablock".
    fusion: str | None = None


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    imbalance: Literal["none", "sampler", "weighted_ce", "focal", "logit_adjusted"] = "weighted_ce"
    focal_gamma: float = 2.0
    label_smoothing: float = 0.0
    early_stopping_patience: int = 4
    seed: int = 0
    num_workers: int = 2
    threads: int | None = None
    # auto (a CUDA GPU when there is one, else the CPU), cpu, cuda, cuda:N or mps.
    device: str = "auto"
    # bf16 autocast for the forward pass on a CUDA GPU; no effect on the CPU.
    amp: bool = True
    max_steps_per_epoch: int | None = None
    # Fusion models: chance that a training sample's metadata is replaced by "nothing known", so
    # the model also works when metadata is absent at prediction time.
    meta_dropout: float = 0.3
    # Chance of hiding each field (age, sex, site) on its own in the rows kept whole above.
    meta_field_dropout: float = 0.0
    # Knowledge distillation: teacher model files (their mean probabilities on the training rows
    # are the soft labels), the softening temperature, and the soft labels' share of the loss.
    distill_teachers: list[str] = field(default_factory=list)
    distill_temperature: float = 2.0
    distill_alpha: float = 0.7


@dataclass
class RunConfig:
    output_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def from_dict(cls: type, values: dict[str, Any], *, where: str = "config") -> Any:
    """Build dataclass ``cls`` from a plain dict, rejecting unknown keys with a suggestion."""
    if not isinstance(values, dict):
        raise TypeError(f"{where}: expected a mapping, got {type(values).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where}: unknown option {key!r}{hint} Allowed: {', '.join(names)}")
        hint_type = hints[key]
        if dataclasses.is_dataclass(hint_type) and isinstance(hint_type, type):
            value = from_dict(hint_type, value or {}, where=f"{where}.{key}")
        elif get_origin(hint_type) is Literal and value not in get_args(hint_type):
            allowed = ", ".join(map(repr, get_args(hint_type)))
            raise ValueError(f"{where}.{key}: {value!r} is not one of {allowed}")
        elif get_origin(hint_type) is list and get_args(hint_type) and dataclasses.is_dataclass(get_args(hint_type)[0]):
            if not isinstance(value, list):
                raise ValueError(f"{where}.{key}: expected a list of sections, got {type(value).__name__}")
            value = [from_dict(get_args(hint_type)[0], item or {}, where=f"{where}.{key}[{i}]") for i, item in enumerate(value)]
        elif get_origin(hint_type) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """A YAML/JSON-safe dict (tuples become lists)."""

    def clean(value: Any) -> Any:
        if isinstance(value, tuple):
            return [clean(v) for v in value]
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return clean(dataclasses.asdict(config))


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config from YAML; ``overrides`` are ``section.key=value`` strings (YAML values).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an unknown option, or a value outside the allowed choices.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from error
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        target = values
        *parents, last = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = yaml.safe_load(raw)
    return from_dict(RunConfig, values, where=str(path))


def save_config(config: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
