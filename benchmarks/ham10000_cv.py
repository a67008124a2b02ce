"""5-fold lesion-grouped cross-validation and leave-one-centre-out on HAM10000, resumable.

    python benchmarks/ham10000_cv.py --config configs/ham10000_lite0.yaml --out runs/bench

Each run (fold or held-out centre) trains with ``dermdx.training.fit`` and is evaluated on its
held-out rows. A finished run (``eval/metrics.json`` present) is skipped; a stopped one resumes
from its last epoch. The first invocation also times a plain timm training loop (same model,
resolution, batch size and workers) for comparison. ``summary.md`` collects the figures.

A metadata-fusion config (``--set model.fusion=concat``) is evaluated twice: with age, sex and
site (``eval/``) and with them hidden (``eval_nometa/``), the two figures the issue asks for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
from datetime import date
from pathlib import Path

import torch

from dermdx.config import RunConfig, load_config
from dermdx.data.adapters import load_manifest
from dermdx.evaluation import evaluate
from dermdx.inference import Predictor
from dermdx.training import MODEL_FILE, fit
from train_throughput import measure as measure_throughput  # noqa: E402 - sibling script


def run_names(manifest_centres: list[str], n_folds: int) -> list[str]:
    return [f"kfold{k}" for k in range(n_folds)] + [f"loco-{c}" for c in manifest_centres]


def config_for(base: RunConfig, name: str, out: Path) -> RunConfig:
    config = dataclasses.replace(base, output_dir=str(out / name))
    if name.startswith("kfold"):
        config.split = dataclasses.replace(base.split, kind="kfold", fold=int(name[5:]), file=str(out / "split_kfold.csv"))
    else:
        config.split = dataclasses.replace(base.split, kind="centre", centre=name[5:], file=None)
    return config


def hidden_metadata_bacc(run_dir: Path) -> float | None:
    path = run_dir / "eval_nometa" / "metrics.json"
    return json.loads(path.read_text())["overall"]["balanced_accuracy"] if path.is_file() else None


def summarise(out: Path, names: list[str], plain: dict, base: RunConfig) -> str:
    rows, kfold_bacc, kfold_auc, loco_bacc = [], [], [], []
    kfold_hidden, loco_hidden = [], []
    for name in names:
        metrics_path = out / name / "eval" / "metrics.json"
        if not metrics_path.is_file():
            rows.append(f"| {name} | not finished | | | | | |")
            continue
        overall = json.loads(metrics_path.read_text())["overall"]
        history = json.loads((out / name / "history.json").read_text())
        epoch_s = statistics.mean(h["train_seconds"] for h in history)
        ips = statistics.mean(h["train_images_per_second"] for h in history)
        bacc, auc = overall["balanced_accuracy"], overall.get("mel_auc")
        ci = overall.get("ci95", {}).get("balanced_accuracy")
        (kfold_bacc if name.startswith("kfold") else loco_bacc).append(bacc)
        if name.startswith("kfold") and auc is not None:
            kfold_auc.append(auc)
        ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        auc_text = f"{auc:.3f}" if auc is not None else "n/a"
        hidden = hidden_metadata_bacc(out / name)
        if hidden is not None:
            (kfold_hidden if name.startswith("kfold") else loco_hidden).append(hidden)
        hidden_text = f"{hidden:.3f}" if hidden is not None else "n/a"
        rows.append(f"| {name} | {overall['n']} | {bacc:.3f}{ci_text} | {hidden_text} | {auc_text} | {len(history)} | {epoch_s:.0f} s, {ips:.1f} img/s |")

    def mean_sd(values: list[float]) -> str:
        if not values:
            return "n/a"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f} (n={len(values)})"

    lines = [
        f"HAM10000 benchmark, {date.today()}, {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}",
        f"model {base.model.name}, {base.preprocess.image_size} px, {base.train.epochs} epochs max, batch {base.train.batch_size}, imbalance {base.train.imbalance}, metadata fusion {base.model.fusion or 'none'}",
        "",
        "| run | held-out images | balanced accuracy [95% CI] | balanced accuracy, metadata hidden | melanoma AUC | epochs | mean epoch time, train images/s |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"5-fold balanced accuracy: {mean_sd(kfold_bacc)}; melanoma AUC: {mean_sd(kfold_auc)}",
        f"leave-one-centre-out balanced accuracy: {mean_sd(loco_bacc)}",
        *([f"metadata hidden: 5-fold {mean_sd(kfold_hidden)}; leave-one-centre-out {mean_sd(loco_hidden)}"] if base.model.fusion else []),
        f"training images/s measured back to back in one process: plain timm loop {plain.get('plain_timm_images_per_second', float('nan')):.1f}, "
        f"dermdx loop {plain.get('dermdx_images_per_second', float('nan')):.1f}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ham10000_lite0.yaml")
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--only", nargs="*", help="run only these (e.g. kfold0 loco-rosendahl)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--set", action="append", default=[], help="config override section.key=value")
    args = parser.parse_args()
    base = load_config(args.config, args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    centres = sorted(load_manifest(base.data).frame["centre"].unique())
    names = run_names(centres, base.split.n_folds)

    plain_path = out / "plain_loop.json"
    if not plain_path.is_file():
        plain_path.write_text(json.dumps(measure_throughput(base), indent=2))
    plain = json.loads(plain_path.read_text())

    for name in args.only or names:
        config = config_for(base, name, out)
        run_dir = Path(config.output_dir)
        wanted = ["eval"] + (["eval_nometa"] if base.model.fusion else [])
        if all((run_dir / part / "metrics.json").is_file() for part in wanted):
            continue
        print(f"== {name}", flush=True)
        data = fit(config)["data"]  # a finished training returns at once with its split
        predictor = Predictor.from_checkpoint(run_dir / MODEL_FILE, batch_size=64, num_workers=config.train.num_workers)
        held_out = data.manifest.subset(data.test_idx)
        for part in wanted:
            evaluate(predictor, held_out, run_dir / part, n_bootstrap=args.bootstrap, title=f"HAM10000 {name}" + (", metadata hidden" if part == "eval_nometa" else ""), use_metadata=part == "eval")
        (out / "summary.md").write_text(summarise(out, names, plain, base))
    text = summarise(out, names, plain, base)
    (out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
