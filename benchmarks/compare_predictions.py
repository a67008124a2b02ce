"""Is model A better than model B on the same held-out images? A paired bootstrap of the difference.

    python benchmarks/compare_predictions.py runs/fusion_concat_k0/eval/predictions.csv \
        runs/ham10000_lite0/eval/predictions.csv --names concat image-only

Reads two ``predictions.csv`` written by ``dermdx evaluate`` / ``dermdx train`` (columns
image_id, true_label, prob_<class>), joins them on image_id (the same rows must be in both, with
the same labels) and prints balanced accuracy, macro AUC and melanoma AUC of each, their
difference and its 95% paired-bootstrap interval (both scored on the same resamples).
"""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from dermdx.metrics import paired_difference


def _read(path: str) -> pd.DataFrame:
    frame = pd.read_csv(path)
    missing = {"image_id", "true_label"} - set(frame.columns)
    if missing:
        raise SystemExit(f"{path}: not a dermdx predictions.csv (missing columns {sorted(missing)})")
    return frame.set_index("image_id")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--names", nargs=2, default=["A", "B"])
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    a, b = _read(args.a), _read(args.b)
    if set(a.index) != set(b.index):
        only = sorted(set(a.index) ^ set(b.index))
        raise SystemExit(f"the two files score different images ({len(only)} in one only, e.g. {only[0]}); compare the same held-out rows")
    b = b.loc[a.index]
    if not (a["true_label"] == b["true_label"]).all():
        raise SystemExit("the two files disagree on some true labels; they are not the same evaluation rows")
    classes = [c.removeprefix("prob_") for c in a.columns if c.startswith("prob_")]
    lookup = {c: i for i, c in enumerate(classes)}
    y = a["true_label"].map(lookup).to_numpy()
    columns = [f"prob_{c}" for c in classes]
    result = paired_difference(y, a[columns].to_numpy(), b[columns].to_numpy(), classes, n_bootstrap=args.bootstrap)
    name_a, name_b = args.names
    print(f"{len(a)} images; {args.bootstrap} paired bootstrap resamples")
    print(f"| metric | {name_a} | {name_b} | {name_a} - {name_b} [95% CI] | resamples where {name_a} is better |")
    print("|---|---|---|---|---|")
    for metric, row in result.items():
        if row["difference"] is None:
            continue
        low, high = row["ci95"] or (float("nan"), float("nan"))
        print(f"| {metric} | {row['a']:.3f} | {row['b']:.3f} | {row['difference']:+.3f} [{low:+.3f}, {high:+.3f}] | {row['share_a_better']:.0%} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"a": args.a, "b": args.b, "names": args.names, "n": len(a), "figures": result}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
