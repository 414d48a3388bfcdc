"""The Harvard-GDP layout reader: arrays in file order, attributes, and refusals naming the file and key."""

from __future__ import annotations

import numpy as np
import pytest

from labelwise.data.harvard import read_patients
from labelwise.errors import DataError


def patient(i: int, **change) -> dict:
    rng = np.random.default_rng(i)
    record = {
        "rnflt": rng.uniform(40, 120, (225, 225)),
        "glaucoma": np.array(i % 2),
        "progression": np.array([i % 2, 0, 1, 0, 0, 1]),
        "md": np.array(-1.5 * i),
        "tds": rng.normal(0, 2, 52),
        "age": np.array(60.0 + i),
        "male": np.array(i % 2),
        "race": np.array(i % 3),
        "hispanic": np.array(0),
    }
    record.update(change)
    return record


def test_reads_a_folder_in_name_order(tmp_path):
    for i in (2, 0, 1):
        np.savez(tmp_path / f"data_{i:04d}.npz", **patient(i))
    patients = read_patients(tmp_path)
    assert patients.ids == ["data_0000", "data_0001", "data_0002"] and len(patients) == 3
    assert patients.rnflt.shape == (3, 225, 225) and patients.rnflt.dtype == np.float32
    np.testing.assert_allclose(patients.rnflt[1], patient(1)["rnflt"].astype(np.float32))
    assert patients.glaucoma.tolist() == [0, 1, 0] and patients.progression.shape == (3, 6)
    assert patients.md.tolist() == [0.0, -1.5, -3.0] and patients.tds.shape == (3, 52)
    assert patients.attributes["race"].tolist() == [0, 1, 2] and patients.attributes["age"].tolist() == [60, 61, 62]


@pytest.mark.parametrize(
    "change, words",
    [
        ({"rnflt": np.zeros((200, 225))}, ["rnflt must be 225 x 225", "(200, 225)"]),
        ({"progression": np.array([0, 1, 2, 0, 0, 0])}, ["progression must be 6 values of 0 or 1"]),
        ({"tds": np.zeros(50)}, ["tds must hold 52", "got 50"]),
        ({"glaucoma": np.array(3)}, ["glaucoma must be 0 or 1"]),
        ({"age": np.array([60, 61])}, ["age must be one value"]),
    ],
)
def test_bad_files_are_refused_with_their_name(tmp_path, change, words):
    np.savez(tmp_path / "data_0007.npz", **patient(7, **change))
    with pytest.raises(DataError) as err:
        read_patients(tmp_path)
    assert "data_0007.npz" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_missing_keys_and_unreadable_files(tmp_path):
    record = patient(1)
    del record["hispanic"], record["md"]
    np.savez(tmp_path / "data_0001.npz", **record)
    with pytest.raises(DataError, match="missing key.*md, hispanic"):
        read_patients(tmp_path)
    (tmp_path / "data_0001.npz").write_text("not a zip")
    with pytest.raises(DataError, match="cannot read"):
        read_patients(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .npz files"):
        read_patients(empty)
