"""Where training runs: the CPU, or a GPU when the machine has one.

The accuracy target of the project is out of reach on two CPU cores (an epoch of EfficientNet-Lite1
at 224 px takes 5.5 minutes there); a user with a GPU gets it without changing a config: ``auto``
picks the first CUDA device. Asking for a device the machine lacks is an error, never a silent
fallback to the CPU, so a run that would take hours instead of minutes says so at once.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def resolve_device(spec: str = "auto", *, setting: str = "train.device") -> torch.device:
    """``auto`` -> ``cuda`` when a CUDA GPU is usable, else ``cpu``; ``cpu``, ``cuda``, ``cuda:N``, ``mps`` as asked.

    ``setting`` names the config key in error messages.

    Raises:
        ValueError: for an unknown name, or a device this machine does not have.
    """
    name = str(spec).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"{setting}: {spec!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from error
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{setting}: {spec!r} was asked for, but torch finds no usable CUDA GPU here; use auto or cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{setting}: {spec!r} was asked for, but this machine has {count} CUDA device(s)")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{setting}: {spec!r} was asked for, but the Apple MPS backend is not available here; use auto or cpu")
        return device
    raise ValueError(f"{setting}: {spec!r} is not supported; use auto, cpu, cuda, cuda:N or mps")


def describe_device(device: torch.device) -> str:
    """A line for the training log: ``cpu (2 threads)`` or ``cuda:0 (NVIDIA H200)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter (the CPU for a model without parameters)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def batch_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A batch dict with every tensor moved to ``device`` (other values as they are)."""
    if device.type == "cpu":
        return batch
    return {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value for key, value in batch.items()}


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on a CUDA GPU when ``enabled``; a no-op context elsewhere.

    Not on the CPU: bf16 autocast ran slower there than float32 with channels_last
    (30.1 vs 32.6 img/s, EfficientNet-Lite0 160 px; docs/benchmarks.md, training throughput).
    """
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
