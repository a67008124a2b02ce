"""benchmarks/selection_evaluation.py: a model scored on its config's selection split, never the held-out fold."""

import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "selection_evaluation.py"


def _script():
    spec = importlib.util.spec_from_file_location("selection_evaluation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scores_the_selection_rows_and_writes_predictions_mean_predictions_reads(tiny_run_config, tmp_path: Path) -> None:
    from dermdx.calibration import selection_rows
    from dermdx.checkpoint import read_info
    from dermdx.config import save_config
    from dermdx.training import fit, prepare_data

    fit(tiny_run_config, stop_after=1)
    model = Path(tiny_run_config.output_dir) / "model.safetensors"
    config_file = tmp_path / "run.yaml"
    save_config(tiny_run_config, config_file)
    out = tmp_path / "sel"
    args = ["--model", str(model), "--config", str(config_file), "--out", str(out), "--tta", "none", "--engine", "torch", "--bootstrap", "20"]
    assert _script().main(args) == 0

    written = pd.read_csv(out / "predictions.csv")
    expected = set(selection_rows(tiny_run_config, read_info(model)).frame["image_id"])
    data = prepare_data(tiny_run_config)
    held_out = set(data.manifest.subset(data.test_idx).frame["image_id"])
    assert set(written["image_id"]) == expected and not expected & held_out
    probs = written[[f"prob_{c}" for c in read_info(model).classes]]
    assert "true_label" in written.columns and ((probs.sum(axis=1) - 1).abs() < 1e-4).all()
