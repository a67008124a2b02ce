import pytest
import torch

from dermdx.models import create_model, default_normalisation


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet", "test_vit"])
def test_tiny_models_give_finite_logits(name: str) -> None:
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 64) if name != "test_vit" else torch.randn(2, 3, 160, 160))
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()


def test_unknown_model_lists_close_matches() -> None:
    with pytest.raises(ValueError, match="unknown model 'tf_efficientnet_lite9'.*tf_efficientnet_lite"):
        create_model("tf_efficientnet_lite9", num_classes=7)


def test_num_classes_must_be_at_least_two() -> None:
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        create_model("test_efficientnet", num_classes=1)


def test_lite_weights_expect_minus_one_to_one_inputs() -> None:
    assert default_normalisation("tf_efficientnet_lite0") == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert default_normalisation("resnet18")[0] == pytest.approx((0.485, 0.456, 0.406))
