"""Fit the clinical heads (7-point criteria, thickness, management) and write them into the package.

    nice -n 10 python scripts/fit_clinical_heads.py                       # all of Derm7pt -> shipped heads
    nice -n 10 python scripts/fit_clinical_heads.py --rows train --out runs/clinical/heads_train.safetensors

The shipped heads are fitted on ALL of Derm7pt's available cases (official train + valid, 616):
the recipe (features, head type, C grid, grouped CV) was fixed and reported on the valid split by
benchmarks/derm7pt_concepts.py, and with 413 training cases (88 staged melanomas) half as much
data again matters more than keeping a second copy of that estimate. Derm7pt's official test
part, which the project measures separately, is not in the data and so is untouched; PH2 stays an
independent check. C is re-chosen by case-grouped CV on the rows used.

Writes ``<out>`` (.safetensors) and the ``.json`` record beside it: SHA-256 of the weights, of the
classifier whose features they fit, the rows and the command.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from dermdx.clinical.features import cached_outputs
from dermdx.clinical.fit import C_GRID, derm7pt_targets, fit_clinical_heads
from dermdx.clinical.heads import DEFAULT_HEADS
from dermdx.config import data_root
from dermdx.data.adapters import read_derm7pt
from dermdx.default_model import default_model_path
from dermdx.inference import Predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="classifier whose pooled features the heads read (default: the shipped one)")
    parser.add_argument("--rows", choices=("all", "train"), default="all", help="Derm7pt rows to fit on (default all: train + valid)")
    parser.add_argument("--out", default=str(DEFAULT_HEADS), help=f"output .safetensors (default {DEFAULT_HEADS})")
    parser.add_argument("--cache", default="runs/features", help="folder for the cached classifier outputs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)
    model = Path(args.model) if args.model else default_model_path()
    predictor = Predictor.from_checkpoint(model, tta="none")
    manifest = read_derm7pt(data_root() / "derm7pt" / "labels.csv", modality="dermoscopy", label_scheme="diag5")
    outputs = cached_outputs(predictor, manifest, Path(args.cache) / "derm7pt_dermoscopy.npz")
    t = derm7pt_targets(manifest.frame)
    rows = np.ones(len(manifest), dtype=bool) if args.rows == "all" else t["split"] == "train"
    heads = fit_clinical_heads(
        outputs["features"][rows], t["criteria"][rows], t["thickness"][rows], t["management"][rows], t["groups"][rows],
        classifier_sha256=predictor.sha256, progress=True,
    )  # fmt: skip
    heads.record.update({
        "fitted": str(date.today()),
        "classifier": model.name,
        "data": f"Derm7pt dermoscopy, official split rows: {args.rows} ({int(rows.sum())} cases, {int((t['thickness'][rows] >= 0).sum())} staged melanomas)",
        "features": "Predictor.predict_features: pooled backbone features, one view, the classifier's own preprocessing",
        "method": "per head: StandardScaler + LogisticRegression (balanced class weights for concepts and management, unweighted for the "
        "cumulative thickness heads), C from the grid by 5-fold StratifiedGroupKFold over cases; scaler folded into the weights",
        "c_grid": list(C_GRID),
        "command": "python " + " ".join(sys.argv),
        "figures": "docs/benchmarks.md, section 'Clinical heads on Derm7pt'",
    })  # fmt: skip
    sha = heads.save(args.out)
    print(f"wrote {args.out} (SHA-256 {sha}) for classifier {predictor.sha256}")


if __name__ == "__main__":
    main()
