"""Distillation: the soft-label loss, and a student that learns what its teacher says."""

from pathlib import Path

import numpy as np
import pytest
import torch

from dermdx.distillation import SOFT_LABELS_FILE, DistillationLoss


def test_soft_loss_is_zero_when_the_student_matches_the_teacher() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    teacher = torch.softmax(logits, dim=1).numpy()
    loss = DistillationLoss(torch.nn.CrossEntropyLoss(), teacher, temperature=1.0, alpha=1.0)
    index = torch.arange(5)
    assert loss(logits, torch.zeros(5, dtype=torch.long), index).item() == pytest.approx(0.0, abs=1e-5)
    other = loss(torch.zeros(5, 4), torch.zeros(5, dtype=torch.long), index).item()
    expected = float((torch.from_numpy(teacher) * (torch.log(torch.from_numpy(teacher)) - np.log(0.25))).sum(1).mean())
    assert other == pytest.approx(expected, rel=1e-4)


def test_alpha_mixes_soft_and_hard_losses_by_row_index() -> None:
    teacher = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    hard = torch.nn.CrossEntropyLoss()
    logits, labels = torch.tensor([[2.0, 0.0]]), torch.tensor([1])
    soft_only = DistillationLoss(hard, teacher, temperature=2.0, alpha=1.0)
    mixed = DistillationLoss(hard, teacher, temperature=2.0, alpha=0.25)
    first, second = soft_only(logits, labels, torch.tensor([0])), soft_only(logits, labels, torch.tensor([1]))
    assert first < second  # row 0's teacher agrees with these logits, row 1's does not
    assert mixed(logits, labels, torch.tensor([1])).item() == pytest.approx(0.25 * second.item() + 0.75 * hard(logits, labels).item(), rel=1e-5)


def test_class_weights_weight_each_rows_soft_term_by_its_true_class() -> None:
    torch.manual_seed(1)
    teacher = torch.softmax(torch.randn(4, 3), dim=1).numpy()
    logits, labels, index = torch.randn(4, 3), torch.tensor([0, 1, 1, 2]), torch.arange(4)
    weights = torch.tensor([3.0, 1.0, 0.0])
    per_row = (torch.from_numpy(teacher) * (torch.log(torch.from_numpy(teacher)) - torch.log_softmax(logits, dim=1))).sum(1)
    weighted = DistillationLoss(torch.nn.CrossEntropyLoss(), teacher, temperature=1.0, alpha=1.0, class_weights=weights)
    row_weights = weights[labels]
    assert weighted(logits, labels, index).item() == pytest.approx(float((row_weights * per_row).sum() / row_weights.sum()), rel=1e-5)
    plain = DistillationLoss(torch.nn.CrossEntropyLoss(), teacher, temperature=1.0, alpha=1.0)
    assert plain(logits, labels, index).item() == pytest.approx(float(per_row.mean()), rel=1e-5)
    with pytest.raises(ValueError, match="class_weights"):
        DistillationLoss(torch.nn.CrossEntropyLoss(), teacher, class_weights=torch.ones(2))


@pytest.mark.parametrize(("kwargs", "message"), [({"temperature": 0.0}, "distill_temperature"), ({"alpha": 1.5}, "distill_alpha")])
def test_bad_settings_are_named(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        DistillationLoss(torch.nn.CrossEntropyLoss(), np.full((2, 2), 0.5), **kwargs)


def _constant_teacher(path: Path, classes: list[str], favourite: str) -> Path:
    """A tiny model that always answers ``favourite``, whatever the image."""
    from dermdx.checkpoint import ModelInfo, save_model
    from dermdx.config import PreprocessConfig
    from dermdx.models import create_model

    model = create_model("test_efficientnet_gn", num_classes=len(classes))
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([8.0 if c == favourite else 0.0 for c in classes]))
    save_model(path, model.eval(), ModelInfo("test_efficientnet_gn", classes, PreprocessConfig(image_size=32, color_constancy=False)))
    return path


def test_student_learns_its_teachers_answer(tiny_run_config, tmp_path: Path) -> None:
    """With only soft labels (alpha 1), a student of a teacher that always says one class says it too."""
    from dermdx.inference import Predictor
    from dermdx.training import fit, prepare_data

    data = prepare_data(tiny_run_config)
    favourite = data.classes[1]
    teacher = _constant_teacher(tmp_path / "teacher.safetensors", data.classes, favourite)
    tiny_run_config.train.distill_teachers = [str(teacher)]
    tiny_run_config.train.distill_alpha = 1.0
    tiny_run_config.train.epochs = 3
    fit(tiny_run_config)
    run = Path(tiny_run_config.output_dir)
    cached = np.load(run / SOFT_LABELS_FILE)
    assert cached["probs"].shape == (len(data.train_idx), len(data.classes))
    assert (cached["probs"].argmax(1) == data.classes.index(favourite)).all()
    held_out = data.manifest.subset(data.test_idx)
    probs = Predictor.from_checkpoint(run / "model.safetensors").predict_manifest(held_out, progress=False).probs
    assert (probs.argmax(1) == data.classes.index(favourite)).mean() > 0.9


def test_teacher_with_other_classes_is_refused(tiny_run_config, tmp_path: Path) -> None:
    from dermdx.training import fit

    tiny_run_config.train.distill_teachers = [str(_constant_teacher(tmp_path / "t.safetensors", ["x", "y", "z"], "x"))]
    with pytest.raises(ValueError, match="teacher classes"):
        fit(tiny_run_config, stop_after=1)
