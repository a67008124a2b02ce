"""One lesion, one report: diagnosis, risk, triage and next step, with the evidence a clinician can check.

``diagnose`` runs a :class:`~dermdx.inference.Predictor` on one dermoscopic image (with the
patient's age, sex and body site when the model fuses metadata) plus the add-ons of
:class:`~dermdx.diagnosis_tools.DiagnosisTools`, and writes into ``out_dir``:

- ``report.json``: every class's probability (calibrated when the model carries a temperature),
  the top-3 differential, the malignancy risk; the abstention decision with every reason that
  applies (low confidence, poor image quality, out of distribution / wrong modality); the CAM and
  how much of it falls on the lesion; the lesion outline and ABCD measurements; the 7-point
  criteria, thickness band and management probabilities; triage, next step and the cited rules
  behind them; a plain-language explanation; the model's name, version and SHA-256; the
  disclaimer. A section that could not be produced for this model says why (``not_available``).
- ``image.png``, ``cam_overlay.png``, ``lesion_outline.png`` (and ``clinical.png`` with a
  clinical photo);
- ``report.html``: the same for a clinician, one self-contained file.

Example:
    >>> predictor = Predictor.from_checkpoint(default_model_path())
    >>> report = diagnose(predictor, "lesion.jpg", "out/", age=54, sex="female", site="back")
    >>> report["recommendation"]["triage"], report["abstention"]["abstain"]
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import nn

from dermdx import __version__
from dermdx.checkpoint import file_sha256
from dermdx.data.adapters import read_images
from dermdx.data.images import load_image
from dermdx.data.meta import SEXES, MetaSchema, encode_meta
from dermdx.decision import (
    ABSTAIN_LABEL,
    MALIGNANT_CLASSES,
    AbstentionConfig,
    abstain,
    malignancy_risk,
)
from dermdx.diagnosis_tools import DiagnosisTools
from dermdx.inference import DISCLAIMER, Predictor
from dermdx.quality import check_quality

REPORT_FORMAT = "dermdx-diagnosis/1"
# Display names for the ISIC 2018 classes; other class names are shown as they are.
CLASS_NAMES: dict[str, str] = {
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "bcc": "Basal cell carcinoma",
    "akiec": "Actinic keratosis / intraepithelial carcinoma (Bowen's disease)",
    "bkl": "Benign keratosis-like lesion",
    "df": "Dermatofibroma",
    "vasc": "Vascular lesion",
}
# What the CAM and ABCD figures mean, stated in the report (measured in docs/benchmarks.md).
CAM_NOTE = ("the heatmap shows the image regions that raised the score of the top class; it is not a lesion outline. "
            "On PH2, Grad-CAM put 50% of its energy inside the lesion (a centred blob: 53%)")
ABCD_NOTE = ("shape measurements from the automatic outline (PH2 cross-validated Dice 0.94). The colour count agreed "
             "poorly with PH2 experts except for blue-grey and black, so read it as a hint only")
CLINICAL_PHOTO_NOTE = "shown and checked only: the diagnosis reads the dermoscopic image; this model has no clinical-photo classifier"
MAX_AGE = 120.0
DISPLAY_SIZE = 448


def class_name(code: str) -> str:
    return CLASS_NAMES.get(str(code).lower(), str(code))


def check_patient(age: Any = None, sex: str | None = None, site: str | None = None, *, schema: MetaSchema | None = None) -> dict[str, Any]:
    """Validated patient metadata: ``{"age": float | None, "sex": str | None, "site": str | None}``.

    Args:
        schema: the model's metadata schema; when given, ``site`` must be one the model knows.

    Raises:
        ValueError: an age that is not a number of years in 0..120, a sex other than
            male/female, or (for a metadata model) a body site it was not trained with.
    """
    value: float | None = None
    if age is not None and str(age).strip() != "":
        try:
            value = float(age)
        except (TypeError, ValueError):
            raise ValueError(f"age {age!r} is not a number of years; give e.g. --age 54, or leave it out if unknown") from None
        if not math.isfinite(value) or not 0.0 <= value <= MAX_AGE:
            raise ValueError(f"age {age!r} is outside 0..{MAX_AGE:g} years; check the value, or leave it out if unknown")
    sex_value = None
    if sex is not None and str(sex).strip() != "":
        sex_value = str(sex).strip().lower()
        if sex_value not in SEXES:
            raise ValueError(f"sex {sex!r} is not one of {list(SEXES)}; leave it out if unknown")
    site_value = None
    if site is not None and str(site).strip() != "":
        site_value = str(site).strip().lower()
        if schema is not None and site_value not in schema.sites:
            raise ValueError(f"body site {site!r} is not one this model knows ({', '.join(schema.sites) or 'none'}); pick one of them, or leave it out if none fits")
    return {"age": value, "sex": sex_value, "site": site_value}


def _display(image: np.ndarray, size: int) -> np.ndarray:
    """The image scaled so its longer side is ``size`` pixels (up or down), for the report."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    target = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(image).resize(target, resample))


def diagnose(
    predictor: Predictor,
    image_path: str | Path,
    out_dir: str | Path,
    *,
    age: Any = None,
    sex: str | None = None,
    site: str | None = None,
    clinical_photo: str | Path | None = None,
    mm_per_pixel: float | None = None,
    cam_method: str = "gradcam",
    abstention: AbstentionConfig | None = None,
    model_path: str | Path | None = None,
    tools: DiagnosisTools | None = None,
) -> dict[str, Any]:
    """Assess one dermoscopic image and write the report files into ``out_dir``.

    Args:
        predictor: a PyTorch predictor (the CAM and the add-ons need gradients and features, so
            not the ONNX backend).
        age, sex, site: the patient's metadata; used when the model fuses metadata, recorded
            (and validated) otherwise.
        clinical_photo: an optional close-up (macroscopic) photo of the same lesion: checked for
            quality and modality and shown beside the dermoscopic image.
        mm_per_pixel: the dermoscopic image's scale, for the diameter in millimetres.
        cam_method: a name from ``dermdx.explain.CAM_METHODS``.
        abstention: the confidence threshold; default the one stored with the model by
            ``dermdx calibrate``, else ``AbstentionConfig()``.
        model_path: the model file, named in the report.
        tools: the add-ons; default ``DiagnosisTools.for_predictor(predictor)``.

    Returns:
        The report dict written to ``report.json``.

    Raises:
        FileNotFoundError: no such image.
        ValueError: an unreadable image, bad metadata or scale, an unknown CAM method, an ONNX predictor.
    """
    from dermdx.diagnosis_html import render_diagnosis_html
    from dermdx.explain import compute_cam, find_target_layer, overlay_cam
    from dermdx.explain.cam import cam_class

    cam_class(cam_method)  # a bad method name fails before any work
    if not isinstance(predictor.model, nn.Module):
        raise ValueError("diagnose needs a PyTorch model (the CAM uses gradients); pass the .safetensors model, not an ONNX export")
    if mm_per_pixel is not None and not (isinstance(mm_per_pixel, int | float) and math.isfinite(mm_per_pixel) and mm_per_pixel > 0):
        raise ValueError(f"mm_per_pixel must be a positive number of millimetres per pixel, got {mm_per_pixel!r}")
    info = predictor.info
    schema = MetaSchema.from_dict(info.meta_schema) if info.meta_schema is not None else None
    patient = check_patient(age, sex, site, schema=schema)
    path = Path(image_path)
    image = load_image(path)  # FileNotFoundError / ImageReadError (a ValueError) naming the file
    photo_path = Path(clinical_photo) if clinical_photo is not None else None
    photo = load_image(photo_path) if photo_path is not None else None
    tools = tools or DiagnosisTools.for_predictor(predictor)

    manifest = read_images([path])
    manifest.frame["age"] = np.nan if patient["age"] is None else patient["age"]
    manifest.frame["sex"] = patient["sex"] or ""
    manifest.frame["site"] = patient["site"] or ""
    probs = predictor.predict_manifest(manifest, progress=False).probs[0]
    classes = predictor.classes
    order = np.argsort(-probs, kind="stable")
    features = predictor.predict_features(manifest) if tools.ood is not None or tools.clinical is not None else None

    quality = check_quality(image, tools.quality)
    ood = tools.ood.score(features)[0] if tools.ood is not None else None
    config = abstention or AbstentionConfig.from_model_info(info.calibration)
    low_confidence, confidence_detail = abstain(probs, config)
    reasons = ([confidence_detail] if low_confidence else []) + [f"poor image quality: {r}" for r in quality.reasons]
    if ood is not None:
        reasons += [f"out of distribution: {r}" for r in ood.reasons]
    refused = bool(reasons)

    meta = encode_meta(manifest.frame, schema)[0] if schema is not None else None
    tensor = predictor.transform(image)[None]
    target = int(order[0])
    layer_name, _ = find_target_layer(predictor.model, tensor)
    cam = compute_cam(predictor.model, tensor, target_class=target, method=cam_method, meta=meta)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    display = _display(image, DISPLAY_SIZE)
    Image.fromarray(display).save(out / "image.png")
    Image.fromarray(overlay_cam(display, cam)).save(out / "cam_overlay.png")
    lesion = _lesion_section(tools, image, display, cam, mm_per_pixel, out)

    clinical = tools.clinical.predict(features)[0] if tools.clinical is not None else None
    prob_map = {c: float(probs[k]) for k, c in enumerate(classes)}
    recommendation = None
    unavailable = dict(tools.unavailable)
    if "mel" in {c.lower() for c in classes}:
        from dermdx.clinical import recommend

        recommendation = recommend({c.lower(): p for c, p in prob_map.items()}, refused, clinical, tools.knowledge)
    else:
        unavailable["recommendation"] = f"this model has no melanoma class (classes {classes}); triage rules need one"

    calibration = info.calibration or None
    risk = malignancy_risk(probs, classes)
    present = [c for c in classes if c.lower() in MALIGNANT_CLASSES]
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "disclaimer": DISCLAIMER,
        "image": {"file": str(path), "sha256": file_sha256(path), "width": int(image.shape[1]), "height": int(image.shape[0]),
                  "mm_per_pixel": mm_per_pixel},
        "patient": {**patient, "used_by_model": schema is not None},
        "probabilities": prob_map,
        "probabilities_calibrated": calibration is not None,
        "differential": [
            {"rank": rank + 1, "class": classes[k], "name": class_name(classes[k]), "probability": float(probs[k])}
            for rank, k in enumerate(order[:3])
        ],
        "malignancy_risk": {
            "probability": risk,
            "classes": present,
            "definition": f"summed probability of the malignant classes the model has ({', '.join(present) or 'none'})"
            + ("" if present else f"; this model has none of {list(MALIGNANT_CLASSES)}, so no risk is given"),
        },
        "abstention": {
            "abstain": refused,
            "decision": ABSTAIN_LABEL if refused else None,
            "reasons": reasons,
            "detail": confidence_detail,
            "min_confidence": config.min_confidence,
            "threshold_source": config.source,
            "checks": {
                "low_confidence": "refused" if low_confidence else "passed",
                "image_quality": "passed" if quality.ok else "refused",
                "out_of_distribution": "not available" if ood is None else ("passed" if ood.in_distribution else "refused"),
            },
        },
        "image_quality": {"ok": quality.ok, "reasons": quality.reasons, "measures": quality.measures},
        "out_of_distribution": None if ood is None else {"in_distribution": ood.in_distribution, "reasons": ood.reasons, "scores": ood.scores},
        "explanation": {
            "cam_method": cam_method,
            "target_class": classes[target],
            "target_layer": layer_name,
            "image": "image.png",
            "overlay": "cam_overlay.png",
            "cam_energy_in_lesion": lesion.pop("cam_energy_in_lesion", None) if lesion else None,
            "note": CAM_NOTE,
        },
        "lesion": lesion,
        "seven_point_checklist": None if clinical is None else {
            "criteria": clinical["concepts"],
            "score": clinical["seven_point_score"],
            "expected_score": clinical["seven_point_expected"],
            "suggests_melanoma": clinical["seven_point_suggests_melanoma"],
        },
        "thickness": None if clinical is None else clinical["thickness"],
        "management_probabilities": None if clinical is None else clinical["management"],
        "triage": None if recommendation is None else recommendation["triage"],
        "recommendation": recommendation,
        "plain_language_explanation": _plain_language(recommendation, lesion, refused, reasons),
        "clinical_photo": None if photo is None else _clinical_photo_section(tools, predictor, photo_path, photo, out),
        "not_available": unavailable,
        "model": {
            "name": info.model_name,
            "file": str(model_path) if model_path is not None else None,
            "sha256": predictor.sha256,
            "dermdx_version_trained": info.dermdx_version,
            "dermdx_version_running": __version__,
            "training_data_fingerprint": info.data_fingerprint,
            "classes": classes,
            "selection_metrics": info.metrics,
            "temperature": predictor.temperature if calibration is not None else None,
            "calibration": None if calibration is None else {
                k: calibration.get(k) for k in ("fitted_on", "n_images", "ece_before", "ece_after", "selective")
            },
            "test_time_augmentation": getattr(predictor, "tta", "none"),
            "segmenter_sha256": tools.segmenter.sha256 if tools.segmenter is not None else None,
        },
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (out / "report.html").write_text(render_diagnosis_html(report, out), encoding="utf-8")
    return report


def _lesion_section(tools: DiagnosisTools, image: np.ndarray, display: np.ndarray, cam: np.ndarray, mm_per_pixel: float | None, out: Path) -> dict[str, Any] | None:
    """Outline PNG, ABCD measurements and the CAM's share inside the lesion; None without a segmenter."""
    if tools.segmenter is None:
        return None
    import cv2

    from dermdx.explain import abcd, cam_energy_in_mask, mask_fraction

    mask = tools.segmenter.segment(image)
    if not mask.any():
        return {"found": False, "note": "the segmenter found no lesion in this image, so no outline or ABCD measurements"}
    small = cv2.resize(mask.astype(np.uint8), (display.shape[1], display.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outlined = display.copy()
    cv2.drawContours(outlined, contours, -1, (0, 255, 255), 2)
    Image.fromarray(outlined).save(out / "lesion_outline.png")
    measures = abcd(image, mask, mm_per_pixel=mm_per_pixel).to_dict()
    return {
        "found": True,
        "outline": "lesion_outline.png",
        "area_fraction": mask_fraction(mask),
        "abcd": measures,
        "abcd_note": ABCD_NOTE,
        # A CAM that is zero everywhere (it happens with untrained or saturated models) points nowhere.
        "cam_energy_in_lesion": cam_energy_in_mask(cam, mask) if float(np.max(cam)) > 0 else None,
    }


def _clinical_photo_section(tools: DiagnosisTools, predictor: Predictor, path: Path, photo: np.ndarray, out: Path) -> dict[str, Any]:
    """The clinical photo's own checks: quality, and whether it looks like a clinical photo at all."""
    Image.fromarray(_display(photo, DISPLAY_SIZE)).save(out / "clinical.png")
    quality = check_quality(photo, tools.quality)
    section: dict[str, Any] = {"file": str(path), "image": "clinical.png", "quality_ok": quality.ok, "quality_reasons": quality.reasons,
                               "use": CLINICAL_PHOTO_NOTE, "modality_check": None}
    if tools.ood is not None:
        result = tools.ood.score(predictor.predict_features(read_images([path])))[0]
        looks_clinical = result.scores["clinical_photo"] > 0
        section["modality_check"] = {
            "looks_like_clinical_photo": looks_clinical,
            "scores": result.scores,
            "note": "consistent with a clinical photo" if looks_clinical else "this does not look like a clinical photo (is it a dermoscopic image?)",
        }
    return section


def _plain_language(recommendation: dict[str, Any] | None, lesion: dict[str, Any] | None, refused: bool, reasons: list[str]) -> str:
    """A few sentences for the patient record, built only from figures in the report."""
    sentences = []
    if refused:
        sentences.append("The system does not give a diagnosis for this image (" + "; ".join(reasons) + ").")
    if recommendation is not None:
        sentences.append(recommendation["explanation"])
    if lesion and lesion.get("found"):
        a = lesion["abcd"]
        shape = {0: "symmetric in shape about both axes", 1: "asymmetric about one axis", 2: "asymmetric about both axes"}[a["asymmetric_axes"]]
        size = f"{a['diameter_mm']:.1f} mm" if a.get("diameter_mm") is not None else f"{a['diameter_px']:.0f} pixels (no scale given)"
        sentences.append(f"The automatic outline is {shape}, with a largest diameter of {size}.")
    return " ".join(sentences)


def summary_text(report: dict[str, Any], out_dir: str | Path) -> str:
    """A few lines for the terminal."""
    top = ", ".join(f"{d['class']} {d['probability']:.0%}" for d in report["differential"])
    calibrated = "calibrated" if report["probabilities_calibrated"] else "not calibrated (run dermdx calibrate)"
    lines = [f"{Path(report['image']['file']).name}: {top}  [{calibrated}]"]
    risk = report["malignancy_risk"]
    if risk["probability"] is not None:
        lines.append(f"malignancy risk ({'+'.join(risk['classes'])}): {risk['probability']:.0%}")
    abst = report["abstention"]
    lines.append(f"{abst['decision'].upper()}: {'; '.join(abst['reasons'])}" if abst["abstain"] else f"answered: {abst['detail']}")
    rec = report.get("recommendation")
    if rec is not None:
        lines.append(f"triage: {rec['triage']}; next step: {rec['next_step']}")
    lines.append(f"report: {Path(out_dir) / 'report.html'}")
    lines.append(report["disclaimer"])
    return "\n".join(lines)
