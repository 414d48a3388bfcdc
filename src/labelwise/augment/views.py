"""Batched, on-device random augmentations for semi-supervised and self-supervised training, in pure torch: every
function takes a batch of images ``(B, C, H, W)`` or volumes ``(B, C, D, H, W)``, draws its own random parameters
for each sample in one vectorised call (no loop over samples), and returns a new tensor of the same shape and dtype
(floating; half precision is computed in float32), leaving its input untouched. Random numbers come from
``generator`` on the generator's own device, so a CPU generator gives the same parameters whatever device ``x`` is
on (the same views on CPU and GPU up to floating-point rounding), or, without one, from torch's global generator on
``x``'s device. Geometric and intensity operations that are differentiable in ``x`` stay so (flip, translate, crop,
jitter, gamma, noise, blur, cutout outside its boxes). The view recipes follow FixMatch (Sohn et al. 2020):
:func:`weak_view` (flip, translate) and :func:`strong_view` (RandAugment-like random operations, then Cutout), and
SimCLR (Chen et al. 2020): :func:`contrastive_views`, two independent crop-flip-jitter-gamma-blur views of each sample,
without SimCLR's colour operations, for grey-level and medical images with any number of channels."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from labelwise.errors import ConfigError, DataError

__all__ = [
    "contrastive_views",
    "cutout",
    "gaussian_blur",
    "gaussian_noise",
    "intensity_jitter",
    "random_flip",
    "random_gamma",
    "random_resized_crop",
    "random_translate",
    "strong_view",
    "weak_view",
]

_TRUNCATE = 3.0  # gaussian_blur's kernel radius, in units of the largest sigma (scipy's truncate; scipy uses 4)
_STRONG_OPS = 6  # strong_view's choices: jitter, gamma, noise, blur, translate, identity


def random_flip(
    x: Tensor, p: float = 0.5, axes: Sequence[int] | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """``x`` ``(B, C, *spatial)`` (any dtype) with each sample flipped along each of ``axes`` (spatial-axis indices
    0..d-1, negative allowed; default: all) independently with probability ``p``: same shape and dtype."""
    _check_x(x, floating=False)
    _check_number("p", p, 0, 1)
    spatial_axes = _spatial_axes(axes, x.ndim - 2)
    flips = _rand(generator, (x.shape[0], len(spatial_axes)), x.device) < p
    out = x
    for k, axis in enumerate(spatial_axes):
        out = torch.where(_per_sample(flips[:, k], x.ndim), out.flip(axis + 2), out)
    return out if out is not x else x.clone()


def random_translate(x: Tensor, max_shift: float = 0.125, generator: torch.Generator | None = None) -> Tensor:
    """``x`` ``(B, C, *spatial)`` shifted per sample along each spatial axis by a uniform fraction of that side in
    [-max_shift, max_shift] (sub-voxel: bilinear, trilinear in 3D; zeros shifted in): same shape and dtype."""
    _check_x(x)
    _check_number("max_shift", max_shift, 0)
    y = _work(x)
    shift = _uniform(generator, (x.shape[0], x.ndim - 2), -max_shift, max_shift, y)  # fractions of each side
    # output(p) = input(p - shift): the [-1, 1] coordinates span a side twice
    return _resample(y, torch.ones_like(shift), -2 * shift, tuple(x.shape[2:]), "zeros").to(x.dtype)


def random_resized_crop(
    x: Tensor,
    size: int | Sequence[int] | None = None,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """``x`` ``(B, C, *spatial)`` -> ``(B, C, *size)`` (default: spatial): per sample, a box holding a uniform
    fraction in ``scale`` of the image's area (volume) at a log-uniform aspect ``ratio``, placed uniformly inside,
    resized by bilinear (trilinear) interpolation for the whole batch at once, without antialiasing.

    The ratio is the box's width/height relative to the image's (torchvision's ratio on square images): box side
    fractions are ``(sqrt(s/r), sqrt(s*r))`` for (H, W); in 3D the ratio applies to the in-plane (H, W) pair and all
    three get the cube root of the scale, ``s^(1/3) * (1, 1/sqrt(r), sqrt(r))`` for (D, H, W). A side fraction
    above 1 is clamped to 1 (the box then holds less than ``s``)."""
    _check_x(x)
    y = _work(x)
    fractions, centre = _crop_box(y, scale, ratio, generator)
    return _resample(y, fractions, centre, _out_size(size, tuple(x.shape[2:])), "border").to(x.dtype)


def intensity_jitter(
    x: Tensor, brightness: float = 0.4, contrast: float = 0.4, generator: torch.Generator | None = None
) -> Tensor:
    """``x`` ``(B, C, *spatial)`` -> ``(x - m) * c + m + b * s`` per sample (one c and b for all its channels),
    ``m``, ``s``: the sample's mean and std over channels and space, ``c ~ U(1 - contrast, 1 + contrast)``,
    ``b ~ U(-brightness, brightness)`` (brightness in units of the sample's std): same shape and dtype."""
    _check_x(x)
    _check_number("brightness", brightness, 0)
    _check_number("contrast", contrast, 0, 1)
    y = _work(x)
    u = _uniform(generator, (x.shape[0], 2), -1, 1, y)
    c = _per_sample(1 + contrast * u[:, 0], x.ndim)
    b = _per_sample(brightness * u[:, 1], x.ndim)
    std, mean = _stats(y)
    return ((y - mean) * c + mean + b * std).to(x.dtype)


def random_gamma(
    x: Tensor, gamma: float | tuple[float, float] = (0.7, 1.5), generator: torch.Generator | None = None
) -> Tensor:
    """``x`` ``(B, C, *spatial)`` -> ``lo + (hi - lo) * ((x - lo) / (hi - lo)) ** g`` per sample, ``lo``/``hi`` the
    sample's min/max over channels and space, ``g ~ U(gamma)``: same shape and dtype, values kept in [lo, hi],
    constant samples unchanged."""
    _check_x(x)
    low, high = _interval("gamma", gamma, 0, math.inf)
    y = _work(x)
    g = _per_sample(_uniform(generator, (x.shape[0],), low, high, y), x.ndim)
    flat = y.flatten(1)
    lo, hi = (_per_sample(v, x.ndim) for v in (flat.amin(1), flat.amax(1)))
    span = hi - lo
    unit = ((y - lo) / torch.where(span > 0, span, torch.ones_like(span))).clamp(0, 1)
    positive = unit > 0  # 0 ** g is 0, with a finite (zero) gradient instead of g * 0 ** (g - 1)
    powered = torch.where(positive, torch.where(positive, unit, torch.ones_like(unit)) ** g, torch.zeros_like(unit))
    return torch.clamp(lo + powered * span, lo, hi).to(x.dtype)


def gaussian_noise(x: Tensor, std: float = 0.1, generator: torch.Generator | None = None) -> Tensor:
    """``x`` ``(B, C, *spatial)`` plus i.i.d. Gaussian noise of std ``std`` times the sample's std (over channels and
    space, not differentiated), so the level is scale-free: same shape and dtype."""
    _check_x(x)
    _check_number("std", std, 0)
    y = _work(x)
    level = _stats(y)[0].detach() * std
    device = generator.device if generator is not None else x.device
    noise = torch.randn(y.shape, generator=generator, device=device, dtype=y.dtype).to(x.device)
    return (y + noise * level).to(x.dtype)


def gaussian_blur(
    x: Tensor, sigma: float | tuple[float, float] = (0.1, 2.0), generator: torch.Generator | None = None
) -> Tensor:
    """``x`` ``(B, C, *spatial)`` blurred per sample by an isotropic Gaussian of std ``s ~ U(sigma)`` voxels (one per
    sample, all channels): separable, one grouped conv per spatial axis over the B·C planes, kernel radius
    ``int(3 * max(sigma) + 0.5)``, replicated borders (scipy's ``gaussian_filter(mode="nearest", truncate=3)``)."""
    _check_x(x)
    low, high = _interval("sigma", sigma, 0, math.inf)
    y = _work(x)
    b, c, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
    dims = len(spatial)
    s = _uniform(generator, (b, 1), low, high, y)
    radius = int(_TRUNCATE * high + 0.5)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=y.dtype)
    kernel = torch.exp(-0.5 * (offsets / s) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B·C, 2·radius + 1)
    conv = F.conv2d if dims == 2 else F.conv3d
    out = y.reshape(1, b * c, *spatial)
    for axis in range(dims):
        pad = [0] * (2 * dims)
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius  # F.pad lists the last axis first
        weight = kernel.view(b * c, 1, *(-1 if j == axis else 1 for j in range(dims)))
        out = conv(F.pad(out, pad, mode="replicate"), weight, groups=b * c)
    return out.view(y.shape).to(x.dtype)


def cutout(
    x: Tensor, size: float = 0.25, count: int = 1, value: float | Tensor = 0.0, generator: torch.Generator | None = None
) -> Tensor:
    """``x`` ``(B, C, *spatial)`` (any dtype) with, per sample, ``count`` boxes of ``round(size * side)`` voxels
    along each side, centred on uniformly drawn voxels and clipped at the border, set to ``value`` (a number or a
    tensor broadcastable to ``x``, e.g. ``(B, 1, 1, 1)``) in all channels: same shape and dtype."""
    _check_x(x, floating=False)
    _check_number("size", size, 0, 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ConfigError(f"count must be an integer >= 0 (boxes per sample), got {count!r}")
    b, spatial = x.shape[0], tuple(x.shape[2:])
    dims = len(spatial)
    u = _rand(generator, (b, count, dims), x.device)
    mask = torch.ones((b, count, *(1,) * dims), dtype=torch.bool, device=x.device)
    for axis, n in enumerate(spatial):
        side = round(size * n)
        start = (u[..., axis] * n).floor().clamp(max=n - 1).long().unsqueeze(-1) - side // 2  # (B, count, 1)
        index = torch.arange(n, device=x.device)
        inside = (index >= start) & (index < start + side)  # (B, count, n)
        mask = mask & inside.view(b, count, *(n if j == axis else 1 for j in range(dims)))
    mask = mask.any(1, keepdim=True)  # (B, 1, *spatial)
    return torch.where(mask, torch.as_tensor(value, dtype=x.dtype, device=x.device), x)


def weak_view(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """FixMatch's weak augmentation of ``x`` ``(B, C, *spatial)``: a flip along the last spatial axis with
    probability 0.5, then :func:`random_translate` by up to 12.5% of each side: same shape and dtype."""
    _check_x(x)
    return random_translate(random_flip(x, 0.5, (-1,), generator), 0.125, generator)


def strong_view(x: Tensor, n_ops: int = 2, magnitude: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """FixMatch's strong augmentation, RandAugment-like, of ``x`` ``(B, C, *spatial)``: same shape and dtype.

    :func:`weak_view`, then ``n_ops`` rounds in which each sample takes one operation drawn uniformly from
    intensity_jitter (brightness = contrast = 0.5·m), random_gamma (gamma in [1/(1+m), 1+m]), gaussian_noise
    (std 0.2·m), gaussian_blur (sigma in [0.1, 0.1+1.9·m]), random_translate (max_shift 0.4·m) and identity, m =
    ``magnitude`` in [0, 1] (every operation is computed for the whole batch, then picked per sample), then one
    :func:`cutout` box of side 0.5·m filled with the sample's mean (m = 1: FixMatch's largest, half the side)."""
    _check_x(x)
    if not isinstance(n_ops, int) or isinstance(n_ops, bool) or n_ops < 0:
        raise ConfigError(f"n_ops must be an integer >= 0 (operations per sample), got {n_ops!r}")
    _check_number("magnitude", magnitude, 0, 1)
    m = float(magnitude)
    ops: tuple[Callable[[Tensor], Tensor], ...] = (
        lambda v: intensity_jitter(v, 0.5 * m, 0.5 * m, generator),
        lambda v: random_gamma(v, (1 / (1 + m), 1 + m), generator),
        lambda v: gaussian_noise(v, 0.2 * m, generator),
        lambda v: gaussian_blur(v, (0.1, 0.1 + 1.9 * m), generator),
        lambda v: random_translate(v, 0.4 * m, generator),
    )  # the sixth choice, identity, keeps the sample as it is
    out = weak_view(x, generator)
    draw_device = generator.device if generator is not None else x.device
    for _ in range(n_ops):
        choice = torch.randint(0, _STRONG_OPS, (x.shape[0],), generator=generator, device=draw_device).to(x.device)
        current = out
        for k, op in enumerate(ops):
            out = torch.where(_per_sample(choice == k, x.ndim), op(current), out)
    fill = _work(out).flatten(1).mean(1).detach().view(-1, *(1,) * (x.ndim - 1))
    return cutout(out, 0.5 * m, 1, fill.to(out.dtype), generator)


def contrastive_views(
    x: Tensor, size: int | Sequence[int] | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Two SimCLR-like views of ``x`` ``(B, C, *spatial)``, each ``(B, C, *size)`` (default: spatial): independently,
    :func:`random_resized_crop`, :func:`random_flip` (all spatial axes; done by the crop's resampling, which reads
    a flipped axis backwards), :func:`intensity_jitter`, then per sample with probability 0.5 :func:`random_gamma`
    and with probability 0.5 :func:`gaussian_blur` (default settings; computed for the chosen samples only)."""
    _check_x(x)
    return _contrastive_view(x, size, generator), _contrastive_view(x, size, generator)


# ---------------------------------------------------------------------------------------------------------- helpers


def _crop_box(
    y: Tensor, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """:func:`random_resized_crop`'s boxes: side fractions and centres ``(B, d)`` in [-1, 1] units."""
    low, high = _interval("scale", scale, 0, 1)
    r_low, r_high = _interval("ratio", ratio, 0, math.inf)
    dims = y.ndim - 2
    u = _rand(generator, (y.shape[0], 2 + dims), y.device, y.dtype)
    area = low + (high - low) * u[:, 0]
    root_ratio = torch.exp(0.5 * (math.log(r_low) + (math.log(r_high) - math.log(r_low)) * u[:, 1]))
    if dims == 2:
        side = area.sqrt()
        fractions = torch.stack([side / root_ratio, side * root_ratio], 1)
    else:
        side = area.pow(1 / 3)
        fractions = torch.stack([side, side / root_ratio, side * root_ratio], 1)
    fractions = fractions.clamp(max=1)
    return fractions, (2 * u[:, 2:] - 1) * (1 - fractions)  # the box's centre, the box inside the image


def _contrastive_view(x: Tensor, size: int | Sequence[int] | None, generator: torch.Generator | None) -> Tensor:
    y = _work(x)
    fractions, centre = _crop_box(y, (0.2, 1.0), (3 / 4, 4 / 3), generator)
    # random_flip of every axis with p 0.5, folded into the crop: a flipped axis reads its box backwards
    flips = _rand(generator, tuple(fractions.shape), y.device, y.dtype) < 0.5
    view = _resample(
        y, torch.where(flips, -fractions, fractions), centre, _out_size(size, tuple(x.shape[2:])), "border"
    ).to(x.dtype)
    view = intensity_jitter(view, generator=generator)
    view = _sometimes(view, lambda v: random_gamma(v, generator=generator), 0.5, generator)
    return _sometimes(view, lambda v: gaussian_blur(v, generator=generator), 0.5, generator)


def _sometimes(x: Tensor, op: Callable[[Tensor], Tensor], p: float, generator: torch.Generator | None) -> Tensor:
    """``op`` applied to a random fraction ``p`` of the samples (only those are computed), the others kept."""
    chosen = torch.nonzero(_rand(generator, (x.shape[0],), x.device) < p).flatten()
    return x.index_copy(0, chosen, op(x[chosen])) if len(chosen) else x


def _rand(
    generator: torch.Generator | None, shape: tuple[int, ...], device: torch.device, dtype: torch.dtype = torch.float32
) -> Tensor:
    """U[0, 1) ``shape``, drawn in float32 on the generator's device (without one: on ``device``), moved to
    ``device`` and ``dtype``: a CPU generator gives the same numbers for tensors on any device."""
    draw_device = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=draw_device, dtype=torch.float32)
    return u.to(device=device, dtype=dtype)


def _uniform(
    generator: torch.Generator | None, shape: tuple[int, ...], low: float, high: float, like: Tensor
) -> Tensor:
    """U[low, high) ``shape`` on ``like``'s device and dtype."""
    return low + (high - low) * _rand(generator, shape, like.device, like.dtype)


def _per_sample(values: Tensor, ndim: int) -> Tensor:
    """``(B,)`` -> ``(B, 1, ..., 1)`` with ``ndim`` axes, to broadcast against a batch."""
    return values.view(-1, *(1,) * (ndim - 1))


def _stats(y: Tensor) -> tuple[Tensor, Tensor]:
    """Each sample's (std, mean) over channels and space (population std), shaped ``(B, 1, ..., 1)``."""
    std, mean = torch.std_mean(y.flatten(1), dim=1, correction=0)
    return _per_sample(std, y.ndim), _per_sample(mean, y.ndim)


def _work(x: Tensor) -> Tensor:
    """``x`` in a dtype the computations take: float32 for half precision, else as it is."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _resample(y: Tensor, scale: Tensor, centre: Tensor, size: tuple[int, ...], padding_mode: str) -> Tensor:
    """``y`` ``(B, C, *spatial)`` read at ``scale * p + centre`` for the points ``p`` of an output ``(B, C, *size)``
    (all in [-1, 1] units, ``align_corners=False``); ``scale``, ``centre``: ``(B, d)`` in spatial (D, H, W) order.

    The same values as ``F.grid_sample(mode="bilinear")`` on ``F.affine_grid`` of the diagonal transform, computed
    axis by axis (the transform has no rotation, so (tri)linear interpolation separates): two gathers and a blend
    per axis, 2-3x faster than grid_sample on the CPU."""
    for axis in range(y.ndim - 2):
        dim, n_in, n_out = 2 + axis, y.shape[2 + axis], size[axis]
        p = (2 * torch.arange(n_out, device=y.device, dtype=scale.dtype) + 1) / n_out - 1
        u = ((scale[:, axis, None] * p + centre[:, axis, None] + 1) * n_in - 1) / 2  # (B, n_out) in voxels
        if padding_mode == "border":
            u = u.clamp(0, n_in - 1)
        low = u.floor()
        w_high = u - low
        w_low = 1 - w_high
        low = low.long()
        high = low + 1
        if padding_mode == "zeros":  # a neighbour outside the image counts as 0
            w_low = w_low * ((low >= 0) & (low < n_in))
            w_high = w_high * ((high >= 0) & (high < n_in))
        moved = y.movedim(dim, -1)
        shape = (*moved.shape[:-1], n_out)
        view = (y.shape[0],) + (1,) * (y.ndim - 2) + (n_out,)
        gathered = [moved.gather(-1, index.clamp(0, n_in - 1).view(view).expand(shape)) for index in (low, high)]
        y = (gathered[0] * w_low.view(view).to(y.dtype) + gathered[1] * w_high.view(view).to(y.dtype)).movedim(-1, dim)
    return y


def _check_x(x: Tensor, floating: bool = True) -> None:
    if not isinstance(x, Tensor) or x.ndim not in (4, 5):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise DataError(f"x must be a tensor (B, C, H, W) or (B, C, D, H, W), got {got}")
    if floating and not x.dtype.is_floating_point:
        raise DataError(f"x must be floating (images or volumes), got dtype {x.dtype}")


def _check_number(name: str, value: float, low: float, high: float = math.inf) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
    if not ok or not math.isfinite(value):
        bounds = f"in [{low}, {high}]" if math.isfinite(high) else f">= {low}"
        raise ConfigError(f"{name} must be a finite number {bounds}, got {value!r}")


def _interval(name: str, value: float | Sequence[float], low: float, high: float) -> tuple[float, float]:
    """A number or a (a, b) pair with ``low < a <= b <= high`` (a number: a = b) -> (a, b)."""
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value) if isinstance(value, Sequence) else ()
    ok = (
        len(pair) == 2
        and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low < v <= high
            for v in pair
        )
        and pair[0] <= pair[1]
    )
    if not ok:
        upper = f" <= {high}" if math.isfinite(high) else ""
        raise ConfigError(
            f"{name} must be a number or a (low, high) pair with {low} < low <= high{upper}, got {value!r}"
        )
    return float(pair[0]), float(pair[1])


def _spatial_axes(axes: Sequence[int] | None, dims: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(dims))
    try:
        out = tuple(int(a) for a in axes)
        ok = all(not isinstance(a, bool) and a == int(a) for a in axes) and all(-dims <= a < dims for a in out)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"axes must be spatial-axis indices in [-{dims}, {dims - 1}], got {axes!r}")
    out = tuple(a % dims for a in out)
    if len(set(out)) != len(out):
        raise ConfigError(f"axes must not repeat an axis, got {axes!r}")
    return out


def _out_size(size: int | Sequence[int] | None, spatial: tuple[int, ...]) -> tuple[int, ...]:
    if size is None:
        return spatial
    out = (size,) * len(spatial) if isinstance(size, int) else tuple(size) if isinstance(size, Sequence) else ()
    if len(out) != len(spatial) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in out):
        raise ConfigError(f"size must be a positive integer or {len(spatial)} of them, got {size!r}")
    return out
