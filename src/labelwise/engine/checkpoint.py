"""Checkpoints: weights as safetensors plus trainer state, written atomically, loaded without unpickling code.

Layout: ``checkpoints/step-000100/{model.safetensors, trainer_state.pt}`` and ``checkpoints/latest.json``
pointing at the newest complete one. A checkpoint folder is filled under a temporary name and renamed into
place; ``latest.json`` is replaced last, so a kill at any moment leaves the previous checkpoint intact."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from labelwise.errors import LabelwiseError
from labelwise.io import atomic_write, fsync_file

WEIGHTS = "model.safetensors"
STATE = "trainer_state.pt"


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) random states as tensors and plain numbers."""
    # the legacy tuple (legacy=True is the default; numpy's stub gives the default legacy=False's dict instead)
    np_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    n = states["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def network_tensors(networks: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """All networks' state dicts in one flat mapping ``<network>.<key>``, on the CPU."""
    return {
        f"{name}.{key}": value.detach().to("cpu", copy=True).contiguous()
        for name, net in networks.items()
        for key, value in net.state_dict().items()
    }


def save_checkpoint(
    folder: Path, step: int, networks: dict[str, nn.Module], state: dict[str, Any], keep: int = 2
) -> Path:
    """Write ``folder/step-XXXXXX`` atomically, point ``latest.json`` at it, keep the newest ``keep``."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    final = folder / name
    tmp = folder / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(network_tensors(networks), str(tmp / WEIGHTS), metadata={"step": str(step)})
    torch.save({**state, "step": step}, tmp / STATE)
    for file in tmp.iterdir():
        fsync_file(file)
    # The step's two files must appear together, so the folder is what is renamed into place (atomic_path renames
    # one file); latest.json, one file, goes through atomic_write.
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write(folder / "latest.json", json.dumps({"step": step, "path": name}))
    for old in sorted(folder.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    folder = Path(folder)
    pointer = folder / "latest.json"
    if not pointer.is_file():
        return None
    path = folder / json.loads(pointer.read_text())["path"]
    return path if (path / WEIGHTS).is_file() and (path / STATE).is_file() else None


def read_weights(file: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``model.safetensors`` file; a missing, corrupted or truncated one is a LabelwiseError naming
    it (not the safetensors library's traceback)."""
    file = Path(file)
    if not file.is_file():
        raise LabelwiseError(f"no weights at {file}")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError) as err:
        raise LabelwiseError(f"{file}: the weights file is corrupted or unreadable ({err})") from None


def load_weights(path: str | Path, networks: dict[str, nn.Module]) -> None:
    """Load ``model.safetensors`` (a checkpoint folder or the file itself) into the networks, strictly: a tensor
    missing, left over or of another shape is a LabelwiseError naming the file."""
    path = Path(path)
    file = path / WEIGHTS if path.is_dir() else path
    tensors = read_weights(file)
    for name, net in networks.items():
        prefix = f"{name}."
        own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        expected = net.state_dict()
        shapes = [k for k, v in own.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
        if shapes:
            key = shapes[0]
            raise LabelwiseError(
                f"{file}: weights do not fit network {name!r}: {len(shapes)} tensor(s) of another shape, e.g. {key} "
                f"{tuple(own[key].shape)} in the file, {tuple(expected[key].shape)} in the network built from the "
                "run's config.yaml (was its model section changed?)"
            )
        missing, unexpected = net.load_state_dict(own, strict=False)
        if missing or unexpected:
            raise LabelwiseError(
                f"{file}: weights do not fit network {name!r} (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )


def load_state(path: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint folder (plain tensors and numbers; never unpickles code); a corrupted or
    truncated one is a LabelwiseError naming it."""
    file = path / STATE
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise LabelwiseError(f"{file}: the trainer state is corrupted or unreadable ({err})") from None
