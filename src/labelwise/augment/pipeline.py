"""The training augmentation of labelled images: the YAML ``augment:`` section and the batched pipeline it builds.

One :class:`Augment` applies random transforms to a batch ``(B, C, *spatial)`` (2D or 3D) on its device, the same
geometry to the image and its label map (images bilinear, labels nearest), then intensity transforms to the image
only. Each transform has its own probability per sample; parameters are drawn from torch's global generator, which
the engine seeds per (seed, step, rank), so an augmented batch is a pure function of those and a resumed run sees the
same batches. The defaults follow nnU-Net v2's (Isensee et al. 2021) probabilities and ranges for segmentation,
with a smaller rotation and no elastic deformation (set ``elastic.p`` to use DS6's B-spline fields)::

    augment:                    # omit the section: no augmentation; `augment: {}` : every default below
      preset: auto              # the defaults: segmentation (these), classification, auto (by the run's task)
      flip: {p: 0.5, axes: null}           # per spatial axis (null: every axis; [-1]: left-right only)
      rotate90: {p: 0.5}        # a multiple of 90 degrees in the plane of the last two axes (when square)
      rotate: {p: 0.2, degrees: 15}          # in-plane (2D) or about each axis (3D), uniform in [-degrees, degrees]
      scale: {p: 0.2, range: [0.7, 1.4]}     # zoom factor (> 1 magnifies), isotropic
      translate: {p: 0.0, fraction: 0.1}     # shift per axis, uniform in +-fraction of the side
      elastic: {p: 0.0, spacing: [5, 7], magnitude: [0.01, 0.03]}
      brightness: {p: 0.15, range: [0.75, 1.25]}   # multiplies the image
      contrast: {p: 0.15, range: [0.75, 1.25]}     # scales around the mean, clipped to the sample's range
      gamma: {p: 0.3, range: [0.7, 1.5]}           # on the sample's range (labelwise.augment.random_gamma)
      noise: {p: 0.1, std: 0.1}                    # Gaussian, in units of the sample's std
      blur: {p: 0.2, sigma: [0.5, 1.0]}            # Gaussian, voxels

Rotation and scaling share one resampling (``grid_sample``, zeros outside the image, background outside the
mask), in physical units when the patch is not square (a 30 degree rotation of a 64 x 128 patch stays a rotation)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from labelwise.augment.elastic import RandomElastic
from labelwise.augment.views import _rand, _sometimes, gaussian_blur, gaussian_noise, random_gamma

__all__ = ["Augment", "AugmentOptions"]


class _Transform(BaseModel):
    model_config = ConfigDict(extra="forbid")
    p: float = Field(ge=0, le=1, description="probability per sample")


class Flip(_Transform):
    p: float = Field(0.5, ge=0, le=1, description="probability per sample and spatial axis")
    axes: list[int] | None = Field(
        None, description="spatial axes that may flip (0: the first, -1: the last, left-right); null: every axis"
    )


class Rotate90(_Transform):
    p: float = Field(0.5, ge=0, le=1)


class Rotate(_Transform):
    p: float = Field(0.2, ge=0, le=1)
    degrees: float = Field(15.0, ge=0, le=180, description="uniform in [-degrees, degrees] (3D: about each axis)")


class Scale(_Transform):
    p: float = Field(0.2, ge=0, le=1)
    range: tuple[float, float] = Field((0.7, 1.4), description="zoom factor; > 1 magnifies")


class Translate(_Transform):
    p: float = Field(0.0, ge=0, le=1)
    fraction: float = Field(0.1, ge=0, le=0.5, description="shift per axis, uniform in +-fraction of the side")


class Elastic(_Transform):
    p: float = Field(0.0, ge=0, le=1)
    spacing: tuple[float, float] = Field((5.0, 7.0), description="B-spline control-point spacing range (voxels)")
    magnitude: tuple[float, float] = Field((0.01, 0.03), description="largest displacement range, [-1, 1] units")


class Multiply(_Transform):
    p: float = Field(0.15, ge=0, le=1)
    range: tuple[float, float] = (0.75, 1.25)


class Gamma(_Transform):
    p: float = Field(0.3, ge=0, le=1)
    range: tuple[float, float] = (0.7, 1.5)


class Noise(_Transform):
    p: float = Field(0.1, ge=0, le=1)
    std: float = Field(0.1, ge=0, description="in units of the sample's standard deviation")


class Blur(_Transform):
    p: float = Field(0.2, ge=0, le=1)
    sigma: tuple[float, float] = Field((0.5, 1.0), description="voxels")


#: The ``preset: classification`` defaults (transforms not listed are off): a natural photograph or scan keeps its
#: orientation, so no upside-down flips or quarter turns; small shifts, zooms and rotations and a mild brightness and
#: contrast change, the usual augmentation of small-image classifiers (random crops and horizontal flips).
CLASSIFICATION: dict[str, dict[str, Any]] = {
    "flip": {"p": 0.5, "axes": [-1]},
    "rotate90": {"p": 0.0},
    "rotate": {"p": 0.5, "degrees": 10.0},
    "scale": {"p": 0.5, "range": (0.9, 1.1)},
    "translate": {"p": 0.5, "fraction": 0.1},
    "elastic": {"p": 0.0},
    "brightness": {"p": 0.5, "range": (0.8, 1.2)},
    "contrast": {"p": 0.5, "range": (0.8, 1.2)},
    "gamma": {"p": 0.0},
    "noise": {"p": 0.0},
    "blur": {"p": 0.0},
}


class AugmentOptions(BaseModel):
    """The ``augment:`` section of a config (see the module docstring); every transform's ``p: 0`` switches it off.

    ``preset`` picks the defaults of the transforms the section does not set: ``segmentation`` (nnU-Net's, above),
    ``classification`` (:data:`CLASSIFICATION`) or ``auto`` (the run's task decides; what a config with
    ``augment: {}`` gets)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    preset: Literal["auto", "segmentation", "classification"] = "auto"
    flip: Flip = Field(default_factory=Flip)
    rotate90: Rotate90 = Field(default_factory=Rotate90)
    rotate: Rotate = Field(default_factory=Rotate)
    scale: Scale = Field(default_factory=Scale)
    translate: Translate = Field(default_factory=Translate)
    elastic: Elastic = Field(default_factory=Elastic)
    brightness: Multiply = Field(default_factory=Multiply)
    contrast: Multiply = Field(default_factory=Multiply)
    gamma: Gamma = Field(default_factory=Gamma)
    noise: Noise = Field(default_factory=Noise)
    blur: Blur = Field(default_factory=Blur)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        """The classification preset's defaults under what the section sets."""
        if not isinstance(data, dict) or data.get("preset") != "classification":
            return data
        out = dict(data)
        for name, default in CLASSIFICATION.items():
            given = out.get(name)
            if isinstance(given, BaseModel):
                given = given.model_dump(exclude_unset=True)
            out[name] = {**default, **given} if isinstance(given, dict) else default if given is None else given
        return out

    def for_task(self, task: str) -> AugmentOptions:
        """These options with ``preset: auto`` resolved by the run's ``task`` (the transforms set stay as set)."""
        if self.preset != "auto":
            return self
        preset = "classification" if task == "classification" else "segmentation"
        return AugmentOptions.model_validate({**self.model_dump(exclude_unset=True), "preset": preset})

    @model_validator(mode="after")
    def _ranges(self) -> AugmentOptions:
        for name in ("scale", "brightness", "contrast", "gamma"):
            low, high = getattr(self, name).range
            if not 0 < low <= high:
                raise ValueError(f"augment.{name}.range: expected 0 < low <= high, got [{low}, {high}]")
        for name, (low, high) in (
            ("blur.sigma", self.blur.sigma),
            ("elastic.spacing", self.elastic.spacing),
            ("elastic.magnitude", self.elastic.magnitude),
        ):
            if not 0 <= low <= high or (name == "elastic.spacing" and low <= 0):
                raise ValueError(f"augment.{name}: expected 0 <= low <= high, got [{low}, {high}]")
        return self


def stack_maps(target: Tensor, maps: Sequence[Tensor]) -> Tensor:
    """A label map ``(B, *spatial)`` and per-voxel maps ``(B, *spatial)`` or ``(B, K, *spatial)`` (soft labels, one
    map per class) as one float stack ``(B, 1 + channels, *spatial)``, to be moved by one geometric transform with
    nearest neighbour (labels are exact in float32 up to 2**24); :func:`unstack_maps` parts it again."""
    parts = (m.unsqueeze(1) if m.ndim == target.ndim else m for m in maps)
    return torch.cat([target.unsqueeze(1).float(), *(m.float() for m in parts)], dim=1)


def unstack_maps(stack: Tensor, dtype: torch.dtype, maps: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """:func:`stack_maps`'s stack, moved, as the label map (``dtype``) and the maps, each with the axes of its
    original in ``maps``. Maps with a class axis are class probabilities: where the transform filled voxels from
    outside the image with zeros (background in the label map), they are background for sure."""
    moved, start = [], 1
    for m in maps:
        width = m.shape[1] if m.ndim == stack.ndim else 1
        part = stack[:, start : start + width]
        if m.ndim == stack.ndim:
            part = torch.cat([part[:, :1] + (1 - part.sum(dim=1, keepdim=True)).clamp_min(0), part[:, 1:]], dim=1)
        moved.append(part if m.ndim == stack.ndim else part[:, 0])
        start += width
    return stack[:, 0].round().to(dtype), moved


class Augment:
    """The transforms of an :class:`AugmentOptions`, applied to a batch: ``image, target = augment(image, target)``
    with ``image`` ``(B, C, *spatial)`` floating and ``target`` a label map ``(B, *spatial)`` (segmentation) or
    anything else (classification: returned unchanged, only the image is transformed)."""

    def __init__(self, options: AugmentOptions):
        self.options = options
        e = options.elastic
        self.elastic = RandomElastic(spacing=e.spacing, magnitude=e.magnitude, generator=None) if e.p > 0 else None

    def __call__(self, image: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        image, target, _ = self.with_maps(image, target)
        return image, target

    def with_maps(
        self, image: Tensor, target: Tensor | None = None, maps: Sequence[Tensor] = ()
    ) -> tuple[Tensor, Tensor | None, list[Tensor]]:
        """As calling it, with per-voxel float ``maps`` ``(B, *spatial)`` or ``(B, K, *spatial)`` of a segmentation
        batch (loss weights, soft labels) moved with the mask: the same geometry, nearest neighbour, values kept."""
        dims = image.ndim - 2
        spatial_target = target is not None and target.ndim == image.ndim - 1 and target.shape[1:] == image.shape[2:]
        mask = target.unsqueeze(1) if target is not None and spatial_target else None
        if target is not None and mask is not None and maps:
            mask = stack_maps(target, maps)
        image, mask = self._flip(image, mask, dims)
        image, mask = self._rotate90(image, mask)
        image, mask = self._affine(image, mask, dims)
        image, mask = self._elastic(image, mask)
        image = self._intensity(image)
        if mask is None or target is None:
            return image, target, list(maps)
        if not maps:
            return image, mask.squeeze(1), []
        moved, moved_maps = unstack_maps(mask, target.dtype, maps)
        return image, moved, moved_maps

    # --- geometry: the same for the image and its mask ---

    def _flip(self, image: Tensor, mask: Tensor | None, dims: int) -> tuple[Tensor, Tensor | None]:
        p, axes = self.options.flip.p, self.options.flip.axes
        if p == 0:
            return image, mask
        if axes is not None and any(not -dims <= a < dims for a in axes):
            raise ValueError(f"augment.flip.axes: {axes} names an axis the {dims}D images do not have")
        flips = _rand(None, (image.shape[0], dims), image.device) < p
        for axis in range(dims) if axes is None else sorted({a % dims for a in axes}):
            chosen = flips[:, axis].view(-1, *(1,) * (image.ndim - 1))
            image = torch.where(chosen, image.flip(axis + 2), image)
            if mask is not None:
                mask = torch.where(chosen, mask.flip(axis + 2), mask)
        return image, mask

    def _rotate90(self, image: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        p = self.options.rotate90.p
        if p == 0 or image.shape[-1] != image.shape[-2]:
            return image, mask
        u = _rand(None, (image.shape[0], 2), image.device)
        turns = torch.where(
            u[:, 0] < p, 1 + (u[:, 1] * 3).floor().clamp(max=2).long(), torch.zeros_like(u[:, 0]).long()
        )
        out_image, out_mask = image.clone(), None if mask is None else mask.clone()
        for k in (1, 2, 3):
            chosen = torch.nonzero(turns == k).flatten()
            if len(chosen):
                out_image[chosen] = torch.rot90(image[chosen], k, dims=(-2, -1))
                if mask is not None and out_mask is not None:
                    out_mask[chosen] = torch.rot90(mask[chosen], k, dims=(-2, -1))
        return out_image, out_mask

    def _affine(self, image: Tensor, mask: Tensor | None, dims: int) -> tuple[Tensor, Tensor | None]:
        o = self.options
        if o.rotate.p == 0 and o.scale.p == 0 and o.translate.p == 0:
            return image, mask
        b, device = image.shape[0], image.device
        u = _rand(None, (b, 2 + 2 * dims), device, torch.float64)
        rotate = u[:, 0] < o.rotate.p
        scale = u[:, 1] < o.scale.p
        shift = torch.zeros(b, dims, dtype=torch.float64, device=device)  # grid_sample units, (x, y[, z]) order
        if o.translate.p:  # drawn only when used: the rotation and zoom draws stay those of a run without it
            t = _rand(None, (b, 1 + dims), device, torch.float64)
            shift = torch.where(t[:, :1] < o.translate.p, 2 * o.translate.fraction * (2 * t[:, 1:] - 1), shift)
        moved = rotate | scale | shift.ne(0).any(1)
        if not bool(moved.any()):
            return image, mask
        angles = (2 * u[:, 2 : 2 + (1 if dims == 2 else 3)] - 1) * math.radians(o.rotate.degrees)
        angles = torch.where(rotate[:, None], angles, torch.zeros_like(angles))
        low, high = o.scale.range
        zoom = torch.exp(math.log(low) + (math.log(high) - math.log(low)) * u[:, -1])  # log-uniform
        zoom = torch.where(scale, zoom, torch.ones_like(zoom))
        matrix = _rotation(angles, dims) / zoom.view(-1, 1, 1)  # output point -> input point, physical units
        # grid_sample's normalised units differ per axis on a non-square patch: convert through voxel units.
        # Its theta acts on (x, y[, z]) = (last axis, ..., first spatial axis).
        sides = torch.tensor(list(reversed(image.shape[2:])), dtype=torch.float64, device=device)
        theta = matrix.flip(1, 2) * (sides.view(1, 1, -1) / sides.view(1, -1, 1))
        theta = torch.cat([theta, shift[:, :, None]], dim=2)
        grid = F.affine_grid(theta.to(torch.float32), list(image.shape), align_corners=False)
        chosen = torch.nonzero(moved).flatten()
        work = image.float()
        out = work.index_copy(
            0,
            chosen,
            F.grid_sample(work[chosen], grid[chosen], mode="bilinear", padding_mode="zeros", align_corners=False),
        ).to(image.dtype)
        if mask is not None:
            moved = F.grid_sample(
                mask[chosen].float(), grid[chosen], mode="nearest", padding_mode="zeros", align_corners=False
            )
            mask = mask.index_copy(
                0, chosen, moved.to(mask.dtype) if mask.is_floating_point() else moved.round().to(mask.dtype)
            )
        return out, mask

    def _elastic(self, image: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.elastic is None:
            return image, mask
        chosen = torch.nonzero(_rand(None, (image.shape[0],), image.device) < self.options.elastic.p).flatten()
        if not len(chosen):
            return image, mask
        tensors = (image[chosen],) if mask is None else (image[chosen], mask[chosen])
        moved, _ = self.elastic(*tensors, modes=("bilinear", "nearest") if mask is not None else None)
        image = image.index_copy(0, chosen, moved[0])
        if mask is not None:
            mask = mask.index_copy(0, chosen, moved[1])
        return image, mask

    # --- intensity: the image only ---

    def _intensity(self, image: Tensor) -> Tensor:
        o = self.options
        if o.brightness.p:
            image = _sometimes(image, lambda x: x * _factor(x, o.brightness.range), o.brightness.p, None)
        if o.contrast.p:
            image = _sometimes(image, lambda x: _contrast(x, o.contrast.range), o.contrast.p, None)
        if o.gamma.p:
            image = _sometimes(image, lambda x: random_gamma(x, o.gamma.range), o.gamma.p, None)
        if o.noise.p and o.noise.std:
            image = _sometimes(image, lambda x: gaussian_noise(x, o.noise.std), o.noise.p, None)
        if o.blur.p:
            image = _sometimes(image, lambda x: gaussian_blur(x, o.blur.sigma), o.blur.p, None)
        return image


def _factor(x: Tensor, interval: tuple[float, float]) -> Tensor:
    """One factor per sample, uniform in ``interval``, shaped to broadcast against ``x``."""
    low, high = interval
    return (low + (high - low) * _rand(None, (x.shape[0],), x.device, x.dtype)).view(-1, *(1,) * (x.ndim - 1))


def _contrast(x: Tensor, interval: tuple[float, float]) -> Tensor:
    """``(x - mean) * c + mean`` per sample, clipped to the sample's [min, max] (nnU-Net's contrast transform)."""
    flat = x.flatten(1)
    shape = (-1, *(1,) * (x.ndim - 1))
    mean, low, high = flat.mean(1).view(shape), flat.amin(1).view(shape), flat.amax(1).view(shape)
    return torch.minimum(torch.maximum((x - mean) * _factor(x, interval) + mean, low), high)


def _rotation(angles: Tensor, dims: int) -> Tensor:
    """``(B, d, d)`` rotation matrices in spatial-axis order: 2D one angle per sample, 3D about each axis in turn."""
    c, s = torch.cos(angles), torch.sin(angles)
    if dims == 2:
        return torch.stack([torch.stack([c[:, 0], -s[:, 0]], 1), torch.stack([s[:, 0], c[:, 0]], 1)], 1)
    out = torch.eye(3, dtype=angles.dtype, device=angles.device).repeat(len(angles), 1, 1)
    for axis in range(3):
        a, b = [k for k in range(3) if k != axis]
        r = torch.eye(3, dtype=angles.dtype, device=angles.device).repeat(len(angles), 1, 1)
        r[:, a, a], r[:, a, b], r[:, b, a], r[:, b, b] = c[:, axis], -s[:, axis], s[:, axis], c[:, axis]
        out = r @ out
    return out
