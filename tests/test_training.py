
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dermdx.checkpoint import load_model, read_info
from dermdx.data.splits import assert_no_group_leak
from dermdx.training import FocalLoss, class_weights, fit, make_loss, prepare_data


def test_class_weights_are_inverse_frequency() -> None:
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights.tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])


def test_focal_loss_equals_cross_entropy_at_gamma_zero_and_down_weights_easy_samples() -> None:
    logits, target = torch.tensor([[4.0, 0.0], [0.0, 0.5]]), torch.tensor([0, 0])
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert FocalLoss(gamma=0.0)(logits, target).item() == pytest.approx(ce.item())
    assert FocalLoss(gamma=2.0)(logits, target).item() < ce.item()


def test_logit_adjusted_loss_learns_prior_free_scores() -> None:
    # A bias-only "model" fitted to 90% class 0: plain CE learns log(0.9/0.1) between the logits;
    # the adjusted loss learns equal scores, so its argmax no longer favours the frequent class.
    labels = np.array([0] * 9 + [1])
    loss_fn = make_loss("logit_adjusted", labels, 2)
    bias = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.LBFGS([bias], max_iter=100)
    target = torch.as_tensor(labels)

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(bias.expand(len(labels), 2), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    assert (bias[0] - bias[1]).item() == pytest.approx(0.0, abs=1e-3)
    uniform = make_loss("logit_adjusted", np.array([0, 1]), 2)
    logits = torch.tensor([[2.0, 0.5]])
    assert uniform(logits, torch.tensor([1])).item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([1])).item())
    with pytest.raises(ValueError, match="every class in the training rows"):
        make_loss("logit_adjusted", np.array([0, 0]), 2)


def test_unknown_imbalance_strategy_is_named() -> None:
    with pytest.raises(ValueError, match="unknown imbalance strategy 'smote'"):
        make_loss("smote", np.array([0, 1]), 2)


def test_selection_and_test_rows_share_no_group(tiny_run_config) -> None:
    data = prepare_data(tiny_run_config)
    assert_no_group_leak(data.manifest, data.train_idx, data.test_idx)
    assert_no_group_leak(data.manifest, data.train_idx, data.select_idx)
    assert set(data.train_idx).isdisjoint(data.select_idx) and len(data.test_idx) > 0


@pytest.mark.parametrize("imbalance", ["weighted_ce", "sampler", "focal", "logit_adjusted"])
def test_fit_writes_a_self_describing_model(tiny_run_config, imbalance) -> None:
    tiny_run_config.train.imbalance = imbalance
    summary = fit(tiny_run_config)
    model, info = load_model(f"{tiny_run_config.output_dir}/model.safetensors")
    assert info.classes == ["bcc", "mel", "nv"]
    assert info.preprocess.image_size == 32 and info.model_name == "test_efficientnet_gn"
    assert info.data_fingerprint and info.config["train"]["imbalance"] == imbalance
    assert len(summary["history"]) == 2
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_same_seed_gives_the_same_weights_and_metrics(tiny_run_config, tmp_path) -> None:
    first = fit(tiny_run_config)
    tiny_run_config.output_dir = str(tmp_path / "again")
    second = fit(tiny_run_config)
    assert [h["select_balanced_accuracy"] for h in first["history"]] == [h["select_balanced_accuracy"] for h in second["history"]]
    a, b = load_file(f"{first['output_dir']}/model.safetensors"), load_file(f"{second['output_dir']}/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_stopped_run_resumes_and_matches_an_uninterrupted_one(tiny_run_config, tmp_path) -> None:
    straight = fit(tiny_run_config)
    tiny_run_config.output_dir = str(tmp_path / "stopped")
    first_part = fit(tiny_run_config, stop_after=1)
    assert len(first_part["history"]) == 1
    resumed = fit(tiny_run_config)
    assert len(resumed["history"]) == 2
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in straight["history"]]
    a = load_file(f"{straight['output_dir']}/model.safetensors")
    b = load_file(f"{resumed['output_dir']}/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_state_from_other_data(tiny_run_config, learnable_folder) -> None:
    fit(tiny_run_config)
    next(learnable_folder.glob("nv/*.jpg")).rename(learnable_folder / "mel" / "moved.jpg")
    tiny_run_config.split.file = None
    with pytest.raises(ValueError, match="trained on other data"):
        fit(tiny_run_config)


def test_model_info_records_the_selection_metric(tiny_run_config) -> None:
    fit(tiny_run_config)
    info = read_info(f"{tiny_run_config.output_dir}/model.safetensors")
    assert 0.0 <= info.metrics["select_balanced_accuracy"] <= 1.0 and info.metrics["epoch"] in (1, 2)


def test_training_learns_a_separable_problem(tiny_run_config) -> None:
    from dermdx.evaluation import evaluate
    from dermdx.inference import Predictor

    tiny_run_config.train.epochs = 6
    summary = fit(tiny_run_config)
    data = summary["data"]
    predictor = Predictor.from_checkpoint(f"{tiny_run_config.output_dir}/model.safetensors")
    metrics = evaluate(predictor, data.manifest.subset(data.test_idx), f"{tiny_run_config.output_dir}/eval", n_bootstrap=0)
    assert metrics["overall"]["balanced_accuracy"] > 0.8


@pytest.mark.parametrize("fusion", ["concat", "metablock"])
def test_fusion_training_saves_the_schema_and_predicts_with_and_without_metadata(tiny_run_config, learnable_folder, fusion) -> None:
    from dermdx.data.adapters import read_image_folder
    from dermdx.inference import Predictor

    tiny_run_config.model.fusion = fusion
    fit(tiny_run_config, stop_after=1)
    predictor = Predictor.from_checkpoint(f"{tiny_run_config.output_dir}/model.safetensors")
    assert predictor.info.meta_schema is not None and predictor.info.model_kwargs["fusion"] == fusion
    manifest = read_image_folder(learnable_folder)
    without = predictor.predict_manifest(manifest, progress=False).probs
    manifest.frame["age"] = 70.0
    manifest.frame["sex"] = "female"
    with_meta = predictor.predict_manifest(manifest, progress=False).probs
    assert without.shape == with_meta.shape == (36, 3)
    assert not np.allclose(without, with_meta)
