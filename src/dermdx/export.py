"""Export a dermdx model file to ONNX, checked against PyTorch before it is kept.

``export_onnx`` writes a ``.onnx`` whose ``metadata_props`` carry the dermdx model description
(classes, preprocessing, model name, metadata schema, source SHA-256), so the file describes itself
like the ``.safetensors`` it came from. A model that fuses patient metadata gets a second input,
``meta`` (the schema's encoding, ``dermdx.data.meta.encode_meta``). The same preprocessed inputs then go through PyTorch and ONNX
Runtime; a file that disagrees is deleted rather than left for someone to deploy.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dermdx.checkpoint import ModelInfo, file_sha256, load_model
from dermdx.onnx_backend import (
    INPUT_NAME,
    META_INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAME,
    OnnxModel,
)

N_RANDOM_INPUTS = 4
CHUNK = 16


@dataclass
class ExportReport:
    """What was written and how closely ONNX Runtime matches PyTorch on the parity inputs."""

    path: Path
    size_bytes: int
    max_abs_logit_diff: float
    max_prob_diff: float
    top1_agreement: float
    n_images: int

    def to_text(self) -> str:
        return (
            f"wrote {self.path} ({self.size_bytes / 1e6:.2f} MB)\n"
            f"parity with PyTorch on {self.n_images} inputs: max |logit diff| {self.max_abs_logit_diff:.2e}, "
            f"max |prob diff| {self.max_prob_diff:.2e}, top-1 agreement {self.top1_agreement:.3f}"
        )


def _require_onnx():
    try:
        import onnx
    except ImportError as error:
        raise ImportError("ONNX export needs onnx and onnxruntime, from the [onnx] extra: pip install 'dermdx[onnx]'") from error
    return onnx


def export_onnx(
    model_path: str | Path,
    out_path: str | Path,
    *,
    opset: int = 17,
    parity_images: list[Path] | None = None,
    tolerance: float = 1e-3,
) -> ExportReport:
    """Export a dermdx ``.safetensors`` model to ONNX with a dynamic batch axis, then check parity.

    The file is written to ``out_path + ".tmp"``, checked, and only then renamed over
    ``out_path``, so a failed export never replaces a good file.

    Args:
        model_path: a model file written by ``dermdx train`` / ``save_model``.
        out_path: the ``.onnx`` to write.
        opset: ONNX opset version.
        parity_images: image files and/or folders to compare on, preprocessed with the model's
            own preprocessing; None compares on a few seeded random inputs of the model's size.
        tolerance: largest allowed absolute difference of logits (and of probabilities).

    Returns:
        An :class:`ExportReport` with the parity figures.

    Raises:
        FileNotFoundError: ``model_path`` or a parity image does not exist.
        ValueError: a bad argument, an unreadable image, or a parity failure (the figures are in
            the message and no file is left behind).
        ImportError: the ``[onnx]`` extra is not installed.

    Example:
        >>> print(export_onnx("runs/ham/model.safetensors", "model.onnx").to_text())
    """
    onnx = _require_onnx()
    out_path = Path(out_path)
    if out_path.suffix != ".onnx":
        raise ValueError(f"ONNX output {out_path} must end in .onnx (predict --backend onnx recognises models by it)")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be a non-negative number, got {tolerance}")
    model, info = load_model(model_path)
    inputs = _parity_inputs(info, parity_images)
    meta = _parity_meta(info, len(inputs))

    proto = _described_proto(onnx, model, info, file_sha256(model_path), opset)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        onnx.save(proto, str(tmp))
        logit_diff, prob_diff, agreement = _parity(model, OnnxModel(tmp), inputs, meta)
        # Written as 'not (ok)' so that NaN figures fail too.
        if not (logit_diff <= tolerance and prob_diff <= tolerance and agreement >= 1.0):
            raise ValueError(
                f"ONNX export of {model_path} failed the parity check on {len(inputs)} inputs: max |logit diff| {logit_diff:.3e}, "
                f"max |prob diff| {prob_diff:.3e} (tolerance {tolerance:g}), top-1 agreement {agreement:.3f} (needs 1.0); "
                f"no file written. Try another --opset, or report the model name {info.model_name!r}"
            )
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportReport(out_path, out_path.stat().st_size, logit_diff, prob_diff, agreement, len(inputs))


def onnxruntime_model(model: nn.Module, info: ModelInfo, *, source_sha256: str, name: str, opset: int = 17, tolerance: float = 1e-3) -> OnnxModel:
    """The same model on ONNX Runtime, converted in memory: how ``predict`` runs a ``.safetensors`` fast on CPU.

    On the 2-core dev machine ONNX Runtime ran EfficientNet-Lite0 about 4x faster than PyTorch's
    CPU kernels (docs/benchmarks.md, "ONNX Runtime engine"). The conversion takes seconds and is
    checked like ``export_onnx``: seeded inputs (and metadata for a fusion model) through both; a
    model that disagrees raises instead of predicting something else.

    Raises:
        ValueError: the parity check failed (the figures are in the message).
        ImportError: the ``[onnx]`` extra is not installed.
    """
    onnx = _require_onnx()
    proto = _described_proto(onnx, model, info, source_sha256, opset)
    onnx_model = OnnxModel.from_bytes(proto.SerializeToString(), name)
    inputs = _parity_inputs(info, None)
    meta = _parity_meta(info, len(inputs))
    logit_diff, prob_diff, agreement = _parity(model.eval(), onnx_model, inputs, meta)
    if not (logit_diff <= tolerance and prob_diff <= tolerance and agreement >= 1.0):
        raise ValueError(
            f"{name}: ONNX Runtime disagrees with PyTorch on {len(inputs)} inputs (max |logit diff| {logit_diff:.3e}, "
            f"max |prob diff| {prob_diff:.3e}, top-1 agreement {agreement:.3f}); run it with --backend torch"
        )
    return onnx_model


def _described_proto(onnx, model: nn.Module, info: ModelInfo, source_sha256: str, opset: int):
    """The ONNX graph with the dermdx model description (and source SHA-256) in ``metadata_props``."""
    meta_dim = None if info.meta_schema is None else _parity_meta(info, 1).shape[1]
    proto = onnx.load_from_string(_export_bytes(model, info.preprocess.image_size, opset, meta_dim=meta_dim))
    payload = json.loads(info.to_json())
    payload["source_sha256"] = source_sha256
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(payload)
    return proto


def _export_bytes(model: nn.Module, image_size: int, opset: int, *, meta_dim: int | None = None) -> bytes:
    """The ONNX graph: input ``image`` (and ``meta`` for a fusion model), output ``logits``, dynamic batch."""
    buffer = io.BytesIO()
    model = _with_static_padding(model, image_size, meta_dim)
    args: tuple[torch.Tensor, ...] = (torch.zeros(1, 3, image_size, image_size),)
    names = [INPUT_NAME]
    if meta_dim is not None:
        # The metadata is a second named input, so a caller with patient data passes it and one
        # without passes the schema's all-missing encoding (OnnxModel does that for it).
        args += (torch.zeros(1, meta_dim),)
        names.append(META_INPUT_NAME)
    # The legacy TorchScript exporter (dynamo=False): the torch.export-based default of torch >= 2.9
    # needs the onnxscript package, which is neither in the [onnx] extra nor installed here (it fails
    # with ModuleNotFoundError), while the legacy exporter handles timm's EfficientNets with a dynamic
    # batch axis and passes the parity check. It is deprecated; the warnings that say so are silenced
    # here because a user of dermdx export cannot act on them. Moving to dynamo=True means adding
    # onnxscript to the [onnx] extra and re-running tests/test_export.py.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        # The constant padding's Slice has step -1, which torch's folder skips; ONNX Runtime folds it.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        # Shape checks in Python (timm's batch-norm, the fusion head's metadata check) are traced as
        # constants for the example batch; the graph is still checked against PyTorch (parity).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            args,
            buffer,
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_axes={**{name: {0: "batch"} for name in names}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return buffer.getvalue()


class _StaticSamePadConv(nn.Module):
    """A timm ``Conv2dSame`` with its TF "same" padding fixed for one input size.

    ``Conv2dSame`` computes its (possibly asymmetric) padding from the input's shape at run time,
    which the exporter turns into a Shape/Gather/Ceil/Pad subgraph per strided conv. The image size
    of a dermdx model is fixed, so the padding is a constant: exported as one constant ``Pad``
    (which ONNX Runtime folds into the Conv), the graph is smaller and quantises cleanly. Same
    weights (shared, not copied), same outputs at that size.
    """

    def __init__(self, conv: nn.Conv2d, pad: list[int]) -> None:
        super().__init__()
        self.conv = conv
        self.pad = tuple(int(p) for p in pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, self.pad), c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


@torch.no_grad()
def _with_static_padding(model: nn.Module, image_size: int, meta_dim: int | None) -> nn.Module:
    """A shallow copy of ``model`` whose ``Conv2dSame`` layers pad by constants for ``image_size`` inputs."""
    import copy

    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import pad_same_arg

    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        module.register_forward_pre_hook(lambda _m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
        for name, module in model.named_modules() if isinstance(module, Conv2dSame)
    ]
    try:
        example = (torch.zeros(1, 3, image_size, image_size),) + (() if meta_dim is None else (torch.zeros(1, meta_dim),))
        model(*example)
    finally:
        for hook in hooks:
            hook.remove()
    if not sizes:
        return model
    static = copy.copy(model)
    static._modules = dict(model._modules)  # new containers down to each replaced conv; weights shared
    for name, size in sizes.items():
        conv = model.get_submodule(name)
        parent_name, _, child = name.rpartition(".")
        parent = static
        for part in parent_name.split(".") if parent_name else []:
            original = parent._modules[part]
            replacement = copy.copy(original)
            replacement._modules = dict(original._modules)
            parent._modules[part] = replacement
            parent = replacement
        parent._modules[child] = _StaticSamePadConv(conv, pad_same_arg(list(size), conv.kernel_size, conv.stride, conv.dilation))
    return static


def _parity_meta(info: ModelInfo, n: int) -> torch.Tensor | None:
    """Metadata encodings for the parity check of a fusion model: all-missing rows and seeded patients.

    None for an image-only model. Half the rows say "nothing known", the rest are random ages,
    sexes and body sites from the model's schema, so both paths through the head are compared.
    """
    if info.meta_schema is None:
        return None
    import pandas as pd

    from dermdx.data.meta import SEXES, MetaSchema, encode_meta

    schema = MetaSchema.from_dict(info.meta_schema)
    rng = np.random.default_rng(0)
    known = np.arange(n) % 2 == 1
    frame = pd.DataFrame({
        "age": np.where(known, rng.integers(5, 90, n).astype(float), np.nan),
        "sex": [str(rng.choice(SEXES)) if k else "" for k in known],
        "site": [str(rng.choice(schema.sites)) if k and schema.sites else "" for k in known],
    })
    return torch.from_numpy(encode_meta(frame, schema))


def _parity_inputs(info: ModelInfo, images: list[Path] | None) -> torch.Tensor:
    """Preprocessed parity inputs: the given images through the model's preprocessing, or seeded noise."""
    size = info.preprocess.image_size
    if images is None:
        return torch.randn(N_RANDOM_INPUTS, 3, size, size, generator=torch.Generator().manual_seed(0))
    from dermdx.data.adapters import read_images
    from dermdx.data.images import load_image
    from dermdx.data.transforms import build_transform

    transform = build_transform(info.preprocess, train=False)
    return torch.stack([transform(load_image(path)) for path in read_images(images).paths()])


@torch.no_grad()
def _reference_logits(model: nn.Module, inputs: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
    if meta is None:
        return torch.cat([model(chunk) for chunk in inputs.split(CHUNK)]).float()
    return torch.cat([model(chunk, m) for chunk, m in zip(inputs.split(CHUNK), meta.split(CHUNK), strict=True)]).float()


def _parity(model: nn.Module, onnx_model: OnnxModel, inputs: torch.Tensor, meta: torch.Tensor | None = None) -> tuple[float, float, float]:
    """Max |logit diff|, max |prob diff| and top-1 agreement of ONNX Runtime against PyTorch."""
    expected = _reference_logits(model, inputs, meta)
    # Batches of up to CHUNK also exercise the dynamic batch axis.
    if meta is None:
        actual = torch.cat([onnx_model(chunk) for chunk in inputs.split(CHUNK)]).float()
    else:
        actual = torch.cat([onnx_model(chunk, m) for chunk, m in zip(inputs.split(CHUNK), meta.split(CHUNK), strict=True)]).float()
    logit_diff = float((expected - actual).abs().max())
    prob_diff = float((expected.softmax(dim=1) - actual.softmax(dim=1)).abs().max())
    agreement = float(np.mean((expected.argmax(dim=1) == actual.argmax(dim=1)).numpy()))
    return logit_diff, prob_diff, agreement
