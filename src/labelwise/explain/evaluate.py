"""Score explanation methods on images whose object masks are known: localisation and faithfulness, one row each.

Reference maps that know nothing about the model are scored alongside (``center``: a Gaussian bump in the middle
of the image; ``random``: uniform noise), so a method's numbers can be read against chance."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from labelwise.explain import METHOD_NAMES, build_explainer
from labelwise.explain import metrics as m

BASELINES = ("center", "random")
COLUMNS = (
    "pointing_game",
    "energy_pointing_game",
    "map_iou",
    "deletion_auc",
    "insertion_auc",
    "average_drop",
    "increase_in_confidence",
    "ms_per_image",
)
LOWER_IS_BETTER = ("deletion_auc", "average_drop", "ms_per_image")


def baseline_maps(name: str, images: Tensor, seed: int = 0) -> Tensor:
    """``center``: exp(-d^2 / 2 (size/4)^2) around the image centre; ``random``: U(0, 1) noise. ``(B, 1, *S)``."""
    spatial = images.shape[2:]
    if name == "center":
        axes = torch.meshgrid(*[torch.linspace(-1, 1, n, device=images.device) for n in spatial], indexing="ij")
        # tensors summed: a tensor (typed "| float" for sum's start)
        squares = cast(Tensor, sum(a.square() for a in axes))
        bump = torch.exp(-squares / (2 * 0.5**2))
        return bump.expand(images.shape[0], 1, *spatial).clone()
    if name == "random":
        generator = torch.Generator(device=images.device).manual_seed(seed)
        return torch.rand((images.shape[0], 1, *spatial), generator=generator, device=images.device)
    raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")


def evaluate_explanations(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    masks: Tensor,
    methods: Sequence[str] = METHOD_NAMES + BASELINES,
    target_layer: str | None = None,
    batch_size: int = 32,
    steps: int = 16,
    tolerance: float = m.POINTING_TOLERANCE,
    activation: str | None = "softmax",
    options: dict[str, dict[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per method: the mean over images of each column in :data:`COLUMNS`.

    images ``(N, C, *S)``; targets ``(N,)`` the class to explain; masks bool ``(N, *S)`` where that class's object
    is. Maps are made at the input's size (linear upsampling, scaled to [0, 1]); deletion starts from zeros and
    insertion from a blurred image, ``steps`` steps each, scored by the model's ``activation`` (softmax classes, sigmoid
    labels); the pointing game counts a maximum within ``tolerance`` pixels of the mask (15, Zhang et al.); each row
    records both. ``target_layer`` None: each method's default (the last spatial layer). ``options`` per method name
    (e.g. Score-CAM's batch_size)."""
    model = model.eval()
    spatial_dims = images.ndim - 2
    rows = []
    for name in methods:
        if progress is not None:
            progress(name)
        layer = None if name == "guided-backprop" else target_layer
        explainer = None if name in BASELINES else build_explainer(name, model, layer, **(options or {}).get(name, {}))
        columns: dict[str, list[Tensor]] = {c: [] for c in COLUMNS[:-1]}
        seconds = 0.0
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            t = targets[start : start + batch_size]
            mask = masks[start : start + batch_size]
            begin = time.perf_counter()
            maps = baseline_maps(name, x, seed=start) if explainer is None else explainer(x, t)
            seconds += time.perf_counter() - begin
            maps = maps[:, 0]
            columns["pointing_game"].append(m.pointing_game(maps, mask, tolerance, spatial_dims=spatial_dims))
            columns["energy_pointing_game"].append(m.energy_pointing_game(maps, mask, spatial_dims=spatial_dims))
            columns["map_iou"].append(m.map_iou(maps, mask, spatial_dims=spatial_dims))
            columns["deletion_auc"].append(
                cast(Tensor, m.deletion_auc(model, x, maps, t, steps=steps, batch_size=256, activation=activation))
            )
            columns["insertion_auc"].append(
                cast(Tensor, m.insertion_auc(model, x, maps, t, steps=steps, batch_size=256, activation=activation))
            )
            drop, increase = m.average_drop_increase(model, x, maps, t, activation=activation)
            columns["average_drop"].append(drop)
            columns["increase_in_confidence"].append(increase)
        row: dict[str, Any] = {
            "method": name,
            "n": len(images),
            "tolerance": float(tolerance),
            "activation": activation,
        }
        row.update({c: float(torch.nanmean(torch.cat(v).double())) for c, v in columns.items()})
        row["ms_per_image"] = 1000 * seconds / len(images)
        rows.append(row)
    return rows
