"""The whole pipeline on a few dozen real HAM10000 images (skipped where ../shared/data is absent)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermdx.cli import main
from dermdx.config import DataConfig, ModelConfig, PreprocessConfig, RunConfig, SplitConfig, TrainConfig, save_config

pytestmark = pytest.mark.realdata


def test_train_evaluate_and_predict_isic2018_on_real_images(data_root: Path, tmp_path: Path) -> None:
    config = RunConfig(
        output_dir=str(tmp_path / "run"),
        data=DataConfig(format="ham10000", path="ham10000/metadata.csv", classes=["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"], limit=140),
        split=SplitConfig(kind="kfold", n_folds=5, fold=1, file=str(tmp_path / "split.csv")),
        preprocess=PreprocessConfig(image_size=64),
        model=ModelConfig(name="tf_efficientnet_lite0", pretrained=True),
        train=TrainConfig(epochs=1, batch_size=16, max_steps_per_epoch=2, num_workers=0),
    )
    save_config(config, tmp_path / "run.yaml")
    assert main(["train", str(tmp_path / "run.yaml"), "--bootstrap", "50"]) == 0
    report = (tmp_path / "run" / "eval" / "report.html").read_text()
    assert "vidir_molemax" in report  # per-centre table from the real centres
    assert (tmp_path / "split.csv").is_file()

    metadata = pd.read_csv(data_root / "ham10000" / "metadata.csv").head(20)
    images = [str(data_root / "ham10000" / "images" / f"{i}.jpg") for i in metadata["image_id"]]
    out = tmp_path / "preds.csv"
    assert main(["predict", *images, "--model", str(tmp_path / "run" / "model.safetensors"), "--out", str(out), "--format", "isic2018", "--workers", "0"]) == 0
    preds = pd.read_csv(out)
    assert list(preds.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert preds["image"].tolist() == metadata["image_id"].tolist()
    assert np.allclose(preds.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-5)
