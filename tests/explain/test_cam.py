"""The CAM engine and methods: captum's LayerGradCam as oracle for Grad-CAM (2D, 3D, per-sample targets, segmenters),
each other method against its paper's formula on a small network whose gradients are known in closed form."""

from __future__ import annotations

import gc
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from monai.networks import nets
from torch import nn

from labelwise.errors import LabelwiseError
from labelwise.explain import (
    METHOD_NAMES,
    CounterfactualGradCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    SegmentationTarget,
    SmoothGradCAMPlusPlus,
    XGradCAM,
    build_explainer,
    default_target_layer,
    tokens_to_grid,
)


def small_resnet(dims: int, classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    net = nets.ResNet(
        "basic",
        [1, 1, 1, 1],
        [8, 16, 16, 32],
        spatial_dims=dims,
        n_input_channels=2,
        num_classes=classes,
        conv1_t_stride=1,
        no_max_pool=True,
    )
    return net.eval()


def captum_gradcam(model, layer, x, targets, size=None):
    maps = LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=True).detach()
    if size is not None:
        mode = {2: "bilinear", 3: "trilinear"}[len(size)]
        maps = LayerAttribution.interpolate(maps, size, mode)
    return maps


@pytest.mark.parametrize("dims, size", [(2, (20, 24)), (3, (12, 16, 14))])
def test_gradcam_equals_captum_with_a_target_per_sample(dims, size):
    model = small_resnet(dims)
    torch.manual_seed(1)
    x = torch.randn(4, 2, *size)
    targets = [0, 3, 1, 4]
    cam = GradCAM(model)
    assert cam.target_layer(x) is model.layer4
    ours = cam(x, targets, normalize=False)
    torch.testing.assert_close(ours, captum_gradcam(model, model.layer4, x, targets, size), rtol=1e-5, atol=1e-5)
    at_layer = cam(x, targets, normalize=False, upsample=None)
    torch.testing.assert_close(at_layer, captum_gradcam(model, model.layer4, x, targets), rtol=1e-5, atol=1e-5)
    assert at_layer.abs().amax() > 0  # not a trivially zero comparison


def test_gradcam_equals_captum_on_densenet_and_inner_layer():
    torch.manual_seed(0)
    model = nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=3).eval()
    x = torch.randn(2, 1, 64, 64)
    assert default_target_layer(model, x) == "class_layers.relu"  # 2 x 2 after the last block
    assert default_target_layer(model, x[..., :32, :32]) == "features.transition3.conv"  # the last block is 1 x 1
    layer = model.features.denseblock3
    ours = GradCAM(model, "features.denseblock3")(x, [2, 0], normalize=False)
    torch.testing.assert_close(ours, captum_gradcam(model, layer, x, [2, 0], (64, 64)), rtol=1e-5, atol=1e-5)


def test_segmentation_target_equals_captum_on_region_score():
    torch.manual_seed(0)
    model = nets.UNet(2, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).eval()
    x = torch.randn(2, 1, 16, 16)
    region = torch.zeros(2, 16, 16, dtype=torch.bool)
    region[0, 2:8, 3:9] = True
    region[1, 10:, :5] = True
    layer = model.model[1].submodule  # the bottom of the U
    ours = GradCAM(model, layer)(x, SegmentationTarget(2, region), normalize=False)

    def region_score(inp):
        return (model(inp)[:, 2] * region).flatten(1).sum(1, keepdim=True)

    ref = LayerGradCam(region_score, layer).attribute(x, target=0, relu_attributions=True).detach()
    torch.testing.assert_close(ours, LayerAttribution.interpolate(ref, (16, 16), "bilinear"), rtol=1e-5, atol=1e-5)


def test_multilabel_targets_give_one_map_per_class_each_as_a_single_call():
    model = small_resnet(2)
    x = torch.randn(3, 2, 16, 16)
    both = GradCAM(model)(x, [[1, 4], [0, 2], [3, 3]])
    assert both.shape == (3, 2, 16, 16)
    torch.testing.assert_close(both[:, 0:1], GradCAM(model)(x, [1, 0, 3]))
    torch.testing.assert_close(both[:, 1:2], GradCAM(model)(x, torch.tensor([4, 2, 3])))
    alone = torch.cat([GradCAM(model)(x[i : i + 1], [[[1, 4], [0, 2], [3, 3]][i]]) for i in range(3)])
    torch.testing.assert_close(both, alone, rtol=1e-5, atol=1e-6)


def test_default_target_is_the_predicted_class_and_int_is_broadcast():
    model = small_resnet(2)
    x = torch.randn(3, 2, 16, 16)
    predicted = model(x).argmax(1)
    torch.testing.assert_close(GradCAM(model)(x), GradCAM(model)(x, predicted))
    torch.testing.assert_close(GradCAM(model)(x, 2), GradCAM(model)(x, [2, 2, 2]))


def live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance on every object touches deprecated torch attributes
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_no_parameter_gradients_hooks_removed_modes_restored_no_growth():
    model = small_resnet(2)
    model.train()
    model.layer1.eval()
    running = model.bn1.running_mean.clone()
    x = torch.randn(2, 2, 16, 16)
    cam = GradCAM(model)
    cam(x, [0, 1])  # first call finds the layer
    before = live_tensors()
    for _ in range(10):
        cam(x, [0, 1])
    assert live_tensors() <= before
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert model.training and not model.layer1.training and model.layer2.training
    torch.testing.assert_close(model.bn1.running_mean, running)  # ran in eval mode


def test_hooks_are_removed_when_the_forward_raises():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("boom")

    model = Broken()
    with pytest.raises(RuntimeError, match="boom"):
        GradCAM(model, "conv")(torch.randn(1, 1, 8, 8), 0)
    assert not model.conv._forward_hooks
    assert torch.is_grad_enabled()


@pytest.mark.parametrize(
    "targets, message",
    [
        ([0, 1], "expected 3 entries"),
        (7, r"classes must lie in \[0, 5\)"),
        ([[0, 1], [2], [3, 4]], "same number of classes"),
    ],
)
def test_bad_targets_are_refused(targets, message):
    with pytest.raises(LabelwiseError, match=message):
        GradCAM(small_resnet(2))(torch.randn(3, 2, 8, 8), targets)


def test_bad_layers_and_modes_are_refused():
    model = small_resnet(2)
    with pytest.raises(LabelwiseError, match="no such submodule"):
        GradCAM(model, "layer9")
    with pytest.raises(LabelwiseError, match="not spatial"):
        GradCAM(model, "fc")(torch.randn(1, 2, 8, 8), 0)
    with pytest.raises(LabelwiseError, match="inference_mode"), torch.inference_mode():
        GradCAM(model)(torch.randn(1, 2, 8, 8), 0)
    with pytest.raises(LabelwiseError, match="no layer has a spatial output"):
        GradCAM(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)))(torch.randn(1, 1, 4, 4), 0)
    with pytest.raises(LabelwiseError, match="unknown explanation method"):
        build_explainer("gradcam+++", model)


def test_vit_with_tokens_to_grid():
    torch.manual_seed(0)
    model = nets.ViT(
        in_channels=1,
        img_size=(32, 32),
        patch_size=(8, 8),
        hidden_size=32,
        mlp_dim=64,
        num_layers=2,
        num_heads=4,
        classification=True,
        num_classes=3,
        spatial_dims=2,
    ).eval()
    x = torch.randn(2, 1, 32, 32)
    cam = GradCAM(model, "blocks.1", reshape=tokens_to_grid((4, 4), prefix_tokens=1))
    maps = cam(x, [0, 2], upsample=None, normalize=False, relu=False)
    assert maps.shape == (2, 1, 4, 4)
    # Oracle: the ordinary way, a full graph from the input and a hook that keeps the block's output.
    kept = {}
    handle = model.blocks[1].register_forward_hook(lambda m, i, o: kept.setdefault("a", o))
    out = model(x)[0]
    handle.remove()
    a = kept["a"]
    g = torch.autograd.grad(out[[0, 1], [0, 2]].sum(), a)[0]
    a, g = a[:, 1:].transpose(1, 2), g[:, 1:].transpose(1, 2)  # (B, C, 16)
    expected = (g.mean(2, keepdim=True) * a).sum(1).view(2, 1, 4, 4)
    torch.testing.assert_close(maps, expected.detach(), rtol=1e-5, atol=1e-6)


def test_autocast_bfloat16_gives_float32_maps_close_to_float32():
    model = small_resnet(2)
    x = torch.randn(2, 2, 16, 16)
    full = GradCAM(model)(x, [1, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = GradCAM(model)(x, [1, 2])
    assert half.dtype == torch.float32
    assert torch.corrcoef(torch.stack([full.flatten(), half.flatten()]))[0, 1] > 0.95


def test_every_method_runs_in_2d_and_3d_with_maps_in_unit_range():
    for dims, size in ((2, (12, 12)), (3, (8, 8, 8))):
        model = small_resnet(dims)
        x = torch.randn(2, 2, *size)
        for name in METHOD_NAMES:
            options = {"batch_size": 64} if name == "scorecam" else {}
            maps = build_explainer(name, model, **options)(x, [[0, 1], [2, 3]])
            assert maps.shape == (2, 2, *size), name
            assert maps.dtype == torch.float32 and maps.min() >= 0 and maps.max() <= 1, name


# --- the formulas, on a network whose gradients are known in closed form ------------------------------------------

C, H, W, CLASSES = 3, 4, 5, 2


class Quadratic(nn.Module):
    """y_c = sum V[c] * A^p + b_c; dy_c/dA = p V[c] A^(p-1)."""

    def __init__(self, power: int):
        super().__init__()
        self.power = power
        self.v = nn.Parameter(torch.randn(CLASSES, C, H, W, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(CLASSES, dtype=torch.float64))

    def forward(self, a):
        return torch.einsum("kchw,bchw->bk", self.v, a.pow(self.power)) + self.b


def hand_network(power: int = 1) -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(OrderedDict(features=nn.Identity(), head=Quadratic(power)))


def inputs(b: int = 2) -> torch.Tensor:
    return torch.randn(b, C, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(4))


def raw(method, x, targets):
    return method(x, targets, relu=False, normalize=False, upsample=None)[:, 0].numpy()


def hand_parts(power: int = 1, cls=(1, 0)):
    net = hand_network(power)
    x = inputs()
    a = x.numpy()
    v = net.head.v.detach().numpy()[list(cls)]  # (B, C, H, W)
    g = power * v * a ** (power - 1)
    return net, x, a, g


def test_gradcam_counterfactual_xgradcam_formulas():
    net, x, a, g = hand_parts()
    grad_cam = ((g.mean((2, 3), keepdims=True)) * a).sum(1)
    np.testing.assert_allclose(raw(GradCAM(net, "features"), x, [1, 0]), grad_cam, rtol=1e-10)
    np.testing.assert_allclose(raw(CounterfactualGradCAM(net, "features"), x, [1, 0]), -grad_cam, rtol=1e-10)
    share = a / a.sum((2, 3), keepdims=True)
    xgrad = ((share * g).sum((2, 3), keepdims=True) * a).sum(1)
    np.testing.assert_allclose(raw(XGradCAM(net, "features"), x, [1, 0]), xgrad, rtol=1e-9)
    with_relu = GradCAM(net, "features")(x, [1, 0], normalize=False, upsample=None)[:, 0].numpy()
    np.testing.assert_allclose(with_relu, np.maximum(grad_cam, 0), rtol=1e-10)


def test_hirescam_and_layercam_formulas():
    net, x, a, g = hand_parts(power=2)  # gradients vary over space: elementwise products differ from averaging
    np.testing.assert_allclose(raw(HiResCAM(net, "features"), x, [1, 0]), (g * a).sum(1), rtol=1e-10)
    np.testing.assert_allclose(raw(LayerCAM(net, "features"), x, [1, 0]), (np.maximum(g, 0) * a).sum(1), rtol=1e-10)


def plus_plus(a, g1, g2, g3):
    total = a.sum((2, 3), keepdims=True)
    denominator = 2 * g2 + total * g3
    alpha = np.divide(g2, denominator, out=np.zeros_like(g2), where=denominator != 0)
    weights = (alpha * np.maximum(g1, 0)).sum((2, 3), keepdims=True)
    return (weights * a).sum(1)


def test_gradcam_plus_plus_formula_including_zero_denominators():
    net, x, a, g = hand_parts(power=2)
    x[0, 0, 0, 0] = 0.0  # a zero gradient there: 0/0 must count as 0
    a, g = x.numpy(), g.copy()
    g[0, 0, 0, 0] = 0.0
    np.testing.assert_allclose(raw(GradCAMPlusPlus(net, "features"), x, [1, 0]), plus_plus(a, g, g**2, g**3), rtol=1e-9)


def test_smooth_gradcam_plus_plus_averages_gradient_powers_over_noisy_copies():
    net, x, a, _ = hand_parts(power=2)
    samples, noise = 3, 0.2
    ours = raw(SmoothGradCAMPlusPlus(net, "features", samples=samples, noise=noise, seed=5), x, [1, 0])
    generator = torch.Generator().manual_seed(5)
    sigma = noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    v = net.head.v.detach().numpy()[[1, 0]]
    powers = np.zeros((3, *a.shape))
    for _ in range(samples):
        noisy = (x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype)).numpy()
        g = 2 * v * noisy
        powers += np.stack([g, g**2, g**3]) / samples
    np.testing.assert_allclose(ours, plus_plus(a, *powers), rtol=1e-9)
    # With a linear head gradients do not depend on the input: smoothing changes nothing.
    lin, xl = hand_network(1), inputs()
    torch.testing.assert_close(
        SmoothGradCAMPlusPlus(lin, "features", samples=2)(xl, 1), GradCAMPlusPlus(lin, "features")(xl, 1)
    )


def test_scorecam_formula():
    net, x, a, _ = hand_parts()
    v = net.head.v.detach().numpy()
    bias = net.head.b.detach().numpy()
    low, high = a.min((2, 3), keepdims=True), a.max((2, 3), keepdims=True)
    masks = (a - low) / (high - low)  # (B, C, H, W): one mask per channel
    cls = np.array([1, 0])
    scores = np.einsum("bchw,bkchw->bk", v[cls], a[:, None] * masks[:, :, None]) + bias[cls][:, None]
    alpha = np.exp(scores - scores.max(1, keepdims=True))
    alpha /= alpha.sum(1, keepdims=True)
    expected = (alpha[:, :, None, None] * a).sum(1)
    for batch_size in (1, 4):
        np.testing.assert_allclose(
            raw(ScoreCAM(net, "features", batch_size=batch_size), x, [1, 0]), expected, rtol=1e-9
        )


def test_eigencam_is_the_first_principal_component_projection():
    net, x, a, _ = hand_parts()
    maps = raw(EigenCAM(net, "features"), x, [1, 0])
    for b in range(2):
        m = a[b].reshape(C, -1).T  # not centred (see EigenCAM's docstring)
        projection = m @ np.linalg.svd(m, full_matrices=False)[2][0]
        projection *= -1 if projection.sum() < 0 else 1
        np.testing.assert_allclose(maps[b].ravel(), projection, rtol=1e-8, atol=1e-12)
    both = EigenCAM(net, "features")(x, [[0, 1], [1, 0]])
    torch.testing.assert_close(both[:, 0], both[:, 1])  # class-agnostic


def test_guided_backprop_and_guided_gradcam_by_hand():
    torch.manual_seed(6)
    conv = nn.Conv2d(C, 4, 1, bias=True).double()
    head = nn.Linear(4 * H * W, CLASSES).double()
    net = nn.Sequential(OrderedDict(conv=conv, relu=nn.ReLU(inplace=True), flat=nn.Flatten(), head=head))
    x = inputs()
    w1, b1 = conv.weight.detach()[:, :, 0, 0].numpy(), conv.bias.detach().numpy()
    v = head.weight.detach().numpy().reshape(CLASSES, 4, H, W)
    pre = np.einsum("oc,bchw->bohw", w1, x.numpy()) + b1[:, None, None]
    g_out = v[[1, 0]]  # dy/d(relu output)
    guided = np.maximum(g_out, 0) * (pre > 0)
    g_x = np.einsum("oc,bohw->bchw", w1, guided)
    ours = GuidedBackprop(net).gradients(x, [1, 0])[:, 0].numpy()
    np.testing.assert_allclose(ours, g_x, rtol=1e-6, atol=1e-12)
    plain = np.einsum("oc,bohw->bchw", w1, g_out * (pre > 0))
    assert not np.allclose(ours, plain)  # the guided rule changed something
    saliency = GuidedBackprop(net)(x, [1, 0], normalize=False)[:, 0].numpy()
    np.testing.assert_allclose(saliency, np.abs(g_x).max(1), rtol=1e-6, atol=1e-12)
    cam = GradCAM(net, "conv")(x, [1, 0], normalize=False)[:, 0].numpy()
    guided_cam = GuidedGradCAM(net, "conv")(x, [1, 0], normalize=False)[:, 0].numpy()
    np.testing.assert_allclose(guided_cam, np.abs(g_x * cam[:, None]).max(1), rtol=1e-6, atol=1e-12)
    assert all(not m._forward_hooks for m in net.modules())


def test_guided_backprop_needs_relu_modules():
    with pytest.raises(LabelwiseError, match="no nn.ReLU"):
        GuidedBackprop(nn.Sequential(nn.Conv2d(1, 1, 1), nn.GELU()))
