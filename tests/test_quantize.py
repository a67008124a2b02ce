from pathlib import Path

import numpy as np
import pytest

from dermdx.data.adapters import read_images
from dermdx.export import export_onnx
from dermdx.inference import Predictor
from dermdx.onnx_backend import OnnxModel
from dermdx.quantize import quantize_int8


@pytest.fixture
def fp32_onnx(isic_model_file: Path, tmp_path: Path) -> Path:
    return export_onnx(isic_model_file, tmp_path / "model.onnx").path


@pytest.fixture
def images(tmp_path: Path, jpeg) -> Path:
    for k in range(12):
        jpeg(tmp_path / "calib" / f"img_{k}.jpg", size=48, seed=k)
    return tmp_path / "calib"


def test_int8_model_keeps_the_description_and_runs_behind_the_predictor(fp32_onnx, images, tmp_path) -> None:
    report = quantize_int8(fp32_onnx, tmp_path / "int8.onnx", [images], min_agreement=0.0)
    assert report.n_calibration == 12 and 0.0 <= report.top1_agreement <= 1.0
    int8 = OnnxModel(report.path)
    assert int8.info.classes == OnnxModel(fp32_onnx).info.classes
    ops = {node.op_type for node in __import__("onnx").load(str(report.path)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    result = Predictor.from_onnx(report.path).predict_manifest(read_images([images]), progress=False)
    assert result.probs.shape == (12, 7) and np.allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)
    assert "top-1 agreement" in report.to_text()


def test_disagreeing_int8_model_is_not_written(fp32_onnx, images, tmp_path) -> None:
    with pytest.raises(ValueError, match="agrees with fp32 on only"):
        quantize_int8(fp32_onnx, tmp_path / "int8.onnx", [images], min_agreement=1.01)
    assert not (tmp_path / "int8.onnx").exists()


def test_calibration_folder_without_images_is_named(fp32_onnx, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        quantize_int8(fp32_onnx, tmp_path / "int8.onnx", [tmp_path / "empty"])


def test_cli_exports_int8_and_predicts_with_it(isic_model_file, images, tmp_path, capsys, monkeypatch) -> None:
    from dermdx.cli import main

    out = tmp_path / "int8.onnx"
    assert main(["export", "--model", str(isic_model_file), "--out", str(out), "--int8"]) == 2
    assert "--int8 needs --calibration" in capsys.readouterr().err
    # An untrained model's near-tied logits flip under int8, so agreement is not asserted here.
    import dermdx.quantize

    monkeypatch.setattr(dermdx.quantize, "quantize_int8", lambda *a, **k: quantize_int8(*a, **{**k, "min_agreement": 0.0}))
    assert main(["export", "--model", str(isic_model_file), "--out", str(out), "--int8", "--calibration", str(images)]) == 0
    assert OnnxModel(out).info.classes
    assert main(["predict", str(images), "--model", str(out), "--backend", "onnx", "--out", str(tmp_path / "p.csv"), "--workers", "0"]) == 0


def test_fusion_model_quantises_with_its_meta_input(fusion_model_file, images, tmp_path) -> None:
    fp32 = export_onnx(fusion_model_file, tmp_path / "fusion.onnx").path
    report = quantize_int8(fp32, tmp_path / "fusion_int8.onnx", [images], min_agreement=0.0)
    int8 = OnnxModel(report.path)
    assert int8.accepts_meta
    manifest = read_images([images])
    manifest.frame["age"] = 60.0
    manifest.frame["sex"] = "female"
    result = Predictor.from_onnx(report.path).predict_manifest(manifest, progress=False)
    assert result.probs.shape == (12, 7) and np.allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)


def test_tf_same_padding_is_exported_as_constants(tmp_path) -> None:
    """TF "same" padding becomes constants: its Shape/Ceil subgraph made int8 lose 3 points on HAM10000."""
    import onnx
    import torch

    from dermdx.checkpoint import ModelInfo, save_model
    from dermdx.config import PreprocessConfig
    from dermdx.models import create_model

    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", num_classes=3)
    save_model(tmp_path / "lite0.safetensors", model.eval(), ModelInfo("tf_efficientnet_lite0", ["a", "b", "c"], PreprocessConfig(image_size=48)))
    report = export_onnx(tmp_path / "lite0.safetensors", tmp_path / "m.onnx")
    assert report.max_abs_logit_diff < 1e-4 and report.top1_agreement == 1.0
    ops = {node.op_type for node in onnx.load(str(report.path)).graph.node}
    assert "Pad" in ops and not ops & {"Shape", "Ceil", "Gather"}
    assert type(model.conv_stem).__name__ == "Conv2dSame"  # the caller's model is left as it was
