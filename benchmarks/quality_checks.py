"""False rejections and detections of ``dermdx.quality.check_quality`` on real and degraded images.

    python benchmarks/quality_checks.py --out runs/quality [--ham 600]

Real dermoscopic images: Derm7pt dermoscopy (official train split = tuning rows, valid split =
test rows), PH2 (test), and a random HAM10000 sample split half tuning / half test. The
thresholds in ``QualityConfig`` were chosen on the tuning rows only; the test rows report them.
Each real image is also degraded synthetically (heavy and moderate Gaussian blur, alone and with
sensor noise + JPEG as a real defocused photo has, under- and over-exposure, a blank frame, a blue
cast); a degraded image should be rejected, except the noise + JPEG control, which should pass. Derm7pt clinical
photos are reported for information (good photos of the wrong modality: quality should pass them).

Writes ``measures.csv`` (one row per image and degradation, every measure) and ``summary.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dermdx.config import data_root
from dermdx.data.adapters import read_derm7pt, read_ham10000, read_ph2
from dermdx.data.images import load_image
from dermdx.quality import QualityConfig, check_quality


def _blur(fraction: float) -> Callable[[np.ndarray], np.ndarray]:
    """Gaussian blur whose sigma is ``fraction`` of the longer side (resolution-independent)."""

    def apply(image: np.ndarray) -> np.ndarray:
        sigma = fraction * max(image.shape[:2])
        return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)

    return apply


def _blank(image: np.ndarray) -> np.ndarray:
    """A lens-cap / empty frame: the image's mean colour plus faint sensor noise (sd 2)."""
    rng = np.random.default_rng(int(image.sum()) % 2**32)
    mean = image.reshape(-1, 3).mean(axis=0)
    return np.clip(mean + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)


def _noisy_jpeg(image: np.ndarray) -> np.ndarray:
    """Sensor noise (sd 3) and JPEG quality 85, as a real defocused photo keeps, unlike a clean blur."""
    import io

    from PIL import Image

    rng = np.random.default_rng(int(image.sum()) % 2**32)
    noisy = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="JPEG", quality=85)
    return np.asarray(Image.open(buffer).convert("RGB"))


DEGRADATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "blur_heavy (sigma 2% of side)": _blur(0.02),
    "blur_moderate (sigma 1% of side)": _blur(0.01),
    "blur_heavy + noise + JPEG": lambda im: _noisy_jpeg(_blur(0.02)(im)),
    "blur_moderate + noise + JPEG": lambda im: _noisy_jpeg(_blur(0.01)(im)),
    "clean + noise + JPEG (should pass)": _noisy_jpeg,
    "under_exposed (x0.15)": lambda im: (im.astype(np.float32) * 0.15).astype(np.uint8),
    "over_exposed (x3, clipped)": lambda im: np.clip(im.astype(np.float32) * 3, 0, 255).astype(np.uint8),
    "blank (mean colour + noise)": _blank,
    "blue_cast (RGB -> BGR)": lambda im: np.ascontiguousarray(im[..., ::-1]),
}


def image_sets(ham_count: int, seed: int) -> list[tuple[str, str, Path]]:
    """(set, role, path) rows: role is tune (threshold choice), test (reported) or info."""
    root = data_root()
    rows: list[tuple[str, str, Path]] = []
    for modality, name in (("dermoscopy", "derm7pt_dermoscopy"), ("clinical", "derm7pt_clinical")):
        manifest = read_derm7pt(root / "derm7pt/labels.csv", modality=modality)
        for path, split in zip(manifest.paths(), manifest.frame["split"], strict=True):
            role = "info" if modality == "clinical" else ("tune" if split == "train" else "test")
            rows.append((name, role, path))
    rows += [("ph2", "test", p) for p in read_ph2(root / "ph2/labels.csv").paths()]
    ham = read_ham10000(root / "ham10000/metadata.csv").paths()
    chosen = np.random.default_rng(seed).choice(len(ham), size=min(ham_count, len(ham)), replace=False)
    rows += [("ham10000_sample", "tune" if i % 2 == 0 else "test", ham[j]) for i, j in enumerate(chosen)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/quality")
    parser.add_argument("--ham", type=int, default=600, help="HAM10000 images sampled (half tuning, half test)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = QualityConfig()
    records = []
    for name, role, path in tqdm(image_sets(args.ham, args.seed), desc="quality", dynamic_ncols=True):
        image = load_image(path)
        variants = {"none": image} if role == "info" else {"none": image, **{k: f(image) for k, f in DEGRADATIONS.items()}}
        for degradation, variant in variants.items():
            result = check_quality(variant, config)
            records.append({"set": name, "role": role, "path": str(path), "degradation": degradation, "ok": result.ok,
                            "reasons": ",".join(r.split(":")[0] for r in result.reasons), **result.measures})
    frame = pd.DataFrame(records)
    frame.to_csv(out / "measures.csv", index=False)
    summary = summarise(frame)
    (out / "summary.md").write_text(summary)
    print(summary)


def summarise(frame: pd.DataFrame) -> str:
    """Markdown: false rejection of clean images and detection of each degradation, per set and role."""
    lines = ["| set | role | images | clean images rejected | reasons for those |", "|---|---|---|---|---|"]
    clean = frame[frame["degradation"] == "none"]
    for (name, role), group in clean.groupby(["set", "role"], sort=False):
        reasons = group.loc[~group["ok"], "reasons"].value_counts().to_dict()
        lines.append(f"| {name} | {role} | {len(group)} | {(~group['ok']).mean():.1%} ({(~group['ok']).sum()}) | {reasons or '-'} |")
    lines += ["", "| degradation | tuning rows rejected | test rows rejected | main reason (test) |", "|---|---|---|---|"]
    degraded = frame[frame["degradation"] != "none"]
    for degradation, group in degraded.groupby("degradation", sort=False):
        tune, test = group[group["role"] == "tune"], group[group["role"] == "test"]
        reasons = test.loc[~test["ok"], "reasons"].value_counts()
        main = f"{reasons.index[0]} ({reasons.iloc[0]})" if len(reasons) else "-"
        lines.append(f"| {degradation} | {(~tune['ok']).mean():.1%} of {len(tune)} | {(~test['ok']).mean():.1%} of {len(test)} | {main} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
