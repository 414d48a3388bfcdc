"""``labelwise explain``: maps of a trained run's predicting network for input files, written as overlays (2D) or
NIfTI + montage + MIP (3D) and indexed for the report's gallery (``explanations.json``).

Inputs are read and preprocessed as the run's training data was (:meth:`RunModel.read`). What is explained depends
on the run: the softmax class (single-label), a label (multi-label, sigmoid), a foreground class's logits summed over
its predicted region (segmenters; one-channel segmenters: their one foreground channel). Recorded scores use the run's
own activation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from labelwise.explain import SegmentationTarget, build_explainer, postprocess
from labelwise.explain.outputs import read_index, write_explanation, write_index
from labelwise.inference.run import RunModel
from labelwise.models.windows import model_divisor, round_up

__all__ = ["explain_files"]


def explain_files(
    run: RunModel,
    files: Sequence[Path],
    out: Path,
    methods: Sequence[str] = ("gradcam",),
    targets: Sequence[int | str] | None = None,
    layer: str | None = None,
    progress: Callable[[Path], None] | None = None,
) -> list[dict[str, Any]]:
    """For every file, method and target (default: the predicted class or label; segmenters: every foreground class),
    write the map and its overlay to ``out``; returns the new index entries (also merged into
    ``out/explanations.json``). ``targets``: class indices or names (:meth:`RunModel.class_index`)."""
    model = run.model  # refuses a run without a classifier head
    classes_given = [run.class_index(t) for t in targets] if targets else None
    explainers = {
        name: build_explainer(name, model)
        if name == "guided-backprop"
        else build_explainer(name, model, **_target_layer(model, layer))
        for name in methods
    }
    entries = []
    for path in files:
        if progress is not None:
            progress(path)
        raw = run.read_raw(path)
        volume = run.preprocess(raw)
        x = torch.from_numpy(volume.array)[None]
        logits = run.logits(x)  # no gradients: the explainers run their own passes
        if run.task == "classification":
            probability = run.probabilities(logits)[0]
            predicted = int(probability.argmax())
            classes = classes_given or [predicted]
            scores = {k: float(probability[k]) for k in classes}
        else:
            _, labels, _ = run.segment(logits)
            predicted = None
            classes = classes_given or list(range(1, run.num_classes))
            probability = run.probabilities(logits)[0]
            scores = {k: _region_score(probability, labels[0], k) for k in classes}
            # The explainers run the network on the whole image, which a U-Net takes only at a multiple of its
            # divisor (prediction pads its windows so): padded with zeros as the windows are, maps cropped back.
            spatial = tuple(x.shape[2:])
            x, labels, inside = _pad_to(x, labels, model_divisor(model))
        stem = path.name.removesuffix(".gz").rsplit(".", 1)[0]
        for name, explainer in explainers.items():
            if run.task == "classification":
                maps = explainer(x, [classes])[0]
            else:  # the class's logits over where it is predicted (everywhere in the image when predicted nowhere)
                maps = torch.cat(
                    [
                        explainer(x, SegmentationTarget(_channel(logits, k), _region(labels, k, inside)))[0]
                        for k in classes
                    ]
                )
                crop = (slice(None), *(slice(0, n) for n in spatial))
                maps = maps[crop]
            if tuple(maps.shape[1:]) != raw.spatial_shape:  # a run that resizes its inputs: maps at the file's size
                maps = postprocess(maps[None], raw.spatial_shape, relu=False)[0]
            for i, k in enumerate(classes):
                written = write_explanation(
                    out,
                    f"{stem}_{name}_{k}",
                    raw.array,
                    maps[i].numpy(),
                    affine=raw.affine,
                    title=f"{name} · {run.class_name(k)}",
                )
                entries.append(
                    {
                        "input": str(path),
                        "method": name,
                        "target": k,
                        "class_name": run.class_name(k),
                        "score": scores[k],
                        "activation": run.activation,
                        "predicted": predicted,
                        "predicted_name": run.class_name(predicted) if predicted is not None else None,
                        "layer": getattr(explainer, "layer_name", None),
                        "files": written,
                    }
                )
    old = read_index(out) or {}
    done = {(e["input"], e["method"], e["target"]) for e in entries}
    kept = [e for e in old.get("entries", []) if (e.get("input"), e.get("method"), e.get("target")) not in done]
    write_index(out, kept + entries, old.get("metrics"))
    return entries


def _target_layer(model: torch.nn.Module, layer: str | None) -> dict[str, Any]:
    """The explained layer: ``layer``, or by default the last spatial one. A network that names a ``cam_layer`` gives
    that layer and its ``cam_reshape``: a ViT its last transformer block, whose tokens ``(B, N, C)`` become the patch
    grid ``(B, C, *grid)``; a Swin transformer the output of a stage."""
    named = getattr(model, "cam_layer", None)
    if named is not None and layer in (None, named):
        return {"target_layer": named, "reshape": getattr(model, "cam_reshape", None)}
    return {"target_layer": layer}


def _channel(logits: torch.Tensor, k: int) -> int:
    """The output channel of segmentation class ``k``: the one channel of a sigmoid segmenter, else channel ``k``."""
    return 0 if logits.shape[1] == 1 else k


def _region(labels: torch.Tensor, k: int, inside: torch.Tensor | None = None) -> torch.Tensor | None:
    """Where class ``k`` is predicted; where it is predicted nowhere, the image (``inside``: without its padding;
    None: all of it)."""
    region = labels == k
    return region if bool(region.any()) else inside


def _pad_to(
    x: torch.Tensor, labels: torch.Tensor, divisor: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``x`` and ``labels`` padded at the end of every spatial axis to a multiple of ``divisor`` (the image with zeros,
    the labels with -1: no class), and the mask of the unpadded image (None when nothing was padded)."""
    extra = [round_up(n, divisor) - n for n in x.shape[2:]]
    if not any(extra):
        return x, labels, None
    widths = [w for e in reversed(extra) for w in (0, e)]
    inside = F.pad(torch.ones_like(labels, dtype=torch.bool), widths, value=False)
    return F.pad(x, widths), F.pad(labels, widths, value=-1), inside


def _region_score(probability: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Mean probability of class ``k`` where it is predicted (0 where it is predicted nowhere), by the run's
    activation (a one-channel segmenter's sigmoid, else the softmax)."""
    p = probability[0] if probability.shape[0] == 1 else probability[k]
    region = labels == k
    return float(p[region].mean()) if bool(region.any()) else 0.0
