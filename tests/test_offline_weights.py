"""The mapped timm model must compute what the weights' own package computes."""

import pytest
import torch

from dermdx.models import create_model
from dermdx.models.offline_weights import OFFLINE_PACKAGES, offline_weights_path

NATIVE_SIZE = {"tf_efficientnet_lite0": 224, "tf_efficientnet_lite1": 240, "tf_efficientnet_lite2": 260}


def _installed(name: str) -> bool:
    try:
        offline_weights_path(name)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(OFFLINE_PACKAGES))
def test_mapped_timm_model_matches_the_original(name: str) -> None:
    if not _installed(name):
        pytest.skip(f"{OFFLINE_PACKAGES[name][0]} not installed (pip install -e '.[lite12]')")
    original = pytest.importorskip("efficientnet_lite_pytorch", reason="reference implementation: pip install -e '.[dev]'")
    torch.manual_seed(0)
    # The reference pads for its native resolution ("same" padding computed once), so compare there.
    size = NATIVE_SIZE[name]
    x = torch.randn(2, 3, size, size)
    ours = create_model(name, num_classes=1000, pretrained=True).eval()
    reference = original.EfficientNet.from_pretrained(name.replace("tf_", "").replace("_", "-"), weights_path=str(offline_weights_path(name))).eval()
    with torch.no_grad():
        difference = (ours(x) - reference(x)).abs().max().item()
    assert difference < 1e-4


def test_pretrained_backbone_differs_from_random_and_keeps_a_fresh_head() -> None:
    torch.manual_seed(0)
    pretrained = create_model("tf_efficientnet_lite0", num_classes=7, pretrained=True)
    random = create_model("tf_efficientnet_lite0", num_classes=7, pretrained=False)
    assert not torch.equal(pretrained.conv_stem.weight, random.conv_stem.weight)
    assert pretrained.classifier.out_features == 7


def test_model_without_offline_weights_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="no offline ImageNet weights for 'resnet18'"):
        offline_weights_path("resnet18")
