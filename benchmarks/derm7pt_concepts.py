"""Derm7pt 7-point concepts, thickness and management figures for the clinical heads, plus a PH2 check.

    nice -n 10 python benchmarks/derm7pt_concepts.py --out runs/clinical

Heads are fitted on the official Derm7pt TRAIN split only (C by case-grouped 5-fold CV inside
it) and reported on the official VALID split. The knowledge base's suspected-melanoma probability
threshold is checked on the train split alone: out-of-fold heads (5 case-grouped folds, each
fitted with its own inner CV) feed the full recommendation, and the "excision or referral"
sensitivity and specificity for train melanomas are tabulated per candidate threshold (target
95%), beside the value in knowledge.yaml; the shipped heads (fitted on all of Derm7pt by
scripts/fit_clinical_heads.py) are checked on PH2, which neither fit saw. Classifier features and
probabilities come from the shipped classifier (one view, as ``dermdx diagnose`` computes them)
and are cached under runs/features/. Writes ``metrics.json`` and ``summary.md`` into --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedGroupKFold
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from dermdx.clinical.checklist import (
    CRITERION_NAMES,
    MANAGEMENT_CLASSES,
    THICKNESS_CATEGORIES,
    WEIGHTS,
    ph2_criteria,
    seven_point_score,
)
from dermdx.clinical.features import cached_outputs
from dermdx.clinical.fit import derm7pt_targets, fit_clinical_heads
from dermdx.clinical.heads import DEFAULT_HEADS, ClinicalHeads
from dermdx.clinical.knowledge import NEXT_STEPS, TRIAGE_LEVELS, load_knowledge
from dermdx.clinical.ordinal import median_category
from dermdx.clinical.recommend import recommend
from dermdx.config import data_root
from dermdx.data.adapters import read_derm7pt, read_ph2
from dermdx.decision import AbstentionConfig, abstain
from dermdx.default_model import default_model_path
from dermdx.inference import Predictor

# Final next step -> Derm7pt management label; "refer to dermatologist" has no Derm7pt counterpart.
TO_DERM7PT = {"excision": "excision", "clinical-follow-up": "clinical follow up", "clinical follow-up": "clinical follow up", "no further examination": "no further examination"}


def wilson(k: int, n: int) -> list[float] | None:
    """95% Wilson interval of a proportion k/n (better than the normal one for small n or p near 1)."""
    if n == 0:
        return None
    z, p = 1.959964, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def binary_report(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict:
    pred = (p >= threshold).astype(int)
    return {
        "n": len(y), "positives": int(y.sum()),
        "accuracy": accuracy_score(y, pred), "balanced_accuracy": balanced_accuracy_score(y, pred),
        "auc": roc_auc_score(y, p) if 0 < y.sum() < len(y) else None,
        "kappa": cohen_kappa_score(y, pred),
    }  # fmt: skip


def score_report(melanoma: np.ndarray, score: np.ndarray, cutoff: float = 3) -> dict:
    flagged = score >= cutoff
    tp, n_mel = int(flagged[melanoma == 1].sum()), int(melanoma.sum())
    tn, n_other = int((~flagged[melanoma == 0]).sum()), int((melanoma == 0).sum())
    return {
        "auc": roc_auc_score(melanoma, score), "n_melanoma": n_mel, "n_other": n_other,
        "sensitivity_at_3": tp / n_mel, "sensitivity_ci95": wilson(tp, n_mel),
        "specificity_at_3": tn / n_other, "specificity_ci95": wilson(tn, n_other),
    }  # fmt: skip


def check_split(manifest, targets) -> dict:
    """No case, image path or image file (by content hash) in both official splits."""
    train, valid = targets["split"] == "train", targets["split"] == "valid"
    paths = np.array([str(p) for p in manifest.paths()])
    hashes = np.array([hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in tqdm(paths, desc="hash images", leave=False)])
    out = {
        "cases_in_both": len(set(targets["groups"][train]) & set(targets["groups"][valid])),
        "paths_in_both": len(set(paths[train]) & set(paths[valid])),
        "identical_files_in_both": len(set(hashes[train]) & set(hashes[valid])),
        "n_train": int(train.sum()), "n_valid": int(valid.sum()),
    }  # fmt: skip
    if any(out[k] for k in ("cases_in_both", "paths_in_both", "identical_files_in_both")):
        raise SystemExit(f"Derm7pt split leaks: {out}")
    return out


def concepts_report(heads: ClinicalHeads, x: np.ndarray, criteria: np.ndarray, melanoma: np.ndarray) -> dict:
    raw = heads.raw(x)["concepts"]
    per = {name: binary_report(criteria[:, k], raw[:, k], heads.concept_threshold) for k, name in enumerate(CRITERION_NAMES)}
    predicted = (raw >= heads.concept_threshold).astype(int) @ WEIGHTS
    return {
        "per_concept": per,
        "mean_balanced_accuracy": float(np.mean([v["balanced_accuracy"] for v in per.values()])),
        "seven_point_predicted": score_report(melanoma, predicted),
        "seven_point_expected_auc": roc_auc_score(melanoma, raw @ WEIGHTS),
        "seven_point_expert": score_report(melanoma, seven_point_score(criteria)),
        "score_exact_agreement": float((predicted == seven_point_score(criteria)).mean()),
        "score_mae": float(np.abs(predicted - seven_point_score(criteria)).mean()),
    }


def thickness_report(heads: ClinicalHeads, x: np.ndarray, y: np.ndarray, train_y: np.ndarray) -> dict:
    pred = median_category(heads.raw(x)["thickness_greater"])
    majority = int(np.bincount(train_y).argmax())
    confusion = np.zeros((4, 4), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    return {
        "n": len(y), "counts": np.bincount(y, minlength=4).tolist(),
        "mae": float(np.abs(pred - y).mean()), "exact": float((pred == y).mean()), "within_one": float((np.abs(pred - y) <= 1).mean()),
        "confusion_rows_true_cols_pred": confusion.tolist(),
        "baseline_majority": {"category": THICKNESS_CATEGORIES[majority], "mae": float(np.abs(majority - y).mean()), "exact": float((y == majority).mean())},
        "auc_per_cut": {f"thicker than {THICKNESS_CATEGORIES[k]}": roc_auc_score(y > k, heads.raw(x)["thickness_greater"][:, k]) for k in range(3)},
    }  # fmt: skip


def agreement(y_true: list[str], y_pred: list[str]) -> dict:
    return {"n": len(y_true), "accuracy": accuracy_score(y_true, y_pred), "balanced_accuracy": balanced_accuracy_score(y_true, y_pred), "kappa": cohen_kappa_score(y_true, y_pred)}


def management_report(
    heads: ClinicalHeads, x: np.ndarray, probs: np.ndarray, classes: list[str], abstention: AbstentionConfig, labels: np.ndarray, melanoma: np.ndarray, diagnoses: np.ndarray, knowledge
) -> dict:
    clinical = heads.predict(x)
    truth = [MANAGEMENT_CLASSES[i] for i in labels]
    learned = [max(c["management"], key=c["management"].get) for c in clinical]
    advice = [recommend(dict(zip(classes, map(float, p), strict=True)), abstain(p, abstention)[0], c, knowledge) for p, c in zip(probs, clinical, strict=True)]
    steps = [a["next_step"] for a in advice]
    final = [TO_DERM7PT.get(s, s) for s in steps]
    kept = [i for i, s in enumerate(steps) if s != "refer to dermatologist"]
    safe = np.array([s in ("excision", "refer to dermatologist") for s in steps])
    mel = melanoma == 1
    confusion = {t: {s: int(sum(1 for a, b in zip(truth, steps, strict=True) if a == t and b == s)) for s in NEXT_STEPS} for t in MANAGEMENT_CLASSES}
    return {
        "learned_head": agreement(truth, learned),
        "final_strict": {**agreement(truth, final), "note": "'refer to dermatologist' counted as a disagreement"},
        "final_without_referrals": {**agreement([truth[i] for i in kept], [final[i] for i in kept]), "referred": len(steps) - len(kept)},
        "confusion_rows_derm7pt_cols_next_step": confusion,
        "triage_counts": {t: sum(a["triage"] == t for a in advice) for t in TRIAGE_LEVELS},
        "melanoma_excision_or_referral": {"n": int(mel.sum()), "k": int(safe[mel].sum()), "sensitivity": float(safe[mel].mean()), "ci95": wilson(int(safe[mel].sum()), int(mel.sum()))},
        "melanoma_urgent": {"n": int(mel.sum()), "k": int(sum(advice[i]["triage"] == "urgent referral" for i in np.flatnonzero(mel)))},
        "melanoma_no_further_examination": int(sum(steps[i] == "no further examination" for i in np.flatnonzero(mel))),
        "non_melanoma_excision_or_referral": float(safe[~mel].mean()),
        "missed_melanomas": [
            {"diagnosis": str(diagnoses[i]), "p_mel": float(probs[i, classes.index("mel")]), "seven_point_score": clinical[i]["seven_point_score"], "next_step": steps[i], "triage": advice[i]["triage"]}
            for i in np.flatnonzero(mel & ~safe)
        ],
        "invariant_applied": int(sum(a["safety_invariant"]["applied"] for a in advice)),
        "abstained": int(sum(abstain(p, abstention)[0] for p in probs)),
    }


def ph2_report(heads: ClinicalHeads, x: np.ndarray, frame) -> dict:
    raw = heads.raw(x)["concepts"]
    melanoma = (frame["label"] == "melanoma").to_numpy().astype(int)
    out: dict = {"mapped": {}, "loose": {}}
    for group, loose in (("mapped", False), ("loose", True)):
        for name, y in ph2_criteria(frame, loose=loose).items():
            if group == "loose" and name not in ("irregular_streaks",):
                continue
            out[group][name] = binary_report(y, raw[:, CRITERION_NAMES.index(name)], heads.concept_threshold)
    out["not_mapped"] = {
        "irregular_pigmentation": "PH2 has no pigmentation-pattern criterion",
        "atypical_vascular_pattern": "PH2 has no vascular criterion",
        "irregular_streaks": "PH2 streaks are absent/present only (not regular/irregular): reported under 'loose'",
    }
    out["seven_point_predicted"] = score_report(melanoma, (raw >= heads.concept_threshold).astype(int) @ WEIGHTS)
    return out


CANDIDATE_THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
TARGET_SENSITIVITY = 0.95


def out_of_fold_clinical(x: np.ndarray, t: dict, rows: np.ndarray, seed: int = 0) -> list[dict]:
    """ClinicalHeads.predict output for each of ``rows`` from heads fitted on the other folds (5, grouped by case)."""
    out: list = [None] * len(rows)
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(rows, t["melanoma"][rows], t["groups"][rows])
    for fit_idx, held_idx in tqdm(list(folds), desc="out-of-fold heads", leave=False):
        a = rows[fit_idx]
        heads = fit_clinical_heads(x[a], t["criteria"][a], t["thickness"][a], t["management"][a], t["groups"][a], classifier_sha256="out-of-fold")
        for j, c in zip(held_idx, heads.predict(x[rows[held_idx]]), strict=True):
            out[j] = c
    return out


def threshold_selection(clinical: list[dict], probs: np.ndarray, classes: list[str], abstention: AbstentionConfig, melanoma: np.ndarray, knowledge) -> dict:
    """Excision-or-referral sensitivity / specificity on the train rows for each candidate melanoma threshold."""
    table = {}
    for threshold in CANDIDATE_THRESHOLDS:
        kb = knowledge.with_thresholds(suspected_melanoma_probability=threshold)
        steps = [recommend(dict(zip(classes, map(float, p), strict=True)), abstain(p, abstention)[0], c, kb)["next_step"] for p, c in zip(probs, clinical, strict=True)]
        safe = np.isin(steps, ["excision", "refer to dermatologist"])
        table[str(threshold)] = {"sensitivity": float(safe[melanoma == 1].mean()), "specificity": float((~safe[melanoma == 0]).mean())}
    return {
        "target_sensitivity": TARGET_SENSITIVITY, "n_melanoma": int(melanoma.sum()), "n_other": int((melanoma == 0).sum()),
        "table": table, "meeting_target": [t for t in CANDIDATE_THRESHOLDS if table[str(t)]["sensitivity"] >= TARGET_SENSITIVITY],
        "in_knowledge_base": knowledge.thresholds["suspected_melanoma_probability"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="classifier (default: the shipped one)")
    parser.add_argument("--heads", default=str(DEFAULT_HEADS), help="shipped heads to check on PH2 (skipped if absent)")
    parser.add_argument("--knowledge", help="knowledge-base YAML (default: the shipped one)")
    parser.add_argument("--cache", default="runs/features")
    parser.add_argument("--out", default="runs/clinical")
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)  # one BLAS thread: this runs beside other work on a shared machine
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=8, desc="derm7pt concepts")
    predictor = Predictor.from_checkpoint(args.model or default_model_path(), tta="none")
    knowledge = load_knowledge(args.knowledge)
    derm = read_derm7pt(data_root() / "derm7pt" / "labels.csv", modality="dermoscopy", label_scheme="diag5")
    ph2 = read_ph2(data_root() / "ph2" / "labels.csv")
    d = cached_outputs(predictor, derm, Path(args.cache) / "derm7pt_dermoscopy.npz")
    p = cached_outputs(predictor, ph2, Path(args.cache) / "ph2.npz")
    steps.update()
    t = derm7pt_targets(derm.frame)
    split = check_split(derm, t)
    steps.update()
    tr, va = t["split"] == "train", t["split"] == "valid"
    heads = fit_clinical_heads(d["features"][tr], t["criteria"][tr], t["thickness"][tr], t["management"][tr], t["groups"][tr], classifier_sha256=predictor.sha256)
    steps.update()
    metrics: dict = {
        "date": str(date.today()), "classifier_sha256": predictor.sha256, "knowledge_sha256": knowledge.sha256, "split": split,
        "fit_train": heads.record["fit"],
        "classifier_mel_auc_valid": roc_auc_score(t["melanoma"][va], d["probs"][va, predictor.classes.index("mel")]),
        "concepts_valid": concepts_report(heads, d["features"][va], t["criteria"][va], t["melanoma"][va]),
    }  # fmt: skip
    steps.update()
    staged_tr, staged_va = tr & (t["thickness"] >= 0), va & (t["thickness"] >= 0)
    metrics["thickness_valid"] = thickness_report(heads, d["features"][staged_va], t["thickness"][staged_va], t["thickness"][staged_tr])
    steps.update()
    abstention = AbstentionConfig.from_model_info(predictor.info.calibration)
    metrics["abstention_threshold"] = abstention.min_confidence
    train_rows = np.flatnonzero(tr)
    oof = out_of_fold_clinical(d["features"], t, train_rows)
    metrics["threshold_selection_train_oof"] = threshold_selection(oof, d["probs"][tr], predictor.classes, abstention, t["melanoma"][tr], knowledge)
    steps.update()
    metrics["management_valid"] = management_report(heads, d["features"][va], d["probs"][va], predictor.classes, abstention, t["management"][va], t["melanoma"][va], derm.frame["diagnosis"].to_numpy()[va], knowledge)
    steps.update()
    metrics["ph2_train_fit_heads"] = ph2_report(heads, p["features"], ph2.frame)
    if Path(args.heads).is_file():
        shipped = ClinicalHeads.from_file(args.heads, classifier_sha256=predictor.sha256)
        metrics["ph2_shipped_heads"] = ph2_report(shipped, p["features"], ph2.frame)
    steps.update()
    steps.close()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    print(json.dumps(metrics, indent=1, default=float))


if __name__ == "__main__":
    main()
