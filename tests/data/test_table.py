"""The classification table: parsing, checks, patient-level splits, images (Harvard .npz and pictures), loading
into a DataBundle, and the mixed labelled/unlabelled batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from labelwise.data import MixedBatchSampler, load_data
from labelwise.data.config import DataConfig
from labelwise.data.synth.rnflt import (
    VF_POINTS,
    make_patient,
    patient_seed,
    save_patient,
)
from labelwise.data.table import (
    read_table,
    split_patients,
    tds_grid,
    write_folder_table,
    write_harvard_table,
)
from labelwise.errors import DataError


def _pictures(tmp_path, n=12, size=8):
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = ("cat", "dog")[i % 2]
        (tmp_path / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(tmp_path / cls / f"im{i:02d}.png")


def _write(path, text):
    path.write_text(text)
    return path


def test_read_table_labels_flags_and_attributes(tmp_path):
    _pictures(tmp_path)
    table = _write(
        tmp_path / "t.csv",
        "id,image,split,use_label,label,sex\n"
        "a,cat/im00.png,train,1,dog,f\nb,dog/im01.png,train,0,cat,m\nc,cat/im02.png,train,,,m\n"
        "d,dog/im03.png,val,0,cat,f\ne,cat/im04.png,test,1,dog,m\n",
    )
    t = read_table(table, attributes=["sex"])
    assert t.class_names == ["cat", "dog"]  # names in sorted order
    assert t.labelled.tolist() == [True, False, False, True, True]  # val/test are always scored
    assert t.target.tolist() == [1, -1, -1, 0, 1]  # hidden labels never reach the targets
    assert t.attributes["sex"].tolist() == ["f", "m", "m", "f", "m"]
    assert not t.multilabel


def test_read_table_multilabel_and_integer_classes(tmp_path):
    _pictures(tmp_path)
    table = _write(tmp_path / "t.csv", "id,image,split,a,b,c\nx,cat/im00.png,train,1,0,1\ny,dog/im01.png,test,0,0,1\n")
    t = read_table(table, labels=["a", "b", "c"])
    assert t.multilabel and t.class_names == ["a", "b", "c"]
    assert t.target.tolist() == [[1, 0, 1], [0, 0, 1]]
    ints = _write(tmp_path / "i.csv", "id,image,split,label\nx,cat/im00.png,train,3\ny,dog/im01.png,test,0\n")
    assert read_table(ints).class_names == ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("a,cat/im00.png,train,,p1\nb,dog/im01.png,test,1,p1\n", r"patient p1 is in test \(b\) and in train \(a\)"),
        ("a,cat/im00.png,train,1,p1\na,dog/im01.png,test,1,p2\n", "duplicate id 'a'"),
        ("a,cat/im00.png,train,1,p1\nb,dog/im01.png,test,,p2\n", "test split but has no label"),
        ("a,cat/im00.png,training,1,p1\n", "split 'training'"),
        ("a,missing.png,train,1,p1\n", "image of a not found"),
    ],
)
def test_read_table_refuses_bad_rows(tmp_path, rows, message):
    _pictures(tmp_path)
    table = _write(tmp_path / "t.csv", "id,image,split,label,patient\n" + rows)
    with pytest.raises(DataError, match=message):
        read_table(table)


def test_read_table_names_missing_columns_and_bad_flags(tmp_path):
    _pictures(tmp_path)
    with pytest.raises(DataError, match="missing column.*race"):
        read_table(_write(tmp_path / "t.csv", "id,image,split,label\na,cat/im00.png,train,1\n"), attributes=["race"])
    with pytest.raises(DataError, match="use_label 'maybe'"):
        read_table(_write(tmp_path / "u.csv", "id,image,split,label,use_label\na,cat/im00.png,train,1,maybe\n"))
    with pytest.raises(DataError, match="must hold 0 or 1"):
        read_table(_write(tmp_path / "m.csv", "id,image,split,a,b\na,cat/im00.png,train,2,0\n"), labels=["a", "b"])


def test_split_patients_is_by_patient_and_seeded():
    patients = [f"p{i // 3}" for i in range(300)]  # three rows per patient
    splits, usable = split_patients(patients, val=0.2, test=0.2, labelled=0.25, seed=3)
    by_patient: dict[str, set] = {}
    for p, s, u in zip(patients, splits, usable, strict=True):
        by_patient.setdefault(p, set()).add((s, u))
    assert all(len(v) == 1 for v in by_patient.values())  # every row of a patient agrees
    firsts = [next(iter(v)) for v in by_patient.values()]
    assert sum(s == "val" for s, _ in firsts) == 20 and sum(s == "test" for s, _ in firsts) == 20
    train = [u for s, u in firsts if s == "train"]
    assert sum(train) == 15  # 25% of 60 training patients
    assert all(u for s, u in firsts if s != "train")
    assert (splits, usable) == split_patients(patients, val=0.2, test=0.2, labelled=0.25, seed=3)
    assert splits != split_patients(patients, val=0.2, test=0.2, labelled=0.25, seed=4)[0]


def test_tds_grid_places_each_point():
    values = np.arange(52, dtype=np.float32) + 1
    grid = tds_grid(values)
    assert (grid > 0).sum() == 52
    for k, (x, y) in enumerate(VF_POINTS):
        assert grid[int((21 - y) // 6), int((x + 27) // 6)] == values[k]
    assert grid[3, 7] == 0 and grid[4, 7] == 0  # the blind spot (15, +-3)


def _harvard(tmp_path, n=16):
    for i in range(n):
        save_patient(tmp_path, i, make_patient(patient_seed(0, i)))
    return write_harvard_table(tmp_path, val=0.25, test=0.25, labelled=0.5, seed=0)


def test_harvard_table_loads_as_one_or_two_modalities(tmp_path):
    table = _harvard(tmp_path)
    t = read_table(table, labels=["glaucoma"], attributes=["race", "male", "age_band"])
    assert len(t.ids) == 16 and set(t.splits) == {"train", "val", "test"}
    cfg = {
        "manifest": table,
        "task": "classification",
        "labels": ["glaucoma"],
        "attributes": ["race"],
        "image_size": [32, 32],
        "intensity": "channel",
        "batch_size": 2,
    }
    one = load_data(DataConfig(**cfg), keep_unlabelled=True)
    two = load_data(DataConfig(**cfg, modalities=["rnflt", "tds"]), keep_unlabelled=True)
    assert one.in_channels == 1 and two.in_channels == 2 and one.num_classes == 2
    train = two.split("train")
    assert train.image.shape[1:] == (2, 32, 32)
    assert torch.allclose(train.image.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-4)  # training-split statistics
    assert (train.target[~train.labelled] == -1).all() and (train.target[train.labelled] >= 0).all()
    labelled_only = load_data(DataConfig(**cfg), keep_unlabelled=False).split("train")
    assert bool(labelled_only.labelled.all()) and len(labelled_only) == int(train.labelled.sum())
    assert set(one.attributes) == {"race"} and one.attributes["race"].shape == (16,)
    progression = load_data(DataConfig(**{**cfg, "labels": [f"progression_{k}" for k in range(1, 7)]}))
    assert progression.multilabel and progression.num_classes == 6
    assert progression.split("test").target.shape[1] == 6


def test_folder_table_and_different_sizes(tmp_path):
    _pictures(tmp_path / "images")
    table = write_folder_table(tmp_path / "images", tmp_path / "t.csv", val=0.25, test=0.25, seed=1)
    data = load_data(DataConfig(manifest=table, task="classification", batch_size=2))
    assert data.class_names == ["cat", "dog"] and data.in_channels == 1
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "images" / "cat" / "im00.png")
    with pytest.raises(DataError, match="set data.image_size"):
        load_data(DataConfig(manifest=table, task="classification", batch_size=2))
    assert (
        load_data(DataConfig(manifest=table, task="classification", batch_size=2, image_size=[8, 8])).in_channels == 1
    )


def test_mixed_batches_hold_a_fixed_labelled_part_and_split_over_ranks():
    labelled, unlabelled = list(range(10)), list(range(10, 100))
    sampler = MixedBatchSampler(labelled, unlabelled, global_batch=8, n_labelled=2, max_steps=30, seed=0)
    batches = list(sampler)
    assert all(sum(i < 10 for i in b) == 2 and len(b) == 8 for b in batches)
    assert {i for b in batches[:5] for i in b if i < 10} == set(labelled)  # one epoch of the labelled pool: 5 steps
    ranks = [list(MixedBatchSampler(labelled, unlabelled, 8, 2, 30, 0, rank=r, world=2)) for r in (0, 1)]
    for step, whole in enumerate(batches):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(whole)
    resumed = list(MixedBatchSampler(labelled, unlabelled, 8, 2, 30, 0, start_step=17))
    assert resumed == batches[17:]
    with pytest.raises(ValueError, match="labelled samples per batch"):
        MixedBatchSampler(labelled, unlabelled, 8, 3, 30, 0, world=2)
