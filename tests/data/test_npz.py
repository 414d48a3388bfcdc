"""save_npz / load_npz: round trip, atomic write, clear DataError messages."""

from __future__ import annotations

import os

import numpy as np
import pytest

from labelwise.data.npz import load_npz, save_npz
from labelwise.data.synth import make_shapes
from labelwise.errors import DataError


def test_round_trip(tmp_path):
    arrays = make_shapes(n=12, size=8)
    path = save_npz(tmp_path / "sub" / "shapes.npz", arrays)
    assert path == tmp_path / "sub" / "shapes.npz" and path.is_file()
    loaded = load_npz(path, required=("image", "label", "mask", "split"))
    assert set(loaded) == set(arrays)
    for key in arrays:
        np.testing.assert_array_equal(loaded[key], arrays[key])
        assert loaded[key].dtype == arrays[key].dtype
    assert os.listdir(path.parent) == ["shapes.npz"]  # no temporary file left over


def test_compressed_and_name_kept(tmp_path):
    path = save_npz(tmp_path / "data.bin", {"image": np.zeros((2, 1, 4, 4), np.float32)}, compress=True)
    assert path.name == "data.bin" and path.is_file()
    assert load_npz(path)["image"].shape == (2, 1, 4, 4)


def test_overwrite_is_atomic_replace(tmp_path):
    path = tmp_path / "a.npz"
    save_npz(path, {"x": np.arange(3)})
    save_npz(path, {"x": np.arange(5)})
    assert load_npz(path)["x"].tolist() == [0, 1, 2, 3, 4]
    assert sorted(os.listdir(tmp_path)) == ["a.npz"]


def test_failed_save_leaves_nothing(tmp_path):
    with pytest.raises(DataError, match="object"):
        save_npz(tmp_path / "bad.npz", {"x": np.array([{"a": 1}], dtype=object)})
    assert os.listdir(tmp_path) == []


def test_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(DataError, match="no such file") as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_directory(tmp_path):
    with pytest.raises(DataError, match="not a file"):
        load_npz(tmp_path)


@pytest.mark.parametrize(
    "content, why", [(b"not a zip at all", "not a zip"), (b"", "not a zip"), (b"PK\x03\x04garbage", "cannot read")]
)
def test_unreadable(tmp_path, content, why):
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=why) as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_unreadable_permissions(tmp_path):
    path = save_npz(tmp_path / "locked.npz", {"x": np.arange(2)})
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that ignore file permissions")
        with pytest.raises(DataError, match="locked.npz"):
            load_npz(path)
    finally:
        path.chmod(0o644)


def test_saved_file_has_usual_permissions(tmp_path):
    path = save_npz(tmp_path / "p.npz", {"x": np.arange(2)})
    mask = os.umask(0o022)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_npy_is_not_npz(tmp_path):
    path = tmp_path / "single.npy"
    np.save(path, np.arange(4))
    with pytest.raises(DataError, match="single .npy array"):
        load_npz(path)


def test_pickled_arrays_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, x=np.array([None, 1], dtype=object))
    with pytest.raises(DataError, match="'x'") as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_truncated(tmp_path):
    path = save_npz(tmp_path / "t.npz", make_shapes(n=20, size=16))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="t.npz"):
        load_npz(path)


def test_required_keys(tmp_path):
    path = save_npz(tmp_path / "d.npz", {"image": np.zeros((3, 1, 4, 4), np.float32), "split": np.array(["train"] * 3)})
    with pytest.raises(DataError, match="label") as info:
        load_npz(path, required=("image", "label", "split"))
    assert str(path) in str(info.value) and "image" in str(info.value)  # lists what it found
    assert set(load_npz(path, required=("image", "split"))) == {"image", "split"}


@pytest.mark.parametrize(
    "key, bad",
    [
        ("label", np.zeros(4, np.int64)),
        ("mask", np.zeros((2, 4, 4), np.uint8)),
        ("split", np.array(["train"] * 5)),
        ("label", np.int64(3)),
    ],
)
def test_sample_counts_must_agree(tmp_path, key, bad):
    arrays = {
        "image": np.zeros((3, 1, 4, 4), np.float32),
        "label": np.zeros(3, np.int64),
        "mask": np.zeros((3, 4, 4), np.uint8),
        "split": np.array(["train"] * 3),
    }
    arrays[key] = bad
    path = save_npz(tmp_path / "d.npz", arrays)
    with pytest.raises(DataError, match=key) as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_other_keys_need_not_agree(tmp_path):
    path = save_npz(
        tmp_path / "d.npz",
        {
            "image": np.zeros((3, 1, 4, 4), np.float32),
            "class_names": np.array(["a", "b"]),
            "task": np.array("segmentation"),
        },
    )
    assert load_npz(path)["task"].item() == "segmentation"


def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    path = save_npz(tmp_path / "keep.npz", {"x": np.arange(3)})

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        save_npz(path, {"x": np.arange(7)})
    assert os.listdir(tmp_path) == ["keep.npz"]
    assert load_npz(path)["x"].tolist() == [0, 1, 2]
