"""Score one model on its config's selection split, not the held-out fold: compare ensemble subsets there.

    python benchmarks/selection_evaluation.py --model runs/default_fusion_192/model.safetensors \
        --config configs/default_fusion_192.yaml --tta d4 --no-metadata --out runs/sel_192

Writes what ``dermdx evaluate`` writes (``metrics.json``, ``predictions.csv``, plots), on the
inner rows that chose the model's epoch and fitted its temperature (``dermdx calibrate`` fits on
the same rows). Choosing an ensemble's members on the held-out fold would make its figures
optimistic; average these ``predictions.csv`` with ``mean_predictions.py`` instead. The rows chose
each member's epoch, so single members look better here than they are.
"""

from __future__ import annotations

import argparse

from dermdx.calibration import selection_rows
from dermdx.config import load_config
from dermdx.evaluation import evaluate
from dermdx.inference import ENGINES, TTA_VIEWS, Predictor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model.safetensors trained with --config")
    parser.add_argument("--config", required=True, help="the training config whose selection split to score")
    parser.add_argument("--out", required=True)
    parser.add_argument("--tta", choices=list(TTA_VIEWS), default="d4")
    parser.add_argument("--no-metadata", action="store_true", help="hide age, sex and site from the model")
    parser.add_argument("--engine", choices=ENGINES, default="onnxruntime")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    predictor = Predictor.from_checkpoint(args.model, engine=args.engine, tta=args.tta)
    rows = selection_rows(load_config(args.config), predictor.info)
    metrics = evaluate(predictor, rows, args.out, n_bootstrap=args.bootstrap, title=f"selection split of {args.config}",
                       extra={"rows": "selection split"}, use_metadata=not args.no_metadata)
    print(f"{len(rows)} selection images: balanced accuracy {metrics['overall']['balanced_accuracy']:.4f}; {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
