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


def main(model_path: str, images: list[str]) -> None:
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    info = json.loads(session.get_modelmeta().custom_metadata_map["dermdx"])
    classes = info["classes"]
    for path in images:
        (logits,) = session.run(["logits"], {"image": preprocess(path, info["preprocess"])})
        exp = np.exp(logits[0] - logits[0].max())
        probs = exp / exp.sum()
        ranked = sorted(zip(classes, probs), key=lambda item: -item[1])
        print(path, " ".join(f"{name}={p:.4f}" for name, p in ranked))
    print("Decision support for clinicians, not a diagnosis.")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
