"""Training images/s: dermdx's loop against a plain timm loop, same model, resolution, batch, workers.

    python benchmarks/train_throughput.py --config configs/ham10000_lite0.yaml --steps 40

Both loops run in this one process, one after the other, on the same HAM10000 images, so they
share the machine's state. The dermdx loop includes its full preprocessing (Shades-of-Gray,
augmentation); the plain loop only decodes, resizes, flips and scales, in timm's default (NCHW) layout.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from PIL import Image
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader, Dataset

from dermdx.config import RunConfig, load_config
from dermdx.data.adapters import load_manifest
from dermdx.data.dataset import ImageDataset
from dermdx.data.transforms import build_transform
from dermdx.models import create_model
from dermdx.training import make_loss, train_one_epoch


class _PlainImages(Dataset):
    """Decode, resize, flip, scale: the least a training loop can do per image."""

    def __init__(self, paths, labels, size: int) -> None:
        self.paths, self.labels, self.size = paths, labels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = Image.open(self.paths[i]).convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
        if np.random.rand() < 0.5:
            array = array[:, ::-1]
        return {"image": torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))), "label": int(self.labels[i])}


def _time_loop(model, loader, loss_fn, steps: int, warmup: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    seen, started = 0, time.perf_counter()
    for step, batch in enumerate(loader):
        if step == warmup:
            started, seen = time.perf_counter(), 0
        loss = loss_fn(model(batch["image"]), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(batch["label"])
        if step + 1 >= warmup + steps:
            break
    return seen / (time.perf_counter() - started)


def _time_dermdx_loop(model, loader, loss_fn, steps: int, warmup: int) -> float:
    """dermdx's own ``train_one_epoch`` (channels_last, scheduler, progress bar), after a warm-up call."""
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = CosineLRScheduler(optimizer, t_initial=warmup + steps, t_in_epochs=False)
    _, step, _ = train_one_epoch(model, loader, optimizer, scheduler, loss_fn, step=0, max_steps=warmup)
    started = time.perf_counter()
    _, _, seen = train_one_epoch(model, loader, optimizer, scheduler, loss_fn, step=step, max_steps=steps)
    return seen / (time.perf_counter() - started)


def measure(config: RunConfig, steps: int = 40, warmup: int = 5) -> dict:
    manifest = load_manifest(config.data)
    classes = list(config.data.classes or manifest.classes)
    labels = manifest.label_indices(classes)
    torch.manual_seed(0)
    common = dict(batch_size=config.train.batch_size, shuffle=True, num_workers=config.train.num_workers)
    plain = DataLoader(_PlainImages(manifest.paths(), labels, config.preprocess.image_size), **common)
    ours = DataLoader(ImageDataset(manifest, build_transform(config.preprocess, train=True), classes), **common)
    result = {
        "plain_timm_images_per_second": _time_loop(create_model(config.model.name, num_classes=len(classes), pretrained=True), plain, torch.nn.CrossEntropyLoss(), steps, warmup),
        "dermdx_images_per_second": _time_dermdx_loop(create_model(config.model.name, num_classes=len(classes), pretrained=True), ours, make_loss(config.train.imbalance, labels, len(classes)), steps, warmup),
        "steps": steps, "batch_size": config.train.batch_size, "image_size": config.preprocess.image_size,
        "num_workers": config.train.num_workers, "torch_threads": torch.get_num_threads(), "model": config.model.name,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ham10000_lite0.yaml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    print(json.dumps(measure(load_config(args.config, args.set), steps=args.steps), indent=2))


if __name__ == "__main__":
    main()
