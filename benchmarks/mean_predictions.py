"""Average the ``predictions.csv`` of several models on the same rows: choose an ensemble's members offline.

    python benchmarks/mean_predictions.py runs/m160/predictions.csv runs/m224/predictions.csv \
        --out runs/mean_160_224.csv

Each member is scored once (``dermdx evaluate --model M``, with its own temperature and TTA); any
subset is then averaged here in seconds instead of re-running inference. The mean is what
``dermdx evaluate --model A --model B`` computes before the ensemble temperature, which never
changes the predicted class, so balanced accuracy is the same; AUCs may differ slightly. Score
the result with ``benchmarks/compare_predictions.py``; record the chosen ensemble with the CLI.
"""

from __future__ import annotations

import argparse

import pandas as pd


def mean_predictions(paths: list[str]) -> pd.DataFrame:
    """The row-wise mean of the ``prob_*`` columns; refused unless all files score the same rows and labels."""
    frames = [pd.read_csv(p).set_index("image_id").sort_index() for p in paths]
    first = frames[0]
    columns = [c for c in first.columns if c.startswith("prob_")]
    for path, frame in zip(paths[1:], frames[1:], strict=True):
        if not frame.index.equals(first.index) or not (frame["true_label"] == first["true_label"]).all():
            raise SystemExit(f"{path} scores other rows or labels than {paths[0]}; average evaluations of the same split")
        if sorted(c for c in frame.columns if c.startswith("prob_")) != sorted(columns):
            raise SystemExit(f"{path} has other classes than {paths[0]}")
    mean = sum(frame[columns] for frame in frames) / len(frames)
    out = mean.copy()
    out.insert(0, "true_label", first["true_label"])
    return out.reset_index()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", nargs="+", help="predictions.csv of each member (2 or more)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if len(args.predictions) < 2:
        parser.error("give at least two predictions.csv files")
    mean_predictions(args.predictions).to_csv(args.out, index=False)
    print(f"mean of {len(args.predictions)} members -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
