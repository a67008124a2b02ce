"""Do the shipped classifier's CAMs point at the lesion, and are they faithful? PH2 expert masks.

    nice -n 10 python benchmarks/cam_localisation.py --out runs/cam_localisation [--road-every 2]

For each PH2 image the shipped model (``dermdx.default_model``) predicts a class and each CAM
method explains that class (``dermdx.explain.compute_cam``, at the model's 160 px input).

Localisation, against the expert lesion mask at the image's size:
- energy in mask: share of the CAM's summed value inside the lesion (the lesion's share of the
  image is what a uniform map scores);
- pointing game: whether the CAM's maximum lies inside the lesion.

Faithfulness, ROAD (Rong et al., "A consistent and efficient evaluation strategy for attribution
methods", ICML 2022) through ``pytorch_grad_cam.metrics.road``: pixels are removed in CAM order
and filled by noisy linear imputation; the change in the predicted class's softmax probability is
recorded. MoRF removes the most relevant pixels first (a faithful map makes the probability drop:
more negative is better); LeRF removes the least relevant first (the probability should hold:
higher is better); combined = (LeRF - MoRF) / 2, higher is better. Each is the mean over removal
fractions ``--percentiles``. Two reference maps go through the same measures: ``random`` (smoothed
noise, seeded) and ``centre`` (a Gaussian on the image centre: dermoscopy centres the lesion, so a
CAM should beat this prior to be credited with finding the lesion).

Resumable: each map's per-image rows are written to ``OUT/<map>.csv`` and skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from dermdx.config import data_root
from dermdx.data.images import load_image
from dermdx.default_model import default_model_path
from dermdx.explain import cam_energy_in_mask, compute_cam, mask_fraction, pointing_game
from dermdx.inference import Predictor
from dermdx.segmentation_training import load_mask

REFERENCE_MAPS = ("random", "centre")


def reference_map(name: str, size: int, seed: int) -> np.ndarray:
    if name == "random":
        noise = np.random.default_rng(seed).random((size, size)).astype(np.float32)
        smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=size / 16)
    else:
        yy, xx = np.mgrid[:size, :size]
        centre = (size - 1) / 2
        smooth = np.exp(-((yy - centre) ** 2 + (xx - centre) ** 2) / (2 * (size / 4) ** 2)).astype(np.float32)
    return (smooth - smooth.min()) / (smooth.max() - smooth.min())


def road_scores(model, x: torch.Tensor, cam: np.ndarray, target: int, percentiles: list[int]) -> dict[str, float]:
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    targets = [ClassifierOutputSoftmaxTarget(target)]
    # ROADMostRelevantFirst(p) keeps pixels below the p-th CAM percentile, i.e. removes the top
    # (100 - p)%; ROADLeastRelevantFirst(p) removes the bottom (100 - p)%. Same removed fraction: same p.
    morf = [float(ROADMostRelevantFirst(p)(x, cam[None], targets, model)[0]) for p in percentiles]
    lerf = [float(ROADLeastRelevantFirst(p)(x, cam[None], targets, model)[0]) for p in percentiles]
    return {"road_morf": float(np.mean(morf)), "road_lerf": float(np.mean(lerf)), "road_combined": float((np.mean(lerf) - np.mean(morf)) / 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", default=None, help="PH2 labels.csv (default: DATA_ROOT/ph2/labels.csv)")
    parser.add_argument("--out", default="runs/cam_localisation")
    parser.add_argument("--methods", nargs="+", default=["gradcam", "gradcam++", "eigencam"])
    parser.add_argument("--percentiles", type=int, nargs="+", default=[20, 50, 80], help="ROAD removal thresholds (percent of pixels kept)")
    parser.add_argument("--road-every", type=int, default=1, help="ROAD on every k-th image only (it costs ~0.4 s per threshold and direction on CPU)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, help="first N images only (smoke runs; not for reported figures)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    labels_path = Path(args.labels) if args.labels else data_root() / "ph2" / "labels.csv"
    labels = pd.read_csv(labels_path)
    if args.limit:
        labels = labels.head(args.limit)
    root = labels_path.parent
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_path = default_model_path()
    predictor = Predictor.from_checkpoint(model_path)
    model = predictor.model

    samples = []
    for record in tqdm(labels.to_dict("records"), desc="images"):
        image = load_image(root / record["image_path"])
        x = predictor.transform(image)[None].contiguous()
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1)[0]
        samples.append({"record": record, "x": x, "mask": load_mask(root / record["mask_path"]), "target": int(probs.argmax()), "p": float(probs.max())})

    maps = list(args.methods) + list(REFERENCE_MAPS)
    frames = {}
    for name in maps:
        done = out / f"{name}.csv"
        if done.is_file():
            frames[name] = pd.read_csv(done)
            continue
        rows = []
        start = time.perf_counter()
        for k, sample in enumerate(tqdm(samples, desc=name)):
            x, mask = sample["x"], sample["mask"]
            if name in REFERENCE_MAPS:
                cam = reference_map(name, x.shape[-1], seed=k)
            else:
                cam = compute_cam(model, x, method=name, target_class=sample["target"])
            row = {
                "image_id": sample["record"]["image_id"],
                "diagnosis": sample["record"]["diagnosis"],
                "predicted": predictor.info.classes[sample["target"]],
                "p_predicted": sample["p"],
                "lesion_fraction": mask_fraction(mask),
                "energy_in_mask": cam_energy_in_mask(cam, mask),
                "pointing_hit": pointing_game(cam, mask),
            }
            if k % args.road_every == 0:
                torch.manual_seed(k)  # the imputer adds noise
                row |= road_scores(model, x, cam, sample["target"], args.percentiles)
            rows.append(row)
        frames[name] = pd.DataFrame(rows)
        frames[name]["seconds_total"] = time.perf_counter() - start
        frames[name].to_csv(done, index=False)

    summary = {
        "model": str(model_path),
        "model_sha256": predictor.sha256,
        "n_images": len(samples),
        "road_images": int(frames[maps[0]]["road_combined"].notna().sum()),
        "percentiles": args.percentiles,
        "predicted_classes": pd.Series([predictor.info.classes[s["target"]] for s in samples]).value_counts().to_dict(),
        "mean_lesion_fraction": float(frames[maps[0]]["lesion_fraction"].mean()),
        "maps": {},
    }
    for name in maps:
        f = frames[name]
        summary["maps"][name] = {
            "energy_in_mask": float(f["energy_in_mask"].mean()),
            "energy_in_mask_sd": float(f["energy_in_mask"].std(ddof=1)),
            "pointing_game": float(f["pointing_hit"].mean()),
            **{k: float(f[k].mean()) for k in ("road_morf", "road_lerf", "road_combined")},
            "seconds": float(f["seconds_total"].iloc[0]),
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"PH2 CAM localisation and faithfulness: {summary['n_images']} images (ROAD on {summary['road_images']}), model sha256 {predictor.sha256[:12]}")
    print(f"predicted classes: {summary['predicted_classes']}; mean lesion share of the image {summary['mean_lesion_fraction']:.3f}")
    print("| map | energy in mask (mean ± SD) | pointing game | ROAD MoRF (lower better) | ROAD LeRF (higher better) | ROAD combined (higher better) | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, m in summary["maps"].items():
        print(f"| {name} | {m['energy_in_mask']:.3f} ± {m['energy_in_mask_sd']:.3f} | {m['pointing_game']:.3f} | {m['road_morf']:+.3f} | {m['road_lerf']:+.3f} | {m['road_combined']:+.3f} | {m['seconds']:.0f} |")


if __name__ == "__main__":
    main()
