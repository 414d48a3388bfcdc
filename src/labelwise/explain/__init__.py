"""Visual explanations: the Grad-CAM family (2D and 3D) and metrics of how right a map is.

``build_explainer("gradcam", model)`` gives a method by name; every method is called ``method(images, targets)``
and returns maps ``(B, K, *spatial)`` in [0, 1] (see :mod:`labelwise.explain.cam`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from labelwise.errors import LabelwiseError
from labelwise.explain.cam import (
    CAM,
    CAMS,
    CounterfactualGradCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    SegmentationTarget,
    SmoothGradCAMPlusPlus,
    XGradCAM,
    default_target_layer,
    postprocess,
    tokens_to_grid,
)
from labelwise.explain.guided import GuidedBackprop, GuidedGradCAM

METHOD_NAMES = (*CAMS, "guided-backprop", "guided-gradcam")

__all__ = [
    "CAM",
    "CAMS",
    "METHOD_NAMES",
    "CounterfactualGradCAM",
    "EigenCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "SegmentationTarget",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
    "build_explainer",
    "default_target_layer",
    "postprocess",
    "tokens_to_grid",
]


def build_explainer(
    name: str, model: nn.Module, target_layer: nn.Module | str | None = None, **options: Any
) -> CAM | GuidedBackprop | GuidedGradCAM:
    """A method by its name: one of :data:`METHOD_NAMES` (``gradcam``, ``gradcam++``, ``scorecam``, ...)."""
    if name == "guided-backprop":
        return GuidedBackprop(model)
    if name == "guided-gradcam":
        return GuidedGradCAM(model, target_layer, **options)
    if name not in CAMS:
        raise LabelwiseError(f"unknown explanation method {name!r}; choose one of {', '.join(METHOD_NAMES)}")
    return CAMS[name](model, target_layer, **options)
