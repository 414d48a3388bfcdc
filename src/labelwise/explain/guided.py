"""Guided Backpropagation and Guided Grad-CAM: input-resolution maps from gradients through "guided" ReLUs."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from labelwise.errors import LabelwiseError
from labelwise.explain.cam import (
    GradCAM,
    Upsample,
    _check_input,
    _eval_mode,
    _first_tensor,
    _float,
    _scores,
    full_precision,
    postprocess,
)

__all__ = ["GuidedBackprop", "GuidedGradCAM"]


class _GuidedReLU(torch.autograd.Function):
    """Identity on a ReLU's output ``y >= 0``; backward passes only positive gradients where ``y > 0``. Chained
    after the ReLU's own backward (mask ``y > 0``) this is the guided rule of Springenberg et al."""

    @staticmethod
    def forward(ctx: Any, y: Tensor) -> Tensor:
        ctx.save_for_backward(y)
        return y.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return grad.clamp_min(0) * (y > 0)


class GuidedBackprop:
    """Guided Backpropagation (Springenberg et al., "Striving for simplicity", ICLR-W 2015): the gradient of the
    class score with respect to the input, where every ``nn.ReLU`` module passes back only positive gradients at
    positive inputs. Maps ``(B, K, *spatial)`` are the largest absolute value over input channels; :meth:`gradients`
    gives the signed ``(B, K, C, *spatial)``. ReLUs called as functions (``F.relu``) are not guided."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        if not self.relus:
            raise LabelwiseError(
                f"{type(model).__name__} has no nn.ReLU modules: Guided Backprop is defined for ReLU networks only"
            )

    def gradients(self, x: Tensor, targets: Any = None) -> Tensor:
        """Guided input gradients ``(B, K, C, *spatial)`` float32 (a full backward pass to the input)."""
        _check_input(x)
        if torch.is_inference_mode_enabled():
            raise LabelwiseError("Guided Backprop needs gradients: call it outside torch.inference_mode()")
        handles = [relu.register_forward_hook(lambda _m, _i, out: _GuidedReLU.apply(out)) for relu in self.relus]
        leaf = x.detach().requires_grad_(True)
        try:
            with torch.enable_grad(), _eval_mode(self.model):
                output = _first_tensor(self.model(leaf))
        finally:
            for handle in handles:
                handle.remove()
        _, scores = _scores(output, targets)
        k = scores.shape[1]
        grads = [torch.autograd.grad(scores[:, j].sum(), leaf, retain_graph=j < k - 1)[0] for j in range(k)]
        return _float(torch.stack(grads, dim=1))

    def __call__(
        self,
        x: Tensor,
        targets: Any = None,
        *,
        relu: bool = True,
        normalize: bool = True,
        upsample: Upsample = "linear",
    ) -> Tensor:
        """Maps ``(B, K, *spatial)``: max over channels of |guided gradient|, scaled to [0, 1] per map."""
        grads = self.gradients(x, targets)
        with full_precision(x):
            return postprocess(grads.abs().amax(2), x.shape[2:], relu, normalize, upsample)


class GuidedGradCAM:
    """Guided Grad-CAM: Guided Backprop times Grad-CAM upsampled (bilinear/trilinear) to the input
    (Selvaraju et al., arXiv 1610.02391, sec. 3). Maps are the largest absolute value over input channels."""

    def __init__(self, model: nn.Module, target_layer: nn.Module | str | None = None, reshape=None):
        self.gradcam = GradCAM(model, target_layer, reshape)
        self.guided = GuidedBackprop(model)

    def __call__(
        self,
        x: Tensor,
        targets: Any = None,
        *,
        relu: bool = True,
        normalize: bool = True,
        upsample: Upsample = "linear",
    ) -> Tensor:
        capture = self.gradcam.capture(x, targets)
        guided = self.guided.gradients(x, capture.classes)
        with full_precision(x):
            cam = postprocess(
                self.gradcam.combine(capture.activations, capture.gradients),
                x.shape[2:],
                relu=True,
                normalize=False,
                upsample="linear",
            )
            return postprocess((guided * cam.unsqueeze(2)).abs().amax(2), x.shape[2:], relu, normalize, upsample)

    @property
    def model(self) -> nn.Module:
        return self.gradcam.model
