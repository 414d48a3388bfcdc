"""Batched views: shapes and dtypes (2D and 3D), inputs untouched, seeded draws, per-sample parameters, each
operation against its definition or a reference (torch.flip, scipy's gaussian_filter, exact crops of a ramp), the
FixMatch and SimCLR recipes, gradients, and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from labelwise.augment import (
    contrastive_views,
    cutout,
    gaussian_blur,
    gaussian_noise,
    intensity_jitter,
    random_flip,
    random_gamma,
    random_resized_crop,
    random_translate,
    strong_view,
    weak_view,
)
from labelwise.errors import ConfigError, DataError

SHAPES = {2: (3, 2, 12, 10), 3: (2, 2, 8, 9, 7)}
VIEW_SHAPES = {2: (8, 1, 32, 32), 3: (2, 1, 16, 16, 16)}
FUNCTIONS = {
    "random_flip": random_flip,
    "random_translate": random_translate,
    "random_resized_crop": random_resized_crop,
    "intensity_jitter": intensity_jitter,
    "random_gamma": random_gamma,
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "cutout": cutout,
    "weak_view": weak_view,
    "strong_view": strong_view,
    "contrastive_views": lambda x, generator=None: torch.cat(contrastive_views(x, generator=generator), 1),
}
DIFFERENTIABLE = [
    "random_flip",
    "random_translate",
    "random_resized_crop",
    "intensity_jitter",
    "gaussian_blur",
    "gaussian_noise",
    "random_gamma",
    "weak_view",
    "strong_view",
    "contrastive_views",
]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def image(shape, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """A smooth, positive, non-constant batch: random noise plus a ramp, offset so no sample is constant."""
    x = torch.randn(shape, generator=gen(seed), dtype=torch.float64)
    ramp = torch.linspace(0, 3, shape[-1], dtype=torch.float64)
    return (x + ramp + 5).to(dtype)


def same_image(shape) -> torch.Tensor:
    """One sample repeated B times: any difference between output samples comes from per-sample parameters."""
    return image((1, *shape[1:])).expand(shape).contiguous()


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_finite_and_input_untouched(name, d, dtype):
    x = image(SHAPES[d], dtype=dtype)
    before = x.clone()
    out = FUNCTIONS[name](x, generator=gen())
    channels = 2 * x.shape[1] if name == "contrastive_views" else x.shape[1]
    assert out.shape == (x.shape[0], channels, *x.shape[2:]) and out.dtype == dtype
    assert torch.isfinite(out).all()
    assert torch.equal(x, before)
    assert out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_seeded_reproducible_and_per_sample(name, d):
    x = same_image(SHAPES[d])
    fn = FUNCTIONS[name]
    a, b, c = fn(x, generator=gen(1)), fn(x, generator=gen(1)), fn(x, generator=gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    if name not in ("random_flip", "weak_view"):  # a flip (p = 0.5) may well repeat over 2 or 3 samples
        assert not torch.equal(a[0], a[1])  # one set of parameters per sample
    torch.manual_seed(0)
    first = fn(x)
    torch.manual_seed(0)
    assert torch.equal(first, fn(x))  # without a generator: torch's global one


def test_half_precision_kept():
    x = image(SHAPES[2], dtype=torch.bfloat16)
    for name, fn in FUNCTIONS.items():
        out = fn(x, generator=gen())
        assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all(), name


@pytest.mark.parametrize("d", [2, 3])
def test_flip_p1_p0_and_axes(d):
    x = image(SHAPES[d])
    spatial = list(range(2, x.ndim))
    assert torch.equal(random_flip(x, p=1.0, generator=gen()), torch.flip(x, spatial))
    assert torch.equal(random_flip(x, p=0.0, generator=gen()), x)
    assert torch.equal(random_flip(x, p=1.0, axes=(-1,), generator=gen()), torch.flip(x, [x.ndim - 1]))
    assert torch.equal(random_flip(x, p=1.0, axes=(0,), generator=gen()), torch.flip(x, [2]))
    ints = torch.arange(x.numel()).view(x.shape)  # any dtype: labels can be flipped with the same seed
    assert torch.equal(random_flip(ints, p=1.0, generator=gen()), torch.flip(ints, spatial))


def test_flip_each_sample_each_axis_with_probability_p():
    x = image((400, 1, 4, 5))
    out = random_flip(x, p=0.3, generator=gen())
    flipped_h = (out == x.flip(2)).flatten(1).all(1) & ~(out == x).flatten(1).all(1)
    flipped_w = (out == x.flip(3)).flatten(1).all(1)
    flipped_hw = (out == x.flip(2, 3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert int(flipped_h.sum() + flipped_w.sum() + flipped_hw.sum() + kept.sum()) == 400
    assert abs(kept.float().mean().item() - 0.7**2) < 0.08
    assert abs(flipped_hw.float().mean().item() - 0.3**2) < 0.05


@pytest.mark.parametrize("d", [2, 3])
def test_translate_zero_is_identity_and_whole_shifts_move_content(d):
    x = image(SHAPES[d])
    torch.testing.assert_close(random_translate(x, max_shift=0.0, generator=gen()), x, atol=1e-5, rtol=0)
    # a point in the middle of a 40-wide 2D image moves by at most max_shift * 40 = 10 pixels along each axis
    point = torch.zeros(64, 1, 40, 40)
    point[:, :, 20, 20] = 1
    out = random_translate(point, max_shift=0.25, generator=gen())
    mass = out.sum((2, 3))
    assert torch.allclose(mass, torch.ones_like(mass), atol=1e-5)  # still inside: bilinear keeps the mass
    grid = torch.arange(40.0)
    rows = (out.sum(3) * grid).sum(2) - 20
    cols = (out.sum(2) * grid).sum(2) - 20
    assert rows.abs().max() <= 10 + 1e-4 and cols.abs().max() <= 10 + 1e-4
    assert rows.abs().max() > 5 and cols.abs().max() > 5 and (rows > 0).any() and (rows < 0).any()


@pytest.mark.parametrize("d", [2, 3])
def test_resized_crop_identity_and_size(d):
    shape = (3, 2, 12, 12) if d == 2 else (2, 2, 8, 8, 8)
    x = image(shape)
    full = random_resized_crop(x, scale=(1, 1), ratio=(1, 1), generator=gen())
    torch.testing.assert_close(full, x, atol=1e-5, rtol=0)
    assert random_resized_crop(x, size=5, generator=gen()).shape == (*shape[:2], *(5,) * d)
    sizes = (6, 7) if d == 2 else (4, 6, 7)
    assert random_resized_crop(x, size=sizes, generator=gen()).shape == (*shape[:2], *sizes)


def test_resized_crop_scale_and_ratio_on_a_ramp():
    """Bilinear sampling reproduces a linear ramp exactly: the slope of the crop is the box's side fraction."""
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    ramp = torch.stack([rows, cols])[None].expand(6, 2, 16, 16).double()
    out = random_resized_crop(ramp, scale=(0.25, 0.25), ratio=(1, 1), generator=gen())
    assert torch.allclose(out[:, 0].diff(dim=1), torch.full((), 0.5, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(out[:, 1].diff(dim=2), torch.full((), 0.5, dtype=torch.float64), atol=1e-9)
    assert out.amin() >= 0 and out.amax() <= 15  # inside the image
    assert len({round(v, 6) for v in out[:, 0, 0, 0].tolist()}) > 1  # boxes at different places per sample
    wide = random_resized_crop(ramp, scale=(0.25, 0.25), ratio=(4, 4), generator=gen())  # (1/4, 1) of (H, W)
    assert torch.allclose(wide[:, 0].diff(dim=1), torch.full((), 0.25, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(wide[:, 1].diff(dim=2), torch.full((), 1.0, dtype=torch.float64), atol=1e-9)
    clamped = random_resized_crop(ramp, scale=(0.5, 0.5), ratio=(4, 4), generator=gen())  # W fraction sqrt(2) -> 1
    assert torch.allclose(clamped[:, 1].diff(dim=2), torch.full((), 1.0, dtype=torch.float64), atol=1e-9)
    volume = torch.arange(8.0, dtype=torch.float64).view(1, 1, 1, 1, 8).expand(2, 1, 8, 8, 8)
    crop3 = random_resized_crop(volume, scale=(1 / 8, 1 / 8), ratio=(4, 4), generator=gen())  # W: 0.5 * 2
    assert torch.allclose(crop3.diff(dim=4), torch.full((), 1.0, dtype=torch.float64), atol=1e-9)


def test_intensity_jitter_zero_is_identity_and_bounds():
    x = image((64, 2, 8, 8)) * torch.logspace(-2, 2, 64).view(64, 1, 1, 1)  # scales 0.01 .. 100
    torch.testing.assert_close(intensity_jitter(x, brightness=0, contrast=0, generator=gen()), x, atol=1e-5, rtol=1e-6)
    std, mean = torch.std_mean(x.flatten(1).double(), 1, correction=0)
    shifted = intensity_jitter(x, brightness=0.3, contrast=0, generator=gen()).double()
    offset = (shifted - x.double()).flatten(1)
    assert torch.allclose(offset, offset[:, :1].expand_as(offset), atol=1e-4 * std.max().item())  # one per sample
    b = offset[:, 0] / std
    assert b.abs().max() <= 0.3 + 1e-4 and b.min() < -0.15 and b.max() > 0.15
    scaled = intensity_jitter(x, brightness=0, contrast=0.5, generator=gen()).double()
    new_std, new_mean = torch.std_mean(scaled.flatten(1), 1, correction=0)
    ratio = new_std / std
    assert torch.allclose(new_mean, mean, rtol=1e-5)
    assert ratio.min() >= 0.5 - 1e-5 and ratio.max() <= 1.5 + 1e-5 and ratio.min() < 0.8 and ratio.max() > 1.2


@pytest.mark.parametrize("d", [2, 3])
def test_gamma_range_constant_and_formula(d):
    x = image(SHAPES[d]) * 3 - 20
    x[0] = 7.5  # a constant sample
    out = random_gamma(x, generator=gen())
    lo = x.flatten(1).amin(1).view(-1, *(1,) * (d + 1))
    hi = x.flatten(1).amax(1).view(-1, *(1,) * (d + 1))
    assert torch.isfinite(out).all() and (out >= lo).all() and (out <= hi).all()
    assert torch.equal(out[0], x[0])
    torch.testing.assert_close(random_gamma(x, gamma=1.0, generator=gen()), x, atol=1e-5, rtol=1e-6)
    squared = random_gamma(x[1:], gamma=2.0, generator=gen())
    expected = lo[1:] + (hi[1:] - lo[1:]) * ((x[1:] - lo[1:]) / (hi[1:] - lo[1:])) ** 2
    torch.testing.assert_close(squared, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(squared, x[1:], atol=1e-2)


def test_gaussian_noise_relative_std():
    x = image((4, 2, 32, 32)) * torch.tensor([0.01, 1.0, 10.0, 1000.0]).view(4, 1, 1, 1)
    out = gaussian_noise(x, std=0.1, generator=gen())
    relative = (out - x).flatten(1).std(1) / x.flatten(1).std(1, correction=0)
    assert torch.allclose(relative, torch.full((4,), 0.1), rtol=0.1)
    assert abs((out - x).mean().item()) < 0.1 * x.std().item()
    assert torch.equal(gaussian_noise(x, std=0.0, generator=gen()), x)


@pytest.mark.parametrize("d", [2, 3])
def test_blur_matches_scipy_for_a_fixed_sigma(d):
    x = image(SHAPES[d], dtype=torch.float64)
    for sigma in (0.6, 1.7):
        out = gaussian_blur(x, sigma=sigma, generator=gen())
        reference = ndimage.gaussian_filter(x.numpy(), (0, 0, *(sigma,) * d), mode="nearest", truncate=3.0)
        np.testing.assert_allclose(out.numpy(), reference, atol=1e-10)


@pytest.mark.parametrize("d", [2, 3])
def test_blur_keeps_constants_smooths_noise_and_differs_per_sample(d):
    constant = torch.full(SHAPES[d], 4.25)
    torch.testing.assert_close(gaussian_blur(constant, generator=gen()), constant, atol=1e-5, rtol=0)
    noise = torch.randn(VIEW_SHAPES[d], generator=gen(3))
    blurred = gaussian_blur(noise, sigma=(1.0, 2.0), generator=gen())
    assert (blurred.flatten(1).var(1) < 0.25 * noise.flatten(1).var(1)).all()
    torch.testing.assert_close(blurred.mean(), noise.mean(), atol=0.02, rtol=0)
    repeated = noise[:1].expand(VIEW_SHAPES[d]).contiguous()
    variances = gaussian_blur(repeated, sigma=(0.1, 2.0), generator=gen()).flatten(1).var(1)
    assert variances.max() > 1.5 * variances.min()  # a sigma per sample


def test_cutout_box_fraction_2d_and_3d():
    ones = torch.ones(256, 1, 32, 32)
    out = cutout(ones, size=0.5, generator=gen())
    zeros = out == 0
    counts = zeros.flatten(1).sum(1)
    rows, cols = zeros.any(3).squeeze(1), zeros.any(2).squeeze(1)  # (B, 32) extents
    assert torch.equal(counts, rows.sum(1) * cols.sum(1))  # one axis-aligned box per sample
    assert counts.max() == 256  # 16 x 16 = 25% when the box lies inside
    inside = ~(rows[:, 0] | rows[:, -1] | cols[:, 0] | cols[:, -1])
    assert inside.sum() > 20 and (counts[inside] == 256).all()
    # boxes of 16 starting at c - 8, c uniform over 0..31, clipped: the mean covered length per axis
    length = np.mean([min(c + 8, 32) - max(c - 8, 0) for c in range(32)])
    assert abs(counts.float().mean().item() / 1024 - (length / 32) ** 2) < 0.02
    volume = torch.ones(64, 2, 16, 16, 16)
    boxed = cutout(volume, size=0.5, value=-1.0, generator=gen())
    assert torch.equal(boxed[:, 0], boxed[:, 1])  # the same box in every channel
    assert (boxed == -1).flatten(1).sum(1).max() == 2 * 8**3  # 12.5% of the volume
    assert torch.equal(cutout(volume, count=0, generator=gen()), volume)
    assert torch.equal(cutout(volume, size=0.0, generator=gen()), volume)
    many = cutout(ones, size=0.25, count=3, generator=gen())
    assert ((many == 0).flatten(1).sum(1) > 64).any()  # several boxes per sample


def test_weak_view_is_a_last_axis_flip_and_a_translation():
    x = image((64, 1, 16, 16))
    out = weak_view(x, generator=gen())
    g = gen()
    flipped = random_flip(x, 0.5, (-1,), g)
    torch.testing.assert_close(out, random_translate(flipped, 0.125, g))
    assert not torch.equal(flipped, x) and (flipped == x).flatten(1).all(1).any()


@pytest.mark.parametrize("d", [2, 3])
def test_views_finite_on_cpu_and_strong_starts_from_weak(d):
    x = torch.randn(VIEW_SHAPES[d], generator=gen(5))
    weak = weak_view(x, generator=gen())
    strong = strong_view(x, generator=gen())
    first, second = contrastive_views(x, generator=gen())
    for view in (weak, strong, first, second):
        assert view.shape == x.shape and torch.isfinite(view).all()
    assert not torch.equal(first, second)
    # with magnitude 0 every strong operation and the cutout are (numerically) the identity: the weak view remains
    torch.testing.assert_close(strong_view(x, magnitude=0.0, generator=gen()), weak, atol=1e-4, rtol=0)
    assert not torch.allclose(strong, weak, atol=1e-2)
    small = contrastive_views(x, size=8, generator=gen())
    assert all(v.shape == (*x.shape[:2], *(8,) * d) for v in small)


def test_strong_view_cutout_and_op_count():
    x = image((32, 1, 16, 16))
    full = strong_view(x, n_ops=0, magnitude=1.0, generator=gen())  # weak view, then an 8 x 8 box
    mean = weak_view(x, generator=gen()).flatten(1).mean(1)
    filled = (full == mean.view(-1, 1, 1, 1)).flatten(1).sum(1)
    assert filled.max() == 64 and (filled >= 1).all()


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradients_flow(name, d):
    x = image(VIEW_SHAPES[d] if "view" in name else SHAPES[d]).requires_grad_()
    out = FUNCTIONS[name](x, generator=gen())
    weights = torch.randn(out.shape, generator=gen(9))
    (out * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_translate_gradient_is_the_adjoint():
    x = image((2, 1, 6, 7), dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: random_translate(v, 0.2, generator=gen()), (x,))
    assert torch.autograd.gradcheck(lambda v: gaussian_blur(v, (0.5, 1.5), generator=gen()), (x,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_same_views_on_gpu():
    x = image(VIEW_SHAPES[3])
    for name, fn in FUNCTIONS.items():
        torch.testing.assert_close(
            fn(x.cuda(), generator=gen()).cpu(), fn(x, generator=gen()), atol=1e-3, rtol=1e-3, msg=name
        )


def test_errors():
    with pytest.raises(DataError, match="B, C, H, W"):
        random_flip(torch.zeros(4, 4))
    with pytest.raises(DataError, match="floating"):
        gaussian_blur(torch.zeros(1, 1, 4, 4, dtype=torch.long))
    x = torch.zeros(1, 1, 4, 4)
    for call in (
        lambda: random_flip(x, p=1.5),
        lambda: random_flip(x, axes=(2,)),
        lambda: random_flip(x, axes=(0, -2)),
        lambda: random_translate(x, max_shift=-0.1),
        lambda: random_resized_crop(x, scale=(0, 1)),
        lambda: random_resized_crop(x, ratio=(2, 1)),
        lambda: random_resized_crop(x, size=(4, 4, 4)),
        lambda: intensity_jitter(x, contrast=1.5),
        lambda: random_gamma(x, gamma=(0, 1)),
        lambda: gaussian_noise(x, std=math.nan),
        lambda: gaussian_blur(x, sigma=0),
        lambda: cutout(x, count=-1),
        lambda: cutout(x, size=2),
        lambda: strong_view(x, magnitude=2),
        lambda: strong_view(x, n_ops=1.5),
    ):
        with pytest.raises(ConfigError):
            call()


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_separable_resample_equals_grid_sample(d, padding):
    """The crops and translations interpolate axis by axis; the oracle is grid_sample on the same affine grid."""
    from labelwise.augment.views import _resample

    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 2, *(9, 12, 10)[-d:], generator=g, dtype=torch.float64, requires_grad=True)
    scale = 0.2 + 1.3 * torch.rand(4, d, generator=g, dtype=torch.float64)  # some boxes reach outside the image
    centre = 1.2 * torch.rand(4, d, generator=g, dtype=torch.float64) - 0.6
    size = (7, 11, 5)[-d:]
    theta = torch.cat([torch.diag_embed(scale.flip(-1)), centre.flip(-1).unsqueeze(-1)], -1)
    grid = torch.nn.functional.affine_grid(theta, [4, 2, *size], align_corners=False)
    expected = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    got = _resample(x, scale, centre, size, padding)
    assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-12)
    weights = torch.rand(expected.shape, generator=g, dtype=torch.float64)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), x)
    (grad_got,) = torch.autograd.grad((got * weights).sum(), x)
    assert torch.allclose(grad_got, grad_expected, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3])
def test_negative_crop_scale_is_a_flip_of_the_crop(d):
    """contrastive_views flips by reading an axis of the crop backwards: the same as flipping the cropped image."""
    from labelwise.augment.views import _resample

    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 1, *(8, 10, 12)[-d:], generator=g)
    scale, centre = 0.3 + 0.7 * torch.rand(3, d, generator=g), 0.4 * torch.rand(3, d, generator=g) - 0.2
    size = (6, 7, 5)[-d:]
    sign = torch.ones(d)
    sign[0] = -1
    flipped = _resample(x, scale * sign, centre, size, "border")
    assert torch.allclose(flipped, _resample(x, scale, centre, size, "border").flip(2), atol=1e-6)
