"""PyTorch eager fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8, side by side in one run.

    python benchmarks/inference_latency.py --model runs/bench/kfold0/model.safetensors \
        --config configs/ham10000_lite0.yaml --out runs/latency

Exports the model (fp32 ONNX with parity check, then static int8 calibrated on 200 images of the
config's *training* rows), then for each backend in its own subprocess (so peak memory is its
own; the ONNX workers import onnxruntime and numpy only, not torch): batch-1 and batch-32 latency,
images/s and peak RSS; then balanced accuracy of each backend
on the config's held-out fold. Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _load(backend: str, path: str, threads: int):
    """A callable on a float32 numpy batch, and the model's input size.

    The ONNX worker uses onnxruntime and numpy only (no torch import), so its peak memory is
    what an ONNX deployment needs; the torch worker carries torch, as a PyTorch deployment does.
    """
    if backend == "torch":
        import torch

        from dermdx.checkpoint import load_model

        torch.set_num_threads(threads)
        torch.set_grad_enabled(False)
        model, info = load_model(path)
        model = model.to(memory_format=torch.channels_last)
        return (lambda x: model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))), info.preprocess.image_size
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    size = session.get_inputs()[0].shape[-1]
    return (lambda x: session.run(None, {"image": x})), int(size)


def worker(backend: str, path: str, threads: int) -> dict:
    """Timings for one backend, run in a fresh process."""
    model, size = _load(backend, path, threads)
    rng = np.random.default_rng(0)
    result = {}
    for batch, repeats in ((1, 50), (32, 5)):
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        for _ in range(3):
            model(x)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
        median = statistics.median(times)
        result[f"batch{batch}_ms"] = 1000 * median
        result[f"batch{batch}_images_per_second"] = batch / median
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _peak_rss_mb() -> float:
    """This process's peak resident memory since its exec (VmHWM).

    Not ``getrusage(...).ru_maxrss``: Linux carries that across fork + exec, so a worker started by
    a 1.7 GB parent would report the parent's peak instead of its own.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", default="configs/ham10000_lite0.yaml")
    parser.add_argument("--out", default="runs/latency")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("BACKEND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.threads)))
        return

    from dermdx.config import load_config
    from dermdx.export import export_onnx
    from dermdx.inference import Predictor
    from dermdx.metrics import balanced_accuracy
    from dermdx.quantize import quantize_int8
    from dermdx.training import prepare_data

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = load_config(args.config)
    data = prepare_data(config)
    rng = np.random.default_rng(0)
    calibration = [data.manifest.paths()[i] for i in rng.choice(data.train_idx, size=200, replace=False)]
    fp32 = export_onnx(args.model, out / "model_fp32.onnx", parity_images=calibration[:32])
    print(fp32.to_text())
    # Agreement is reported, not gated: held-out balanced accuracy below is the criterion here.
    int8 = quantize_int8(fp32.path, out / "model_int8.onnx", calibration, min_agreement=0.0)
    print(int8.to_text())

    paths = {"torch": args.model, "onnx": str(fp32.path), "onnx_int8": str(int8.path)}
    rows = {}
    held_out = data.manifest.subset(data.test_idx)
    labels = held_out.label_indices(data.classes)
    for name, path in paths.items():
        backend = "torch" if name == "torch" else "onnx"
        completed = subprocess.run([sys.executable, __file__, "--worker", backend, path, "--threads", str(args.threads), "--model", args.model],
                                   check=True, capture_output=True, text=True)
        rows[name] = json.loads(completed.stdout.strip().splitlines()[-1])
        predictor = Predictor.from_checkpoint(path) if backend == "torch" else Predictor.from_onnx(path)
        if predictor.classes != data.classes:
            raise ValueError(f"model classes {predictor.classes} differ from the config's {data.classes}")
        result = predictor.predict_manifest(held_out)
        rows[name]["balanced_accuracy"] = balanced_accuracy(labels, result.probs.argmax(1))
        rows[name]["file_mb"] = Path(path).stat().st_size / 1e6
    (out / "latency.json").write_text(json.dumps(rows, indent=2))
    base = rows["torch"]
    print(f"\nheld-out images: {len(held_out)}; threads {args.threads}")
    print("| backend | batch-1 latency | speed-up vs eager | batch-32 images/s | peak RSS | file | held-out balanced accuracy |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['batch1_ms']:.1f} ms | {base['batch1_ms'] / row['batch1_ms']:.2f}x | {row['batch32_images_per_second']:.0f} | "
              f"{row['peak_rss_mb']:.0f} MB | {row['file_mb']:.1f} MB | {row['balanced_accuracy']:.4f} |")


if __name__ == "__main__":
    main()
