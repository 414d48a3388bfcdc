"""Random smooth elastic deformations (DS6, Chatterjee et al. 2022) for 2D and 3D batches, one field per batch.

A field is drawn once and applied with the same geometry to an image, its label and, later, a prediction::

    elastic = RandomElastic(spacing=(5, 7), magnitude=(0.01, 0.03), generator=g)
    (image_t, label_t), field = elastic(image, label)     # image bilinear, integer label nearest (dtype kept)
    pred_t = warp(torch.sigmoid(model(image)), field)      # differentiable w.r.t. what it warps (and the field)

Fields are ``(B, *spatial, d)`` displacements in grid_sample's normalised [-1, 1] units, ordered (x, y[, z]) like
grid_sample's grid (x runs along the last axis); a voxel ``p`` of the output reads the input at ``identity(p) +
field(p)`` (``align_corners=True``: -1 and 1 are the centres of the first and last voxels)."""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from labelwise.errors import ConfigError, DataError

__all__ = ["RandomElastic", "elastic_deform", "random_displacement", "warp"]

Mode = Literal["bilinear", "nearest"]
PaddingMode = Literal["zeros", "border", "reflection"]
_MODES = ("bilinear", "nearest")
_PADDING = ("zeros", "border", "reflection")
_CONSTANTS: OrderedDict[tuple, Tensor] = OrderedDict()  # LRU: spline matrices, axis coordinates (small)
_IDENTITY: OrderedDict[tuple, Tensor] = OrderedDict()  # LRU: identity grids (as large as one field)
_SHARED: dict[tuple, tuple] = {}  # (id(field), padding, inference mode) -> (weakref, version, grids); see _warper
_STACKED_3D_DEVICES = ("cpu",)  # where 3D warps run as 2D sampling of the stacked volume (see _Warper)


def random_displacement(
    shape: Sequence[int],
    spacing: float = 6,
    magnitude: float = 0.02,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Smooth random field ``(B, *spatial, d)`` for ``shape`` ``(B, *spatial)``, d = 2 or 3: 0 on the border voxels,
    ``|field| <= magnitude`` (normalised units); on ``device`` (default: the generator's), drawn from ``generator``.

    Control points ~``spacing`` voxels apart (``round((size - 1) / spacing) + 1``, at least 3, per axis, the outer
    ones on the border voxels and locked at 0, the others uniform in [-magnitude, magnitude]) are the coefficients
    of a cubic B-spline, as in TorchIO/ITK (DS6's augmentation), evaluated exactly by one matrix product per axis,
    the same in 2D and 3D. Why not bicubic ``F.interpolate`` (2D only, overshoots) or trilinear upsampling plus
    smoothing (blurs the locked border): the B-spline is C2, a convex combination of control values (hence the
    bound), and with the control values mirrored with opposite sign across the border, exactly 0 there. The result
    is a channels-last view of a ``(B, d, *spatial)`` tensor."""
    spatial = _spatial_from_shape(shape)
    _check_positive("spacing", spacing)
    if not (isinstance(magnitude, (int, float)) and math.isfinite(magnitude) and magnitude >= 0):
        raise ConfigError(f"magnitude must be a finite number >= 0 (normalised [-1, 1] units), got {magnitude!r}")
    if not dtype.is_floating_point:
        raise ConfigError(f"dtype must be a floating dtype, got {dtype}")
    device = (
        torch.device(device)
        if device is not None
        else (generator.device if generator is not None else torch.device("cpu"))
    )
    d = len(spatial)
    points = [max(3, round((s - 1) / spacing) + 1) for s in spatial]
    draw_device = generator.device if generator is not None else device
    coeffs = torch.rand((shape[0], d, *(n - 2 for n in points)), generator=generator, device=draw_device, dtype=dtype)
    coeffs = coeffs.to(device).mul_(2 * magnitude).sub_(magnitude)
    mats = [_bspline_matrix(n, s, device, dtype) for n, s in zip(points, spatial)]
    # channels are i.i.d.: channel k is read as grid coordinate k (x, y[, z]); spatial axes keep (D, H, W) order
    equation = "bcij,Ii,Jj->bcIJ" if d == 2 else "bcijk,Ii,Jj,Kk->bcIJK"
    return torch.einsum(equation, coeffs, *mats).movedim(1, -1)  # stored channel-first: one plane per coordinate


def warp(x: Tensor, field: Tensor, mode: Mode = "bilinear", padding_mode: PaddingMode = "border") -> Tensor:
    """``x`` ``(B, C, *spatial)`` read at identity + ``field`` ``(B or 1, *spatial, d)``: same shape and dtype.

    ``bilinear`` (trilinear in 3D; floating ``x`` only) is differentiable w.r.t. ``x`` and ``field``; ``nearest``
    also takes integer or boolean ``x`` (labels) and returns exact input values. Sampling follows
    ``F.grid_sample(..., align_corners=True)``; on CPU, 3D runs as 2D sampling of the (D·H, W)-stacked volume (see
    :class:`_Warper`), which places float32 samples to ~1e-7·D·H voxels (2e-4 voxel at 64³; float64: exact)."""
    _check_pair(x, field)
    _check_modes(mode, padding_mode)
    return _warper(field.to(x.device), padding_mode)(x, mode)


def elastic_deform(
    tensors: Sequence[Tensor],
    field: Tensor,
    modes: Mode | Sequence[Mode | None] | None = None,
    padding_mode: PaddingMode = "border",
) -> tuple[Tensor, ...]:
    """Each of ``tensors`` ``(B, C_i, *spatial)`` warped by the one ``field`` ``(B or 1, *spatial, d)``.

    ``modes``: one per tensor, one for all, or None: ``bilinear`` for floating tensors, ``nearest`` for the rest."""
    tensors = tuple(tensors)
    given: list[Mode | None] = [modes] * len(tensors) if isinstance(modes, str) or modes is None else list(modes)
    if len(given) != len(tensors):
        raise ConfigError(f"modes: expected one mode per tensor ({len(tensors)}), got {len(given)}: {given!r}")
    chosen: list[Mode] = [
        m if m is not None else ("bilinear" if t.dtype.is_floating_point else "nearest") for m, t in zip(given, tensors)
    ]
    for t, m in zip(tensors, chosen):
        _check_pair(t, field)
        _check_modes(m, padding_mode)
    if not tensors:
        return ()
    warper = _warper(field.to(tensors[0].device), padding_mode)
    return tuple(warper(t, m) for t, m in zip(tensors, chosen))


class RandomElastic:
    """DS6's augmentation: per call, a spacing and a magnitude drawn uniformly from their ranges (a number: fixed),
    one field (:func:`random_displacement`) for every tensor; returns ``(warped tensors, field)``."""

    def __init__(
        self,
        spacing: float | tuple[float, float] = (5, 7),
        magnitude: float | tuple[float, float] = (0.01, 0.03),
        padding_mode: PaddingMode = "border",
        generator: torch.Generator | None = None,
    ):
        self.spacing = _range("spacing", spacing, low=0, strict=True)
        self.magnitude = _range("magnitude", magnitude, low=0, strict=False)
        _check_modes("bilinear", padding_mode)
        self.padding_mode = padding_mode
        self.generator = generator

    def sample(
        self, shape: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """A field ``(B, *spatial, d)`` for ``shape`` ``(B, *spatial)``, with a freshly drawn spacing and magnitude."""
        u = torch.rand(
            2,
            generator=self.generator,
            dtype=torch.float64,
            device=self.generator.device if self.generator is not None else "cpu",
        ).tolist()
        spacing = self.spacing[0] + u[0] * (self.spacing[1] - self.spacing[0])
        magnitude = self.magnitude[0] + u[1] * (self.magnitude[1] - self.magnitude[0])
        return random_displacement(shape, spacing, magnitude, self.generator, device, dtype)

    def __call__(
        self, *tensors: Tensor, modes: Mode | Sequence[Mode] | None = None
    ) -> tuple[tuple[Tensor, ...], Tensor]:
        """``tensors`` ``(B, C_i, *spatial)`` sharing B and spatial -> (one warped tensor per input, field)."""
        if not tensors:
            raise ConfigError("RandomElastic: expected at least one tensor (B, C, *spatial), got none")
        first = tensors[0]
        for i, t in enumerate(tensors):
            if (
                not isinstance(t, Tensor)
                or t.ndim not in (4, 5)
                or tuple(t.shape[:1]) + tuple(t.shape[2:]) != (tuple(first.shape[:1]) + tuple(first.shape[2:]))
            ):
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise DataError(
                    f"RandomElastic: tensor {i} has shape {got}, expected (B, C, *spatial) with B and "
                    f"spatial like tensor 0 (B={first.shape[0]}, spatial {tuple(first.shape[2:])}), "
                    "2 or 3 spatial axes"
                )
        dtype = torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
        field = self.sample((first.shape[0], *first.shape[2:]), first.device, dtype)
        return elastic_deform(tensors, field, modes, self.padding_mode), field


# ---------------------------------------------------------------------------------------------------------- helpers


def _cached(store: OrderedDict, limit: int, key: tuple, build: Callable[[], Tensor]) -> Tensor:
    """``store[key]``, built on a miss (outside inference mode, so usable anywhere); the oldest beyond ``limit`` go."""
    hit = store.get(key)
    if hit is not None:
        store.move_to_end(key)
        return hit
    with torch.inference_mode(False), torch.no_grad():
        value = build()
    store[key] = value
    while len(store) > limit:
        store.popitem(last=False)
    return value


def _bspline_matrix(n: int, size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(size, n - 2)``: interior control values of ``n`` uniform knots -> cubic B-spline at the ``size`` voxels,
    border knots locked at 0 and oddly mirrored, so the first and last rows are exactly 0."""

    def build() -> Tensor:
        if size == 1:
            return torch.zeros(1, n - 2, dtype=dtype, device=device)
        u = torch.arange(size, dtype=torch.float64) * (n - 1) / (size - 1)  # voxel -> knot coordinate
        j = u.floor().clamp(max=n - 2)
        t = u - j
        weights = torch.stack([(1 - t) ** 3, 3 * t**3 - 6 * t**2 + 4, -3 * t**3 + 3 * t**2 + 3 * t + 1, t**3], 1) / 6
        knots = j.long()[:, None] + torch.arange(-1, 3)  # (size, 4) in [-1, n]
        sign = torch.where((knots == -1) | (knots == n), -1.0, 1.0).double()
        knots = torch.where(knots == -1, 1, torch.where(knots == n, n - 2, knots))  # odd mirror about 0 and n - 1
        full = torch.zeros(size, n, dtype=torch.float64)
        full.scatter_add_(1, knots, weights * sign)
        return full[:, 1:-1].to(device=device, dtype=dtype)

    return _cached(_CONSTANTS, 64, ("bspline", n, size, device, dtype), build)


def _identity_grid(spatial: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """grid_sample's identity ``(1, *spatial, d)`` for ``align_corners=True``, (x, y[, z]) order; cached."""

    def build() -> Tensor:
        axes = [_axis(s, device, dtype, normalised=True) for s in spatial]
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.stack(mesh[::-1], -1).unsqueeze(0)

    return _cached(_IDENTITY, 4, (spatial, device, dtype), build)


def _axis(size: int, device: torch.device, dtype: torch.dtype, normalised: bool) -> Tensor:
    """Identity coordinates of one axis: voxel indices, or grid_sample's [-1, 1] (align_corners=True); cached."""

    def build() -> Tensor:
        if normalised:  # in float64, then rounded once: float32's own linspace is off by a few ulps
            return torch.linspace(-1, 1, size, dtype=torch.float64, device=device).to(dtype)
        return torch.arange(size, dtype=dtype, device=device)

    return _cached(_CONSTANTS, 64, ("axis", size, normalised, device, dtype), build)


def _warper(field: Tensor, padding_mode: str) -> _Warper:
    """A :class:`_Warper` whose grids are shared by every warp with this very field (same tensor, unmodified) while
    the field lives, so ``warp(pred, field)`` after :class:`RandomElastic` rebuilds nothing. Fields that require
    grad (their grids belong to one autograd graph) and inference tensors (no version counter) are not shared."""
    if field.requires_grad or field.is_inference():
        return _Warper(field, padding_mode)
    key = (id(field), padding_mode, torch.is_inference_mode_enabled())
    entry = _SHARED.get(key)
    if entry is None or entry[0]() is not field or entry[1] != field._version:
        entry = (weakref.ref(field), field._version, {})
        _SHARED[key] = entry
        weakref.finalize(field, _SHARED.pop, key, None)
    return _Warper(field, padding_mode, entry[2])


class _Warper:
    """Samples tensors at identity + one field; the sampling grids are built once per compute dtype and shared.

    2D (and 3D off CPU): ``F.grid_sample`` with the cached identity grid. 3D on CPU, where PyTorch's 3D grid_sample
    is scalar code (about 3x slower than its vectorised 2D kernel): the volume, padded by one slice and one row on
    each side (replicated, or zeros for ``zeros`` padding), is sampled as a 2D image of its stacked rows. One grid
    (x, floor(z)·(H+2) + y) reads slice floor(z) from the stack of padded slices 0..D and slice floor(z) + 1 from
    the stack of slices 1..D+1 (two views of one copy); ``bilinear`` blends the two with weight frac(z),
    ``nearest`` picks one (frac(z) > 0.5). y and z are clipped first (border; reflection after reflecting) or
    clamped into the zero pad (zeros), so this is grid_sample's trilinear/nearest up to the rounding of the stacked
    row coordinate (float32: ~1e-7·D·H voxels) and, for ``nearest``, ties."""

    def __init__(self, field: Tensor, padding_mode: str, plans: dict | None = None):
        self.field = field
        self.padding_mode = padding_mode
        self.stacked = field.ndim == 5 and field.device.type in _STACKED_3D_DEVICES
        self._plans: dict[tuple, Tensor] = {} if plans is None else plans

    def __call__(self, x: Tensor, mode: str) -> Tensor:
        if x.dtype.is_floating_point:
            dtype = torch.promote_types(x.dtype, self.field.dtype)
        elif mode != "nearest":
            raise ConfigError(
                f"mode={mode!r} needs a floating tensor, got x of dtype {x.dtype}; use mode='nearest' "
                "for integer or boolean labels"
            )
        else:
            dtype = _exact_float(x)
        b = x.shape[0]
        if not self.stacked:
            grid = self._expand(self._plan(dtype, "grid"), b)
            out = F.grid_sample(x.to(dtype), grid, mode=mode, padding_mode=self.padding_mode, align_corners=True)
            return out.to(x.dtype)
        grid, rows = self._expand(self._plan(dtype, "stacked"), b), (x.shape[2] + 1) * (x.shape[3] + 2)
        padded = _padded(x, dtype, zeros=self.padding_mode == "zeros")
        low, high = (
            F.grid_sample(part, grid, mode=mode, padding_mode=self.padding_mode, align_corners=True).view(x.shape)
            for part in (padded[:, :, :rows], padded[:, :, -rows:])
        )
        grad = torch.is_grad_enabled() and (low.requires_grad or self.field.requires_grad)
        if mode == "nearest":
            upper = self._plan(dtype, "upper")
            return (torch.where(upper, high, low) if grad else torch.where(upper, high, low, out=low)).to(x.dtype)
        weight = self._plan(dtype, "weight")
        if grad and weight.requires_grad:
            return torch.lerp(low, high, weight).to(x.dtype)
        return low.lerp_(high, weight).to(x.dtype)  # in place: lerp keeps only the weight for backward

    @staticmethod
    def _expand(grid: Tensor, b: int) -> Tensor:
        return grid.expand(b, *grid.shape[1:]) if grid.shape[0] != b else grid

    def _plan(self, dtype: torch.dtype, kind: str) -> Tensor:
        """``grid`` (identity + field), or for the stacked 3D path ``stacked`` (the 2D grid), ``weight`` (frac(z),
        ``(B, 1, D, H, W)``) and ``upper`` (frac(z) > 0.5); built on first use."""
        if (dtype, kind) not in self._plans:
            field = self.field.to(dtype)
            if kind == "grid":
                self._plans[dtype, kind] = _identity_grid(tuple(field.shape[1:-1]), field.device, dtype) + field
            elif kind == "upper":
                self._plans[dtype, kind] = self._plan(dtype, "weight") > 0.5
            else:
                self._plans[dtype, "stacked"], self._plans[dtype, "weight"] = self._build_stacked(field)
        return self._plans[dtype, kind]

    def _build_stacked(self, field: Tensor) -> tuple[Tensor, Tensor]:
        b, d, h, w = field.shape[:4]
        dtype, device = field.dtype, field.device
        grad = torch.is_grad_enabled() and field.requires_grad
        z = self._voxels(field, 2)
        low = z.floor().clamp_(max=d)  # padded slice 0..D
        weight = (z - low if grad else z.sub_(low)).unsqueeze(1)
        row = low.mul_(h + 2).add_(self._voxels(field, 1))  # in the stack of D + 1 padded slices
        minus_one, scale = torch.full((), -1.0, dtype=dtype, device=device), 2 / ((d + 1) * (h + 2) - 1)
        if grad:
            gx = field[..., 0] + _axis(w, device, dtype, normalised=True)
            grid = torch.stack([gx, torch.add(minus_one, row, alpha=scale)], -1)
        else:  # the same, written straight into the interleaved grid
            grid = torch.empty((b, d, h, w, 2), dtype=dtype, device=device)
            torch.add(field[..., 0], _axis(w, device, dtype, normalised=True), out=grid[..., 0])
            torch.add(minus_one, row, alpha=scale, out=grid[..., 1])
        return grid.view(b, d * h, w, 2), weight

    def _voxels(self, field: Tensor, k: int) -> Tensor:
        """Grid coordinate k (1: y, 2: z) in voxels of the padded volume (index + 1), after padding."""
        size = field.shape[3 - k]
        index = _axis(size, field.device, field.dtype, normalised=False).view([size, 1, 1] if k == 2 else [size, 1])
        if self.padding_mode == "reflection":
            return _reflect(torch.add(index, field[..., k], alpha=(size - 1) / 2), size - 1).add_(1).clamp_(1, size)
        v = torch.add(index + 1, field[..., k], alpha=(size - 1) / 2)
        return v.clamp_(0, size + 1) if self.padding_mode == "zeros" else v.clamp_(1, size)


def _padded(x: Tensor, dtype: torch.dtype, zeros: bool) -> Tensor:
    """``x`` ``(B, C, D, H, W)`` in ``dtype``, padded by one slice and one row on each side (replicated, or zeros),
    as the stacked 2D image ``(B, C, (D+2)(H+2), W)``: one copy, the cast included."""
    b, c, d, h, w = x.shape
    out = torch.empty((b, c, d + 2, h + 2, w), dtype=dtype, device=x.device)
    out[:, :, 1:-1, 1:-1] = x
    out[:, :, 0, 1:-1] = 0 if zeros else x[:, :, 0]
    out[:, :, -1, 1:-1] = 0 if zeros else x[:, :, -1]
    out[..., 0, :] = 0 if zeros else out[..., 1, :]
    out[..., -1, :] = 0 if zeros else out[..., -2, :]
    return out.view(b, c, (d + 2) * (h + 2), w)


def _exact_float(x: Tensor) -> torch.dtype:
    """A float dtype that holds every value of integer or boolean ``x`` exactly (float32 when it can)."""
    if x.dtype in (torch.bool, torch.uint8, torch.int8, torch.int16) or x.numel() == 0:
        return torch.float32
    low, high = torch.aminmax(x)
    largest = max(-int(low), int(high))
    if largest <= 2**24:
        return torch.float32
    if largest <= 2**53:
        return torch.float64
    raise DataError(f"x: labels must lie within +-2**53 to be warped exactly, got values up to {largest}")


def _reflect(coord: Tensor, span: int) -> Tensor:
    """Reflect coordinates into [0, span] like grid_sample's reflection padding with align_corners=True."""
    if span == 0:
        return torch.zeros_like(coord)
    coord = coord.abs()
    flips = torch.floor(coord / span)
    extra = torch.fmod(coord, span)
    return torch.where(flips.remainder(2) == 0, extra, span - extra)


def _spatial_from_shape(shape: Sequence[int]) -> tuple[int, ...]:
    try:
        dims = tuple(int(s) for s in shape)
        ok = len(dims) in (3, 4) and all(s >= 1 and s == t for s, t in zip(dims, shape))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"shape must be (B, H, W) or (B, D, H, W) with positive sizes, got {shape!r}")
    return dims[1:]


def _check_pair(x: Tensor, field: Tensor) -> tuple[int, ...]:
    if not isinstance(x, Tensor) or x.ndim not in (4, 5):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise DataError(f"x must be a tensor (B, C, H, W) or (B, C, D, H, W), got {got}")
    spatial = tuple(x.shape[2:])
    d = len(spatial)
    expected = f"(B or 1, {', '.join(map(str, spatial))}, {d}) for x of shape {tuple(x.shape)}"
    if not isinstance(field, Tensor):
        raise DataError(f"field must be a tensor {expected}, got {type(field).__name__}")
    if (
        field.ndim != d + 2
        or tuple(field.shape[1:-1]) != spatial
        or field.shape[-1] != d
        or field.shape[0] not in (1, x.shape[0])
    ):
        raise DataError(f"field must have shape {expected}, got {tuple(field.shape)}")
    if not field.dtype.is_floating_point:
        raise DataError(f"field must be floating (normalised displacements), got dtype {field.dtype}")
    return spatial


def _check_modes(mode: str, padding_mode: str) -> None:
    if mode not in _MODES:
        raise ConfigError(f"mode must be one of {_MODES} ('bilinear' is trilinear in 3D), got {mode!r}")
    if padding_mode not in _PADDING:
        raise ConfigError(f"padding_mode must be one of {_PADDING}, got {padding_mode!r}")


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def _range(name: str, value: float | tuple[float, float], low: float, strict: bool) -> tuple[float, float]:
    """A number or a (low, high) pair -> (low, high), checked to lie above ``low``."""
    pair = (value, value) if isinstance(value, (int, float)) else tuple(value) if isinstance(value, Sequence) else ()
    unit = " voxels" if name == "spacing" else " (normalised [-1, 1] units)"
    ok = (
        len(pair) == 2
        and all(isinstance(v, (int, float)) and math.isfinite(v) and (v > low if strict else v >= low) for v in pair)
        and pair[0] <= pair[1]
    )
    if not ok:
        bound = f"> {low}" if strict else f">= {low}"
        raise ConfigError(
            f"{name} must be a number or a (low, high) pair with low <= high, both {bound}{unit}, got {value!r}"
        )
    return float(pair[0]), float(pair[1])
