"""benchmarks/ham10000_cv.py: the summary reports metadata-hidden figures for a fusion config."""

import importlib
import json
import sys
from pathlib import Path

import pytest

from dermdx.config import ModelConfig, RunConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def cv():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("ham10000_cv")
    finally:
        sys.path.remove(str(BENCHMARKS))


def _finished_run(out: Path, name: str, bacc: float, hidden: float | None) -> None:
    run = out / name
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics.json").write_text(json.dumps({"overall": {"n": 100, "balanced_accuracy": bacc, "mel_auc": 0.8}}))
    (run / "history.json").write_text(json.dumps([{"train_seconds": 10.0, "train_images_per_second": 30.0}]))
    if hidden is not None:
        (run / "eval_nometa").mkdir()
        (run / "eval_nometa" / "metrics.json").write_text(json.dumps({"overall": {"n": 100, "balanced_accuracy": hidden}}))


def test_fusion_summary_gives_both_figures_per_run_and_their_means(cv, tmp_path: Path) -> None:
    _finished_run(tmp_path, "kfold0", 0.70, 0.60)
    _finished_run(tmp_path, "kfold1", 0.80, 0.70)
    base = RunConfig(model=ModelConfig(fusion="concat"))
    text = cv.summarise(tmp_path, ["kfold0", "kfold1", "loco-a"], {}, base)
    assert "| kfold0 | 100 | 0.700 | 0.600 |" in text
    assert "| loco-a | not finished |" in text
    assert "5-fold balanced accuracy: 0.750" in text
    assert "metadata hidden: 5-fold 0.650 ± 0.071 (n=2); leave-one-centre-out n/a" in text


def test_image_only_summary_has_no_metadata_hidden_line(cv, tmp_path: Path) -> None:
    _finished_run(tmp_path, "kfold0", 0.70, None)
    text = cv.summarise(tmp_path, ["kfold0"], {}, RunConfig())
    assert "| kfold0 | 100 | 0.700 | n/a |" in text
    assert "metadata hidden:" not in text
