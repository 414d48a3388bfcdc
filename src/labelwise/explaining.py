"""``labelwise explain``: maps of a trained run's network for input files, written as overlays and indexed for the
report's gallery (``explanations.json``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from labelwise.explain import build_explainer
from labelwise.explain.outputs import read_index, write_explanation, write_index
from labelwise.trained import Trained, read_input


def explain_files(
    trained: Trained,
    files: Sequence[Path],
    out: Path,
    methods: Sequence[str] = ("gradcam",),
    targets: Sequence[int] | None = None,
    layer: str | None = None,
    progress: Callable[[Path], None] | None = None,
) -> list[dict[str, Any]]:
    """For every file, method and target class (default: the predicted class), write the map and its overlay to
    ``out``; returns the new index entries (also merged into ``out/explanations.json``)."""
    if trained.task != "classification" and not targets:
        raise ValueError("a segmentation run needs --target (the class whose region score is explained)")
    explainers = {name: build_explainer(name, trained.model, layer) if name != "guided-backprop"
                  else build_explainer(name, trained.model) for name in methods}
    entries = []
    for path in files:
        if progress is not None:
            progress(path)
        image, affine = read_input(path, trained.in_channels, trained.spatial_dims)
        x = image[None]
        with torch.no_grad():
            output = trained.model(x)
        probability = _probabilities(output, trained.task)[0]
        classes = list(targets) if targets else [int(probability.argmax())]
        if max(classes) >= trained.num_classes or min(classes) < 0:
            raise ValueError(f"--target: classes must lie in [0, {trained.num_classes}), got {classes}")
        stem = path.name.removesuffix(".gz").rsplit(".", 1)[0]
        for name, explainer in explainers.items():
            if trained.task == "classification":
                maps = explainer(x, [classes])[0]
            else:
                from labelwise.explain import SegmentationTarget

                maps = torch.cat([explainer(x, SegmentationTarget(c))[0] for c in classes])
            for k, cls in enumerate(classes):
                files_written = write_explanation(out, f"{stem}_{name}_{cls}", image.numpy(), maps[k].numpy(),
                                                  affine=affine, title=f"{name} · {trained.class_name(cls)}")
                entries.append({
                    "input": str(path), "method": name, "target": cls, "class_name": trained.class_name(cls),
                    "score": float(probability[cls]), "predicted": int(probability.argmax()), "files": files_written,
                })
    old = read_index(out) or {}
    done = {(e["input"], e["method"], e["target"]) for e in entries}
    kept = [e for e in old.get("entries", []) if (e.get("input"), e.get("method"), e.get("target")) not in done]
    write_index(out, kept + entries, old.get("metrics"))
    return entries


def _probabilities(output: Any, task: str) -> torch.Tensor:
    """Class probabilities ``(B, K)``: softmax of the logits (segmenters: of the logits averaged over space)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    logits = output.flatten(2).mean(2) if output.ndim > 2 else output
    return logits.float().softmax(1)
