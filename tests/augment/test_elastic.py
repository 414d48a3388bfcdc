"""Elastic deformation: fields (locked borders, bounded, smooth, seeded), warps (identity, oracle, labels, alignment,
gradients through T(f(x)) as DS6's loss needs), 2D and 3D, and clear errors."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from labelwise.augment import (
    RandomElastic,
    elastic,
    elastic_deform,
    random_displacement,
    warp,
)
from labelwise.augment.elastic import _identity_grid
from labelwise.errors import ConfigError, DataError

SHAPES = {2: (2, 24, 31), 3: (2, 13, 16, 11)}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def border(field: torch.Tensor, d: int) -> list[torch.Tensor]:
    """The 2 * d border slices of a field (B, *spatial, d)."""
    out = []
    for axis in range(1, d + 1):
        out += [field.select(axis, 0), field.select(axis, -1)]
    return out


@pytest.mark.parametrize("d", [2, 3])
def test_field_shape_border_bound_and_smoothness(d):
    shape = SHAPES[d]
    field = random_displacement(shape, spacing=5, magnitude=0.03, generator=gen())
    assert field.shape == (*shape, d) and field.dtype == torch.float32
    assert all(b.abs().max() <= 1e-7 for b in border(field, d))
    assert 0.003 < field.abs().max() <= 0.03
    # the cubic B-spline's slope is at most 2 * magnitude per knot interval (~5 voxels): smooth, not voxel noise
    for axis in range(1, d + 1):
        n = max(3, round((shape[axis] - 1) / 5) + 1)
        step = (shape[axis] - 1) / (n - 1)
        assert field.diff(dim=axis).abs().max() <= 2 * 0.03 / step + 1e-7
        assert field.diff(n=2, dim=axis).abs().max() <= 0.25 * 0.03  # C2: second differences far below magnitude


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 20), min_size=2, max_size=3),
    spacing=st.floats(1, 9),
    magnitude=st.floats(0, 0.2),
    seed=st.integers(0, 2**16),
)
def test_field_properties_any_shape(sizes, spacing, magnitude, seed):
    d = len(sizes)
    field = random_displacement((2, *sizes), spacing, magnitude, generator=gen(seed), dtype=torch.float64)
    assert field.shape == (2, *sizes, d)
    assert field.abs().max() <= magnitude * (1 + 1e-12)
    assert all(b.abs().max() == 0 for b in border(field, d))


@pytest.mark.parametrize("d", [2, 3])
def test_seeded_generator_reproduces(d):
    a = random_displacement(SHAPES[d], generator=gen(3))
    b = random_displacement(SHAPES[d], generator=gen(3))
    c = random_displacement(SHAPES[d], generator=gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # one field per sample
    x = torch.randn(SHAPES[d][0], 1, *SHAPES[d][1:])
    (w1,), f1 = RandomElastic(generator=gen(5))(x)
    (w2,), f2 = RandomElastic(generator=gen(5))(x)
    assert torch.equal(f1, f2) and torch.equal(w1, w2)
    elastic_aug = RandomElastic(spacing=(5, 7), magnitude=(0.01, 0.03), generator=gen(6))
    fields = [elastic_aug(x)[1] for _ in range(4)]  # a new field, spacing and magnitude per call
    assert all(f.abs().max() <= 0.03 for f in fields) and not torch.equal(fields[0], fields[1])


@pytest.mark.parametrize("d", [2, 3])
def test_zero_field_is_identity(d):
    shape = SHAPES[d]
    x = torch.rand(shape[0], 3, *shape[1:], generator=gen(16))
    labels = torch.randint(0, 5, (shape[0], 1, *shape[1:]), generator=gen(17))
    zero = torch.zeros(1, *shape[1:], d)
    x64 = x.double()
    for padding in ("zeros", "border", "reflection"):
        assert (warp(x64, zero, padding_mode=padding) - x64).abs().max() <= 1e-12
        # float32: grid_sample turns [-1, 1] coordinates into voxels in float32, ~1e-7 * size voxels off (3D on CPU:
        # size = D * H rows of the stacked volume)
        assert (warp(x, zero, padding_mode=padding) - x).abs().max() <= 1e-7 * (x.shape[-3] + 2) * (x.shape[-2] + 2)
        assert torch.equal(warp(x, zero, "nearest", padding), x)
        assert torch.equal(warp(labels, zero, "nearest", padding), labels)


@pytest.mark.parametrize("d", [2, 3])
def test_bilinear_matches_scipy_map_coordinates(d):
    """Oracle: output voxel p reads the input at p + field * (size - 1) / 2 (linear, edge-clamped)."""
    shape = SHAPES[d]
    x = torch.randn(shape[0], 2, *shape[1:], dtype=torch.float64, generator=gen(1))
    field = random_displacement(shape, spacing=4, magnitude=0.15, generator=gen(2), dtype=torch.float64)
    field[0] += 0.05  # plus a translation, so some reads fall outside and use the border
    out = warp(x, field).numpy()
    spatial = shape[1:]
    for b in range(shape[0]):
        coords = np.stack(
            [
                np.arange(s, dtype=np.float64).reshape([-1 if i == a else 1 for i in range(d)])
                + field[b, ..., d - 1 - a].numpy() * (s - 1) / 2
                for a, s in enumerate(spatial)
            ]
        )
        for c in range(2):
            expected = ndimage.map_coordinates(x[b, c].numpy(), coords, order=1, mode="nearest")
            np.testing.assert_allclose(out[b, c], expected, atol=1e-10)


def test_translation_matches_scipy_shift_in_the_interior():
    x = torch.randn(1, 1, 20, 22, dtype=torch.float64, generator=gen(6))
    shift = (1.5, -2.25)  # voxels along (H, W): output(p) = input(p + shift)
    field = torch.zeros(1, 20, 22, 2, dtype=torch.float64)
    field[..., 1] = shift[0] * 2 / 19
    field[..., 0] = shift[1] * 2 / 21
    expected = ndimage.shift(x[0, 0].numpy(), (-shift[0], -shift[1]), order=1)
    np.testing.assert_allclose(warp(x, field)[0, 0, 3:-3, 3:-3].numpy(), expected[3:-3, 3:-3], atol=1e-10)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_3d_stacked_cpu_path_equals_native_grid_sample(monkeypatch, padding):
    """On CPU, 3D warps sample the stacked volume in 2D; elsewhere they call 3D grid_sample: same values, gradients."""
    shape = (2, 6, 5, 7)
    x = torch.randn(shape[0], 2, *shape[1:], dtype=torch.float64, generator=gen(20), requires_grad=True)
    labels = torch.randint(0, 9, (shape[0], 1, *shape[1:]), generator=gen(21))
    field = random_displacement(shape, spacing=2, magnitude=0.5, generator=gen(22), dtype=torch.float64)
    field = (field + 0.2 * (torch.rand(field.shape, dtype=torch.float64, generator=gen(23)) - 0.5)).requires_grad_()
    field.data[1] += 0.4  # partly outside
    results = []
    for devices in (("cpu",), ()):
        monkeypatch.setattr(elastic, "_STACKED_3D_DEVICES", devices)
        out = warp(x, field, padding_mode=padding)
        gx, gf = torch.autograd.grad(out.pow(2).sum(), (x, field))
        results.append((out, gx, gf, warp(labels, field.detach(), "nearest", padding)))
    for stacked, native in zip(*results):
        torch.testing.assert_close(stacked, native, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_label_nearest_keeps_dtype_and_values_and_matches_grid_sample(d, padding):
    shape = SHAPES[d]
    field = random_displacement(shape, spacing=3, magnitude=0.4, generator=gen(7))
    field[1] -= 0.3  # reads far outside, to exercise the padding
    values = torch.tensor([0, 3, 7, 2**40])  # int64 beyond float32's exact range: sampled in float64
    labels = values[torch.randint(0, 4, (shape[0], 2, *shape[1:]), generator=gen(8))]
    for x in (labels, labels.to(torch.uint8), labels > 3, labels.to(torch.int32), labels % 5):
        out = warp(x, field, "nearest", padding)
        assert out.dtype == x.dtype and out.shape == x.shape
        allowed = torch.cat([x.unique(), torch.zeros(1, dtype=x.dtype)]) if padding == "zeros" else x.unique()
        assert torch.isin(out.long(), allowed.long()).all()
        # the oracle: grid_sample's own nearest (3D: its 3D kernel) in the dtype the labels are sampled in
        dtype = torch.float64 if x.dtype == torch.int64 and x.max() > 2**24 else torch.float32
        grid = _identity_grid(shape[1:], torch.device("cpu"), dtype) + field.to(dtype)
        reference = F.grid_sample(x.to(dtype), grid, mode="nearest", padding_mode=padding, align_corners=True)
        mismatch = (out.to(dtype) != reference).float().mean()
        assert mismatch <= (0 if d == 2 or dtype == torch.float64 else 2e-3)  # 3D float32: rare near-ties


@pytest.mark.parametrize("d", [2, 3])
def test_same_field_keeps_image_and_mask_aligned(d):
    size = 40 if d == 2 else 24
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * d, indexing="ij"))
    dist = (grid - (size - 1) / 2).norm(dim=0)
    radius = size / 4
    image = (radius - dist + 0.5).clamp(0, 1).expand(3, 1, *[size] * d)  # a sphere with a one-voxel soft edge
    mask = (dist < radius).expand(3, 1, *[size] * d)
    (image_t, mask_t), field = RandomElastic(spacing=5, magnitude=0.3, generator=gen(9))(image, mask)
    assert mask_t.dtype == torch.bool and image_t.dtype == torch.float32
    assert (mask_t != mask).float().mean() > 0.005  # the deformation is visible
    disagree = (image_t > 0.5) != mask_t
    assert disagree.float().mean() < 0.01
    pool = F.max_pool2d if d == 2 else F.max_pool3d
    edge = (pool(mask_t.float(), 3, 1, 1) != -pool(-mask_t.float(), 3, 1, 1)).bool()
    assert not (disagree & ~edge).any()  # they differ only where the mask changes within one voxel
    (other,), _ = RandomElastic(spacing=5, magnitude=0.3, generator=gen(99))(mask)  # control: another field
    assert ((image_t > 0.5) != other).float().mean() > 3 * disagree.float().mean()
    # a prediction warped later with the stored field lines up too
    assert torch.equal(warp(image, field) > 0.5, image_t > 0.5)


@pytest.mark.parametrize("shape", [(1, 2, 5, 6), (1, 2, 4, 3, 5)])  # batch 1: no thread pool per call
def test_gradcheck_through_warp(shape):
    """Bilinear/trilinear warps are differentiable w.r.t. the warped tensor (T(f(x)) in DS6's loss) and the field."""
    d = len(shape) - 2
    x = torch.randn(shape, dtype=torch.float64, generator=gen(10), requires_grad=True)
    smooth = random_displacement(
        (shape[0], *shape[2:]), spacing=2, magnitude=0.3, generator=gen(11), dtype=torch.float64
    )
    # for the field: generic sample points (a smooth field is 0 on the border, i.e. exactly on voxel centres, where
    # linear interpolation has a kink and only one-sided derivatives)
    generic = (torch.rand(shape[0], *shape[2:], d, dtype=torch.float64, generator=gen(12)) - 0.5).requires_grad_(True)
    for padding in ("border", "zeros", "reflection"):
        assert torch.autograd.gradcheck(lambda x, p=padding: warp(x, smooth, padding_mode=p), (x,))
        assert torch.autograd.gradcheck(lambda f, p=padding: warp(x.detach(), f, padding_mode=p), (generic,))


@pytest.mark.parametrize("d", [2, 3])
def test_ds6_consistency_loss_backpropagates_through_t_of_f_x(d):
    """DS6: loss = |sigmoid(f(T x)) - T(sigmoid(f(x)))|^2, gradients flow through both branches."""
    conv = (torch.nn.Conv2d if d == 2 else torch.nn.Conv3d)(1, 1, 3, padding=1).double()
    shape = SHAPES[d]
    x = torch.randn(shape[0], 1, *shape[1:], dtype=torch.float64, generator=gen(12))
    (x_t,), field = RandomElastic(magnitude=0.1, generator=gen(13))(x)
    branch = warp(torch.sigmoid(conv(x)), field)  # T(f(x))
    branch.sum().backward()
    grad_t_of_f = conv.weight.grad.clone()
    assert grad_t_of_f.abs().sum() > 0
    conv.zero_grad()
    loss = (torch.sigmoid(conv(x_t)) - warp(torch.sigmoid(conv(x)), field)).pow(2).mean()
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0


def test_warp_keeps_dtype_device_broadcasts_and_caches():
    x = torch.randn(1, 2, 8, 9).expand(3, 2, 8, 9)
    field = random_displacement((1, 8, 9), magnitude=0.1, generator=gen(14), dtype=torch.float64)
    out = warp(x, field)
    assert out.dtype == torch.float32 and out.shape == x.shape and out.device == x.device
    assert torch.allclose(out[0], out[2])  # batch-1 field broadcast: same warp for each sample
    assert _identity_grid((8, 9), x.device, torch.float32) is _identity_grid((8, 9), x.device, torch.float32)
    with torch.inference_mode():
        inference_out = warp(torch.randn(1, 1, 5, 7), torch.zeros(1, 5, 7, 2))
    assert inference_out.shape == (1, 1, 5, 7)
    y = torch.randn(1, 1, 5, 7, requires_grad=True)  # the grid cached in inference mode is usable with autograd
    warp(y, torch.zeros(1, 5, 7, 2)).sum().backward()
    assert torch.allclose(y.grad, torch.ones_like(y))


@pytest.mark.parametrize("d", [2, 3])
def test_grids_shared_per_field_follow_its_changes_and_lifetime(d):
    shape = SHAPES[d]
    x = torch.rand(shape[0], 1, *shape[1:], generator=gen(30))
    field = random_displacement(shape, magnitude=0.1, generator=gen(31))
    first = warp(x, field)
    assert any(entry[0]() is field for entry in elastic._SHARED.values())
    assert torch.equal(warp(x, field), first)  # reused grids, same result
    with torch.no_grad():
        field.mul_(-1)  # in place: the shared grids are stale and must be rebuilt
    assert torch.equal(warp(x, field), warp(x, field.clone()))
    assert not torch.equal(warp(x, field), first)
    with torch.inference_mode():  # grids built in inference mode are not reused outside it
        warp(x, field)
    y = x.clone().requires_grad_(True)
    warp(y, field).sum().backward()
    assert y.grad is not None
    field_id = id(field)
    del field
    gc.collect()
    assert not any(key[0] == field_id for key in elastic._SHARED)  # freed with the field


def test_elastic_deform_modes():
    x = torch.randn(2, 1, 10, 12)
    labels = torch.randint(0, 3, (2, 1, 10, 12))
    field = random_displacement((2, 10, 12), magnitude=0.1, generator=gen(15))
    image_t, labels_t = elastic_deform([x, labels], field)
    assert torch.equal(image_t, warp(x, field)) and torch.equal(labels_t, warp(labels, field, "nearest"))
    (nearest_image,) = elastic_deform([x], field, "nearest")
    assert torch.isin(nearest_image, x).all()


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: random_displacement((2, 16)), ConfigError, ["shape", "(2, 16)", "(B, H, W)"]),
        (lambda: random_displacement((2, 8, 8, 8, 8)), ConfigError, ["shape", "(B, D, H, W)"]),
        (lambda: random_displacement((2, 0, 8)), ConfigError, ["shape", "positive"]),
        (lambda: random_displacement((2, 8, 8), spacing=0), ConfigError, ["spacing", "> 0", "0"]),
        (lambda: random_displacement((2, 8, 8), magnitude=-0.1), ConfigError, ["magnitude", ">= 0", "-0.1"]),
        (lambda: random_displacement((2, 8, 8), dtype=torch.int64), ConfigError, ["dtype", "floating"]),
        (lambda: warp(torch.zeros(2, 8, 8), torch.zeros(2, 8, 2)), DataError, ["x", "(2, 8, 8)", "(B, C, H, W)"]),
        (
            lambda: warp(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 9, 2)),
            DataError,
            ["field", "(2, 8, 9, 2)", "(B or 1, 8, 8, 2)"],
        ),
        (lambda: warp(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8, 3)), DataError, ["field", "(2, 8, 8, 3)"]),
        (
            lambda: warp(torch.zeros(2, 1, 8, 8), torch.zeros(3, 8, 8, 2)),
            DataError,
            ["field", "(3, 8, 8, 2)", "B or 1"],
        ),
        (
            lambda: warp(torch.zeros(2, 1, 4, 8, 8), torch.zeros(2, 8, 8, 2)),
            DataError,
            ["field", "(2, 8, 8, 2)", "(B or 1, 4, 8, 8, 3)"],
        ),
        (
            lambda: warp(torch.zeros(1, 1, 8, 8), torch.zeros(1, 8, 8, 2, dtype=torch.long)),
            DataError,
            ["field", "int64"],
        ),
        (lambda: warp(torch.zeros(1, 1, 8, 8), torch.zeros(1, 8, 8, 2), "bicubic"), ConfigError, ["mode", "'bicubic'"]),
        (
            lambda: warp(torch.zeros(1, 1, 8, 8), torch.zeros(1, 8, 8, 2), padding_mode="wrap"),
            ConfigError,
            ["padding_mode", "'wrap'"],
        ),
        (
            lambda: warp(torch.zeros(1, 1, 8, 8, dtype=torch.long), torch.zeros(1, 8, 8, 2)),
            ConfigError,
            ["mode='bilinear'", "int64", "nearest"],
        ),
        (
            lambda: elastic_deform([torch.zeros(1, 1, 8, 8)], torch.zeros(1, 8, 8, 2), ["bilinear", "nearest"]),
            ConfigError,
            ["modes", "1", "2"],
        ),
        (lambda: RandomElastic(spacing=(7, 5)), ConfigError, ["spacing", "(7, 5)", "low <= high"]),
        (lambda: RandomElastic(magnitude=(-1, 0.1)), ConfigError, ["magnitude", "(-1, 0.1)"]),
        (
            lambda: RandomElastic()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9)),
            DataError,
            ["tensor 1", "(1, 1, 8, 9)", "(8, 8)"],
        ),
        (lambda: RandomElastic()(), ConfigError, ["at least one tensor"]),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))
