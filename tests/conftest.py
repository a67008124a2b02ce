"""Shared fixtures: the real data root (skipped when absent) and tiny synthetic image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermdx.config import data_root as _data_root


@pytest.fixture
def data_root() -> Path:
    root = _data_root()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root.resolve()}; set DERMDX_DATA")
    return root


def write_jpeg(path: Path, size: int = 16, seed: int = 0) -> Path:
    """A small random RGB JPEG (noise compresses badly, so even 16 px gives a few hundred bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path


@pytest.fixture
def jpeg():
    """The ``write_jpeg(path, size=16, seed=0)`` helper, for tests that build their own layouts."""
    return write_jpeg


@pytest.fixture
def tiny_images(tmp_path: Path) -> Path:
    """``tmp_path/images/<class>/<class>_<k>.jpg``: 3 images in each of mel, nv, bcc."""
    root = tmp_path / "images"
    for c, name in enumerate(("mel", "nv", "bcc")):
        for k in range(3):
            write_jpeg(root / name / f"{name}_{k}.jpg", seed=10 * c + k)
    return root


COLOURS = {"mel": (60, 30, 20), "nv": (170, 120, 90), "bcc": (220, 160, 170)}


@pytest.fixture
def learnable_folder(tmp_path: Path) -> Path:
    """``tmp_path/learn/<class>/*.jpg``: 12 noisy 40 px images per class, each class its own colour."""
    rng = np.random.default_rng(0)
    root = tmp_path / "learn"
    for name, colour in COLOURS.items():
        for k in range(12):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / name / f"{name}_{k}.jpg", quality=95)
    return root


@pytest.fixture
def tiny_run_config(learnable_folder: Path, tmp_path: Path):
    """A RunConfig that trains timm's tiny ``test_efficientnet_gn`` (GroupNorm: BatchNorm running stats do not settle in 18 steps) for 2 epochs on ``learnable_folder``."""
    from dermdx.config import (
        DataConfig,
        ModelConfig,
        PreprocessConfig,
        RunConfig,
        SplitConfig,
        TrainConfig,
    )

    return RunConfig(
        output_dir=str(tmp_path / "run"),
        data=DataConfig(format="folder", path=str(learnable_folder)),
        split=SplitConfig(kind="kfold", n_folds=3, fold=0, file=str(tmp_path / "run" / "split.csv")),
        # Colour constancy would erase the colour that tells these synthetic classes apart.
        preprocess=PreprocessConfig(image_size=32, color_constancy=False),
        model=ModelConfig(name="test_efficientnet_gn", pretrained=False, drop_rate=0.0),
        train=TrainConfig(epochs=2, batch_size=8, lr=3e-3, warmup_epochs=0.5, num_workers=0, early_stopping_patience=5),
    )


@pytest.fixture
def isic_model_file(tmp_path: Path) -> Path:
    """An untrained tiny model with the seven ISIC 2018 classes, saved as a dermdx model file."""
    import torch

    from dermdx.checkpoint import ModelInfo, save_model
    from dermdx.config import ISIC2018_CLASSES, PreprocessConfig
    from dermdx.models import create_model

    torch.manual_seed(0)
    classes = sorted(ISIC2018_CLASSES)
    model = create_model("test_efficientnet", num_classes=len(classes))
    info = ModelInfo(model_name="test_efficientnet", classes=classes, preprocess=PreprocessConfig(image_size=32))
    path = tmp_path / "model.safetensors"
    save_model(path, model, info)
    return path


@pytest.fixture
def fusion_model_file(tmp_path: Path) -> Path:
    """An untrained tiny MetaBlock model with a metadata schema, saved as a dermdx model file."""
    import torch

    from dermdx.checkpoint import ModelInfo, save_model
    from dermdx.config import ISIC2018_CLASSES, PreprocessConfig
    from dermdx.data.meta import MetaSchema, missing_meta
    from dermdx.models import create_model

    torch.manual_seed(0)
    schema = MetaSchema(age_mean=50.0, age_std=20.0, sites=["back", "face"])
    kwargs = {"meta_dim": schema.dim, "fusion": "metablock"}
    model = create_model("test_efficientnet", num_classes=7, **kwargs)
    model.set_absent_meta(torch.from_numpy(missing_meta(schema)[0]))
    # MetaBlock starts as the plain image classifier (zero gate and shift); random ones stand in
    # for training, so metadata changes the output as it does in a trained model.
    torch.nn.init.normal_(model.gate.weight)
    torch.nn.init.normal_(model.shift.weight, std=0.1)
    info = ModelInfo(model_name="test_efficientnet", classes=sorted(ISIC2018_CLASSES), preprocess=PreprocessConfig(image_size=32),
                     model_kwargs=kwargs, meta_schema=schema.to_dict())
    save_model(tmp_path / "fusion.safetensors", model.eval(), info)
    return tmp_path / "fusion.safetensors"
