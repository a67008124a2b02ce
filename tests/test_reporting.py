"""Tests for dermdx.reporting: files written, JSON valid, HTML escaped and honest, PNGs real."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermdx.reporting import (
    DISCLAIMER,
    plot_confusion_matrix,
    plot_reliability,
    plot_roc_curves,
    write_evaluation,
)

CLASSES = ["mel", "nv", "<b>x</b>"]
FILES = ["metrics.json", "predictions.csv", "confusion_matrix.png", "roc.png", "reliability.png",
         "report.html"]


@pytest.fixture
def predictions() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 90
    y = rng.choice(3, size=n, p=[0.3, 0.5, 0.2])
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), y] += 1.5
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def assert_png(path, min_bytes: int = 8_000, min_side: int = 300) -> None:
    assert path.stat().st_size > min_bytes, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) > min_side, image.size
        # not a blank canvas: a real plot has many distinct colours
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000)) > 20


def test_write_evaluation_writes_everything(tmp_path, predictions):
    y, p = predictions
    sex = np.array(["female"] * 40 + ["male"] * 40 + [None] * 5 + [""] * 5, dtype=object)
    centre = ["a"] * 85 + ["b"] * 5
    ids = [f"ISIC_{i:07d}" for i in range(len(y))]
    out = tmp_path / "eval" / "fold0"  # parents created
    result = write_evaluation(
        out, y, p, CLASSES, groups={"sex": sex, "centre": centre}, image_ids=ids, n_bootstrap=100,
        title="Fold 0 <test>", extra={"model": "tiny", "checkpoint_sha256": "abc123", "data": "synthetic 90"},
    )
    for name in FILES:
        assert (out / name).is_file(), name

    on_disk = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(result))
    assert on_disk["overall"]["n"] == 90
    assert on_disk["extra"]["checkpoint_sha256"] == "abc123"
    assert on_disk["subgroups"]["centre"]["b"] == {"n": 5, "skipped": "fewer than min_size images"}
    assert on_disk["subgroups"]["sex"]["unknown"]["n"] == 10
    assert on_disk["overall"]["ci95"]["balanced_accuracy"] is not None

    table = pd.read_csv(out / "predictions.csv")
    assert list(table.columns) == ["image_id", "true_label", "predicted_label",
                                   "prob_mel", "prob_nv", "prob_<b>x</b>"]
    assert table["image_id"].tolist() == ids
    assert table["true_label"].tolist() == [CLASSES[i] for i in y]
    assert table["predicted_label"].tolist() == [CLASSES[i] for i in p.argmax(axis=1)]
    np.testing.assert_allclose(table[["prob_mel", "prob_nv", "prob_<b>x</b>"]].to_numpy(), p)

    for name in ("confusion_matrix.png", "roc.png", "reliability.png"):
        assert_png(out / name)


def test_report_html_is_escaped_and_carries_disclaimer(tmp_path, predictions):
    y, p = predictions
    write_evaluation(tmp_path, y, p, CLASSES, groups={"site": ["back"] * 90}, n_bootstrap=50,
                     title="Fold 0 <script>alert(1)</script>", extra={"data": "HAM10000 & friends"})
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert DISCLAIMER in page
    assert "dermdx is decision support for clinicians, not a diagnosis." in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "HAM10000 &amp; friends" in page
    for name in ("confusion_matrix.png", "roc.png", "reliability.png"):
        assert f'src="{name}"' in page
    assert "<style>" in page and "http" not in page  # self-contained: no external resources
    assert "Balanced accuracy" in page and "95% CI" in page and "mel AUC" in page
    assert "<h3>site</h3>" in page


def test_write_evaluation_without_groups_or_ids(tmp_path, predictions):
    y, p = predictions
    result = write_evaluation(tmp_path, y, p, CLASSES, n_bootstrap=0)
    assert result["subgroups"] == {}
    assert result["overall"]["ci95"]["accuracy"] is None
    assert pd.read_csv(tmp_path / "predictions.csv")["image_id"].tolist() == list(range(90))
    assert "Subgroups" not in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_write_evaluation_rejects_bad_input(tmp_path, predictions):
    y, p = predictions
    with pytest.raises(ValueError, match="image_ids has 3 entries but there are 90 predictions"):
        write_evaluation(tmp_path, y, p, CLASSES, image_ids=["a", "b", "c"], n_bootstrap=0)
    with pytest.raises(TypeError, match=r"extra\['when'\]"):
        write_evaluation(tmp_path, y, p, CLASSES, n_bootstrap=0, extra={"when": object()})
    with pytest.raises(ValueError, match="row 0 sums to"):
        write_evaluation(tmp_path, y, p * 0.5, CLASSES, n_bootstrap=0)
    assert not (tmp_path / "metrics.json").exists()  # nothing half-written


def test_plots_handle_missing_class_and_dollar_names(tmp_path):
    y = np.array([0, 0, 1, 1, 1, 0])  # class 2 absent: no ROC curve, empty confusion row
    p = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6],
                  [0.3, 0.6, 0.1], [0.6, 0.3, 0.1]])
    classes = ["mel", "nv", "$df"]
    plot_roc_curves(y, p, classes, tmp_path / "roc.png")
    plot_confusion_matrix(np.array([[2, 1, 0], [0, 2, 1], [0, 0, 0]]), classes, tmp_path / "cm.png")
    plot_reliability(y, p, tmp_path / "rel.png")
    for name in ("roc.png", "cm.png", "rel.png"):
        assert_png(tmp_path / name, min_bytes=5_000)


def test_plot_confusion_matrix_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match=r"must be 3x3 for classes \['a', 'b', 'c'\], got shape \(2, 2\)"):
        plot_confusion_matrix(np.eye(2), ["a", "b", "c"], tmp_path / "cm.png")


def test_reporting_leaves_pyplot_state_alone(tmp_path, predictions):
    import matplotlib

    backend = matplotlib.get_backend()
    y, p = predictions
    plot_reliability(y, p, tmp_path / "rel.png")
    assert matplotlib.get_backend() == backend
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []
