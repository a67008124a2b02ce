"""The diagnosis report as one self-contained HTML page (images inlined), for a clinician to read.

Every inserted text is HTML-escaped; the page has no scripts and loads nothing from outside.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dermdx.diagnosis import class_name

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;max-width:1100px;
padding:0 1rem;color:#1b1f23;line-height:1.45;font-size:16px}
h1{font-size:1.6rem;margin:0 0 .2rem}h2{font-size:1.15rem;margin:1.8rem 0 .6rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.note{color:#57606a;font-size:.88rem}
.banner{background:#fff1e5;border:3px solid #bc4c00;border-radius:8px;padding:1rem 1.2rem;margin:1rem 0}
.banner strong{display:block;font-size:1.6rem;color:#953800;letter-spacing:.02em}
.answered{background:#eef6ee;border:1px solid #4a9a4a;border-radius:8px;padding:.6rem 1rem;margin:1rem 0}
.ddx{display:flex;gap:1rem;flex-wrap:wrap}
.card{flex:1 1 250px;border:1px solid #d0d7de;border-radius:8px;padding:.8rem 1rem;background:#f6f8fa}
.card .rank{color:#57606a;font-size:.85rem}.card .pct{font-size:2.4rem;font-weight:700;font-variant-numeric:tabular-nums}
.card .name{font-size:1.15rem;font-weight:600}.card .code{color:#57606a}
.card.first{background:#ddf4ff;border-color:#54aeff}
.muted .card{opacity:.75}
.risk{font-size:1.2rem;margin:.8rem 0}.risk b{font-size:1.5rem}
.images{display:flex;gap:1rem;flex-wrap:wrap}.images figure{margin:0;flex:1 1 380px}
.images img{width:100%;max-width:448px;border:1px solid #ccc;border-radius:4px;image-rendering:auto}
figcaption{font-size:.88rem;color:#57606a;margin-top:.3rem}
table{border-collapse:collapse;font-size:.92rem;width:100%}
th,td{border-bottom:1px solid #e1e4e8;padding:.3rem .5rem;text-align:left;vertical-align:top}
td.num{font-variant-numeric:tabular-nums;text-align:right;white-space:nowrap;width:5.5rem}
.bar{background:#eaeef2;height:1.1rem;border-radius:3px;min-width:200px}
.bar span{display:block;height:100%;background:#0969da;border-radius:3px}
.bar.malignant span{background:#cf222e}
.na{color:#6e7781;font-style:italic}
code{font-size:.85rem;word-break:break-all}
.triage{border-radius:8px;padding:.8rem 1.1rem;margin:1rem 0;border:2px solid #57606a;background:#f6f8fa}
.triage strong{font-size:1.35rem}.triage.urgent{border-color:#cf222e;background:#ffebe9}
.triage.routine{border-color:#bc4c00;background:#fff1e5}.triage.monitor{border-color:#9a6700;background:#fff8c5}
.triage.reassure{border-color:#1a7f37;background:#dafbe1}
ul.reasons{margin:.3rem 0 0 1.1rem;padding:0}
.src{color:#57606a;font-size:.8rem}
footer{margin-top:2rem;padding:1rem;background:#fff8c5;border:2px solid #d4a72c;border-radius:6px;font-weight:600;font-size:1.05rem}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(p: float | None) -> str:
    if p is None:
        return "n/a"
    if 0 < p < 0.005:
        return "<1%"
    return f"{p:.0%}" if p >= 0.1 else f"{p:.1%}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _inline_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_SECTION_LABELS = {
    "recommendation": "Triage level and recommended next step",
    "lesion_outline": "Lesion outline and ABCD measurements",
    "seven_point_checklist": "7-point checklist, melanoma thickness and management heads",
    "out_of_distribution_check": "Out-of-distribution check (abstention reason)",
}
_TRIAGE_CLASS = {"urgent referral": "urgent", "routine referral": "routine", "monitor": "monitor", "reassure": "reassure"}


def _recommendation_banner(report: Mapping[str, Any]) -> list[str]:
    rec = report.get("recommendation")
    if rec is None:
        return []
    kind = _TRIAGE_CLASS.get(rec["triage"], "")
    parts = [f'<div class="triage {kind}"><strong>{_e(_sentence(rec["triage"]))}: {_e(rec["next_step"])}</strong>']
    if rec["safety_invariant"]["applied"]:
        parts.append(f'<div>{_e(_sentence(rec["safety_invariant"]["detail"]))}.</div>')
    parts.append('<ul class="reasons">')
    for item in rec["rationale"]:
        sources = "; ".join(item["sources"])
        parts.append(f'<li>{_e(item["reason"])}{f" <span class=src>[{_e(sources)}]</span>" if sources else ""}</li>')
    parts.append("</ul></div>")
    return parts


def _findings(report: Mapping[str, Any]) -> list[str]:
    """ABCD measurements, 7-point criteria, thickness and management probabilities, when present."""
    parts: list[str] = []
    lesion = report.get("lesion")
    if lesion and lesion.get("found"):
        a = lesion["abcd"]
        diameter = f"{a['diameter_px']:.0f} px" + (f" = {a['diameter_mm']:.1f} mm" if a.get("diameter_mm") is not None else " (give the image scale for mm)")
        rows = [
            ("A: asymmetry", f"asymmetric about {a['asymmetric_axes']} of 2 axes (scores {a['asymmetry_axes'][0]:.2f}, {a['asymmetry_axes'][1]:.2f})"),
            ("B: border", f"compactness {a['compactness']:.2f} (1 = circle; higher = more irregular), solidity {a['solidity']:.2f}"),
            ("C: colours", f"{a['n_colours']}: {', '.join(a['colours_present']) or 'none above the area threshold'}"),
            ("D: largest diameter", diameter),
        ]
        parts.append("<h2>ABCD measurements (automatic)</h2><table><tbody>")
        parts += [f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows]
        parts.append(f'</tbody></table><p class="note">{_e(_sentence(lesion["abcd_note"]))}.</p>')
    elif lesion is not None:
        parts.append(f'<h2>ABCD measurements</h2><p class="na">{_e(_sentence(lesion["note"]))}.</p>')
    checklist = report.get("seven_point_checklist")
    if checklist:
        parts.append(f"<h2>7-point checklist (predicted): score {_e(checklist['score'])}"
                     f"{' &mdash; 3 or more suggests melanoma' if checklist['suggests_melanoma'] else ''}</h2><table><tbody>")
        for name, item in checklist["criteria"].items():
            mark = "present" if item["present"] else "absent"
            parts.append(f'<tr><td>{_e(item.get("text", name))}</td><td>{_e(mark)}</td><td class="num">{_e(_pct(item["probability"]))}</td>'
                         f'<td class="num">{_e(item["points"])} pt</td></tr>')
        parts.append('</tbody></table><p class="note">Criteria predicted from the image by heads fitted on Derm7pt; mean balanced '
                     "accuracy about 0.64 on its validation split (docs/benchmarks.md): a prompt to look, not a finding.</p>")
    thickness = report.get("thickness")
    if thickness:
        bands = ", ".join(f"{k} {_pct(v)}" for k, v in thickness["probabilities"].items())
        parts.append(f'<h2>If melanoma: thickness band</h2><p>{_e(bands)}. <span class="note">Weak head: on Derm7pt it did no '
                     "better than always naming the commonest band; it never changes the recommendation.</span></p>")
    management = report.get("management_probabilities")
    if management:
        text = ", ".join(f"{k} {_pct(v)}" for k, v in management.items())
        parts.append(f'<h2>Learned management (Derm7pt dermatologists)</h2><p>{_e(text)}</p>')
    return parts


def _checks(report: Mapping[str, Any]) -> list[str]:
    """Image-quality and out-of-distribution checks, and the clinical photo's checks."""
    parts = ["<h2>Checks before answering</h2><table><tbody>"]
    quality = report["image_quality"]
    parts.append(f"<tr><td>Image quality</td><td>{'passed' if quality['ok'] else _e('; '.join(quality['reasons']))}</td></tr>")
    ood = report.get("out_of_distribution")
    if ood is not None:
        parts.append(f"<tr><td>Like the training images (dermoscopy of a skin lesion)</td><td>{'yes' if ood['in_distribution'] else _e('; '.join(ood['reasons']))}</td></tr>")
    confidence = report["abstention"]["checks"]["low_confidence"]
    parts.append(f"<tr><td>Confidence</td><td>{_e(report['abstention']['detail'])} ({_e(confidence)})</td></tr>")
    photo = report.get("clinical_photo")
    if photo:
        modality = photo["modality_check"]["note"] if photo["modality_check"] else "modality not checked for this model"
        quality_text = "passed" if photo["quality_ok"] else "; ".join(photo["quality_reasons"])
        parts.append(f"<tr><td>Clinical photo</td><td>quality: {_e(quality_text)}; {_e(modality)}</td></tr>")
    parts.append("</tbody></table>")
    return parts


def render_diagnosis_html(report: Mapping[str, Any], out_dir: str | Path) -> str:
    """The page for a ``dermdx.diagnosis.diagnose`` report; PNGs named in it are read from ``out_dir`` and inlined."""
    out = Path(out_dir)
    abst = report["abstention"]
    risk = report["malignancy_risk"]
    model = report["model"]
    explanation = report["explanation"]
    malignant = set(risk["classes"])
    image_name = Path(report["image"]["file"]).name
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>dermdx report: {_e(image_name)}</title><style>{_CSS}</style></head><body>",
        "<h1>Skin lesion: decision-support report</h1>",
        f'<p class="note">Image <b>{_e(image_name)}</b> ({_e(report["image"]["width"])}&times;{_e(report["image"]["height"])} px), '
        f'created {_e(report["created"])}. {_e(report["disclaimer"])}</p>',
    ]
    if abst["abstain"]:
        items = "".join(f"<li>{_e(_sentence(r))}</li>" for r in abst["reasons"])
        parts.append(
            f'<div class="banner"><strong>{_e(abst["decision"].upper())}</strong>'
            "The model does not answer this case; please assess it clinically. The probabilities below are shown "
            f'for transparency only.<ul class="reasons">{items}</ul></div>'
        )
    else:
        parts.append(f'<div class="answered">The model answers this case: {_e(abst["detail"])}.</div>')

    parts += _recommendation_banner(report)
    calibrated = "calibrated probabilities" if report["probabilities_calibrated"] else "probabilities not calibrated"
    parts.append(f"<h2>Differential diagnosis: top 3 ({_e(calibrated)})</h2>")
    parts.append(f'<div class="ddx{" muted" if abst["abstain"] else ""}">')
    for item in report["differential"]:
        first = " first" if item["rank"] == 1 else ""
        parts.append(
            f'<div class="card{first}"><div class="rank">#{_e(item["rank"])}</div>'
            f'<div class="pct">{_e(_pct(item["probability"]))}</div>'
            f'<div class="name">{_e(item["name"])}</div><div class="code">{_e(item["class"])}</div></div>'
        )
    parts.append("</div>")
    if risk["probability"] is not None:
        parts.append(f'<p class="risk">Malignancy risk: <b>{_e(_pct(risk["probability"]))}</b> '
                     f'<span class="note">({_e(risk["definition"])})</span></p>')
    else:
        parts.append(f'<p class="risk na">Malignancy risk: {_e(risk["definition"])}.</p>')

    parts.append("<h2>Images: where the model looked, and the lesion outline</h2><div class=\"images\">")
    parts.append(f'<figure><img src="{_inline_png(out / explanation["image"])}" alt="the lesion image"><figcaption>The dermoscopic image as submitted (resized).</figcaption></figure>')
    energy = explanation.get("cam_energy_in_lesion")
    inside = f" {_e(_pct(energy))} of the heatmap lies inside the outlined lesion." if energy is not None else ""
    parts.append(
        f'<figure><img src="{_inline_png(out / explanation["overlay"])}" alt="class activation map over the image">'
        f'<figcaption>{_e(explanation["cam_method"])} heatmap for <b>{_e(explanation["target_class"])}</b>: red = regions that '
        f"raised this class&#39;s score, blue = little influence. It is not a lesion outline.{inside}</figcaption></figure>"
    )
    lesion = report.get("lesion")
    if lesion and lesion.get("found"):
        parts.append(f'<figure><img src="{_inline_png(out / lesion["outline"])}" alt="automatic lesion outline">'
                     "<figcaption>Automatic lesion outline (cyan) used for the measurements below.</figcaption></figure>")
    photo = report.get("clinical_photo")
    if photo:
        parts.append(f'<figure><img src="{_inline_png(out / photo["image"])}" alt="clinical photo">'
                     f'<figcaption>Clinical photo: {_e(photo["use"])}.</figcaption></figure>')
    parts.append("</div>")
    if report.get("plain_language_explanation"):
        parts.append(f'<h2>In plain language</h2><p>{_e(report["plain_language_explanation"])}</p>')
    parts += _findings(report)

    parts.append("<h2>All classes</h2><table><tbody>")
    for code, p in sorted(report["probabilities"].items(), key=lambda kv: -kv[1]):
        width = max(0.0, min(100.0, 100.0 * p))
        kind = " malignant" if code in malignant else ""
        parts.append(
            f'<tr><td>{_e(class_name(code))} <span class="note">({_e(code)}{", malignant" if kind else ""})</span></td>'
            f'<td class="num">{_e(_pct(p))}</td><td><div class="bar{kind}"><span style="width:{width:.1f}%"></span></div></td></tr>'
        )
    parts.append("</tbody></table>")

    parts += _checks(report)
    if report["not_available"]:
        parts.append("<h2>Not available for this model</h2><table><tbody>")
        for key, status in report["not_available"].items():
            parts.append(f'<tr><td>{_e(_SECTION_LABELS.get(key, key))}</td><td class="na">{_e(status)}</td></tr>')
        parts.append("</tbody></table>")

    patient = report["patient"]
    used = "used by the model" if patient["used_by_model"] else "recorded only: this model uses the image alone"
    parts.append("<h2>Patient information</h2><table><tbody>")
    for key in ("age", "sex", "site"):
        value = patient[key]
        shown = "not given" if value is None else (f"{value:g} years" if key == "age" else value)
        parts.append(f"<tr><td>{_e(key.capitalize())}</td><td>{_e(shown)}</td></tr>")
    parts.append(f'<tr><td>Use</td><td>{_e(used)}</td></tr></tbody></table>')

    parts.append("<h2>Model</h2><table><tbody>")
    rows = [
        ("Model", model["name"]),
        ("File", model["file"] or "(not given)"),
        ("SHA-256", model["sha256"]),
        ("Trained with dermdx", model["dermdx_version_trained"] or "unknown"),
        ("Report by dermdx", model["dermdx_version_running"]),
        ("Training data fingerprint", model["training_data_fingerprint"] or "unknown"),
    ]
    metrics = model.get("selection_metrics") or {}
    if "select_balanced_accuracy" in metrics:
        rows.append(("Balanced accuracy on its selection split", f"{metrics['select_balanced_accuracy']:.3f} (epoch {metrics.get('epoch', '?')}; the split that chose the epoch)"))
    cal = model["calibration"]
    if cal:
        rows.append(("Calibration", f"temperature {model['temperature']:.3f}, fitted on {cal['n_images']} images ({cal['fitted_on']}); "
                     f"expected calibration error {cal['ece_before']:.3f} before, {cal['ece_after']:.3f} after"))
    else:
        rows.append(("Calibration", "none: probabilities are the model's raw softmax (run dermdx calibrate)"))
    rows.append(("Abstention threshold", f"top-class probability below {abst['min_confidence']:.2f} ({abst['threshold_source']})"))
    for label, value in rows:
        cell = f"<code>{_e(value)}</code>" if label == "SHA-256" else _e(value)
        parts.append(f"<tr><td>{_e(label)}</td><td>{cell}</td></tr>")
    parts.append("</tbody></table>")
    parts += [f"<footer>{_e(report['disclaimer'])} A clinician makes the diagnosis and decides on management.</footer>", "</body></html>"]
    return "\n".join(parts)
