"""One lesion, one report: probabilities, differential, abstention and a CAM, as JSON and HTML.

``diagnose`` runs a :class:`~dermdx.inference.Predictor` on one image (with the patient's age,
sex and body site when the model fuses metadata) and writes into ``out_dir``:

- ``report.json``: every class's probability (calibrated when the model carries a temperature),
  the top-3 differential, the malignancy risk, the abstention decision and its reason, the CAM
  method, the model's name, version and SHA-256, the disclaimer, and the sections this version
  does not produce yet (marked ``not available in this version``, never filled with guesses);
- ``image.png`` (the image, resized for display), ``cam_overlay.png`` (the CAM over it);
- ``report.html``: the same for a clinician, one self-contained file.

Example:
    >>> predictor = Predictor.from_checkpoint("model.safetensors")
    >>> report = diagnose(predictor, "lesion.jpg", "out/", age=54, sex="female", site="back")
    >>> report["differential"][0]["class"], report["abstention"]["abstain"]
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
from dermdx.decision import ABSTAIN_LABEL, MALIGNANT_CLASSES, AbstentionConfig, abstain, malignancy_risk
from dermdx.inference import DISCLAIMER, Predictor

REPORT_FORMAT = "dermdx-diagnosis/1"
NOT_AVAILABLE = "not available in this version"
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
# Parts of the full report that later versions add. Listed so a reader sees what is missing.
FUTURE_SECTIONS: tuple[str, ...] = (
    "triage",
    "recommendation",
    "lesion_outline",
    "abcd_measurements",
    "seven_point_checklist",
    "plain_language_explanation",
    "out_of_distribution_check",
    "image_quality_check",
    "clinical_photo",
)
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
    cam_method: str = "gradcam",
    abstention: AbstentionConfig | None = None,
    model_path: str | Path | None = None,
) -> dict[str, Any]:
    """Predict one image and write ``report.json``, ``report.html``, ``image.png`` and ``cam_overlay.png``.

    Args:
        predictor: a PyTorch predictor (the CAM needs gradients, so not the ONNX backend).
        age, sex, site: the patient's metadata; used when the model fuses metadata, recorded
            (and validated) otherwise.
        cam_method: a name from ``dermdx.explain.CAM_METHODS``.
        abstention: the threshold; default the one stored with the model by ``dermdx calibrate``,
            else ``AbstentionConfig()``.
        model_path: the model file, named in the report.

    Returns:
        The report dict written to ``report.json``.

    Raises:
        FileNotFoundError: no such image.
        ValueError: an unreadable image, bad metadata, an unknown CAM method, an ONNX predictor.
    """
    from dermdx.diagnosis_html import render_diagnosis_html
    from dermdx.explain import compute_cam, find_target_layer, overlay_cam
    from dermdx.explain.cam import cam_class

    cam_class(cam_method)  # a bad method name fails before any work
    if not isinstance(predictor.model, nn.Module):
        raise ValueError("diagnose needs a PyTorch model (the CAM uses gradients); pass the .safetensors model, not an ONNX export")
    info = predictor.info
    schema = MetaSchema.from_dict(info.meta_schema) if info.meta_schema is not None else None
    patient = check_patient(age, sex, site, schema=schema)
    path = Path(image_path)
    image = load_image(path)  # FileNotFoundError / ImageReadError (a ValueError) naming the file

    manifest = read_images([path])
    manifest.frame["age"] = np.nan if patient["age"] is None else patient["age"]
    manifest.frame["sex"] = patient["sex"] or ""
    manifest.frame["site"] = patient["site"] or ""
    probs = predictor.predict_manifest(manifest, progress=False).probs[0]
    classes = predictor.classes
    order = np.argsort(-probs, kind="stable")

    config = abstention or AbstentionConfig.from_model_info(info.calibration)
    refused, reason = abstain(probs, config)

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

    calibration = info.calibration or None
    risk = malignancy_risk(probs, classes)
    present = [c for c in classes if c.lower() in MALIGNANT_CLASSES]
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "disclaimer": DISCLAIMER,
        "image": {"file": str(path), "sha256": file_sha256(path), "width": int(image.shape[1]), "height": int(image.shape[0])},
        "patient": {**patient, "used_by_model": schema is not None},
        "probabilities": {c: float(probs[k]) for k, c in enumerate(classes)},
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
            "reasons": [reason] if refused else [],
            "detail": reason,
            "min_confidence": config.min_confidence,
            "threshold_source": config.source,
            "checks": {"low_confidence": "done", "out_of_distribution": NOT_AVAILABLE, "image_quality": NOT_AVAILABLE},
        },
        "explanation": {
            "cam_method": cam_method,
            "target_class": classes[target],
            "target_layer": layer_name,
            "image": "image.png",
            "overlay": "cam_overlay.png",
            "note": "the heatmap shows the image regions that raised the score of the top class; it is not a lesion outline",
        },
        "triage": None,
        "recommendation": None,
        "not_available": {name: NOT_AVAILABLE for name in FUTURE_SECTIONS},
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
        },
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (out / "report.html").write_text(render_diagnosis_html(report, out), encoding="utf-8")
    return report


def summary_text(report: dict[str, Any], out_dir: str | Path) -> str:
    """A few lines for the terminal."""
    top = ", ".join(f"{d['class']} {d['probability']:.0%}" for d in report["differential"])
    calibrated = "calibrated" if report["probabilities_calibrated"] else "not calibrated (run dermdx calibrate)"
    lines = [f"{Path(report['image']['file']).name}: {top}  [{calibrated}]"]
    risk = report["malignancy_risk"]
    if risk["probability"] is not None:
        lines.append(f"malignancy risk ({'+'.join(risk['classes'])}): {risk['probability']:.0%}")
    abst = report["abstention"]
    lines.append(f"{abst['decision'].upper()}: {abst['reasons'][0]}" if abst["abstain"] else f"answered: {abst['detail']}")
    lines.append(f"report: {Path(out_dir) / 'report.html'}")
    lines.append(report["disclaimer"])
    return "\n".join(lines)
