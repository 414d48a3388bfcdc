"""ViT and Swin backbones and networks: the backbone's own walk through MONAI's modules against MONAI's forward, the
weights' names against the classifier and the MONAI segmenter (UNETR, SwinUNETR) they start, SimMIM's token masking
(the output does not depend on what a masked patch holds), and clear errors for impossible sizes."""

from __future__ import annotations

import pytest
import torch

from labelwise.errors import ConfigError, DataError
from labelwise.models import build_model
from labelwise.models.backbones import build_backbone
from labelwise.models.config import ModelConfig
from labelwise.models.networks import SEGMENTERS

VIT = {"name": "vit", "channels": [24], "layers": [2], "heads": [4], "patch_size": 4}
SWIN = {"name": "swin", "channels": [12], "layers": [1, 1, 1, 1], "heads": [3, 3, 3, 3], "patch_size": 1}


def _names(module: torch.nn.Module, prefix: str = "") -> dict[str, tuple[int, ...]]:
    return {k[len(prefix) :]: tuple(v.shape) for k, v in module.state_dict().items() if k.startswith(prefix)}


@pytest.mark.parametrize("dims", [2, 3])
def test_vit_walk_equals_monai_forward_and_classifier(dims):
    torch.manual_seed(0)
    size = (16,) * dims
    backbone = build_backbone(ModelConfig(**VIT), dims, 2, size).eval()
    x = torch.randn(3, 2, *size)
    tokens, _ = backbone.vit(x)  # MONAI's own forward (no class token)
    assert torch.allclose(backbone.tokens(x), tokens, atol=1e-6)
    assert backbone.features(x)[-1].shape == (3, 24, *(4,) * dims) and backbone.stride == 4
    assert torch.allclose(backbone.embed(x), tokens.mean(1), atol=1e-6)
    classifier = build_model(ModelConfig(**VIT), dims, 2, 5, "classification", size).eval()
    assert _names(classifier) == {**_names(backbone), "head.weight": (5, 24), "head.bias": (5,)}
    classifier.load_state_dict(backbone.state_dict(), strict=False)
    assert torch.allclose(classifier(x), classifier.head(backbone.embed(x)), atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_swin_walk_equals_monai_forward_and_starts_a_swin_unetr(dims):
    torch.manual_seed(0)
    size = (32,) * dims
    cfg = ModelConfig(**{**SWIN, "patch_size": 2})
    backbone = build_backbone(cfg, dims, 1, size).eval()
    x = torch.randn(2, 1, *size)
    maps = backbone.swinViT(x, normalize=True)  # MONAI: patch embedding + four stages
    ours = backbone.features(x)
    assert len(ours) == 4 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, maps[1:]))
    assert ours[-1].shape == (2, 12 * 16, *(1,) * dims) and backbone.stride == 32
    assert torch.allclose(backbone.embed(x), maps[-1].flatten(2).mean(2), atol=1e-6)
    segmenter = build_model(cfg.model_copy(update={"name": "swin_unetr"}), dims, 1, 3, "segmentation", size)
    assert _names(segmenter, "swinViT.") == _names(backbone, "swinViT.")
    assert build_backbone(cfg.model_copy(update={"name": "swin_unetr"}), dims, 1, size).dim == backbone.dim
    assert segmenter(x).shape == (2, 3, *size)


def test_unetr_backbone_is_unetr_vit():
    cfg = ModelConfig(name="unetr", channels=[24, 8], heads=[4])
    backbone = build_backbone(cfg, 2, 1, (32, 32))
    unetr = build_model(cfg, 2, 1, 2, "segmentation", (32, 32))
    assert "unetr" in SEGMENTERS and _names(unetr, "vit.") == _names(backbone, "vit.")
    assert unetr(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(ConfigError, match="12 blocks and 16-pixel patches"):
        build_backbone(cfg.model_copy(update={"patch_size": 8}), 2, 1, (32, 32))


@pytest.mark.parametrize("model", [VIT, SWIN])
def test_masked_tokens_ignore_what_the_masked_patches_hold(model):
    torch.manual_seed(0)
    backbone = build_backbone(ModelConfig(**model), 2, 1, (16, 16)).eval()
    token = torch.randn(backbone.mask_dim)
    x = torch.randn(2, 1, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, :8, 4:12] = 1  # whole 4 x 4 patches (ViT tokens; Swin's 1 x 1 patches)
    assert torch.allclose(
        backbone.masked_features(x, torch.zeros_like(mask), token)[-1], backbone.features(x)[-1], atol=1e-6
    )  # nothing masked: the plain features
    changed = x + 5 * mask * torch.randn_like(x)
    a, b = backbone.masked_features(x, mask, token)[-1], backbone.masked_features(changed, mask, token)[-1]
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(backbone.features(x)[-1], backbone.features(changed)[-1], atol=1e-3)


def test_clear_errors_for_impossible_sizes():
    with pytest.raises(ConfigError, match="needs the input size"):
        build_backbone(ModelConfig(**VIT), 2, 1, None)
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        build_backbone(ModelConfig(**VIT), 2, 1, (18, 16))
    with pytest.raises(ConfigError, match="divisible by the heads"):
        build_backbone(ModelConfig(**{**VIT, "heads": [5]}), 2, 1, (16, 16))
    with pytest.raises(ConfigError, match="4 stages"):
        build_backbone(ModelConfig(**{**SWIN, "layers": [2, 2]}), 2, 1, (16, 16))
    with pytest.raises(ConfigError, match="expects 2-voxel patches"):
        build_model(ModelConfig(**{**SWIN, "name": "swin_unetr"}), 2, 1, 2, "segmentation", (32, 32))
    with pytest.raises(ConfigError, match="layer norm"):
        build_model(ModelConfig(**{**SWIN, "norm": "group"}), 2, 1, 2, "classification", (16, 16))
    vit = build_backbone(ModelConfig(**{**VIT, "image_size": [16, 16]}), 2, 1, (64, 64))  # the config's size wins
    with pytest.raises(DataError, match="built for \\[16, 16\\] inputs"):
        vit(torch.randn(1, 1, 32, 32))
