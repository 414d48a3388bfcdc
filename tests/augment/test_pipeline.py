"""The training augmentation (labelwise.augment.pipeline): the same geometry for image and mask, the documented
ranges, reproducibility per seed, and the config section."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from labelwise.augment.pipeline import Augment, AugmentOptions
from labelwise.config import load_config
from labelwise.errors import ConfigError

OFF = {
    name: {"p": 0.0}
    for name in ("flip", "rotate90", "rotate", "scale", "elastic", "brightness", "contrast", "gamma", "noise", "blur")
}


def only(**transforms) -> Augment:
    """An Augment with every transform off but the given ones."""
    return Augment(AugmentOptions(**{**OFF, **transforms}))


def blobs(b: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Smooth random blobs: a label map (B, *shape) with labels 0, 1, 2."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(b, *shape)), sigma=(0, *[s / 8 for s in shape]))
    return torch.from_numpy(np.digitize(field, np.quantile(field, [0.6, 0.85]))).long()


def test_flips_and_quarter_turns_move_image_and_mask_together_exactly():
    torch.manual_seed(0)
    mask = blobs(16, (32, 32))
    image, moved = only(flip={"p": 0.5}, rotate90={"p": 0.5})(mask[:, None].float(), mask)
    assert torch.equal(image[:, 0].long(), moved)
    assert not torch.equal(moved, mask)  # something moved
    # every output is one of the 8 flips/turns of its input
    for original, out in zip(mask, moved):
        variants = [torch.rot90(v, k, (0, 1)) for v in (original, original.flip(0)) for k in range(4)]
        assert any(torch.equal(out, v) for v in variants)


@pytest.mark.parametrize("shape", [(48, 48), (40, 64), (24, 32, 40)])
def test_rotation_and_scaling_keep_image_and_mask_aligned(shape):
    torch.manual_seed(1)
    mask = blobs(6, shape)
    augment = only(rotate={"p": 1.0, "degrees": 40}, scale={"p": 1.0, "range": (0.8, 1.25)})
    image, moved = augment(torch.nn.functional.one_hot(mask).movedim(-1, 1).float(), mask)
    assert moved.dtype == mask.dtype and set(moved.unique().tolist()) <= {0, 1, 2}
    agreement = (image.argmax(1) == moved)[image.sum(1) > 0.5].float().mean()  # where the image holds data
    assert agreement > 0.97


def test_rotation_is_rigid_on_a_non_square_patch():
    """A point 12 voxels from the centre stays 12 voxels from it whatever the angle, on a 40 x 80 patch: the
    rotation is in voxel (physical) units, not in grid_sample's per-axis normalised ones."""
    torch.manual_seed(2)
    b, h, w = 32, 40, 80
    mask = torch.zeros(b, h, w, dtype=torch.long)
    centre = ((h - 1) / 2, (w - 1) / 2)
    mask[:, 20 - 1 : 20 + 1, 51:53] = 1  # a 2 x 2 block centred 12.5 voxels right of the centre
    _, moved = only(rotate={"p": 1.0, "degrees": 180})(mask[:, None].float(), mask)
    for out in moved:
        ys, xs = torch.nonzero(out, as_tuple=True)
        assert len(ys)
        distance = math.hypot(ys.float().mean() - centre[0], xs.float().mean() - centre[1])
        assert abs(distance - 12.5) < 1.0, distance


def test_a_zoom_factor_above_one_magnifies():
    disk = torch.zeros(1, 65, 65, dtype=torch.long)
    yy, xx = torch.meshgrid(torch.arange(65), torch.arange(65), indexing="ij")
    disk[0][(yy - 32) ** 2 + (xx - 32) ** 2 <= 10**2] = 1
    for factor in (2.0, 0.5):
        _, moved = only(scale={"p": 1.0, "range": (factor, factor)})(disk[:, None].float(), disk)
        ratio = moved.sum().item() / disk.sum().item()
        assert ratio == pytest.approx(factor**2, rel=0.08)


def test_intensity_transforms_follow_their_definitions():
    torch.manual_seed(3)
    x = torch.rand(4, 2, 16, 16) + 0.5
    image, target = only(brightness={"p": 1.0, "range": (2.0, 2.0)})(x, torch.tensor([0, 1, 0, 1]))
    torch.testing.assert_close(image, 2 * x)
    assert torch.equal(target, torch.tensor([0, 1, 0, 1]))  # classification targets pass unchanged
    image, _ = only(contrast={"p": 1.0, "range": (3.0, 3.0)})(x)
    for s in range(4):  # (x - mean) * 3 + mean, clipped to the sample's range
        mean = x[s].mean()
        expected = ((x[s] - mean) * 3 + mean).clamp(x[s].min(), x[s].max())
        torch.testing.assert_close(image[s], expected)
    image, _ = only()(x)
    assert torch.equal(image, x)  # every transform off: unchanged


def test_each_transform_fires_at_its_probability():
    torch.manual_seed(4)
    x = torch.rand(4000, 1, 4, 4)
    image, _ = only(brightness={"p": 0.15, "range": (2.0, 2.0)})(x)
    changed = (image != x).flatten(1).any(1).float().mean().item()
    assert changed == pytest.approx(0.15, abs=0.02)


def test_the_same_seed_gives_the_same_batch_and_another_seed_another():
    mask = blobs(8, (32, 32))
    augment = Augment(AugmentOptions(elastic={"p": 0.5}))
    outputs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outputs.append(augment(mask[:, None].float() + torch.linspace(0, 1, 32), mask))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    assert not torch.equal(outputs[0][0], outputs[2][0])


def test_3d_batches_keep_their_shape_and_labels():
    torch.manual_seed(7)
    mask = blobs(2, (16, 24, 32))
    image, moved = Augment(AugmentOptions(elastic={"p": 1.0}))(torch.randn(2, 2, 16, 24, 32), mask)
    assert image.shape == (2, 2, 16, 24, 32) and moved.shape == mask.shape and moved.dtype == torch.long


def _config(method: str, augment) -> dict:
    return {
        "seed": 0,
        "method": method,
        "data": {"synth": {"n": 40}},
        "trainer": {"max_steps": 2, "checkpoint_every": 2},
        "augment": augment,
    }


def test_the_config_section_defaults_and_refusals():
    config = load_config(_config("supervised", {}))  # built-in shapes: a classification task
    assert config.augment == AugmentOptions(preset="classification")
    assert config.augment.flip.p == 0.5 and config.augment.elastic.p == 0
    assert load_config(_config("supervised", None)).augment is None
    assert load_config(_config("supervised", {"rotate": {"degrees": 30}})).augment.rotate.p == 0.5
    with pytest.raises(ConfigError, match="fixmatch does not take the augment section"):
        load_config(_config("fixmatch", {}))
    with pytest.raises(ConfigError, match=r"augment.scale.range"):
        load_config(_config("supervised", {"scale": {"range": [1.4, 0.7]}}))
    with pytest.raises(ConfigError, match="probabilty|p"):
        load_config(_config("supervised", {"flip": {"probabilty": 0.5}}))


@pytest.mark.parametrize("shape", [(8, 12), (6, 8, 10)])
def test_left_right_flip_only(shape):
    """``flip.axes: [-1]`` flips the last axis (left-right) and no other: every output is its input or its mirror."""
    torch.manual_seed(0)
    image = torch.randn(32, 1, *shape)
    out, _ = only(flip={"p": 0.5, "axes": [-1]})(image, None)
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, image)]
    kept = [torch.equal(o, i) for o, i in zip(out, image)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 5 < sum(mirrored) < 27
    with pytest.raises(ValueError, match="axes"):
        only(flip={"p": 0.5, "axes": [3]})(image, None)


def test_translation_moves_image_and_mask_within_the_fraction():
    """A square moves by at most ``fraction`` of the side along each axis, image and mask alike, and by different
    amounts per sample."""
    torch.manual_seed(3)
    mask = torch.zeros(16, 40, 40, dtype=torch.long)
    mask[:, 16:24, 16:24] = 1
    image, moved = only(translate={"p": 1.0, "fraction": 0.2})(mask[:, None].float(), mask)
    grid = torch.stack(torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij"))
    shifts = []
    for img, m in zip(image[:, 0], moved):
        assert torch.equal((img > 0.5).long(), m) or (img.round().long() != m).float().mean() < 0.02
        centre = (grid * m).flatten(1).sum(1) / m.sum()
        shifts.append(centre - 19.5)
    shifts = torch.stack(shifts)
    assert shifts.abs().max() <= 0.2 * 40 + 1
    assert shifts.abs().max() > 2 and len({tuple(s.round().tolist()) for s in shifts}) > 8


def _resolved(task: str, augment: dict) -> object:
    return load_config(
        {
            "seed": 0,
            "method": "supervised",
            "data": {"synth": {}, "task": task},
            "augment": augment,
            "trainer": {"max_steps": 1, "checkpoint_every": 1},
        },
        check_files=False,
    ).augment


def test_preset_follows_the_task_and_keeps_what_the_section_sets():
    from labelwise.augment.pipeline import CLASSIFICATION

    classification = _resolved("classification", {})
    assert classification.preset == "classification"
    for name, values in CLASSIFICATION.items():
        for key, value in values.items():
            got = getattr(getattr(classification, name), key)
            assert (list(got) if isinstance(got, tuple) else got) == (
                list(value) if isinstance(value, tuple) else value
            )
    segmentation = _resolved("segmentation", {})
    assert segmentation.preset == "segmentation" and segmentation == AugmentOptions(preset="segmentation")
    assert segmentation.rotate90.p == 0.5 and segmentation.translate.p == 0 and segmentation.flip.axes is None
    mixed = _resolved("classification", {"rotate": {"degrees": 5}, "gamma": {"p": 0.3}})
    assert (mixed.rotate.p, mixed.rotate.degrees, mixed.gamma.p, mixed.rotate90.p) == (0.5, 5.0, 0.3, 0.0)
    assert _resolved("classification", {"preset": "segmentation"}).rotate90.p == 0.5  # asked for by name
    saved = load_config(
        {
            "seed": 0,
            "method": "supervised",
            "data": {"synth": {}},
            "augment": mixed.model_dump(mode="json"),
            "trainer": {"max_steps": 1, "checkpoint_every": 1},
        },
        check_files=False,
    ).augment
    assert saved == mixed  # a saved config reloads to the same options
