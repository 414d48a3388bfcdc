"""Saliency-map metrics against independent oracles: scipy's distance transform and Gaussian filter, numpy hand
computations, and naive per-image, per-step loops for deletion and insertion (2D and 3D)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt, gaussian_filter
from torch import nn

from labelwise.errors import ConfigError, DataError
from labelwise.explain.metrics import (
    average_drop_increase,
    box_masks,
    deletion_auc,
    energy_pointing_game,
    gaussian_blur,
    insertion_auc,
    map_iou,
    pointing_game,
)

SPATIAL = {2: (9, 7), 3: (5, 6, 4)}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread spares the thread pool's hand-off cost (large when the cores are busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_pairs(dim: int, b: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (B, K, *S) of small integers (many ties) and sparse masks (B, K, *S) with an empty one and a constant
    map among them."""
    g = torch.Generator().manual_seed(seed)
    shape = SPATIAL[dim]
    maps = torch.randint(0, 6, (b, k, *shape), generator=g).float() - 2
    masks = torch.rand(b, k, *shape, generator=g) < (0.04 if dim == 2 else 0.02)
    masks[0, 0] = False
    masks[1, 0].view(-1)[3] = True
    maps[1, 0] = 1.5
    maps[0, 1] = 0.0
    return maps, masks


def pointing_oracle(maps: np.ndarray, masks: np.ndarray, tolerance: float) -> float:
    if not masks.any():
        return math.nan
    if maps.max() == maps.min():
        return 0.0
    peak = np.unravel_index(np.argmax(maps), maps.shape)
    return float(distance_transform_edt(~masks)[peak] <= tolerance)


def oracle_table(fn, maps: torch.Tensor, masks: torch.Tensor, *args) -> torch.Tensor:
    """fn applied to every (sample, k) pair of (B, K, *S) arrays, as a float32 (B, K) tensor."""
    b, k = maps.shape[:2]
    table = [[fn(maps[i, j].numpy(), masks[i, j].numpy(), *args) for j in range(k)] for i in range(b)]
    return torch.tensor(table, dtype=torch.float32)


# --- pointing game ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tolerance", [0, 1, 1.5, 2.3, 4.0])
@pytest.mark.parametrize("dim", [2, 3])
def test_pointing_game_against_distance_transform(dim, tolerance):
    for seed in range(3):
        maps, masks = random_pairs(dim, 5, 3, seed)
        expected = oracle_table(pointing_oracle, maps, masks, tolerance)
        got = pointing_game(maps, masks, tolerance, spatial_dims=dim)
        assert got.dtype == torch.float32 and got.shape == (5, 3)
        torch.testing.assert_close(got, expected, equal_nan=True)
        # without a K axis
        flat = pointing_game(maps[:, 1], masks[:, 1], tolerance, spatial_dims=dim)
        torch.testing.assert_close(flat, expected[:, 1], equal_nan=True)
        # one mask per sample, broadcast over the K maps
        shared = pointing_game(maps, masks[:, 2], tolerance, spatial_dims=dim)
        expected_shared = oracle_table(pointing_oracle, maps, masks[:, 2:].expand_as(masks), tolerance)
        torch.testing.assert_close(shared, expected_shared, equal_nan=True)


def test_pointing_game_shape_inference_without_spatial_dims():
    maps, masks = random_pairs(2, 3, 2, seed=7)
    assert pointing_game(maps[:, 0], masks[:, 0]).shape == (3,)  # (B, H, W)
    assert pointing_game(maps, masks[:, 0]).shape == (3, 2)  # (B, K, H, W) with a shared mask
    maps3, masks3 = random_pairs(3, 3, 2, seed=7)
    assert pointing_game(maps3, masks3).shape == (3, 2)  # (B, K, D, H, W)
    with pytest.raises(DataError, match="spatial_dims"):
        pointing_game(maps, masks)  # (B, K, H, W) or (B, D, H, W)?


def test_pointing_game_constant_map_misses_and_empty_mask_is_nan():
    masks = torch.ones(2, 4, 4, dtype=torch.bool)
    masks[1] = False
    got = pointing_game(torch.zeros(2, 4, 4), masks, tolerance=10.0)
    assert got[0] == 0.0 and math.isnan(got[1])


def test_pointing_game_tolerance_is_euclidean_and_first_argmax_counts():
    maps = torch.zeros(1, 5, 5)
    maps[0, 1, 1] = 1.0
    maps[0, 4, 4] = 1.0  # a tie later in flattened order: the first maximum (1, 1) is the one that points
    masks = torch.zeros(1, 5, 5, dtype=torch.bool)
    masks[0, 0, 0] = True
    assert pointing_game(maps, masks, 0.0).item() == 0.0
    assert pointing_game(maps, masks, 1.0).item() == 0.0
    assert pointing_game(maps, masks, math.sqrt(2)).item() == 1.0
    assert pointing_game(maps, masks, 1.5).item() == 1.0


# --- energy pointing game, map IoU, box masks ---------------------------------------------------------------


def energy_oracle(maps: np.ndarray, masks: np.ndarray) -> float:
    positive = np.clip(maps.astype(np.float64), 0, None)
    if positive.sum() == 0 or not masks.any():
        return math.nan
    return positive[masks].sum() / positive.sum()


def iou_oracle(maps: np.ndarray, masks: np.ndarray, threshold: float) -> float:
    m = maps.astype(np.float64)
    kept = np.zeros_like(masks) if m.max() == m.min() else (m - m.min()) / (m.max() - m.min()) >= threshold
    union = (kept | masks).sum()
    return math.nan if union == 0 else (kept & masks).sum() / union


@pytest.mark.parametrize("dim", [2, 3])
def test_energy_pointing_game_against_numpy(dim):
    maps, masks = random_pairs(dim, 4, 3, seed=dim)
    masks |= torch.rand(masks.shape, generator=torch.Generator().manual_seed(1)) < 0.3
    masks[0, 0] = False
    maps[2, 2] = -1.0  # sums to 0 once clamped
    got = energy_pointing_game(maps, masks, spatial_dims=dim)
    assert got.dtype == torch.float32
    assert torch.isnan(got[0, 0]) and torch.isnan(got[2, 2]) and torch.isnan(got[0, 1])
    torch.testing.assert_close(got, oracle_table(energy_oracle, maps, masks), equal_nan=True)
    torch.testing.assert_close(
        energy_pointing_game(maps[:, 1], masks[:, 1], spatial_dims=dim),
        oracle_table(energy_oracle, maps, masks)[:, 1],
        equal_nan=True,
    )


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("dim", [2, 3])
def test_map_iou_against_numpy(dim, threshold):
    maps, masks = random_pairs(dim, 4, 3, seed=10 + dim)
    masks |= torch.rand(masks.shape, generator=torch.Generator().manual_seed(2)) < 0.3
    masks[1, 0] = False  # with a constant map: empty union
    got = map_iou(maps, masks, threshold, spatial_dims=dim)
    assert torch.isnan(got[1, 0])
    torch.testing.assert_close(got, oracle_table(iou_oracle, maps, masks, threshold), equal_nan=True)
    shared = map_iou(maps, masks[:, 0], threshold)
    expected = oracle_table(iou_oracle, maps, masks[:, :1].expand_as(masks), threshold)
    torch.testing.assert_close(shared, expected, equal_nan=True)


@pytest.mark.parametrize("dim", [2, 3])
def test_box_masks_against_loop(dim):
    shape = SPATIAL[dim]
    g = torch.Generator().manual_seed(dim)
    lo = torch.randint(0, 6, (3, 4, dim), generator=g)
    boxes = torch.cat([lo, lo + torch.randint(0, 4, (3, 4, dim), generator=g)], dim=-1)  # some empty, some beyond
    boxes[0, 1] = -1  # padding rows
    boxes[2, :] = -1
    boxes[1, 3, 0] = -2
    got = box_masks(boxes, shape)
    expected = np.zeros((3, *shape), dtype=bool)
    for i, row in enumerate(boxes.numpy()):
        for box in row:
            if (box < 0).any() or (box[dim:] <= box[:dim]).any():
                continue
            expected[(i, *(slice(a, b) for a, b in zip(box[:dim], box[dim:], strict=True)))] = True
    assert got.dtype == torch.bool and got.shape == (3, *shape)
    assert torch.equal(got, torch.from_numpy(expected))
    assert not got[2].any()
    assert box_masks(torch.zeros(2, 0, 2 * dim, dtype=torch.long), shape).shape == (2, *shape)


# --- deletion and insertion ---------------------------------------------------------------------------------


def tiny_model(dim: int, channels: int = 2, classes: int = 3) -> nn.Module:
    torch.manual_seed(dim)
    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    pool = nn.AdaptiveMaxPool2d(1) if dim == 2 else nn.AdaptiveMaxPool3d(1)
    model = nn.Sequential(
        conv(channels, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), pool, nn.Flatten(), nn.Linear(4, classes)
    )
    return model.double()


def model_inputs(dim: int, b: int = 3, channels: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = SPATIAL[dim]
    images = torch.rand(b, channels, *shape, generator=g, dtype=torch.float64)
    maps = torch.randint(0, 5, (b, *shape), generator=g).double()  # ties: the order must be stable
    targets = torch.randint(0, 3, (b,), generator=g)
    return images, maps, targets


def score(model: nn.Module, x: np.ndarray, target: int, activation: str | None = "softmax") -> float:
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x)[None])[0]
    out = {"softmax": out.softmax(0), "sigmoid": out.sigmoid(), None: out}[activation]
    return out[target].item()


def naive_curve(model, start: np.ndarray, source: np.ndarray, saliency: np.ndarray, target: int, steps: int):
    """Step t: the round(t P / steps) most salient pixels of ``start`` (C, *S) replaced by those of ``source``."""
    c, p = start.shape[0], saliency.size
    order = np.argsort(-saliency.ravel(), kind="stable")
    curve = []
    for t in range(steps + 1):
        x = start.reshape(c, p).copy()
        chosen = order[: round(t * p / steps)]
        x[:, chosen] = source.reshape(c, p)[:, chosen]
        curve.append(score(model, x.reshape(start.shape), target))
    return np.array(curve)


def trapezoid(curve: np.ndarray) -> float:
    return float((curve[:-1] + curve[1:]).sum() / 2 / (len(curve) - 1))


@pytest.mark.parametrize("steps", [5, 7])
@pytest.mark.parametrize("dim", [2, 3])
def test_deletion_against_naive_loop(dim, steps):
    model = tiny_model(dim)
    images, maps, targets = model_inputs(dim, seed=steps)
    for baseline in (0.0, torch.tensor([0.25, -1.0]).view(2, *[1] * dim).double()):
        auc, curves = deletion_auc(model, images, maps, targets, steps=steps, baseline=baseline, return_curves=True)
        fill = np.broadcast_to(np.asarray(baseline, dtype=np.float64), images.shape[1:])
        for i in range(len(images)):
            image = images[i].numpy()
            expected = naive_curve(model, image, fill, maps[i].numpy(), int(targets[i]), steps)
            np.testing.assert_allclose(curves[i].numpy(), expected, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(auc[i].item(), trapezoid(expected), rtol=1e-6, atol=1e-7)
            assert curves[i, 0].item() == pytest.approx(score(model, image, int(targets[i])), rel=1e-6)
            assert curves[i, -1].item() == pytest.approx(score(model, fill.copy(), int(targets[i])), rel=1e-6)


@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.5, 5.0])
@pytest.mark.parametrize("dim", [2, 3])
def test_gaussian_blur_against_scipy(dim, sigma):
    images = torch.rand(2, 3, *SPATIAL[dim], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = gaussian_blur(images, sigma)
    r = math.ceil(3 * sigma)
    expected = gaussian_filter(images.numpy(), sigma=(0, 0, *[sigma] * dim), mode="nearest", radius=(0, 0, *[r] * dim))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert gaussian_blur(images, 0.0) is images


@pytest.mark.parametrize("dim", [2, 3])
def test_insertion_against_naive_loop(dim):
    model = tiny_model(dim)
    images, maps, targets = model_inputs(dim, seed=1)
    sigma, steps = 1.5, 6
    auc, curves = insertion_auc(model, images, maps, targets, steps=steps, blur_sigma=sigma, return_curves=True)
    for i in range(len(images)):
        image = images[i].numpy()
        r = math.ceil(3 * sigma)
        blurred = gaussian_filter(image, sigma=(0, *[sigma] * dim), mode="nearest", radius=(0, *[r] * dim))
        expected = naive_curve(model, blurred, image, maps[i].numpy(), int(targets[i]), steps)
        np.testing.assert_allclose(curves[i].numpy(), expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(auc[i].item(), trapezoid(expected), rtol=1e-6, atol=1e-7)
        # starts at the blurred image's score, ends at the original's
        assert curves[i, 0].item() == pytest.approx(score(model, blurred, int(targets[i])), rel=1e-6)
        assert curves[i, -1].item() == pytest.approx(score(model, image, int(targets[i])), rel=1e-6)


@pytest.mark.parametrize("metric", [deletion_auc, insertion_auc])
@pytest.mark.parametrize("dim", [2, 3])
def test_chunking_shapes_and_train_state(dim, metric):
    model = tiny_model(dim)
    model.train()
    model[2].eval()  # mixed modes must come back as they were
    modes = [m.training for m in model.modules()]
    images, maps, targets = model_inputs(dim, b=4, seed=3)
    auc, curves = metric(model, images, maps, targets, steps=4, batch_size=64, return_curves=True)
    assert auc.shape == (4,) and curves.shape == (4, 5)
    assert auc.dtype == curves.dtype == torch.float32
    assert ((auc >= 0) & (auc <= 1)).all()
    torch.testing.assert_close(auc, torch.trapezoid(curves, dx=1 / 4, dim=1))
    one, curves_one = metric(model, images, maps, targets, steps=4, batch_size=1, return_curves=True)
    three = metric(model, images, maps, targets, steps=4, batch_size=3)
    assert torch.equal(curves_one, curves) and torch.equal(one, auc) and torch.equal(three, auc)
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize("metric", [deletion_auc, insertion_auc])
def test_low_resolution_maps_are_upsampled(metric):
    model = tiny_model(2)
    images, _, targets = model_inputs(2, seed=4)
    small = torch.rand(3, 3, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    full = F.interpolate(small[:, None], size=SPATIAL[2], mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(
        metric(model, images, small, targets, steps=5), metric(model, images, full, targets, steps=5)
    )


class RegionSum(nn.Module):
    """Logits (s, -s) with s the sum of the image over a fixed region: class 0 lives in that region."""

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.region = region

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.region).flatten(1).sum(1)
        return torch.stack([s, -s], dim=1)


@pytest.mark.parametrize("dim", [2, 3])
def test_removing_the_evidence_first_gives_lower_deletion_and_higher_insertion(dim):
    shape = SPATIAL[dim]
    region = torch.zeros(shape, dtype=torch.bool)
    region[(slice(1, 3),) * dim] = True
    # bright evidence on a dark background: the blur lowers the region's sum
    images = torch.rand(2, 1, *shape, generator=torch.Generator().manual_seed(0)) * 0.2 + region
    targets = torch.zeros(2, dtype=torch.long)
    noise = torch.rand(2, *shape, generator=torch.Generator().manual_seed(1)) * 0.1
    first = region.float() + noise
    last = 1 - region.float() + noise
    model = RegionSum(region)
    for activation in ("softmax", "sigmoid", None):
        good = deletion_auc(model, images, first, targets, steps=8, activation=activation)
        bad = deletion_auc(model, images, last, targets, steps=8, activation=activation)
        assert (good < bad).all()
        good = insertion_auc(model, images, first, targets, steps=8, blur_sigma=1.0, activation=activation)
        bad = insertion_auc(model, images, last, targets, steps=8, blur_sigma=1.0, activation=activation)
        assert (good > bad).all()


# --- average drop / increase --------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("dim", [2, 3])
def test_average_drop_increase_against_hand_computation(dim, activation):
    model = tiny_model(dim)
    images, maps, targets = model_inputs(dim, b=6, seed=5)
    maps[1] = 2.0  # constant map: weights 0
    drop, increase = average_drop_increase(model, images, maps, targets, activation=activation)
    assert drop.shape == increase.shape == (6,) and drop.dtype == increase.dtype == torch.float32
    for i in range(6):
        m = maps[i].numpy()
        w = np.zeros_like(m) if m.max() == m.min() else (m - m.min()) / (m.max() - m.min())
        y = score(model, images[i].numpy(), int(targets[i]), activation)
        o = score(model, images[i].numpy() * w, int(targets[i]), activation)
        assert drop[i].item() == pytest.approx(max(0.0, y - o) / y * 100, rel=1e-5, abs=1e-5)
        assert increase[i].item() == (100.0 if o > y else 0.0)


def test_average_drop_increase_both_ways():
    region = torch.zeros(4, 4, dtype=torch.bool)
    region[:2] = True
    images = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.5
    images[1] *= -1  # masking a negative image raises class 0's score
    maps = torch.rand(2, 2, 2, generator=torch.Generator().manual_seed(1))
    drop, increase = average_drop_increase(RegionSum(region), images, maps, torch.zeros(2, dtype=torch.long))
    assert drop[0] > 0 and increase[0] == 0
    assert drop[1] == 0 and increase[1] == 100


# --- bad input ----------------------------------------------------------------------------------------------


def test_bad_localisation_inputs_raise_clear_errors():
    maps, masks = torch.rand(2, 8, 8), torch.ones(2, 8, 8, dtype=torch.bool)
    with pytest.raises(DataError, match=r"masks must have shape.*\(2, 8, 8\).*got shape \(2, 8, 7\)"):
        pointing_game(maps, masks[..., :7])
    with pytest.raises(DataError, match=r"masks must be a bool tensor.*torch.float32"):
        energy_pointing_game(maps, masks.float())
    with pytest.raises(DataError, match=r"maps must be a floating tensor"):
        map_iou(masks.long(), masks)
    with pytest.raises(DataError, match=r"maps must be \(B, \*S\).*got shape \(2, 8\)"):
        map_iou(maps[..., 0], masks[..., 0])
    with pytest.raises(DataError, match=r"masks must have shape"):
        pointing_game(maps, masks[:, None].expand(2, 3, 8, 8))  # a K axis on the masks only
    with pytest.raises(ConfigError, match="tolerance"):
        pointing_game(maps, masks, tolerance=-1)
    with pytest.raises(ConfigError, match="spatial_dims"):
        pointing_game(maps, masks, spatial_dims=1)
    with pytest.raises(ConfigError, match="threshold"):
        map_iou(maps, masks, threshold=1.5)
    with pytest.raises(DataError, match=r"boxes must be \(B, N, 4\).*got shape \(2, 3, 6\)"):
        box_masks(torch.zeros(2, 3, 6, dtype=torch.long), (8, 8))
    with pytest.raises(DataError, match="integer"):
        box_masks(torch.zeros(2, 3, 4), (8, 8))
    with pytest.raises(ConfigError, match="shape"):
        box_masks(torch.zeros(2, 3, 2, dtype=torch.long), (8,))


def test_bad_model_inputs_raise_clear_errors():
    model = tiny_model(2)
    images, maps, targets = model_inputs(2, seed=0)
    with pytest.raises(DataError, match=r"targets must be \(B,\) with B = 3.*got shape \(2,\)"):
        deletion_auc(model, images, maps, targets[:2])
    with pytest.raises(DataError, match="targets must be integer"):
        insertion_auc(model, images, maps, targets.float())
    with pytest.raises(DataError, match=r"targets must lie in \[0, 3\)"):
        deletion_auc(model, images, maps, targets + 3)
    with pytest.raises(DataError, match=r"maps must be \(B, H, W\) with B = 3.*got shape \(2, 9, 7\)"):
        average_drop_increase(model, images, maps[:2], targets)
    with pytest.raises(DataError, match=r"maps must be \(B, H, W\)"):
        deletion_auc(model, images, maps[:, None], targets)
    with pytest.raises(DataError, match="images must be a floating tensor"):
        deletion_auc(model, images[:, 0], maps, targets)
    with pytest.raises(DataError, match=r"baseline must be .* broadcastable to one image \(2, 9, 7\)"):
        deletion_auc(model, images, maps, targets, baseline=torch.zeros(3))
    with pytest.raises(DataError, match="model must return scores"):
        deletion_auc(lambda x: x.sum((1, 2, 3)), images, maps, targets)
    for kwargs in ({"steps": 0}, {"batch_size": 0}, {"activation": "relu"}):
        with pytest.raises(ConfigError, match=next(iter(kwargs))):
            deletion_auc(model, images, maps, targets, **kwargs)
    with pytest.raises(ConfigError, match="blur_sigma"):
        insertion_auc(model, images, maps, targets, blur_sigma=-1.0)
