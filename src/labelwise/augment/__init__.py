"""Batched, differentiable tensor transforms (elastic deformation, crops, intensity) on any device.

Filled in by the capabilities that need them (DS6's elastic deformation, pretraining's views)."""

from __future__ import annotations

from labelwise.augment.elastic import (
    RandomElastic,
    elastic_deform,
    random_displacement,
    warp,
)

__all__ = ["RandomElastic", "elastic_deform", "random_displacement", "warp"]
