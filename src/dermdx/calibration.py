"""Temperature scaling (Guo et al. 2017): probabilities that mean what they say, stored with the model.

One scalar ``T`` divides every logit before the softmax. It is fitted by minimising the negative
log-likelihood on validation rows; ``T > 1`` softens an over-confident model, ``T < 1`` sharpens
an under-confident one. Dividing by a positive number never changes the arg-max, so the predicted
class (and hence accuracy and balanced accuracy) stays the same; only confidences move.

``calibrate_model`` fits ``T`` on the rows it is given, reports the expected calibration error
before and after with reliability diagrams, fits the abstention threshold for a target coverage
on the calibrated probabilities, and stores both in the model file (``ModelInfo.calibration``),
which ``Predictor`` then applies. Fit on rows that are not the held-out test split
(``selection_rows``), so the held-out figures stay unbiased.

Example:
    >>> result = calibrate_model("runs/ham/model.safetensors", selection_rows(config, read_info(path)), "runs/ham/calibration")
    >>> result["temperature"], result["ece_before"], result["ece_after"]
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from dermdx import __version__
from dermdx.checkpoint import ModelInfo, file_sha256, rewrite_info
from dermdx.config import RunConfig
from dermdx.data.manifest import Manifest
from dermdx.decision import (
    AbstentionConfig,
    balanced_accuracy_at_coverage,
    confidence_threshold_for_coverage,
    kept_per_class,
    plot_risk_coverage,
)
from dermdx.inference import Predictor
from dermdx.metrics import balanced_accuracy, expected_calibration_error
from dermdx.reporting import plot_reliability

if TYPE_CHECKING:
    from dermdx.ensemble import EnsemblePredictor

# Bounds on T: beyond them the validation set is separable or degenerate, not informative.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def _check_logits(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be 2-D [N images, C >= 2 classes], got shape {z.shape}")
    if len(z) == 0:
        raise ValueError("no logits to fit a temperature on: the validation rows are empty")
    if not np.isfinite(z).all():
        row = int(np.flatnonzero(~np.isfinite(z).all(axis=1))[0])
        raise ValueError(f"logits row {row} holds a non-finite value: {z[row].tolist()}")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(z):
        raise ValueError(f"labels must be 1-D with one class index per logits row ({len(z)}), got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {y.dtype}; map class names to indices first (Manifest.label_indices)")
    if (y < 0).any() or (y >= z.shape[1]).any():
        bad = int(np.flatnonzero((y < 0) | (y >= z.shape[1]))[0])
        raise ValueError(f"labels[{bad}] = {y[bad]} is outside 0..{z.shape[1] - 1} for {z.shape[1]} classes")
    return torch.from_numpy(z), torch.from_numpy(y.astype(np.int64))


def fit_temperature(logits: Any, labels: Any, *, max_iter: int = 200) -> float:
    """The temperature minimising the negative log-likelihood of ``labels`` under ``softmax(logits / T)``.

    Optimised with L-BFGS on ``log T`` (so T stays positive), then clipped to
    [``MIN_TEMPERATURE``, ``MAX_TEMPERATURE``]: a validation set the model separates perfectly
    would otherwise drive T towards 0.

    Args:
        logits: ``[N, C]`` raw model outputs (not probabilities).
        labels: ``[N]`` integer class indices.

    Raises:
        ValueError: empty input, shapes that disagree, non-finite logits, labels out of range.
        TypeError: labels that are not integers.
    """
    z, y = _check_logits(logits, labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not np.isfinite(temperature):
        raise RuntimeError("temperature fit diverged; check the logits")
    return float(np.clip(temperature, MIN_TEMPERATURE, MAX_TEMPERATURE))


def fit_class_bias(log_probs: Any, labels: Any, *, grid: np.ndarray | None = None, rounds: int = 3) -> np.ndarray:
    """Per-class offsets added to log-probabilities that maximise balanced accuracy on ``labels``.

    A prior adjustment: with imbalanced training data a model under-calls rare classes, and the
    balanced-accuracy-optimal decision differs from the argmax. Coordinate ascent over a coarse
    grid (ties go to the smaller offset) keeps the fit from chasing single images; measure the
    effect on held-out rows, never on the rows it was fitted on.
    """
    z = np.asarray(log_probs, dtype=np.float64)
    y = np.asarray(labels)
    grid = np.linspace(-2.0, 2.0, 21) if grid is None else np.asarray(grid)
    order = np.argsort(np.abs(grid), kind="stable")
    bias = np.zeros(z.shape[1])
    for _ in range(rounds):
        for c in range(z.shape[1]):
            best, best_score = bias[c], -1.0
            for value in grid[order]:
                trial = bias.copy()
                trial[c] = value
                score = balanced_accuracy(y, (z + trial).argmax(axis=1))
                if score > best_score + 1e-12:
                    best, best_score = value, score
            bias[c] = best
    return bias


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` as float64 probabilities ``[N, C]``."""
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D [N, C], got shape {tuple(z.shape)}")
    return torch.softmax(z / float(temperature), dim=1).numpy()


def negative_log_likelihood(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean NLL of ``labels`` under ``softmax(logits / temperature)``."""
    z, y = _check_logits(logits, labels)
    return float(F.cross_entropy(z / float(temperature), y))


def predict_logits(predictor: Predictor, manifest: Manifest) -> np.ndarray:
    """Raw logits ``[N, C]`` of the predictor's model for every row (one view, no temperature).

    Every image must be readable: a calibration set never skips a row.
    """
    return predictor.predict_logits(manifest)


def selection_rows(config: RunConfig, info: ModelInfo) -> Manifest:
    """The config's selection split (the inner split the epoch was chosen on), checked against the model.

    Not the held-out test fold: fitting there would leave no unbiased rows to report on.

    Raises:
        ValueError: the model was not trained on this config's training rows (its training-data
            fingerprint differs), so the "selection" rows might overlap its training data.
    """
    from dermdx.training import prepare_data

    data = prepare_data(config)
    fit_rows = data.manifest.subset(data.train_idx)
    if info.data_fingerprint and fit_rows.fingerprint() != info.data_fingerprint:
        raise ValueError(
            f"the model was trained on other rows (training-data fingerprint {info.data_fingerprint}) than this config's "
            f"training split ({fit_rows.fingerprint()}); pass the config the model was trained with"
        )
    return data.manifest.subset(data.select_idx)


def calibrate_model(
    model_path: str | Path,
    manifest: Manifest,
    out_dir: str | Path,
    *,
    coverage: float = 0.8,
    class_bias: bool = False,
    save_as: str | Path | None = None,
    description: str = "",
    batch_size: int = 32,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Fit the temperature and the abstention threshold on labelled ``manifest`` rows; store them in the model.

    Writes to ``out_dir``: ``calibration.json``, ``reliability_before.png``,
    ``reliability_after.png`` and ``risk_coverage.png``. An earlier calibration in the model is
    replaced (logits are taken without it).

    Args:
        model_path: the model file; rewritten in place unless ``save_as`` is given.
        manifest: labelled validation rows; never the held-out test rows.
        coverage: the share of cases the abstention threshold keeps (see ``dermdx.decision``).
        save_as: write the calibrated model here and leave ``model_path`` unchanged.
        description: what the rows are, recorded with the calibration.
        class_bias: also fit per-class log-probability offsets for balanced accuracy
            (``fit_class_bias``); stored as ``class_bias`` and applied by ``Predictor``.

    Returns:
        ``temperature``, ``ece_before``/``ece_after``, ``nll_before``/``nll_after``,
        ``abstention`` (the fitted ``AbstentionConfig`` as a dict), ``selective`` (balanced
        accuracy at the coverage, and per class kept shares), ``sha256_before``/``sha256_after``,
        ``model`` (the path written) and ``n_images``.

    Raises:
        ValueError: unlabelled or unknown labels, unreadable images, bad coverage.
    """
    predictor = Predictor.from_checkpoint(model_path, batch_size=batch_size, num_workers=num_workers)
    classes = predictor.classes
    labels = manifest.label_indices(classes)
    if len(labels) == 0:
        raise ValueError("no validation rows to calibrate on")
    logits = predict_logits(predictor, manifest)
    temperature = fit_temperature(logits, labels)
    before, after = apply_temperature(logits, 1.0), apply_temperature(logits, temperature)
    bias = None
    if class_bias:
        bias = fit_class_bias(np.log(np.clip(after, 1e-12, None)), labels)
        adjusted = np.log(np.clip(after, 1e-12, None)) + bias
        after = np.exp(adjusted - adjusted.max(axis=1, keepdims=True))
        after /= after.sum(axis=1, keepdims=True)

    threshold = confidence_threshold_for_coverage(after, coverage)
    kept = after.max(axis=1) >= threshold
    where = description or manifest.source or str(manifest.root)
    abstention = AbstentionConfig(min_confidence=threshold, target_coverage=coverage, source=f"fitted for {coverage:.0%} coverage on {len(labels)} validation images ({where})")
    selective = {
        "coverage": float(kept.mean()),
        "balanced_accuracy_at_coverage": balanced_accuracy_at_coverage(labels, after, coverage),
        "balanced_accuracy_all": balanced_accuracy(labels, after.argmax(axis=1)),
        "kept_per_class": kept_per_class(labels, after, threshold, classes),
    }
    calibration = {
        "method": "temperature",
        "temperature": temperature,
        "class_bias": None if bias is None else [float(b) for b in bias],
        "fitted_on": where,
        "data_fingerprint": manifest.fingerprint(),
        "n_images": int(len(labels)),
        "ece_before": expected_calibration_error(labels, before),
        "ece_after": expected_calibration_error(labels, after),
        "nll_before": negative_log_likelihood(logits, labels, 1.0),
        "nll_after": negative_log_likelihood(logits, labels, temperature),
        "abstention": abstention.to_dict(),
        "selective": selective,
        "dermdx_version": __version__,
    }

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_reliability(labels, before, out / "reliability_before.png")
    plot_reliability(labels, after, out / "reliability_after.png")
    plot_risk_coverage(labels, after, out / "risk_coverage.png", coverage=coverage)

    source = Path(model_path)
    target = Path(save_as) if save_as is not None else source
    sha_before = file_sha256(source)
    if target.resolve() != source.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    info = predictor.info
    info.calibration = calibration
    sha_after = rewrite_info(target, info)

    result = {**calibration, "model": str(target), "sha256_before": sha_before, "sha256_after": sha_after}
    (out / "calibration.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return result


ENSEMBLE_CALIBRATION_FILE = "ensemble_calibration.json"


def calibrate_ensemble(
    ensemble: EnsemblePredictor,
    manifest: Manifest,
    out_dir: str | Path,
    *,
    coverage: float = 0.8,
    description: str = "",
) -> dict[str, Any]:
    """Fit one temperature on the ensemble's mean probabilities over labelled ``manifest`` rows.

    The members keep their own temperatures; this one corrects what averaging does to them (the
    mean of calibrated members is under-confident). When a member fuses metadata, a second
    temperature (``temperature_without_metadata``) is fitted on the same rows with age, sex and
    site hidden, for predictions made without them. The predictor's test-time augmentation is
    used as it will be at prediction time, and recorded. Writes ``ensemble_calibration.json``
    and reliability diagrams to ``out_dir``; ``read_ensemble_calibration`` loads it back for
    the same members only.

    Raises:
        ValueError: no rows, unknown labels or unreadable images.
    """
    labels = manifest.label_indices(ensemble.classes)
    if len(labels) == 0:
        raise ValueError("no validation rows to calibrate on")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fit = _fit_mean_temperature(labels, ensemble.member_mean(manifest).probs, out, "")
    where = description or manifest.source or str(manifest.root)
    result = {
        "method": "temperature on the members' mean probability",
        "members_sha256": [m.sha256 for m in ensemble.members],
        "weights": [float(w) for w in ensemble.weights],
        "tta": ensemble.members[0].tta,
        "fitted_on": where,
        "data_fingerprint": manifest.fingerprint(),
        "n_images": int(len(labels)),
        **{k: v for k, v in fit.items() if k != "probs"},
        "abstention": AbstentionConfig(
            min_confidence=confidence_threshold_for_coverage(fit["probs"], coverage), target_coverage=coverage,
            source=f"fitted for {coverage:.0%} coverage on {len(labels)} validation images ({where})",
        ).to_dict(),
        "temperature_without_metadata": None,
        "without_metadata": None,
        "dermdx_version": __version__,
    }
    if any(member.info.meta_schema is not None for member in ensemble.members):
        # Metadata-fusion members are surer of themselves with age, sex and site; rows that give
        # none of them get their own temperature, fitted on the same rows with the three hidden.
        blind = _fit_mean_temperature(labels, ensemble.member_mean(manifest.without_metadata()).probs, out, "_without_metadata")
        result["temperature_without_metadata"] = blind["temperature"]
        result["without_metadata"] = {k: v for k, v in blind.items() if k not in ("probs", "temperature")}
    (out / ENSEMBLE_CALIBRATION_FILE).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return result


def _fit_mean_temperature(labels: np.ndarray, mean: np.ndarray, out: Path, suffix: str) -> dict[str, Any]:
    """One temperature for ``log(mean)``, its before/after figures and reliability diagrams (``probs``: after)."""
    log_mean = np.log(np.clip(mean, 1e-12, None))
    temperature = fit_temperature(log_mean, labels)
    after = apply_temperature(log_mean, temperature)
    plot_reliability(labels, mean, out / f"reliability_before{suffix}.png")
    plot_reliability(labels, after, out / f"reliability_after{suffix}.png")
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(labels, mean),
        "ece_after": expected_calibration_error(labels, after),
        "nll_before": negative_log_likelihood(log_mean, labels, 1.0),
        "nll_after": negative_log_likelihood(log_mean, labels, temperature),
        "mean_confidence_before": float(mean.max(axis=1).mean()),
        "mean_confidence_after": float(after.max(axis=1).mean()),
        "accuracy": float((after.argmax(axis=1) == labels).mean()),
        "probs": after,
    }


def read_ensemble_calibration(path: str | Path, members_sha256: list[str]) -> dict[str, Any]:
    """An ``ensemble_calibration.json``, refused unless it was fitted for exactly these members, in order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an ensemble calibration, or fitted for other member files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ensemble calibration (write one with dermdx calibrate --model A --model B ...)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(record, dict) or not isinstance(record.get("temperature"), int | float) or "members_sha256" not in record:
        raise ValueError(f"{path} is not an ensemble calibration (no temperature and members_sha256)")
    if not record["temperature"] > 0:
        raise ValueError(f"{path}: temperature {record['temperature']} is not a positive number")
    blind = record.get("temperature_without_metadata")
    if blind is not None and (isinstance(blind, bool) or not isinstance(blind, int | float) or not blind > 0):
        raise ValueError(f"{path}: temperature_without_metadata {blind!r} is not a positive number (or null)")
    if list(record["members_sha256"]) != list(members_sha256):
        raise ValueError(
            f"{path} was fitted for other member models (SHA-256 {record['members_sha256']}), not these ({members_sha256}); "
            "calibrate these members, in this order"
        )
    return record
