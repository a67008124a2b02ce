"""The standalone example (what a phone app must do) gives dermdx's own ONNX predictions."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dermdx.data.adapters import read_images
from dermdx.export import export_onnx
from dermdx.inference import Predictor

EXAMPLE = Path(__file__).parents[1] / "examples" / "onnx_predict_standalone.py"


@pytest.mark.parametrize("model_fixture", ["isic_model_file", "fusion_model_file"])
def test_standalone_preprocessing_matches_dermdx(model_fixture, request, tmp_path, jpeg) -> None:
    onnx_path = export_onnx(request.getfixturevalue(model_fixture), tmp_path / "m.onnx").path
    images = [jpeg(tmp_path / "imgs" / f"x{k}.jpg", size=57, seed=k) for k in range(3)]
    ours = Predictor.from_onnx(onnx_path).predict_manifest(read_images(images), progress=False)
    out = subprocess.run([sys.executable, str(EXAMPLE), str(onnx_path), *map(str, images)], capture_output=True, text=True, check=True).stdout
    for line, path in zip(out.splitlines(), images, strict=False):
        assert line.startswith(str(path))
        probs = dict(item.split("=") for item in line.split()[1:])
        row = ours.paths.index(str(path))
        expected = {c: ours.probs[row, i] for i, c in enumerate(ours.classes)}
        assert np.allclose([float(probs[c]) for c in ours.classes], [expected[c] for c in ours.classes], atol=1e-4)
    assert "not a diagnosis" in out
