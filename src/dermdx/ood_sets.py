"""Images that are not dermoscopy, built offline, for fitting and measuring the OOD detector.

Two sources need no download: generated images (uniform colours, noise, gradients,
checkerboards, smooth random fields) and the photographs bundled inside scikit-image's
``skimage.data`` (those fetched with pooch are left out, so nothing is downloaded). The third
out-of-distribution set, clinical photos given as dermoscopy, comes from Derm7pt
(``read_derm7pt(..., modality="clinical")``) and needs no code here.

Example:
    >>> images = generated_images(seed=1, per_kind=40)
    >>> paths = write_images(images, Path("runs/ood_sets/generated_seed1"))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENERATED_KINDS = ("uniform", "gaussian_noise", "uniform_noise", "gradient", "checkerboard", "smooth_field")

# Photographs and scans shipped inside the scikit-image wheel (checked offline with scikit-image
# 0.26). ``cat`` is the same photo as ``chelsea`` and is left out; ``skin`` (a histology slide)
# is downloaded on demand, so it cannot be used offline.
SKIMAGE_SAMPLES = (
    "astronaut", "brick", "camera", "cell", "checkerboard", "chelsea", "clock", "coffee", "coins",
    "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
    "microaneurysms", "moon", "page", "retina", "rocket", "shepp_logan_phantom", "text",
)


def generated_images(*, seed: int, per_kind: int = 40, size: int = 256) -> dict[str, np.ndarray]:
    """``per_kind`` random RGB uint8 images of each of ``GENERATED_KINDS``, named ``<kind>_<k>``.

    Different seeds give disjoint draws: the fitting script uses one seed, the benchmark another.
    Colours and scales are random so no single pixel statistic separates them from skin.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for kind in GENERATED_KINDS:
        for k in range(per_kind):
            out[f"{kind}_{k:03d}"] = _generate(kind, rng, size)
    return out


def _generate(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    colour = rng.uniform(0, 255, 3)
    if kind == "uniform":
        image = np.broadcast_to(colour, (size, size, 3))
    elif kind == "gaussian_noise":
        image = colour + rng.normal(0, rng.uniform(10, 80), (size, size, 3))
    elif kind == "uniform_noise":
        image = rng.uniform(0, 255, (size, size, 3))
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        y, x = np.mgrid[0:size, 0:size] / (size - 1)
        t = (np.cos(angle) * x + np.sin(angle) * y)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
        image = colour * (1 - t[..., None]) + rng.uniform(0, 255, 3) * t[..., None]
    elif kind == "checkerboard":
        cell = int(rng.integers(4, 64))
        y, x = np.mgrid[0:size, 0:size]
        mask = ((y // cell + x // cell) % 2).astype(bool)[..., None]
        image = np.where(mask, colour, rng.uniform(0, 255, 3))
    elif kind == "smooth_field":
        # Low-frequency noise: a small random grid upsampled bicubically, the hardest generated kind.
        import cv2

        grid = rng.uniform(0, 255, (int(rng.integers(2, 9)),) * 2 + (3,)).astype(np.float32)
        image = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    else:
        raise ValueError(f"unknown generated kind {kind!r}; choose from {', '.join(GENERATED_KINDS)}")
    return np.clip(image, 0, 255).astype(np.uint8)


def skimage_samples(names: tuple[str, ...] = SKIMAGE_SAMPLES) -> dict[str, np.ndarray]:
    """The bundled scikit-image photos as RGB uint8 (grey -> 3 channels, RGBA -> RGB on white).

    Raises:
        ImportError: scikit-image is not installed (``pip install 'dermdx[dev]'``, also in ``[explain]``).
        ValueError: a name that is not a bundled sample.
    """
    try:
        import skimage.data
    except ImportError as error:
        raise ImportError("the scikit-image sample photos need scikit-image: pip install 'dermdx[dev]' (or '[explain]')") from error
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name not in SKIMAGE_SAMPLES:
            raise ValueError(f"{name!r} is not one of the offline scikit-image samples {list(SKIMAGE_SAMPLES)}")
        out[name] = to_rgb_uint8(getattr(skimage.data, name)())
    return out


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Grey, boolean, float [0, 1] or RGBA arrays as RGB uint8 (H, W, 3)."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype.kind == "f":
        image = np.clip(image * 255 if image.max() <= 1.0 else image, 0, 255).astype(np.uint8)
    else:
        image = image.astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255
        image = (image[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return image


def write_images(images: dict[str, np.ndarray], folder: Path) -> list[Path]:
    """Write each image as ``folder/<name>.png`` (lossless, so features are reproducible); the paths in order."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in images.items():
        path = folder / f"{name}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def cached_features(predictor, manifest, cache_file: Path, *, progress: bool = True) -> dict[str, np.ndarray]:
    """Pooled features, logits and paths of ``manifest`` under ``predictor``, cached in ``cache_file``.

    The cache records the classifier's SHA-256 and the image paths and is recomputed when either
    differs, so a cache never serves features of another model or another image list. Logits come
    from the classifier's own head applied to the features (one forward pass instead of two).

    Returns:
        ``{"features": [N, D] float32, "logits": [N, C] float32, "paths": [N] str}``.
    """
    import hashlib

    import torch

    paths = np.array([str(p) for p in manifest.paths()])
    key = hashlib.sha256(("\n".join([predictor.sha256, *paths.tolist()])).encode()).hexdigest()
    if cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as cached:
            if str(cached["key"]) == key:
                return {name: cached[name] for name in ("features", "logits", "paths")}
    features = predictor.predict_features(manifest, progress=progress).astype(np.float32)
    with torch.no_grad():
        logits = predictor.model.get_classifier()(torch.from_numpy(features)).numpy().astype(np.float32)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache_file, features=features, logits=logits, paths=paths, key=np.array(key))
    return {"features": features, "logits": logits, "paths": paths}
