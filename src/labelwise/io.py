"""Small file helpers shared by the engine, data writers and the report."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """The one atomic write: ``with atomic_path(p) as tmp: writer(tmp)`` yields a temporary file in the same folder
    (``.<name>.<random>.tmp``, created empty); when the block ends without an error that file is flushed to disk
    (fsync) and replaces ``path`` (``os.replace``), else it is removed and ``path`` is left as it was. Readers see
    the old file or the new one, never half of one. Parent folders are created; the file gets the usual
    permissions (umask). For writers that take a file name (``safetensors.torch.save_file``, a check that reads the
    file back before it replaces ``path``); :func:`atomic_open` and :func:`atomic_write` are built on it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        os.close(fd)
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # after the writer: mkstemp and safetensors' save_file make 0600 files
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """``with atomic_open(p) as f: f.write(...)``: a binary file whose contents replace ``path`` only when the block
    ends without an error (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    with atomic_open(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def fsync_file(path: str | Path) -> None:
    """Flush the file ``path`` from the operating system's cache to the disk (before a rename makes it visible)."""
    fd = os.open(path, os.O_RDWR)  # Windows cannot fsync a read-only descriptor
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def json_ready(value: Any) -> Any:
    """``value`` with every non-finite float (nan, inf) replaced by None, recursively through dicts, lists and tuples:
    what strict JSON (``allow_nan=False``) accepts, nan read back as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
