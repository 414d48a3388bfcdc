"""Class activation maps: one engine that captures a layer's activations and gradients, and the Grad-CAM family.

Every method is called the same way::

    cam = GradCAM(model)                      # target_layer=None: the last layer with spatial output
    maps = cam(images, targets)               # (B, K, *spatial), K maps per image, in [0, 1]

``images`` is ``(B, C, H, W)`` or ``(B, C, D, H, W)``. ``targets``: None (the predicted class), an int (one class for
all), one int per image, one list of classes per image (K maps each: multi-label), or a :class:`SegmentationTarget`
(the summed logit of a class over a region, for segmenters).

Speed: the forward pass runs without an autograd graph up to the target layer; a forward hook there turns the
layer's output into a leaf that requires grad and switches gradient recording on, so the graph (and the backward
pass) spans only the layers after the target layer. No parameter gradients are computed; hooks are removed even when
the call raises; all work stays in torch on the model's device (autocast is respected; maps are float32)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from labelwise.errors import LabelwiseError

__all__ = [
    "CAM",
    "CounterfactualGradCAM",
    "EigenCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "SegmentationTarget",
    "SmoothGradCAMPlusPlus",
    "XGradCAM",
    "default_target_layer",
    "postprocess",
    "tokens_to_grid",
]

Upsample = Literal["linear", "nearest"] | None


@dataclass(frozen=True)
class SegmentationTarget:
    """Explain the sum of class ``cls``'s logits over ``region``: bool ``(B or 1, *out_spatial)``, None: everywhere."""

    cls: int
    region: Tensor | None = None


@dataclass
class Capture:
    """What one pass recorded: activations ``(B, C, *s)``, gradients ``(B, K, C, *s)`` (None without gradients),
    the explained classes ``(B, K)`` (or a :class:`SegmentationTarget`) and the model output."""

    activations: Tensor
    gradients: Tensor | None
    classes: Tensor | SegmentationTarget
    output: Tensor


def tokens_to_grid(grid: Sequence[int], prefix_tokens: int = 0) -> Callable[[Tensor], Tensor]:
    """A ``reshape`` for transformers: tokens ``(B, N, C)`` -> ``(B, C, *grid)``, dropping ``prefix_tokens`` (CLS)."""
    grid = tuple(int(g) for g in grid)

    def reshape(tokens: Tensor) -> Tensor:
        if tokens.ndim != 3 or tokens.shape[1] - prefix_tokens != math.prod(grid):
            raise LabelwiseError(
                f"tokens_to_grid: expected tokens (B, {prefix_tokens} + {math.prod(grid)}, C) for grid {grid}, "
                f"got shape {tuple(tokens.shape)}"
            )
        spatial = tokens[:, prefix_tokens:]
        return spatial.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)

    return reshape


def default_target_layer(model: nn.Module, x: Tensor) -> str:
    """Name of the last submodule to finish (on one image ``x[:1]``) whose output is spatial like the input:
    ``(1, C, *s)`` with more than one position, and not the model's own output (a segmenter's logits)."""
    seen: list[tuple[str, Tensor]] = []
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: seen.append((name, out)))
        for name, module in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad(), _eval_mode(model):
            final = _first_tensor(model(x[:1]))
    finally:
        for handle in handles:
            handle.remove()
    for name, out in reversed(seen):
        if isinstance(out, Tensor) and out.ndim == x.ndim and math.prod(out.shape[2:]) > 1 and out is not final:
            return name
    raise LabelwiseError(
        f"{type(model).__name__}: no layer has a spatial output like the input {tuple(x.shape[1:])}; pass "
        "target_layer= (and reshape=tokens_to_grid(...) for a transformer)"
    )


def postprocess(
    maps: Tensor, size: Sequence[int], relu: bool = True, normalize: bool = True, upsample: Upsample = "linear"
) -> Tensor:
    """ReLU, then upsampling ``(B, K, *s)`` to ``size`` (linear: bi/trilinear, align_corners=False), then per-map
    min-max scaling to [0, 1] (a constant map becomes 0)."""
    if relu:
        maps = maps.clamp_min(0)
    if upsample is not None and tuple(maps.shape[2:]) != tuple(size):
        if upsample not in ("linear", "nearest"):
            raise LabelwiseError(f"upsample must be 'linear', 'nearest' or None, got {upsample!r}")
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(size)] if upsample == "linear" else "nearest"
        maps = F.interpolate(
            maps, size=tuple(size), mode=mode, **({"align_corners": False} if mode != "nearest" else {})
        )
    if normalize:
        flat = maps.flatten(2)
        low, high = flat.amin(2, keepdim=True), flat.amax(2, keepdim=True)
        span = high - low
        flat = torch.where(
            span > 0, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat)
        )
        maps = flat.view_as(maps)
    return maps


class CAM:
    """The engine: resolves the target layer, captures activations and gradients, turns them into maps.

    ``target_layer``: a module of ``model``, its dotted name, or None (see :func:`default_target_layer`).
    ``reshape``: maps the layer's output to ``(B, C, *grid)`` when it is not spatial (see :func:`tokens_to_grid`).
    The model runs in eval mode during a call (each module's mode is restored afterwards). If the model returns a
    tuple or list, its first element is the output that is explained. Subclasses define :meth:`combine`."""

    uses_gradients: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: nn.Module | str | None = None,
        reshape: Callable[[Tensor], Tensor] | None = None,
    ):
        self.model = model
        self.reshape = reshape
        self._layer = self._resolve(target_layer) if target_layer is not None else None

    def __call__(
        self,
        x: Tensor,
        targets: Any = None,
        *,
        relu: bool = True,
        normalize: bool = True,
        upsample: Upsample = "linear",
    ) -> Tensor:
        """Maps ``(B, K, *spatial)`` float32: at the input's size, or the layer's with ``upsample=None``."""
        _check_input(x)
        maps = self.compute(x, targets)
        with full_precision(x):
            return postprocess(maps, x.shape[2:], relu, normalize, upsample)

    def compute(self, x: Tensor, targets: Any = None) -> Tensor:
        """Raw maps ``(B, K, *s)`` at the layer's resolution, before ReLU, upsampling and scaling."""
        capture = self.capture(x, targets, gradients=self.uses_gradients)
        with full_precision(x):
            return self.combine(capture.activations, capture.gradients)

    def combine(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        """Map ``(B, K, *s)`` from activations ``(B, C, *s)`` and gradients ``(B, K, C, *s)``."""
        raise NotImplementedError

    @property
    def layer_name(self) -> str | None:
        if self._layer is None:
            return None
        return next((name for name, m in self.model.named_modules() if m is self._layer), None)

    def target_layer(self, x: Tensor) -> nn.Module:
        """The target layer (found on the first call when none was given)."""
        if self._layer is None:
            self._layer = self._resolve(default_target_layer(self.model, x))
        return self._layer

    def capture(self, x: Tensor, targets: Any = None, gradients: bool = True) -> Capture:
        """One forward pass (graph only after the target layer) and, with ``gradients``, one backward pass per
        explained class down to the layer. Activations and gradients come back as float32 (float64 kept)."""
        if torch.is_inference_mode_enabled():
            raise LabelwiseError("Grad-CAM needs gradients: call it outside torch.inference_mode()")
        layer = self.target_layer(x)
        record: list[Tensor] = []

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Tensor | None:
            if not isinstance(output, Tensor):
                raise LabelwiseError(f"target layer {self.layer_name!r} returns {type(output).__name__}, not a tensor")
            if record:
                raise LabelwiseError(
                    f"target layer {self.layer_name!r} runs more than once per forward pass; pick "
                    "a layer that runs once"
                )
            leaf = output.detach()
            record.append(leaf)
            if not gradients:
                return None
            leaf.requires_grad_(True)
            torch.set_grad_enabled(True)  # record the graph from here on; the no_grad block below restores the mode
            return leaf.clone()  # downstream in-place ops (ReLU(inplace=True)) must not touch the leaf

        handle = layer.register_forward_hook(hook)
        try:
            with torch.no_grad(), _eval_mode(self.model):
                output = _first_tensor(self.model(x))
        finally:
            handle.remove()
        if not record:
            raise LabelwiseError(f"target layer {self.layer_name!r} did not run in the forward pass")
        leaf = record[0]
        classes, scores = _scores(output, targets)
        grads = None
        if gradients:
            if scores.grad_fn is None:
                raise LabelwiseError(f"the model's output does not depend on target layer {self.layer_name!r}")
            k = scores.shape[1]
            grads = torch.stack(
                [torch.autograd.grad(scores[:, j].sum(), leaf, retain_graph=j < k - 1)[0] for j in range(k)], dim=1
            )
            grads = _float(self._grid(grads.flatten(0, 1)).unflatten(0, grads.shape[:2]))
        return Capture(_float(self._grid(leaf.detach())), grads, classes, output.detach())

    def _grid(self, t: Tensor) -> Tensor:
        out = self.reshape(t) if self.reshape is not None else t
        if out.ndim < 3:
            raise LabelwiseError(
                f"target layer {self.layer_name!r} output has shape {tuple(out.shape)}: not spatial; "
                "pick a convolutional layer or pass reshape="
            )
        return out

    def _resolve(self, target_layer: nn.Module | str) -> nn.Module:
        if isinstance(target_layer, nn.Module):
            if not any(m is target_layer for m in self.model.modules()):
                raise LabelwiseError("target_layer is not a submodule of the model")
            return target_layer
        try:
            return self.model.get_submodule(target_layer)
        except AttributeError:
            names = [n for n, _ in self.model.named_modules() if n]
            near = [n for n in names if n.split(".")[-1] == target_layer.split(".")[-1]][:5] or names[-5:]
            raise LabelwiseError(f"target_layer {target_layer!r}: no such submodule (e.g. {', '.join(near)})") from None


def _spatial_sum(t: Tensor, keepdim: bool = False) -> Tensor:
    """Sum over the spatial axes (3 onwards) of a ``(B, K, C, *s)`` tensor."""
    return t.flatten(3).sum(3).view(*t.shape[:3], *([1] * (t.ndim - 3) if keepdim else []))


def _weighted(weights: Tensor, activations: Tensor) -> Tensor:
    """``sum_c weights[b, k, c] * A[b, c, ...]``: ``(B, K, C)`` x ``(B, C, *s)`` -> ``(B, K, *s)``."""
    return torch.einsum("bkc,bcz->bkz", weights, activations.flatten(2)).view(
        activations.shape[0], weights.shape[1], *activations.shape[2:]
    )


class GradCAM(CAM):
    """Grad-CAM: ReLU(sum_k alpha_k A^k), alpha_k = mean_ij dy^c/dA^k_ij (Selvaraju et al., arXiv 1610.02391,
    eq. 1-2)."""

    def combine(self, activations, gradients):
        return _weighted(gradients.flatten(3).mean(3), activations)


class CounterfactualGradCAM(CAM):
    """Counterfactual Grad-CAM: Grad-CAM with negated gradients; regions that argue against the class
    (Selvaraju et al., arXiv 1610.02391, sec. 5)."""

    def combine(self, activations, gradients):
        return _weighted(-gradients.flatten(3).mean(3), activations)


class GradCAMPlusPlus(CAM):
    """Grad-CAM++: w_k = sum_ij a^k_ij ReLU(g^k_ij), a = g^2 / (2 g^2 + sum_ab A^k_ab g^3), 0 where the denominator is
    0 (Chattopadhyay et al., arXiv 1710.11063, eq. 19; exponential of the score assumed, as in the paper)."""

    def combine(self, activations, gradients):
        return _plus_plus(activations, gradients, gradients.square(), gradients.pow(3))


def _plus_plus(activations: Tensor, g1: Tensor, g2: Tensor, g3: Tensor) -> Tensor:
    total = (
        activations.flatten(2)
        .sum(2)
        .view(activations.shape[0], 1, activations.shape[1], *([1] * (activations.ndim - 2)))
    )
    denominator = 2 * g2 + total * g3
    alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
    return _weighted(_spatial_sum(alpha * g1.clamp_min(0)), activations)


class SmoothGradCAMPlusPlus(CAM):
    """Smooth Grad-CAM++: Grad-CAM++ with g, g^2, g^3 averaged over ``samples`` copies x + N(0, sigma^2), sigma =
    ``noise`` x (max - min of each image); activations from the clean image (Omeiza et al., arXiv 1908.01224).
    The noise comes from a generator seeded with ``seed``: the same call gives the same map."""

    def __init__(self, model, target_layer=None, reshape=None, samples: int = 8, noise: float = 0.15, seed: int = 0):
        super().__init__(model, target_layer, reshape)
        if samples < 1 or noise < 0:
            raise LabelwiseError(f"SmoothGradCAMPlusPlus: samples must be >= 1 and noise >= 0, got {samples}, {noise}")
        self.samples, self.noise, self.seed = samples, noise, seed

    def compute(self, x, targets=None):
        clean = self.capture(x, targets, gradients=False)
        sigma = self.noise * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, *([1] * (x.ndim - 1)))
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        g1 = g2 = g3 = 0.0
        for _ in range(self.samples):
            noisy = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            g = self.capture(noisy, clean.classes).gradients
            g1, g2, g3 = g1 + g, g2 + g.square(), g3 + g.pow(3)
        n = self.samples
        with full_precision(x):
            return _plus_plus(clean.activations, g1 / n, g2 / n, g3 / n)


class XGradCAM(CAM):
    """XGrad-CAM: alpha_k = sum_ij (A^k_ij / sum_ab A^k_ab) g^k_ij (Fu et al., arXiv 2008.02312, eq. 11)."""

    def combine(self, activations, gradients):
        total = activations.flatten(2).sum(2).view(*activations.shape[:2], *([1] * (activations.ndim - 2)))
        share = activations / torch.where(total != 0, total, 1.0)
        return _weighted(_spatial_sum(share.unsqueeze(1) * gradients), activations)


class HiResCAM(CAM):
    """HiResCAM: ReLU(sum_k g^k * A^k), elementwise, no spatial averaging (Draelos & Carin, arXiv 2011.08891)."""

    def combine(self, activations, gradients):
        return (gradients * activations.unsqueeze(1)).sum(2)


class LayerCAM(CAM):
    """Layer-CAM: ReLU(sum_k ReLU(g^k) * A^k), elementwise (Jiang et al., IEEE TIP 30, 2021, eq. 5-6)."""

    def combine(self, activations, gradients):
        return (gradients.clamp_min(0) * activations.unsqueeze(1)).sum(2)


class EigenCAM(CAM):
    """Eigen-CAM: the (positions x channels) activation matrix projected on its first right-singular vector, sign
    chosen so the map sums to >= 0; class-agnostic, the K maps are equal (Muhammad & Yeasin, arXiv 2008.00299).
    The matrix is not centred, as in the paper: centred, every projection would sum to 0 and no sign rule could
    make the map "mostly positive" (pytorch-grad-cam centres it, and its maps flip sign from image to image)."""

    uses_gradients = False

    def compute(self, x, targets=None):
        capture = self.capture(x, targets, gradients=False)
        a = capture.activations
        k = capture.classes.shape[1] if isinstance(capture.classes, Tensor) else 1
        with full_precision(x):
            m = a.flatten(2).transpose(1, 2)  # (B, positions, C)
            _, _, vh = torch.linalg.svd(m, full_matrices=False)
            projection = (m @ vh[:, 0, :, None]).squeeze(2)  # (B, positions)
            projection = torch.where(projection.sum(1, keepdim=True) < 0, -projection, projection)
        return projection.view(a.shape[0], 1, *a.shape[2:]).expand(-1, k, *a.shape[2:]).contiguous()


class ScoreCAM(CAM):
    """Score-CAM: alpha = softmax over channels k of y^c(x * norm(up(A^k))), map = ReLU(sum_k alpha_k A^k); norm is
    per-channel min-max to [0, 1]; the baseline score y^c(x_b) of the paper is the same for every k and cancels in the
    softmax (Wang et al., arXiv 1910.01279, eq. 5-8). Costs one forward pass per channel and image, run ``batch_size``
    masked images at a time, without gradients."""

    uses_gradients = False

    def __init__(self, model, target_layer=None, reshape=None, batch_size: int = 32):
        super().__init__(model, target_layer, reshape)
        if batch_size < 1:
            raise LabelwiseError(f"ScoreCAM: batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def compute(self, x, targets=None):
        capture = self.capture(x, targets, gradients=False)
        a = capture.activations
        b, c = a.shape[:2]
        with full_precision(x):
            masks = postprocess(a, x.shape[2:], relu=False, normalize=True, upsample="linear")  # (B, C, *S)
        rows = torch.arange(b, device=x.device).repeat_interleave(c)
        scores = []
        with torch.no_grad(), _eval_mode(self.model):
            for start in range(0, b * c, self.batch_size):
                sel = rows[start : start + self.batch_size]
                chunk = masks.flatten(0, 1)[start : start + self.batch_size].unsqueeze(1)
                output = _first_tensor(self.model(x[sel] * chunk.to(x.dtype)))
                scores.append(_scores(output, capture.classes, rows=sel)[1].to(a.dtype))
        with full_precision(x):
            alpha = torch.cat(scores).view(b, c, -1).softmax(dim=1)  # (B, C, K)
            return _weighted(alpha.transpose(1, 2), a)


#: The CAM methods by name (the training recipes' registry is :data:`labelwise.methods.METHODS`).
CAMS: dict[str, type[CAM]] = {
    "gradcam": GradCAM,
    "counterfactual-gradcam": CounterfactualGradCAM,
    "gradcam++": GradCAMPlusPlus,
    "smooth-gradcam++": SmoothGradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
    "eigencam": EigenCAM,
}


def full_precision(x: Tensor) -> torch.autocast:
    """Context without autocast on ``x``'s device: map arithmetic stays in float32 (or float64)."""
    return torch.autocast(x.device.type, enabled=False)


def _float(t: Tensor) -> Tensor:
    """At least float32 (float16/bfloat16 under autocast are widened; float64 is kept)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _check_input(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.ndim not in (3, 4, 5):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise LabelwiseError(f"images must be a tensor (B, C, *spatial) with 1-3 spatial axes, got {shape}")


def _first_tensor(output: Any) -> Tensor:
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, Tensor):
        raise LabelwiseError(
            f"the model returned {type(output).__name__}; expected a tensor (or a tuple starting with one)"
        )
    return output


class _eval_mode:
    """Context: ``model.eval()``, then every module's own training flag restored."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc: object) -> None:
        for module, mode in self.modes:
            module.training = mode


def _scores(output: Tensor, targets: Any, rows: Tensor | None = None) -> tuple[Tensor | SegmentationTarget, Tensor]:
    """The explained classes and their scores ``(N, K)``: logits ``output[n, class]`` (summed over space for a spatial
    output, or over a :class:`SegmentationTarget`'s region). ``rows``: which image each output row belongs to."""
    if isinstance(targets, SegmentationTarget):
        return targets, _region_score(output, targets, rows)
    logits = output.flatten(2).sum(2) if output.ndim > 2 else output
    if logits.ndim != 2:
        raise LabelwiseError(f"the model output has shape {tuple(output.shape)}; expected (B, classes[, *spatial])")
    classes = _classes(logits, targets) if rows is None else targets[rows]
    return classes, logits.gather(1, classes)


def _classes(logits: Tensor, targets: Any) -> Tensor:
    """Targets as a long tensor ``(B, K)`` of classes, checked against the number of images and classes."""
    b, num_classes = logits.shape
    if targets is None:
        classes = logits.argmax(1, keepdim=True)
    elif isinstance(targets, (int,)) and not isinstance(targets, bool):
        classes = torch.full((b, 1), targets, dtype=torch.long, device=logits.device)
    else:
        if isinstance(targets, Tensor):
            t = targets.to(logits.device, torch.long)
        else:
            rows = list(targets)
            lengths = {len(r) if isinstance(r, Sequence) else -1 for r in rows}
            if len(lengths) > 1:
                raise LabelwiseError(
                    f"targets: give one class per image, or the same number of classes per image; "
                    f"got lists of lengths {sorted(lengths)}"
                )
            t = torch.as_tensor(rows, dtype=torch.long, device=logits.device)
        if t.ndim == 1:
            t = t[:, None]
        if t.ndim != 2 or t.shape[0] != b or t.shape[1] == 0:
            raise LabelwiseError(f"targets: expected {b} entries (one per image), got shape {tuple(t.shape)}")
        classes = t
    if classes.min() < 0 or classes.max() >= num_classes:
        raise LabelwiseError(f"targets: classes must lie in [0, {num_classes}), got {classes.min()}..{classes.max()}")
    return classes


def _region_score(output: Tensor, target: SegmentationTarget, rows: Tensor | None) -> Tensor:
    if output.ndim < 3 or not 0 <= target.cls < output.shape[1]:
        raise LabelwiseError(
            f"SegmentationTarget(cls={target.cls}) needs a segmenter output (B, classes, *spatial); "
            f"got shape {tuple(output.shape)}"
        )
    logits = output[:, target.cls]
    if target.region is None:
        return logits.flatten(1).sum(1, keepdim=True)
    region = target.region.to(logits.device)
    if region.dtype != torch.bool or region.shape[1:] != logits.shape[1:]:
        raise LabelwiseError(
            f"SegmentationTarget.region: expected bool (B or 1, {', '.join(map(str, logits.shape[1:]))}), "
            f"got {region.dtype} {tuple(region.shape)}"
        )
    if rows is not None and region.shape[0] > 1:
        region = region[rows]
    return (logits * region).flatten(1).sum(1, keepdim=True)
