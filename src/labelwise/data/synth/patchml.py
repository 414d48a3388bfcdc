"""The built-in ``patchml`` dataset: multi-label images made of class-labelled object patches on a grid.

Each image is a ``grid x grid`` arrangement of square cells; some cells hold an object patch drawn from a source
of class-labelled images (scikit-learn's digits, or a folder of images per class), the others are background. The
label set is the set of classes present, and every object's pixel box is recorded, which makes the data a test bed
for multi-label prediction and for localisation metrics of explanations (pointing game)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from labelwise.data.npz import save_npz
from labelwise.errors import ConfigError, DataError
from labelwise.io import atomic_write

SPLIT_NAMES = ("train", "val", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DIGITS_CELL = 16  # digits are 8x8; the default cell upscales them twice (nearest), so grid 2 gives 32x32 images
ARRAY_KEYS = ("image", "labels", "boxes", "split", "class_names", "ids")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_CHUNK_PIXELS = 1 << 22  # background noise is drawn in chunks of about this many values (bounded memory)


def load_source(source: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Class-labelled patches: the string ``"digits"`` (scikit-learn's bundled 8x8 digits) or a folder of images.

    A folder holds one subfolder per class (sorted names are the classes) of png/jpg/jpeg/bmp/tif/tiff files; they
    are read as grayscale when all are grayscale, else RGB, and resized (bilinear) to the first image's size.
    Returns patches float32 (M, C, h, w) in [0, 1], labels int64 (M,), class names (K,). Raises :class:`DataError`."""
    if isinstance(source, str) and source == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        patches = (digits.images[:, None] / 16.0).astype(np.float32)
        return patches, digits.target.astype(np.int64), [str(k) for k in range(10)]
    return _load_folder(Path(source))


def make_patchml(
    source: str | Path = "digits",
    n: int = 1000,
    grid: int = 2,
    objects: tuple[int, int] = (1, 4),
    cell: int | None = None,
    seed: int = 0,
    background_noise: float = 0.05,
) -> dict[str, np.ndarray]:
    """``n`` images of ``grid x grid`` cells, ``objects_min .. objects_max`` of them (uniform) holding a source patch.

    Patches are upscaled by the largest integer factor that fits the cell (nearest) and jittered inside the cell
    when smaller than it. The source is split 70/15/15 first (stratified by class; identical patches kept together)
    and each image draws only from its split's part, so no patch is shared between splits. Pixels outside the
    object boxes are ``clip(N(0, background_noise), 0, 1)``; pixels inside a box are the patch, exactly.

    Returns (all deterministic for ``seed``; H = W = grid * cell, K classes, G = grid * grid cells, row-major):
        ``image`` float32 (n, C, H, W); ``labels`` uint8 (n, K) multi-hot; ``boxes`` int32 (n, G, 5) per cell
        ``[class, y0, x0, y1, x1]`` (half-open pixel box; ``[-1, 0, 0, 0, 0]`` for an empty cell); ``split`` unicode
        (n,) 'train'/'val'/'test' (70/15/15); ``class_names`` unicode (K,); ``ids`` unicode (n,) ``patchml_000000``;
        ``label`` int64 (n,) one of the image's classes drawn uniformly: the single label an ImageNet-style
        annotation would give, so ``patchml.npz`` trains a classifier with ``labelwise train`` as it is.
    Raises :class:`ConfigError` on out-of-range arguments and :class:`DataError` on a bad source."""
    objects_min, objects_max = _check_args(n, grid, objects, cell, background_noise)
    patches, patch_labels, class_names = load_source(source)
    _, channels, h, w = patches.shape
    if cell is None:
        cell = DIGITS_CELL if isinstance(source, str) and source == "digits" else max(h, w)
    if cell < h or cell < w:
        raise ConfigError(f"patchml: cell must be >= the source patch size {h}x{w}, got {cell}")
    scale = max(1, min(cell // h, cell // w))
    ph, pw = h * scale, w * scale
    # Channels last, upscaled by nearest neighbour (a Kronecker product with a block of ones).
    patches_hwc = np.repeat(np.repeat(patches.transpose(0, 2, 3, 1), scale, axis=1), scale, axis=2)

    rng = np.random.default_rng(seed)
    cells = grid * grid
    parts = _split_source(patches, patch_labels, rng, source)
    split_index = np.empty(n, dtype=np.int64)  # 0 train, 1 val, 2 test
    split_index[rng.permutation(n)] = np.repeat(np.arange(3), _split_sizes(n, every_part=False))

    # Which cells hold an object: the `count` cells of lowest random key.
    count = rng.integers(objects_min, objects_max + 1, n)
    rank = rng.random((n, cells)).argsort(axis=1).argsort(axis=1)
    occupied = rank < count[:, None]
    flat = np.flatnonzero(occupied)  # indices into (n * cells)
    img_of, cell_of = np.divmod(flat, cells)
    q = len(flat)

    # Which patch each object is: uniform over its image's split part of the source.
    u = rng.random(q)
    patch_of = np.empty(q, dtype=np.int64)
    obj_split = split_index[img_of]
    for s, part in enumerate(parts):
        sel = obj_split == s
        patch_of[sel] = part[np.minimum((u[sel] * len(part)).astype(np.int64), len(part) - 1)]
    oy = rng.integers(0, cell - ph + 1, q)
    ox = rng.integers(0, cell - pw + 1, q)

    # Place all patches at once on a (n * cells, cell, cell, C) canvas, then tile the cells into images.
    canvas = np.zeros((n * cells, cell, cell, channels), dtype=np.float32)
    inside = np.zeros((n * cells, cell, cell), dtype=bool)
    rows = oy[:, None, None] + np.arange(ph)[None, :, None]
    cols = ox[:, None, None] + np.arange(pw)[None, None, :]
    canvas[flat[:, None, None], rows, cols] = patches_hwc[patch_of]
    inside[flat[:, None, None], rows, cols] = True
    size = grid * cell
    image = (
        canvas.reshape(n, grid, grid, cell, cell, channels).transpose(0, 5, 1, 3, 2, 4).reshape(n, channels, size, size)
    )
    inside = inside.reshape(n, grid, grid, cell, cell).transpose(0, 1, 3, 2, 4).reshape(n, 1, size, size)
    if background_noise > 0:
        per_chunk = max(1, _CHUNK_PIXELS // (channels * size * size))
        for start in range(0, n, per_chunk):
            chunk = slice(start, min(start + per_chunk, n))
            noise = rng.standard_normal(image[chunk].shape, dtype=np.float32)
            noise *= np.float32(background_noise)
            np.clip(noise, 0.0, 1.0, out=noise)
            image[chunk] = np.where(inside[chunk], image[chunk], noise)

    # Boxes per cell (row-major) and the multi-hot label sets.
    boxes = np.zeros((n * cells, 5), dtype=np.int32)
    boxes[:, 0] = -1
    cls = patch_labels[patch_of]
    y0 = (cell_of // grid) * cell + oy
    x0 = (cell_of % grid) * cell + ox
    boxes[flat] = np.stack([cls, y0, x0, y0 + ph, x0 + pw], axis=1)
    labels = np.zeros((n, len(class_names)), dtype=np.uint8)
    labels[img_of, cls] = 1
    width = max(6, len(str(n - 1)))
    # The ImageNet-style single label: one of the image's classes, uniformly (its own stream: other arrays unchanged).
    pick = np.random.default_rng([seed, 1]).random(labels.shape)
    return {
        "image": np.ascontiguousarray(image),
        "labels": labels,
        "label": np.where(labels > 0, pick, -1.0).argmax(axis=1).astype(np.int64),
        "boxes": boxes.reshape(n, cells, 5),
        "split": np.array(SPLIT_NAMES, dtype="<U5")[split_index],
        "class_names": np.array(class_names, dtype=np.str_),
        "ids": np.array([f"patchml_{i:0{width}d}" for i in range(n)], dtype=np.str_),
    }


def write_patchml(out_dir: str | Path, arrays: Mapping[str, np.ndarray], images: bool = True) -> Path:
    """Write a :func:`make_patchml` result to ``out_dir``: ``patchml.npz``, ``label_sets.json``, ``boxes.json``,
    ``classes.json``, ``ids.txt`` and, with ``images``, one 8-bit PNG per image ``images/<id>.png``. Returns out_dir."""
    out_dir = Path(out_dir)
    missing = [key for key in ARRAY_KEYS if key not in arrays]
    if missing:
        raise DataError(f"write_patchml: arrays lack key(s) {', '.join(missing)} (expected {', '.join(ARRAY_KEYS)})")
    image, labels, boxes = np.asarray(arrays["image"]), np.asarray(arrays["labels"]), np.asarray(arrays["boxes"])
    ids = [str(i) for i in np.asarray(arrays["ids"])]
    names = [str(c) for c in np.asarray(arrays["class_names"])]
    n = len(ids)
    if image.ndim != 4 or image.shape[1] not in (1, 3):
        raise DataError(f"write_patchml: 'image' must be (n, C, H, W) with C 1 or 3, got shape {image.shape}")
    if labels.shape != (n, len(names)) or boxes.ndim != 3 or boxes.shape[::2] != (n, 5) or len(image) != n:
        raise DataError(
            f"write_patchml: shapes disagree: image {image.shape}, labels {labels.shape} "
            f"(expected ({n}, {len(names)})), "
            f"boxes {boxes.shape} (expected ({n}, cells, 5)), ids ({n},)"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder")

    save_npz(out_dir / "patchml.npz", arrays)
    label_sets = {i: np.flatnonzero(row).tolist() for i, row in zip(ids, labels, strict=True)}
    objects = {
        i: [{"class": int(b[0]), "name": names[b[0]], "box": b[1:].tolist()} for b in per_image if b[0] >= 0]
        for i, per_image in zip(ids, boxes, strict=True)
    }
    atomic_write(out_dir / "label_sets.json", json.dumps(label_sets))
    atomic_write(out_dir / "boxes.json", json.dumps(objects))
    atomic_write(out_dir / "classes.json", json.dumps(names))
    atomic_write(out_dir / "ids.txt", "".join(f"{i}\n" for i in ids))
    if images:
        from PIL import Image

        folder = out_dir / "images"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
        for i, px in zip(ids, pixels, strict=True):
            Image.fromarray(px[0] if px.shape[0] == 1 else px.transpose(1, 2, 0)).save(folder / f"{i}.png")
    return out_dir


def _check_args(n, grid, objects, cell, background_noise) -> tuple[int, int]:
    problems = []
    if not _is_int(n) or n < 1:
        problems.append(f"n must be an integer >= 1, got {n!r}")
    if not _is_int(grid) or grid < 1:
        problems.append(f"grid must be an integer >= 1, got {grid!r}")
    if cell is not None and (not _is_int(cell) or cell < 1):
        problems.append(f"cell must be an integer >= 1 or None, got {cell!r}")
    if not (isinstance(background_noise, (int, float, np.number)) and background_noise >= 0):
        problems.append(f"background_noise must be a number >= 0, got {background_noise!r}")
    if not (isinstance(objects, Sequence) and len(objects) == 2 and all(_is_int(o) for o in objects)):
        problems.append(f"objects must be a pair of integers (objects_min, objects_max), got {objects!r}")
        lo = hi = None
    else:
        lo, hi = int(objects[0]), int(objects[1])
        if lo < 1:
            problems.append(f"objects_min must be >= 1, got {lo}")
        if hi < lo:
            problems.append(f"objects_max must be >= objects_min ({lo}), got {hi}")
        if _is_int(grid) and grid >= 1 and hi > grid * grid:
            problems.append(f"objects_max must be <= grid * grid ({grid * grid}), got {hi}")
    if problems:
        raise ConfigError("patchml: " + "; ".join(problems))
    assert lo is not None and hi is not None  # a problem otherwise
    return lo, hi


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _split_sizes(m: int, every_part: bool) -> np.ndarray:
    """Train/val/test counts (3,) of ``m`` items, 70/15/15 rounded; ``every_part`` makes val and test >= 1."""
    val = int(np.floor(SPLIT_FRACTIONS[1] * m + 0.5))
    train = int(np.floor(SPLIT_FRACTIONS[0] * m + 0.5))
    if every_part:
        val = max(val, 1)
        train = min(train, m - val - 1)
    return np.array([train, val, m - train - val])


def _split_source(patches: np.ndarray, labels: np.ndarray, rng: np.random.Generator, source) -> list[np.ndarray]:
    """Source indices of the train, val and test parts: identical patches grouped, groups stratified by class."""
    flat = np.ascontiguousarray(patches.reshape(len(patches), -1))
    keys = flat.view(np.dtype((np.void, flat.shape[1] * flat.itemsize))).ravel()
    _, first, group = np.unique(keys, return_index=True, return_inverse=True)
    groups = len(first)
    if groups < 3:
        raise DataError(
            f"{source}: {groups} distinct image(s); patchml needs at least 3 so that train, val and test draw "
            "from disjoint patches"
        )
    # Spread each class evenly along one order (a seeded shuffle, then by rank / class size), then cut it 70/15/15.
    perm = rng.permutation(groups)
    lab = labels[first][perm]
    by_class = np.argsort(lab, kind="stable")
    sorted_lab = lab[by_class]
    rank = np.empty(groups, dtype=np.int64)
    rank[by_class] = np.arange(groups) - np.searchsorted(sorted_lab, sorted_lab, side="left")
    position = (rank + 0.5) / np.bincount(lab)[lab]
    order = perm[np.lexsort((lab, position))]
    group_split = np.empty(groups, dtype=np.int64)
    group_split[order] = np.repeat(np.arange(3), _split_sizes(groups, every_part=True))
    member_split = group_split[group.ravel()]
    return [np.flatnonzero(member_split == s) for s in range(3)]


def _load_folder(root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Patches, labels and class names from ``root/<class>/<image>`` (see :func:`load_source`)."""
    hint = "expected 'digits' or a folder with one subfolder of images per class"
    if not root.exists():
        raise DataError(f"{root}: no such folder ({hint})")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder ({hint})")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class subfolders ({hint})")
    files: list[Path] = []
    labels: list[int] = []
    for k, folder in enumerate(classes):
        found = sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not found:
            kinds = "/".join(s[1:] for s in IMAGE_SUFFIXES)
            raise DataError(f"{folder}: class {folder.name!r} holds no images ({kinds})")
        files += found
        labels += [k] * len(found)
    arrays = [_read_image(path) for path in files]
    channels = 3 if any(a.shape[2] == 3 for a in arrays) else 1
    h, w = arrays[0].shape[:2]
    patches = np.empty((len(arrays), channels, h, w), dtype=np.float32)
    for i, a in enumerate(arrays):
        if a.shape[:2] != (h, w):
            a = _resize(a, h, w)
        patches[i] = a.transpose(2, 0, 1)  # a gray (h, w, 1) broadcasts to RGB
    return np.clip(patches, 0.0, 1.0), np.array(labels, dtype=np.int64), [p.name for p in classes]


def _read_image(path: Path) -> np.ndarray:
    """One image as float32 (h, w, 1) for grayscale or (h, w, 3) for colour, scaled to [0, 1]."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _GRAY_MODES:
                if im.mode in ("1", "L", "LA"):
                    a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
                elif im.mode == "F":
                    a = np.asarray(im, dtype=np.float32)
                else:  # 16- or 32-bit integer grayscale, taken as 16-bit
                    a = np.asarray(im).astype(np.float32) / 65535.0
                return a[:, :, None]
            return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: cannot read image: {err}") from None


def _resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h0, w0, C) float32 -> (h, w, C), bilinear, channel by channel."""
    from PIL import Image

    channels = [Image.fromarray(np.ascontiguousarray(a[:, :, c])) for c in range(a.shape[2])]
    return np.stack([np.asarray(ch.resize((w, h), Image.Resampling.BILINEAR)) for ch in channels], axis=2)
