import numpy as np
import pytest
import torch
from torch import nn

from dermdx.explain import CAM_METHODS, compute_cam, find_target_layer, overlay_cam
from dermdx.explain.cam import _last_4d_module
from dermdx.models import create_model

pytest.importorskip("pytorch_grad_cam")

FAST_METHODS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "eigengradcam", "gradcam-elementwise"]


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "fusion":
        return create_model("test_efficientnet", num_classes=3, meta_dim=5)
    return create_model(kind, num_classes=3)


def _all_hooks(model: nn.Module) -> list:
    found = []
    for module in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            found += list(getattr(module, attr, {}).values())
    return found


@pytest.mark.parametrize("kind", ["test_efficientnet", "test_resnet", "fusion"])
@pytest.mark.parametrize("method", FAST_METHODS)
def test_cam_shape_range_and_finite(kind: str, method: str) -> None:
    model = _model(kind).eval()
    x = torch.randn(1, 3, 64, 48)
    cam = compute_cam(model, x, method=method)
    assert cam.shape == (64, 48)
    assert cam.dtype == np.float32
    assert np.isfinite(cam).all()
    assert cam.min() >= 0.0 and cam.max() <= 1.0


def test_scorecam_runs() -> None:
    cam = compute_cam(_model("test_resnet").eval(), torch.randn(3, 48, 48), method="scorecam", target_class=1)
    assert cam.shape == (48, 48) and np.isfinite(cam).all()


@pytest.mark.parametrize("kind", ["test_efficientnet", "fusion"])
def test_the_callers_model_is_left_as_it_was(kind: str) -> None:
    model = _model(kind)
    model.train()
    backbone = model.backbone if kind == "fusion" else model
    backbone.bn1.eval()  # a mixed state, e.g. frozen BatchNorm while training
    frozen = backbone.conv_stem.weight
    frozen.requires_grad_(False)
    head = next(p for n, p in model.named_parameters() if n.endswith("classifier.weight") or n.endswith("classifier.1.weight"))
    head.grad = torch.full_like(head, 7.0)
    modes = {name: m.training for name, m in model.named_modules()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}

    meta = torch.zeros(5) if kind == "fusion" else None
    compute_cam(model, torch.randn(1, 3, 64, 64), method="gradcam++", meta=meta)

    assert _all_hooks(model) == []
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert torch.equal(head.grad, torch.full_like(head, 7.0))
    assert all(p.grad is None for p in model.parameters() if p is not head)
    # BatchNorm running statistics untouched: the CAM ran in eval mode.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_hooks_are_removed_when_the_cam_fails() -> None:
    model = _model("test_resnet").eval()
    with pytest.raises(ValueError, match="target_class must be a class index in 0..2"):
        compute_cam(model, torch.randn(1, 3, 32, 32), target_class=3)
    assert _all_hooks(model) == []


def test_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown CAM method 'layer-cam'. Did you mean 'layercam'\?.*gradcam\+\+.*scorecam"):
        compute_cam(_model("test_resnet"), torch.randn(1, 3, 32, 32), method="layer-cam")
    assert {"gradcam", "gradcam++", "scorecam", "eigencam", "layercam", "xgradcam", "hirescam"} <= set(CAM_METHODS)


def test_bad_inputs_are_named() -> None:
    model = _model("test_resnet")
    with pytest.raises(ValueError, match=r"shape \[3, H, W\] or \[1, 3, H, W\]"):
        compute_cam(model, torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="does not use metadata"):
        compute_cam(model, torch.randn(1, 3, 32, 32), meta=torch.zeros(5))
    with pytest.raises(ValueError, match="meta must hold 5 values"):
        compute_cam(_model("fusion"), torch.randn(1, 3, 32, 32), meta=torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        compute_cam(model, torch.full((1, 3, 32, 32), float("nan")))


def test_metadata_is_bound_for_fusion_models() -> None:
    model = _model("fusion").eval()
    x = torch.randn(1, 3, 64, 64)
    with_meta = compute_cam(model, x, meta=torch.ones(5), target_class=0)
    without = compute_cam(model, x, target_class=0)
    assert with_meta.shape == without.shape == (64, 64)


@pytest.mark.parametrize("kind, expected", [("test_efficientnet", "bn2"), ("test_resnet", "layer4"), ("fusion", "backbone.bn2")])
def test_target_layer_rule(kind: str, expected: str) -> None:
    model = _model(kind).eval()
    name, module = find_target_layer(model)
    assert name == expected
    assert module is model.get_submodule(expected)
    # The forward-hook fallback agrees with the built-in names for these families.
    backbone = model.backbone if kind == "fusion" else model
    assert _last_4d_module(backbone, torch.randn(1, 3, 64, 64)) == expected.removeprefix("backbone.")


def test_transformers_are_refused_clearly() -> None:
    vit = create_model("test_vit", num_classes=3).eval()
    with pytest.raises(ValueError, match="not a \\[N, C, H, W\\] feature map"):
        compute_cam(vit, torch.randn(1, 3, 64, 64))


class _Brightness(nn.Module):
    """Class 0's logit is the mean brightness: every feature channel is a 3x3 local mean of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.features[0].weight.fill_(1.0 / 27)
            self.features[0].bias.zero_()
            self.fc.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
            self.fc.bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.forward_features(x)).flatten(1))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "scorecam"])
def test_cam_lands_on_the_bright_square(method: str) -> None:
    # A model whose evidence for class 0 is brightness, built by hand (no training, so not flaky).
    model = _Brightness().eval()
    image = torch.zeros(1, 3, 32, 32)
    image[:, :, 12:20, 2:10] = 1.0  # the only structure: a square on the left
    assert find_target_layer(model, image)[0] == "features"
    cam = compute_cam(model, image, method=method, target_class=0)
    assert cam[:, :16].sum() > 5 * cam[:, 16:].sum()
    assert cam[16, 6] > 0.9


def test_overlay_is_uint8_rgb_of_the_image_size() -> None:
    image = np.full((30, 40, 3), 128, dtype=np.uint8)
    cam = np.zeros((16, 16), dtype=np.float32)
    cam[4:8, 4:8] = 1.0
    out = overlay_cam(image, cam, alpha=0.5)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="cam must hold finite values in 0..1"):
        overlay_cam(image, cam * 3)
    with pytest.raises(ValueError, match="RGB uint8"):
        overlay_cam(image.astype(np.float32), cam)
    with pytest.raises(ValueError, match="alpha"):
        overlay_cam(image, cam, alpha=2)
