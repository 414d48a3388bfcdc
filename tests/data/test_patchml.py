"""The patchml dataset: determinism, layout, label sets vs boxes, patches in boxes, honest splits, sources, files."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from PIL import Image

from labelwise.data.npz import load_npz
from labelwise.data.synth import load_source, make_patchml, write_patchml
from labelwise.data.synth.patchml import _split_source
from labelwise.errors import ConfigError, DataError


def _objects(a):
    """(image index, cell index) of every occupied cell."""
    return np.argwhere(a["boxes"][:, :, 0] >= 0)


def _region(a, i, c):
    _, y0, x0, y1, x1 = a["boxes"][i, c]
    return a["image"][i, :, y0:y1, x0:x1]


def _oracle_labels(boxes, num_classes):
    labels = np.zeros((len(boxes), num_classes), dtype=np.uint8)
    for i, per_image in enumerate(boxes):
        for k in per_image[:, 0]:
            if k >= 0:
                labels[i, k] = 1
    return labels


def test_layout_and_dtypes():
    a = make_patchml(n=30, grid=3, objects=(2, 5), seed=1)
    assert set(a) == {"image", "labels", "label", "boxes", "split", "class_names", "ids"}
    assert a["image"].shape == (30, 1, 48, 48) and a["image"].dtype == np.float32
    assert a["labels"].shape == (30, 10) and a["labels"].dtype == np.uint8
    assert a["boxes"].shape == (30, 9, 5) and a["boxes"].dtype == np.int32
    assert a["split"].shape == (30,) and a["split"].dtype.kind == "U"
    assert a["class_names"].tolist() == [str(k) for k in range(10)]
    assert a["ids"][0] == "patchml_000000" and a["ids"][-1] == "patchml_000029" and a["ids"].dtype.kind == "U"
    assert a["image"].min() >= 0 and a["image"].max() <= 1
    assert set(np.unique(a["labels"])) <= {0, 1}
    empty = a["boxes"][a["boxes"][:, :, 0] < 0]
    assert (empty[:, 1:] == 0).all()  # empty cells: zero-area box


def test_single_label_is_one_of_the_image_classes_uniformly():
    a = make_patchml(n=3000, grid=2, objects=(2, 2), seed=5)
    assert a["label"].dtype == np.int64
    assert (a["labels"][np.arange(3000), a["label"]] == 1).all()
    # with two distinct classes, the lower-numbered one is picked about half the time
    two = a["labels"].sum(1) == 2
    lower = a["label"][two] == a["labels"][two].argmax(1)
    assert 0.45 < lower.mean() < 0.55


def test_deterministic_for_a_seed():
    a, b = make_patchml(n=40, seed=3), make_patchml(n=40, seed=3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = make_patchml(n=40, seed=4)
    assert not np.array_equal(a["image"], c["image"]) and not np.array_equal(a["boxes"], c["boxes"])


def test_labels_are_the_classes_in_the_boxes():
    a = make_patchml(n=200, grid=3, objects=(1, 9), seed=2)
    np.testing.assert_array_equal(a["labels"], _oracle_labels(a["boxes"], 10))
    assert (a["labels"].sum(1) >= 1).all()


def test_object_counts_in_range_and_all_occur():
    a = make_patchml(n=400, grid=3, objects=(2, 6), seed=5)
    counts = (a["boxes"][:, :, 0] >= 0).sum(1)
    assert counts.min() >= 2 and counts.max() <= 6
    assert set(np.unique(counts)) == {2, 3, 4, 5, 6}
    full = make_patchml(n=5, grid=2, objects=(4, 4))
    assert ((full["boxes"][:, :, 0] >= 0).sum(1) == 4).all()


def test_boxes_hold_source_patches_and_background_is_empty():
    patches, labels, _ = load_source("digits")
    source = {p.tobytes(): k for p, k in zip(patches, labels)}
    a = make_patchml(n=60, grid=2, objects=(1, 4), background_noise=0.0, seed=7)
    outside = np.ones(a["image"].shape, dtype=bool)
    for i, c in _objects(a):
        k, y0, x0, y1, x1 = a["boxes"][i, c]
        assert (y1 - y0, x1 - x0) == (16, 16)
        assert (y0, x0) == (16 * (c // 2), 16 * (c % 2))  # no jitter: the patch fills its cell
        region = _region(a, i, c)
        np.testing.assert_array_equal(region, np.repeat(np.repeat(region[:, ::2, ::2], 2, 1), 2, 2))  # nearest x2
        assert source[np.ascontiguousarray(region[:, ::2, ::2]).tobytes()] == k  # a source patch of that class
        assert region.max() > 0
        outside[i, :, y0:y1, x0:x1] = False
    assert (a["image"][outside] == 0).all()


def test_jitter_keeps_boxes_inside_their_cell():
    a = make_patchml(n=80, grid=2, objects=(1, 4), cell=20, background_noise=0.0, seed=8)
    assert a["image"].shape == (80, 1, 40, 40)
    occ = a["boxes"][a["boxes"][:, :, 0] >= 0]
    cells = np.argwhere(a["boxes"][:, :, 0] >= 0)[:, 1]
    y0, x0, y1, x1 = occ[:, 1:].T
    assert ((y1 - y0) == 16).all() and ((x1 - x0) == 16).all()
    cy, cx = 20 * (cells // 2), 20 * (cells % 2)
    assert ((y0 >= cy) & (y1 <= cy + 20) & (x0 >= cx) & (x1 <= cx + 20)).all()
    assert len(np.unique(y0 - cy)) > 1 and len(np.unique(x0 - cx)) > 1  # objects actually move
    for i, c in _objects(a)[:20]:
        assert _region(a, i, c).max() > 0


def test_no_source_patch_shared_between_splits():
    a = make_patchml(n=600, grid=2, objects=(1, 4), seed=9)  # noise on: pixels inside boxes are still exact
    seen = {s: set() for s in ("train", "val", "test")}
    for i, c in _objects(a):
        seen[a["split"][i]].add(_region(a, i, c).tobytes())
    assert all(seen.values())
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    share = {s: np.mean(a["split"] == s) for s in seen}
    assert share == pytest.approx({"train": 0.70, "val": 0.15, "test": 0.15}, abs=0.01)


def test_source_split_is_a_stratified_partition():
    patches, labels, _ = load_source("digits")
    parts = _split_source(patches, labels, np.random.default_rng(0), "digits")
    joined = np.concatenate(parts)
    assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)
    assert [len(p) / len(labels) for p in parts] == pytest.approx([0.70, 0.15, 0.15], abs=0.01)
    for part in parts:
        assert set(labels[part]) == set(range(10))


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _folder(root, rgb=True):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        for j in range(3):
            _png(root / name / f"{j}.png", rng.integers(0, 256, (6, 6), dtype=np.uint8))
    if rgb:
        _png(root / "dog" / "rgb.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    _png(root / "cat" / "big.png", rng.integers(0, 256, (12, 9), dtype=np.uint8))  # resized to 6x6
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_folder_source(tmp_path):
    root = _folder(tmp_path / "src")
    patches, labels, names = load_source(root)
    assert names == ["cat", "dog"]
    assert patches.shape == (8, 3, 6, 6) and patches.dtype == np.float32
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and labels.dtype == np.int64
    assert 0 <= patches.min() and patches.max() <= 1
    first = np.asarray(Image.open(root / "cat" / "0.png"), dtype=np.float32) / 255
    for ch in range(3):  # a grayscale image in an RGB source is repeated on each channel
        np.testing.assert_allclose(patches[0, ch], first, atol=1e-6)

    a = make_patchml(root, n=40, grid=2, objects=(1, 2), seed=0)
    assert a["image"].shape == (40, 3, 12, 12) and a["labels"].shape == (40, 2)
    assert a["class_names"].tolist() == ["cat", "dog"]
    np.testing.assert_array_equal(a["labels"], _oracle_labels(a["boxes"], 2))

    gray = _folder(tmp_path / "gray", rgb=False)
    assert load_source(gray)[0].shape == (7, 1, 6, 6)
    assert make_patchml(gray, n=4, cell=13)["image"].shape == (4, 1, 26, 26)  # 6x6 x2 = 12, jittered in 13


def test_duplicate_patches_stay_in_one_split(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        for j in range(4):
            img = rng.integers(0, 256, (5, 5), dtype=np.uint8)
            for copy in range(3):
                _png(tmp_path / name / f"{j}_{copy}.png", img)
    a = make_patchml(tmp_path, n=200, grid=2, objects=(1, 4), seed=3)
    seen = {s: set() for s in ("train", "val", "test")}
    for i, c in _objects(a):
        seen[a["split"][i]].add(_region(a, i, c).tobytes())
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_source(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_source(tmp_path / "flat")
    root = _folder(tmp_path / "src")
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"empty.*holds no images"):
        load_source(root)
    (root / "empty" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match=r"broken\.png: cannot read image"):
        load_source(root)
    tiny = tmp_path / "tiny"
    _png(tiny / "a" / "0.png", np.zeros((4, 4), np.uint8))
    _png(tiny / "b" / "0.png", np.ones((4, 4), np.uint8))
    with pytest.raises(DataError, match="at least 3"):
        make_patchml(tiny, n=3)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n": 0}, "n must"),
        ({"n": 2.5}, "n must"),
        ({"grid": 0}, "grid must"),
        ({"objects": (0, 2)}, "objects_min"),
        ({"objects": (3, 2)}, "objects_max must be >= objects_min"),
        ({"objects": (1, 5), "grid": 2}, r"objects_max must be <= grid \* grid"),
        ({"objects": 3}, "objects must be a pair"),
        ({"cell": 4}, "cell must be >= the source patch size 8x8"),
        ({"cell": 0}, "cell must"),
        ({"background_noise": -0.1}, "background_noise"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        make_patchml(**kwargs)


def test_write_patchml(tmp_path):
    a = make_patchml(n=12, grid=2, objects=(1, 3), seed=4)
    out = write_patchml(tmp_path / "out", a)
    assert out == tmp_path / "out"
    ids = a["ids"].tolist()
    assert (out / "ids.txt").read_text().splitlines() == ids
    assert json.loads((out / "classes.json").read_text()) == a["class_names"].tolist()
    label_sets = json.loads((out / "label_sets.json").read_text())
    assert list(label_sets) == ids
    matrix = np.zeros_like(a["labels"])
    for row, i in enumerate(ids):
        assert label_sets[i] == sorted(label_sets[i])
        matrix[row, label_sets[i]] = 1
    np.testing.assert_array_equal(matrix, a["labels"])
    boxes = json.loads((out / "boxes.json").read_text())
    for row, i in enumerate(ids):
        expected = [b for b in a["boxes"][row].tolist() if b[0] >= 0]
        assert [[o["class"], *o["box"]] for o in boxes[i]] == expected
        assert all(o["name"] == a["class_names"][o["class"]] for o in boxes[i])
    loaded = load_npz(out / "patchml.npz")
    for key in a:
        np.testing.assert_array_equal(loaded[key], a[key])
    pngs = sorted(p.name for p in (out / "images").iterdir())
    assert pngs == [f"{i}.png" for i in ids]
    png = np.asarray(Image.open(out / "images" / f"{ids[5]}.png"))
    assert png.dtype == np.uint8 and png.shape == (32, 32)
    np.testing.assert_array_equal(png, np.round(a["image"][5, 0] * 255).astype(np.uint8))

    bare = write_patchml(tmp_path / "bare", a, images=False)
    assert not (bare / "images").exists() and (bare / "patchml.npz").is_file()
    with pytest.raises(DataError, match="lack key"):
        write_patchml(tmp_path / "bad", {k: v for k, v in a.items() if k != "boxes"})


def test_write_rgb_pngs(tmp_path):
    a = make_patchml(_folder(tmp_path / "src"), n=3, seed=0)
    write_patchml(tmp_path / "out", a)
    png = np.asarray(Image.open(tmp_path / "out" / "images" / "patchml_000000.png"))
    assert png.shape == (12, 12, 3)


def test_fast():
    start = time.perf_counter()
    a = make_patchml(n=10_000, grid=2)
    assert time.perf_counter() - start < 2.0
    assert a["image"].shape == (10_000, 1, 32, 32)
