"""Evaluation outputs a person reads: plots, a predictions table, metrics.json and an HTML page.

Plots use :class:`matplotlib.figure.Figure` directly rather than ``pyplot``, so nothing global
changes (no backend switch, no figure registry to leak) when a training run or the service calls
them. The HTML report is one self-contained page (inline CSS; the PNGs sit beside it and are
referenced by relative name), so the output folder can be zipped or attached as it is.

Example:
    >>> write_evaluation("runs/fold0/eval", y, probs, classes, groups={"sex": sex},
    ...                  extra={"model": "effnet_lite0", "data": "HAM10000 fold 0 test"})
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from dermdx import __version__
from dermdx.metrics import (
    check_predictions,
    compute_metrics,
    expected_calibration_error,
    reliability_bins,
    subgroup_metrics,
)

DISCLAIMER = (
    "dermdx is decision support for clinicians, not a diagnosis. "
    "Figures are measured on the data named above only."
)
_DPI = 120


def _label(text: Any) -> str:
    """A class name safe for matplotlib text: a stray ``$`` would start mathtext and fail."""
    return str(text).replace("$", r"\$")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI, bbox_inches="tight")
    return path


# --------------------------------------------------------------------------- plots


def plot_confusion_matrix(cm: Any, classes: Sequence[str], path: str | Path) -> Path:
    """Confusion matrix coloured by row (share of each true class), each cell annotated with count and share.

    Row normalisation keeps a rare class readable next to a common one; the counts keep the
    reader aware of how few images a rare row holds.

    Raises:
        ValueError: ``cm`` that is not square ``[C, C]`` for ``C = len(classes)``, or negative counts.
    """
    counts = np.asarray(cm)
    names = [str(c) for c in classes]
    if counts.shape != (len(names), len(names)):
        raise ValueError(
            f"confusion matrix must be {len(names)}x{len(names)} for classes {names}, "
            f"got shape {counts.shape}"
        )
    if (counts < 0).any():
        raise ValueError("confusion matrix holds negative counts")
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)

    size = max(4.5, 0.75 * len(names) + 2.5)
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    for i in range(len(names)):
        for j in range(len(names)):
            text = f"{int(counts[i, j])}\n{share[i, j]:.0%}" if rows[i, 0] else "0"
            colour = "white" if share[i, j] > 0.55 else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
    labels = [_label(n) for n in names]
    ax.set_xticks(range(len(names)), labels, rotation=45, ha="right")
    row_labels = [f"{lab} (n={int(r)})" for lab, r in zip(labels, rows[:, 0], strict=True)]
    ax.set_yticks(range(len(names)), row_labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix ({int(counts.sum())} images; colour = row share)")
    return _save(fig, path)


def plot_roc_curves(y_true: Any, probs: Any, classes: Sequence[str], path: str | Path) -> Path:
    """One-vs-rest ROC curve per class, with AUC and support in the legend.

    Classes without both positives and negatives have no curve; they are named under the plot.
    """
    names = [str(c) for c in classes]
    y, p = check_predictions(y_true, probs, names)
    fig = Figure(figsize=(6.5, 6))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    no_curve = []
    for k, name in enumerate(names):
        is_pos = y == k
        if not 0 < is_pos.sum() < len(y):
            no_curve.append(name)
            continue
        fpr, tpr, _ = roc_curve(is_pos, p[:, k])
        auc = roc_auc_score(is_pos, p[:, k])
        ax.plot(fpr, tpr, linewidth=1.6, label=f"{_label(name)}  AUC {auc:.3f}  (n={int(is_pos.sum())})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_title(f"ROC curves, one class vs the rest ({len(y)} images)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if no_curve:
        note = "no curve (only one outcome in the data): " + ", ".join(_label(n) for n in no_curve)
        fig.text(0.5, -0.02, note, ha="center", fontsize=8)
    return _save(fig, path)


def plot_reliability(y_true: Any, probs: Any, path: str | Path, n_bins: int = 15) -> Path:
    """Reliability diagram (accuracy against confidence per bin) above a histogram of confidences.

    Bars under the diagonal mean the model is over-confident there; the histogram shows which
    bins hold enough images to matter.
    """
    y, p = check_predictions(y_true, probs)
    bins = reliability_bins(y, p, n_bins)
    ece = expected_calibration_error(y, p, n_bins)
    centres = (bins["lower"] + bins["upper"]) / 2
    width = 1.0 / n_bins
    used = bins["count"] > 0

    fig = Figure(figsize=(6, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    top.bar(centres[used], bins["accuracy"][used], width=width * 0.9, color="tab:blue",
            edgecolor="black", linewidth=0.5, label="accuracy in bin")
    # The tick marks where each bar would end if the model were calibrated: the gap is the error.
    top.plot(centres[used], bins["confidence"][used], linestyle="none", marker="_", color="tab:red",
             markersize=14, markeredgewidth=2, label="mean confidence in bin")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.01)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability of the top class ({len(y)} images, ECE {ece:.3f}, {n_bins} bins)")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, bins["count"], width=width * 0.9, color="grey")
    bottom.set_xlabel("confidence (highest class probability)")
    bottom.set_ylabel("images")
    return _save(fig, path)


# --------------------------------------------------------------------------- tables and HTML


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_ci(ci: Any) -> str:
    return "n/a" if not ci else f"{ci[0]:.3f} to {ci[1]:.3f}"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _headline_rows(metrics: Mapping[str, Any]) -> list[list[str]]:
    positive = metrics.get("positive")
    ci = metrics.get("ci95", {})
    keys = [
        ("balanced_accuracy", "Balanced accuracy (mean per-class sensitivity)"),
        ("accuracy", "Accuracy"),
        ("macro_auc", "Macro AUC (one-vs-rest)"),
        ("ece", "Expected calibration error (lower is better)"),
    ]
    if positive:
        keys += [
            (f"{positive}_auc", f"{positive} AUC"),
            (f"{positive}_sensitivity_at_80_specificity", f"{positive} sensitivity at 80% specificity"),
            (f"{positive}_sensitivity_at_90_specificity", f"{positive} sensitivity at 90% specificity"),
        ]
    return [[label, _fmt(metrics.get(key)), _fmt_ci(ci.get(key)) if key in ci else ""] for key, label in keys]


def _per_class_rows(metrics: Mapping[str, Any]) -> list[list[str]]:
    return [
        [name, v["support"], _fmt(v["sensitivity"]), _fmt(v["specificity"]), _fmt(v["precision"]),
         _fmt(v["auc"])]
        for name, v in metrics["per_class"].items()
    ]


def _subgroup_table(table: Mapping[str, Mapping[str, Any]], positive: str | None) -> str:
    header = ["group", "images", "balanced accuracy", "95% CI", "accuracy", "macro AUC", "ECE"]
    if positive:
        header += [f"{positive} AUC", f"{positive} AUC 95% CI"]
    # Few usable resamples (rare classes in a small group) make an interval shaky; show how many.
    header.append("CI resamples used")
    rows = []
    for group, m in table.items():
        if "skipped" in m:
            rows.append([group, m["n"], f"skipped: {m['skipped']}"] + [""] * (len(header) - 3))
            continue
        row = [group, m["n"], _fmt(m["balanced_accuracy"]), _fmt_ci(m["ci95"]["balanced_accuracy"]),
               _fmt(m["accuracy"]), _fmt(m["macro_auc"]), _fmt(m["ece"])]
        if positive:
            row += [_fmt(m.get(f"{positive}_auc")), _fmt_ci(m["ci95"].get(f"{positive}_auc"))]
        boot = m["bootstrap"]
        row.append(f"{boot['n_used']} of {boot['n_requested']}")
        rows.append(row)
    return _table(header, rows)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
padding:0 1rem;color:#1b1f23;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left}th{background:#f6f8fa}
td:not(:first-child){font-variant-numeric:tabular-nums}
.note{color:#57606a;font-size:.85rem}.plots{display:flex;flex-wrap:wrap;gap:1rem}
.plots figure{margin:0;flex:1 1 320px}.plots img{max-width:100%;border:1px solid #eee}
footer{margin-top:2rem;padding:1rem;background:#fff8c5;border:1px solid #d4a72c;font-weight:600}
"""


def render_html(
    result: Mapping[str, Any], *, title: str, plots: Mapping[str, str], created: str | None = None
) -> str:
    """The report page for a ``write_evaluation`` result; every inserted text is HTML-escaped."""
    overall = result["overall"]
    positive = overall.get("positive")
    boot = overall["bootstrap"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">{_e(overall["n"])} images, {_e(len(overall["classes"]))} classes '
        f"({_e(', '.join(overall['classes']))}). dermdx {_e(result.get('dermdx_version', ''))}"
        + (f", generated {_e(created)}" if created else "")
        + ".</p>",
    ]
    extra = result.get("extra") or {}
    if extra:
        extra_rows = [[k, _fmt(v)] for k, v in extra.items()]
        parts += ["<h2>Data and model</h2>", _table(["item", "value"], extra_rows)]
    parts += [
        "<h2>Headline metrics</h2>",
        _table(["metric", "value", "95% CI"], _headline_rows(overall)),
        f'<p class="note">95% CIs: bootstrap percentile intervals over {_e(boot["n_used"])} of '
        f'{_e(boot["n_requested"])} resamples of the images (seed {_e(boot["seed"])}); resamples '
        "missing a class were skipped. Predictions are the most probable class. "
        "n/a = undefined on these data (e.g. a class with no images).</p>",
        "<h2>Per class</h2>",
        _table(["class", "images", "sensitivity", "specificity", "precision", "AUC"],
               _per_class_rows(overall)),
    ]
    subgroups = result.get("subgroups") or {}
    if subgroups:
        parts.append("<h2>Subgroups</h2>")
        parts.append(
            f'<p class="note">Groups under {_e(result.get("min_group_size", ""))} images are not '
            "scored. Balanced accuracy in a group averages only the classes present in it.</p>"
        )
        for grouping, table in subgroups.items():
            parts += [f"<h3>{_e(grouping)}</h3>", _subgroup_table(table, positive)]
    parts.append("<h2>Plots</h2><div class=\"plots\">")
    for caption, file_name in plots.items():
        parts.append(
            f'<figure><img src="{_e(file_name)}" alt="{_e(caption)}"><figcaption>{_e(caption)}'
            "</figcaption></figure>"
        )
    parts += ["</div>", f"<footer>{_e(DISCLAIMER)}</footer>", "</body></html>"]
    return "\n".join(parts)


def _check_extra(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
    for key, value in extra.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"extra[{key!r}] = {value!r} cannot go into metrics.json: {err}") from None
    return {str(k): v for k, v in extra.items()}


def write_evaluation(
    out_dir: str | Path,
    y_true: Any,
    probs: Any,
    classes: Sequence[str],
    *,
    groups: Mapping[str, Any] | None = None,
    image_ids: Sequence[Any] | None = None,
    positive: str | None = "mel",
    n_bootstrap: int = 1000,
    title: str = "dermdx evaluation",
    extra: Mapping[str, Any] | None = None,
    min_group_size: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Score predictions and write everything a reviewer needs into ``out_dir``.

    Files: ``metrics.json`` (overall, subgroups, ``extra``), ``predictions.csv`` (image_id,
    true_label, predicted_label, ``prob_<class>`` per class), ``confusion_matrix.png``,
    ``roc.png``, ``reliability.png`` and ``report.html``.

    Args:
        out_dir: created if missing; existing files of the same names are replaced.
        groups: grouping name -> label per row, for :func:`dermdx.metrics.subgroup_metrics`.
            Subgroups use the same ``n_bootstrap``.
        image_ids: one id per row; row numbers when omitted.
        extra: JSON-serialisable facts that identify what was measured (model name, checkpoint
            hash, data fingerprint, split); shown at the top of the report.
        min_group_size: smaller subgroups are listed but not scored.

    Returns:
        The dict written to ``metrics.json``: ``title``, ``dermdx_version``, ``overall``,
        ``subgroups``, ``min_group_size`` and ``extra``.

    Raises:
        ValueError: bad predictions (see :func:`dermdx.metrics.check_predictions`) or
            ``image_ids`` of the wrong length.
        TypeError: an ``extra`` value that JSON cannot hold.
    """
    names = [str(c) for c in classes]
    y, p = check_predictions(y_true, probs, names)
    if image_ids is None:
        ids = [str(i) for i in range(len(y))]
    else:
        ids = [str(i) for i in image_ids]
        if len(ids) != len(y):
            raise ValueError(f"image_ids has {len(ids)} entries but there are {len(y)} predictions")
    extra_dict = _check_extra(extra)

    overall = compute_metrics(y, p, names, positive=positive, n_bootstrap=n_bootstrap, seed=seed)
    subgroups = (
        subgroup_metrics(y, p, names, groups, positive=positive, n_bootstrap=n_bootstrap,
                         min_size=min_group_size, seed=seed)
        if groups
        else {}
    )
    result: dict[str, Any] = {
        "title": title,
        "dermdx_version": __version__,
        "overall": overall,
        "subgroups": subgroups,
        "min_group_size": int(min_group_size),
        "extra": extra_dict,
    }

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN that slipped through is a bug to surface, not invalid JSON to ship.
    (out / "metrics.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")

    pred = p.argmax(axis=1)
    table = pd.DataFrame({
        "image_id": ids,
        "true_label": [names[i] for i in y],
        "predicted_label": [names[i] for i in pred],
    })
    for k, name in enumerate(names):
        table[f"prob_{name}"] = p[:, k]
    table.to_csv(out / "predictions.csv", index=False)

    plots = {
        "Confusion matrix": plot_confusion_matrix(np.asarray(overall["confusion_matrix"]), names,
                                                  out / "confusion_matrix.png").name,
        "ROC curves": plot_roc_curves(y, p, names, out / "roc.png").name,
        "Reliability": plot_reliability(y, p, out / "reliability.png").name,
    }
    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = render_html(result, title=title, plots=plots, created=created)
    (out / "report.html").write_text(page, encoding="utf-8")
    return result
