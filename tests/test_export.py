"""ONNX export with its parity check, and the ONNX Runtime backend behind Predictor, on a tiny model."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from dermdx import export as export_module
from dermdx.checkpoint import file_sha256, read_info
from dermdx.cli import main
from dermdx.data.adapters import read_images
from dermdx.export import ExportReport, export_onnx
from dermdx.inference import Predictor
from dermdx.onnx_backend import OnnxModel


@pytest.fixture
def image_dir(tmp_path: Path, jpeg) -> Path:
    for k in range(5):
        jpeg(tmp_path / "imgs" / f"ISIC_{k:07d}.jpg", size=40, seed=k)
    return tmp_path / "imgs"


@pytest.fixture
def onnx_file(isic_model_file: Path, image_dir: Path, tmp_path: Path) -> Path:
    export_onnx(isic_model_file, tmp_path / "model.onnx", parity_images=[image_dir])
    return tmp_path / "model.onnx"


def test_export_passes_parity_on_random_and_real_inputs(isic_model_file, image_dir, tmp_path) -> None:
    report = export_onnx(isic_model_file, tmp_path / "random.onnx")
    assert isinstance(report, ExportReport) and report.n_images == 4
    assert report.path.is_file() and report.size_bytes == report.path.stat().st_size
    assert report.max_abs_logit_diff < 1e-4 and report.max_prob_diff < 1e-4 and report.top1_agreement == 1.0
    assert not (tmp_path / "random.onnx.tmp").exists()
    images = export_onnx(isic_model_file, tmp_path / "images.onnx", parity_images=[image_dir])
    assert images.n_images == 5 and images.max_abs_logit_diff < 1e-4
    assert "top-1 agreement 1.000" in images.to_text()


def test_metadata_round_trips(isic_model_file, onnx_file) -> None:
    source = read_info(isic_model_file)
    model = OnnxModel(onnx_file)
    assert model.info.classes == source.classes
    assert model.info.preprocess == source.preprocess
    assert model.info.model_name == source.model_name
    assert model.source_sha256 == file_sha256(isic_model_file)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_onnx_predictions_equal_pytorch(isic_model_file, onnx_file, image_dir, batch_size) -> None:
    manifest = read_images([image_dir])
    expected = Predictor.from_checkpoint(isic_model_file, batch_size=batch_size).predict_manifest(manifest, progress=False)
    actual = Predictor.from_onnx(onnx_file, batch_size=batch_size).predict_manifest(manifest, progress=False)
    assert actual.classes == expected.classes and actual.image_ids == expected.image_ids
    assert np.allclose(actual.probs, expected.probs, atol=1e-4)


def test_wrong_input_size_is_a_clear_error(onnx_file) -> None:
    with pytest.raises(ValueError, match=r"takes image batches of shape \(N, 3, 32, 32\), got \(2, 3, 64, 64\)"):
        OnnxModel(onnx_file)(torch.zeros(2, 3, 64, 64))


def test_corrupt_truncated_and_missing_files_are_named(onnx_file, tmp_path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model")
    truncated = tmp_path / "truncated.onnx"
    data = onnx_file.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    for bad in (garbage, truncated):
        with pytest.raises(ValueError, match=f"{bad.name}: not a loadable ONNX model"):
            Predictor.from_onnx(bad)
    with pytest.raises(FileNotFoundError, match="ONNX model file not found: .*missing.onnx"):
        Predictor.from_onnx(tmp_path / "missing.onnx")


def test_onnx_without_dermdx_metadata_is_refused(tmp_path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["logits"])], "plain",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 7])], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 7])],
    )
    plain = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(plain))
    with pytest.raises(ValueError, match="without dermdx metadata.*not exported by dermdx export"):
        OnnxModel(plain)


def test_parity_failure_deletes_the_file_and_reports_figures(isic_model_file, tmp_path, monkeypatch) -> None:
    original = export_module._reference_logits
    monkeypatch.setattr(export_module, "_reference_logits", lambda model, inputs, meta=None: original(model, inputs, meta) + 0.01)
    out = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match=r"failed the parity check on 4 inputs: max \|logit diff\| 1\.0\d*e-02"):
        export_onnx(isic_model_file, out)
    assert not out.exists() and not (tmp_path / "model.onnx.tmp").exists()


@pytest.mark.parametrize(("kwargs", "message"), [({"tolerance": -1.0}, "tolerance must be a non-negative number, got -1.0"), ({"out": "model.bin"}, "must end in .onnx")])
def test_bad_export_arguments_are_named(isic_model_file, tmp_path, kwargs, message) -> None:
    out = tmp_path / kwargs.pop("out", "model.onnx")
    with pytest.raises(ValueError, match=message):
        export_onnx(isic_model_file, out, **kwargs)


def test_cli_export_then_predict_with_onnx_backend(isic_model_file, image_dir, tmp_path, capsys) -> None:
    out = tmp_path / "cli.onnx"
    assert main(["export", "--model", str(isic_model_file), "--format", "onnx", "--out", str(out), "--parity", str(image_dir)]) == 0
    assert "parity with PyTorch on 5 inputs" in capsys.readouterr().out
    args = [str(image_dir), "--format", "isic2018", "--workers", "0"]
    assert main(["predict", *args, "--model", str(out), "--backend", "onnx", "--out", str(tmp_path / "onnx.csv")]) == 0
    assert main(["predict", *args, "--model", str(isic_model_file), "--out", str(tmp_path / "torch.csv")]) == 0
    onnx_frame, torch_frame = pd.read_csv(tmp_path / "onnx.csv"), pd.read_csv(tmp_path / "torch.csv")
    assert list(onnx_frame.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert (onnx_frame["image"] == torch_frame["image"]).all()
    assert np.allclose(onnx_frame.iloc[:, 1:].to_numpy(), torch_frame.iloc[:, 1:].to_numpy(), atol=1e-4)


def test_cli_backend_and_model_file_must_match(isic_model_file, image_dir, tmp_path, capsys) -> None:
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"x")
    assert main(["predict", str(image_dir), "--model", str(onnx_path), "--backend", "torch", "--out", str(tmp_path / "p.csv")]) == 2
    assert "is an ONNX file; PyTorch cannot run it" in capsys.readouterr().err
    assert main(["predict", str(image_dir), "--model", str(onnx_path), "--model", str(isic_model_file), "--out", str(tmp_path / "p.csv")]) == 2
    assert "an ONNX file is run on its own" in capsys.readouterr().err
    assert main(["predict", str(image_dir), "--model", str(onnx_path), "--out", str(tmp_path / "p.csv")]) == 2
    assert "m.onnx: not a loadable ONNX model" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_a_safetensors_model_runs_on_onnxruntime_converted_in_memory(fusion_model_file, image_dir, tmp_path) -> None:
    manifest = read_images([image_dir])
    before = sorted(tmp_path.rglob("*"))
    on_torch = Predictor.from_checkpoint(fusion_model_file, engine="torch").predict_manifest(manifest, progress=False)
    on_ort = Predictor.from_checkpoint(fusion_model_file, engine="onnxruntime", tta="none")
    assert isinstance(on_ort.model, OnnxModel) and on_ort.sha256 == file_sha256(fusion_model_file)
    result = on_ort.predict_manifest(manifest, progress=False)
    assert result.paths == on_torch.paths
    np.testing.assert_allclose(result.probs, on_torch.probs, atol=1e-5)
    assert sorted(tmp_path.rglob("*")) == before  # converted in memory: no file written
    with pytest.raises(ValueError, match="unknown inference engine 'tvm'"):
        Predictor.from_checkpoint(fusion_model_file, engine="tvm")


def test_a_conversion_that_disagrees_with_pytorch_is_refused(isic_model_file, monkeypatch) -> None:
    real = export_module._parity
    monkeypatch.setattr(export_module, "_parity", lambda *args: (real(*args)[0] + 0.5, 0.1, 1.0))
    with pytest.raises(ValueError, match=r"ONNX Runtime disagrees with PyTorch on 4 inputs .* run it with --backend torch"):
        Predictor.from_checkpoint(isic_model_file, engine="onnxruntime")


def test_fusion_model_exports_with_a_meta_input_that_matches_pytorch(fusion_model_file, image_dir, tmp_path) -> None:
    report = export_onnx(fusion_model_file, tmp_path / "fusion.onnx", parity_images=[image_dir])
    assert report.max_abs_logit_diff < 1e-4 and report.top1_agreement == 1.0
    onnx_model = OnnxModel(report.path)
    assert [i.name for i in onnx_model.session.get_inputs()] == ["image", "meta"] and onnx_model.accepts_meta
    manifest = read_images([image_dir])
    manifest.frame["age"] = [30.0, 70.0, np.nan, 45.0, 85.0]
    manifest.frame["sex"] = ["male", "female", "", "female", "male"]
    manifest.frame["site"] = ["back", "face", "", "ear", "back"]
    expected = Predictor.from_checkpoint(fusion_model_file).predict_manifest(manifest, progress=False)
    actual = Predictor.from_onnx(report.path).predict_manifest(manifest, progress=False)
    assert np.allclose(actual.probs, expected.probs, atol=1e-5)
    # Metadata changes the answer, so the second input is really used.
    manifest.frame[["age", "sex", "site"]] = [np.nan, "", ""]
    blank = Predictor.from_onnx(report.path).predict_manifest(manifest, progress=False)
    assert not np.allclose(blank.probs, actual.probs, atol=1e-4)
    image = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"meta must have shape \(2, "):
        onnx_model(image, torch.zeros(2, 3))


def test_image_only_onnx_refuses_metadata(onnx_file) -> None:
    with pytest.raises(ValueError, match="does not use metadata"):
        OnnxModel(onnx_file)(torch.zeros(1, 3, 32, 32), torch.zeros(1, 4))
