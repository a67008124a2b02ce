"""Run a dermdx ONNX model with only numpy, Pillow, OpenCV and onnxruntime: no dermdx, no torch.

    python examples/onnx_predict_standalone.py model.onnx lesion.jpg [more.jpg ...]

This is the reference for what a phone app or clinic PC must do before calling the model; its
output matches ``dermdx predict --backend onnx`` (checked by tests/test_onnx_standalone.py).
"""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import onnxruntime as ort
from PIL import Image


def shades_of_gray(rgb: np.ndarray, power: float = 6.0) -> np.ndarray:
    pixels = rgb.astype(np.float32)
    illuminant = np.power(np.mean(np.power(pixels, power), axis=(0, 1)), 1.0 / power)
    norm = np.sqrt(np.sum(illuminant**2))
    if norm == 0:
        return rgb
    gains = 1.0 / (illuminant / norm * np.sqrt(3.0) + 1e-6)
    return np.clip(pixels * gains, 0, 255).astype(np.uint8)


def preprocess(path: str, settings: dict) -> np.ndarray:
    """RGB -> square resize (area) -> optional Shades-of-Gray -> (x/255 - mean)/std -> 1x3xSxS float32."""
    if settings.get("hair_removal"):
        raise SystemExit("this model was trained with hair removal; use dermdx itself (dermdx.data.transforms.remove_hair)")
    size = settings["image_size"]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    if settings.get("color_constancy", True):
        rgb = shades_of_gray(rgb)
    x = (rgb.astype(np.float32) / 255.0 - np.array(settings["mean"], np.float32)) / np.array(settings["std"], np.float32)
    return x.transpose(2, 0, 1)[None]


def nothing_known(schema: dict) -> np.ndarray:
    """The ``meta`` input of a model that fuses patient metadata, when age, sex and site are unknown.

    Layout (dermdx.data.meta.encode_meta): age_z, age_missing, male, female, sex_missing, one
    column per site in ``schema["sites"]``, site_missing. A caller with patient data sets age_z to
    (age - age_mean) / age_std and the one-hot columns instead of the *_missing flags.
    """
    vector = np.zeros((1, 2 + 2 + 1 + len(schema["sites"]) + 1), np.float32)
    vector[0, [1, 4, -1]] = 1.0
    return vector


def main(model_path: str, images: list[str]) -> None:
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    info = json.loads(session.get_modelmeta().custom_metadata_map["dermdx"])
    classes = info["classes"]
    takes_meta = [i.name for i in session.get_inputs()] == ["image", "meta"]
    for path in images:
        feeds = {"image": preprocess(path, info["preprocess"])}
        if takes_meta:
            feeds["meta"] = nothing_known(info["meta_schema"])
        (logits,) = session.run(["logits"], feeds)
        exp = np.exp(logits[0] - logits[0].max())
        probs = exp / exp.sum()
        ranked = sorted(zip(classes, probs), key=lambda item: -item[1])
        print(path, " ".join(f"{name}={p:.4f}" for name, p in ranked))
    print("Decision support for clinicians, not a diagnosis.")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
