"""One case's report: what the model says about one saved image, as a JSON-ready dict.

The report holds class probabilities, a top-3 differential, the model's identity, the
disclaimer, a Grad-CAM heatmap of the predicted class, the abstention decision (low confidence,
poor image quality, out of distribution) and the triage level and next step of the knowledge-base
rules (``dermdx.clinical.recommend``), as ``dermdx diagnose`` computes them. The web page shows
each key that is not ``None``; a model without a melanoma class gets no triage rather than an
invented one.
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from dermdx.data.adapters import read_images
from dermdx.data.images import load_image
from dermdx.data.meta import MetaSchema, encode_meta
from dermdx.decision import ABSTAIN_LABEL, AbstentionConfig, abstain
from dermdx.diagnosis_tools import DiagnosisTools
from dermdx.inference import DISCLAIMER, Predictor
from dermdx.quality import check_quality

HEATMAP_METHOD = "gradcam"

REPORT_FORMAT = "dermdx-report/1"
FUTURE_KEYS = ("heatmap", "triage", "recommendation", "abstention")


def model_card(predictor: Predictor) -> dict[str, Any]:
    """Name, hash, classes, validation metrics and preprocessing of a loaded model."""
    info = predictor.info
    return {
        "name": info.model_name,
        "sha256": predictor.sha256,
        "dermdx_version": info.dermdx_version,
        "classes": list(info.classes),
        "data_fingerprint": info.data_fingerprint,
        "metrics": info.metrics,
        "image_size": info.preprocess.image_size,
        "uses_metadata": info.meta_schema is not None,
    }


class CasePredictor:
    """A loaded ``Predictor`` made safe to call from the server's worker threads.

    One prediction at a time: the model already uses every core, and torch modules are not
    documented as safe for concurrent calls.

    Example:
        >>> reporter = CasePredictor(Predictor.from_checkpoint("model.safetensors", batch_size=1))
        >>> reporter.report(Path("lesion.jpg"), age=60, sex="male", site="back")["predicted"]
    """

    def __init__(self, predictor: Predictor, tools: DiagnosisTools | None = None) -> None:
        self.predictor = predictor
        self.card = model_card(predictor)
        # No segmenter: the service report has no outline yet, and it would cost a second network.
        self.tools = tools or DiagnosisTools.for_predictor(predictor, segment=False)
        self._lock = threading.Lock()

    def report(self, image_path: Path, *, age: int | None, sex: str, site: str) -> dict[str, Any]:
        """Predict one saved image (with its metadata, for models that use it) and build its report.

        Raises:
            dermdx.data.images.ImageReadError: the file cannot be decoded.
        """
        manifest = read_images([image_path])
        # Manifests say "not recorded" with NaN / empty strings; the form says "unknown".
        manifest.frame["age"] = float("nan") if age is None else float(age)
        manifest.frame["sex"] = "" if sex == "unknown" else sex
        manifest.frame["site"] = "" if site == "unknown" else site
        tools = self.tools
        image = load_image(image_path)  # decoded once, for the heatmap and the quality gate
        with self._lock:
            result = self.predictor.predict_manifest(manifest, progress=False)
            report = build_report(result.probs[0].tolist(), result.classes, self.card)
            report["heatmap"] = self._heatmap(image, manifest, int(np.argmax(result.probs[0])))
            features = self.predictor.predict_features(manifest) if tools.ood is not None or tools.clinical is not None else None
        config = AbstentionConfig.from_model_info(self.predictor.info.calibration)
        low_confidence, detail = abstain(result.probs[0], config)
        quality = check_quality(image, tools.quality)
        reasons = ([detail] if low_confidence else []) + [f"poor image quality: {r}" for r in quality.reasons]
        if tools.ood is not None:
            reasons += [f"out of distribution: {r}" for r in tools.ood.score(features)[0].reasons]
        refused = bool(reasons)
        report["abstention"] = {"abstain": refused, "decision": ABSTAIN_LABEL if refused else None, "reason": "; ".join(reasons) or detail,
                                "reasons": reasons, "min_confidence": config.min_confidence, "threshold_source": config.source}
        if "mel" in result.classes:
            from dermdx.clinical import recommend

            clinical = tools.clinical.predict(features)[0] if tools.clinical is not None else None
            advice = recommend(dict(zip(result.classes, result.probs[0].tolist(), strict=True)), refused, clinical, tools.knowledge)
            report["triage"] = advice["triage"]
            report["recommendation"] = {
                "next step": advice["next_step"],
                "why": advice["explanation"],
                "rules": [f"{item['reason']} [{'; '.join(item['sources']) or 'no source: no rule applied'}]" for item in advice["rationale"]],
            }
        return report

    def _heatmap(self, image: np.ndarray, manifest, target: int) -> dict[str, Any] | None:
        """Grad-CAM of the predicted class as a colour PNG data URL (the page lays it over the photo).

        None for models without gradients (ONNX), which cannot give a Grad-CAM.
        """
        from torch import nn

        if not isinstance(self.predictor.model, nn.Module):
            return None
        from dermdx.explain import compute_cam

        info = self.predictor.info
        meta = encode_meta(manifest.frame, MetaSchema.from_dict(info.meta_schema))[0] if info.meta_schema is not None else None
        tensor = self.predictor.transform(image)[None]
        cam = compute_cam(self.predictor.model, tensor, target_class=target, method=HEATMAP_METHOD, meta=meta)
        colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * cam), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        buffer = io.BytesIO()
        Image.fromarray(colour).save(buffer, format="PNG")
        return {"method": HEATMAP_METHOD, "class": info.classes[target], "image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}


def build_report(probs: list[float], classes: list[str], card: dict[str, Any]) -> dict[str, Any]:
    """The report for one image's class probabilities (in ``classes`` order)."""
    ranked = sorted(zip(classes, probs, strict=True), key=lambda pair: -pair[1])
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "predicted": ranked[0][0],
        "probabilities": dict(zip(classes, (float(p) for p in probs), strict=True)),
        "differential": [{"class": name, "probability": float(p)} for name, p in ranked[:3]],
        "model": {"name": card["name"], "sha256": card["sha256"], "dermdx_version": card["dermdx_version"]},
        "disclaimer": DISCLAIMER,
    }
    report.update({key: None for key in FUTURE_KEYS})
    return report
