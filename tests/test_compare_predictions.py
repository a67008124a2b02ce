"""benchmarks/compare_predictions.py and mean_predictions.py: paired comparison and offline mean of evaluations of the same rows."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_predictions.py"
MEAN_SCRIPT = SCRIPT.with_name("mean_predictions.py")


def _write(path: Path, ids, labels, probs) -> Path:
    frame = pd.DataFrame({"image_id": ids, "true_label": labels, "predicted_label": ["mel"] * len(ids)})
    for k, name in enumerate(("mel", "nv")):
        frame[f"prob_{name}"] = probs[:, k]
    frame.to_csv(path, index=False)
    return path


def _run(*args: str, script: Path = SCRIPT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, check=False)


def test_rows_in_another_order_are_matched_and_the_better_model_wins(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 120
    ids = [f"ISIC_{i}" for i in range(n)]
    y = rng.integers(0, 2, n)
    labels = np.array(["mel", "nv"])[y]
    good = np.eye(2)[y] * 0.8 + 0.1
    noise = rng.dirichlet(np.ones(2), n)
    a = _write(tmp_path / "a.csv", ids, labels, good)
    order = rng.permutation(n)
    b = _write(tmp_path / "b.csv", [ids[i] for i in order], labels[order], noise[order])
    done = _run(str(a), str(b), "--names", "good", "noise", "--bootstrap", "200", "--json", str(tmp_path / "d.json"))
    assert done.returncode == 0, done.stderr
    assert "| balanced_accuracy | 1.000 |" in done.stdout
    figures = json.loads((tmp_path / "d.json").read_text())["figures"]
    assert figures["balanced_accuracy"]["ci95"][0] > 0.2


def test_different_rows_or_labels_are_refused(tmp_path: Path) -> None:
    probs = np.full((3, 2), 0.5)
    a = _write(tmp_path / "a.csv", ["x", "y", "z"], ["mel", "nv", "nv"], probs)
    b = _write(tmp_path / "b.csv", ["x", "y", "w"], ["mel", "nv", "nv"], probs)
    done = _run(str(a), str(b))
    assert done.returncode != 0 and "score different images" in done.stderr
    c = _write(tmp_path / "c.csv", ["x", "y", "z"], ["mel", "mel", "nv"], probs)
    done = _run(str(a), str(c))
    assert done.returncode != 0 and "disagree on some true labels" in done.stderr


def test_rows_in_another_order_are_matched_before_averaging(tmp_path: Path) -> None:
    ids, labels = ["x", "y", "z"], ["mel", "nv", "nv"]
    a = _write(tmp_path / "a.csv", ids, labels, np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    order = [2, 0, 1]
    b_probs = np.array([[0.5, 0.5], [0.1, 0.9], [0.0, 1.0]])
    b = _write(tmp_path / "b.csv", [ids[i] for i in order], [labels[i] for i in order], b_probs[order])
    done = _run(str(a), str(b), "--out", str(tmp_path / "mean.csv"), script=MEAN_SCRIPT)
    assert done.returncode == 0, done.stderr
    mean = pd.read_csv(tmp_path / "mean.csv").set_index("image_id")
    np.testing.assert_allclose(mean.loc[["x", "y", "z"], "prob_mel"], [0.7, 0.15, 0.3])
    assert list(mean.loc[["x", "y", "z"], "true_label"]) == labels


def test_other_rows_are_refused(tmp_path: Path) -> None:
    probs = np.full((3, 2), 0.5)
    a = _write(tmp_path / "a.csv", ["x", "y", "z"], ["mel", "nv", "nv"], probs)
    b = _write(tmp_path / "b.csv", ["x", "y", "w"], ["mel", "nv", "nv"], probs)
    done = _run(str(a), str(b), "--out", str(tmp_path / "mean.csv"), script=MEAN_SCRIPT)
    assert done.returncode != 0 and "other rows" in done.stderr
    assert not (tmp_path / "mean.csv").exists()
