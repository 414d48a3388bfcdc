"""labelwise.io: the one atomic write (temporary file in the same folder, fsync, os.replace)."""

import os
import stat

import pytest
import torch

from labelwise import io
from labelwise.io import atomic_open, atomic_path, atomic_write


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    assert atomic_write(path, "first") == path  # parent folders created
    atomic_write(path, b"\x00second")
    assert path.read_bytes() == b"\x00second"
    assert os.listdir(path.parent) == ["out.json"]


def test_atomic_write_text_is_utf8(tmp_path):
    atomic_write(tmp_path / "a.txt", "\u00e9\u2713")
    assert (tmp_path / "a.txt").read_bytes() == "\u00e9\u2713".encode("utf-8")


def test_failing_writer_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "scores.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_open(path) as f:
        f.write(b"half of the new")
        raise RuntimeError("disk on fire")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["scores.json"]


def test_failing_writer_on_a_new_file_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "new.bin") as tmp:
        tmp.write_bytes(b"x")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_atomic_path_writes_by_name_in_the_same_folder(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_text("old")
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".weights.safetensors.") and tmp.suffix == ".tmp"
        assert tmp.is_file() and tmp.stat().st_size == 0
        tmp.write_text("new")
        assert path.read_text() == "old"  # not visible before the block ends
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["weights.safetensors"]


def test_fsync_before_replace(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(io.os, "fsync", lambda fd: (events.append(("fsync", os.pread(fd, 100, 0))), real_fsync(fd))[1])
    monkeypatch.setattr(io.os, "replace", lambda a, b: (events.append(("replace",)), real_replace(a, b))[1])
    atomic_write(tmp_path / "a.txt", "payload")
    assert events == [("fsync", b"payload"), ("replace",)]  # the data is on disk before the name points at it


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640  # not mkstemp's 0600


def test_a_writer_that_recreates_the_file_still_gets_the_umask(tmp_path):
    """safetensors' save_file writes a new 0600 file whatever was there; the weights must stay readable."""
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model.safetensors") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model.safetensors").stat().st_mode) == 0o644
