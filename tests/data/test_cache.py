"""The case cache of manifest data (data larger than memory): where it lives, when it is reused and rebuilt, its
arrays against the reader and preprocessing, patches against an in-memory reference, loader workers, 2D pictures,
and the streamed training statistics against numpy."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from conftest import make_set
from PIL import Image
from torch.utils.data import DataLoader

from labelwise.data import StepBatchSampler, load_data
from labelwise.data.cache import CACHE_NAME, CachedVolumes, label_dtype
from labelwise.data.config import DataConfig
from labelwise.data.intensity import intensity_statistics_of, preprocess_image
from labelwise.data.manifest import read_manifest
from labelwise.data.volumes import read_image, read_volume


def segmentation(manifest, **data) -> DataConfig:
    return DataConfig(manifest=manifest, task="segmentation", **data)


def volumes_of(bundle) -> dict[str, CachedVolumes]:
    """The cached whole-case datasets of every split (the training patches' volumes for train)."""
    return {name: getattr(split, "volumes", split) for name, split in bundle.splits.items()}


def entry_stats(bundle) -> dict[str, tuple[str, int, int]]:
    """Per case id: its entry's folder name and its image file's inode and modification time."""
    out = {}
    for split in volumes_of(bundle).values():
        for case, entry in zip(split.cases, split.entries):
            stat = (entry.folder / "image.npy").stat()
            out[case.id] = (str(entry.folder), stat.st_ino, stat.st_mtime_ns)
    return out


def test_the_cache_is_reused_and_rebuilt_when_the_scheme_or_a_file_changes(tmp_path, capsys):
    manifest = make_set(tmp_path)
    cfg = segmentation(manifest, patch_size=[8, 8, 8], patches_per_volume=4)
    first = entry_stats(load_data(cfg))
    assert "caching 4 case(s)" in capsys.readouterr().err  # 2 labelled training cases, val, test
    folder = tmp_path / CACHE_NAME
    assert (folder / ".gitignore").read_text().splitlines()[-1] == "*"  # git never sees it
    assert (folder / "CACHEDIR.TAG").is_file()

    assert entry_stats(load_data(cfg)) == first  # unchanged: every case reused, nothing rewritten
    assert "caching" not in capsys.readouterr().err

    zscore = entry_stats(load_data(segmentation(manifest, patch_size=[8, 8, 8], intensity="zscore")))
    assert "caching 4 case(s)" in capsys.readouterr().err
    assert all(zscore[k][0] != first[k][0] for k in first)  # another scheme: entries of its own
    assert entry_stats(load_data(cfg)) == first  # ... and the first config's are still there

    label = tmp_path / "labels" / "case1.nii.gz"
    stat = label.stat()
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touched: same bytes, newer
    touched = entry_stats(load_data(cfg))
    assert "caching 1 case(s)" in capsys.readouterr().err
    assert touched["case1"][0] != first["case1"][0] and not os.path.exists(first["case1"][0])  # old entry removed
    assert {k: v for k, v in touched.items() if k != "case1"} == {k: v for k, v in first.items() if k != "case1"}


def test_the_cache_folder_is_data_cache_relative_to_the_manifest(tmp_path):
    manifest = make_set(tmp_path)
    bundle = load_data(segmentation(manifest, cache="elsewhere"))
    entry = volumes_of(bundle)["test"].entries[0]
    assert entry.folder.parents[1] == tmp_path / "elsewhere" and not (tmp_path / CACHE_NAME).exists()
    assert (tmp_path / "elsewhere" / ".gitignore").is_file()
    load_data(segmentation(manifest, cache=tmp_path / "labels"))  # a folder of other files: used, never marked
    assert not (tmp_path / "labels" / ".gitignore").exists() and not (tmp_path / "labels" / "CACHEDIR.TAG").exists()


@pytest.mark.parametrize("intensity", ["max", "zscore", "none", "channel", "percentile"])
def test_cached_arrays_are_the_reader_and_preprocessing_output(tmp_path, intensity):
    manifest = make_set(tmp_path)
    bundle = load_data(segmentation(manifest, intensity=intensity), keep_unlabelled=True)
    for name, split in volumes_of(bundle).items():
        for i, case in enumerate(split.cases):
            raw = read_image(case.image)
            expected = preprocess_image(raw.array, bundle.preprocessing)
            image = split.image[i]
            assert image.dtype == torch.float32 and np.array_equal(image.numpy(), expected)
            assert split.spacings[i] == raw.spacing and np.array_equal(split.affines[i], raw.affine)
            assert split[i]["target"].dtype == torch.int64
            if case.labelled:
                label = read_volume(case.label, mask=True).array
                assert np.array_equal(split.target[i].numpy(), label)
                stored = np.load(split.entries[i].folder / "label.npy", mmap_mode="r")
                assert stored.dtype == np.uint8  # labels 0/1: one byte a voxel
                assert np.array_equal(split.foreground[i], np.flatnonzero(label > 0))
            else:
                assert name == "train" and split.target[i].sum() == 0 and len(split.foreground[i]) == 0
    assert [label_dtype(t) for t in (1, 255, 256, 70_000, 2**33)] == [
        np.uint8,
        np.uint8,
        np.uint16,
        np.uint32,
        np.int64,
    ]


def reference_patch(images, targets, labelled, patch, ratio, seed, i):
    """Patch ``i`` drawn from whole arrays in memory: the rule of data.patch_size written out (seeded by (seed, i):
    centred on a random foreground voxel with probability ``ratio``, else anywhere; shifted to fit, zero-padded)."""
    rng = np.random.default_rng([seed, i])
    v = i % len(images)
    image, target = images[v], targets[v]
    foreground = np.flatnonzero(target > 0) if labelled[v] else []
    if len(foreground) and rng.random() < ratio:
        centre = np.unravel_index(foreground[rng.integers(len(foreground))], target.shape)
    else:
        centre = [rng.integers(s) for s in target.shape]
    lows = [min(max(c - p // 2, 0), max(s - p, 0)) for c, p, s in zip(centre, patch, target.shape)]
    window = tuple(slice(lo, lo + p) for lo, p in zip(lows, patch))
    out_image = np.zeros((image.shape[0], *patch), np.float32)
    out_target = np.zeros(patch, np.int64)
    crop = target[window]
    out_image[(slice(None), *(slice(0, n) for n in crop.shape))] = image[(slice(None), *window)]
    out_target[tuple(slice(0, n) for n in crop.shape)] = crop
    return out_image, out_target


def test_patches_from_the_cache_are_the_in_memory_reference(tmp_path):
    manifest = make_set(tmp_path)
    patch = (12, 8, 32)  # longer than the volumes' last axis (28): padded there
    bundle = load_data(
        segmentation(
            manifest, patch_size=list(patch), patches_per_volume=10, foreground_ratio=0.7, intensity="channel"
        ),
        keep_unlabelled=True,
        seed=5,
    )
    patches = bundle.split("train")
    cases = patches.volumes.cases
    images = [preprocess_image(read_image(c.image).array, bundle.preprocessing) for c in cases]
    targets = [
        read_volume(c.label, mask=True).array if c.labelled else np.zeros(images[k].shape[1:], np.int64)
        for k, c in enumerate(cases)
    ]
    assert len(patches) == 30
    for i in range(len(patches)):
        image, target = reference_patch(images, targets, [c.labelled for c in cases], patch, 0.7, 5, i)
        sample = patches[i]
        assert np.array_equal(sample["image"].numpy(), image) and np.array_equal(sample["target"].numpy(), target)
        assert sample["target"].dtype == torch.int64 and int(sample["index"]) == i
        assert bool(sample["labelled"]) == cases[i % 3].labelled


def test_loader_workers_give_the_batches_of_one_process(tmp_path, monkeypatch):
    """Two worker processes open their own memory maps and give exactly the batches one process gives."""
    import labelwise.data.cache as cache

    manifest = make_set(tmp_path)
    patches = load_data(segmentation(manifest, patch_size=[8, 8, 8], patches_per_volume=6), seed=2).split("train")

    def batches(workers: int) -> list[dict[str, torch.Tensor]]:
        sampler = StepBatchSampler(len(patches), 3, 8, seed=2)
        return list(DataLoader(patches, batch_sampler=sampler, num_workers=workers))

    alone, workers = batches(0), batches(2)
    assert len(alone) == len(workers) == 8
    for a, b in zip(alone, workers):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    maps = patches.volumes.image.maps
    assert maps._open  # this process opened its own maps ...
    copy = pickle.loads(pickle.dumps(patches))
    assert len(pickle.dumps(patches)) < 50_000 and not copy.volumes.image.maps._open  # ... and never ships them
    assert torch.equal(copy[5]["image"], patches[5]["image"])
    monkeypatch.setattr(cache, "OPEN_CASES", 1)  # at most one case's maps open: older ones are closed
    fresh = pickle.loads(pickle.dumps(patches))
    for i in range(len(fresh)):
        fresh[i]
    assert list(fresh.volumes.image.maps._open) == [(len(fresh) - 1) % 2]


def test_a_2d_picture_manifest_with_a_roi_is_cached(tmp_path):
    rng = np.random.default_rng(1)
    rows = ["id,image,label,split,roi"]
    for i, split in enumerate(("train", "train", "val", "test")):
        image = rng.random((30, 26, 3))
        mask = image[..., 0] > 0.7
        roi = np.zeros((30, 26), bool)
        roi[3:-3, 2:-2] = True
        Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / f"c{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / f"c{i}_mask.png")
        Image.fromarray(roi.astype(np.uint8) * 255).save(tmp_path / f"c{i}_roi.png")
        rows.append(f"c{i},c{i}.png,c{i}_mask.png,{split},c{i}_roi.png")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    bundle = load_data(segmentation(tmp_path / "m.csv", patch_size=[16, 32], patches_per_volume=3, intensity="channel"))
    assert (bundle.spatial_dims, bundle.in_channels, bundle.num_classes) == (2, 3, 2)
    val = bundle.split("val")
    case = read_manifest(tmp_path / "m.csv")[2]
    assert np.array_equal(val.image[0].numpy(), preprocess_image(read_image(case.image).array, bundle.preprocessing))
    roi = val.rois[0]
    assert roi.dtype == torch.bool and np.array_equal(roi.numpy(), read_volume(case.roi, mask=True).array > 0)
    assert torch.equal(val.target[0], torch.from_numpy(read_volume(case.label, mask=True).array))
    sample = bundle.split("train")[4]
    assert sample["image"].shape == (3, 16, 32) and sample["image"][:, :, 26:].abs().sum() == 0  # padded columns


def test_streamed_channel_statistics_are_numpys_over_the_stacked_images(tmp_path):
    manifest = make_set(tmp_path, splits=("train", "train", "train", "val", "test"), unlabelled=())
    bundle = load_data(segmentation(manifest, intensity="channel"))
    stacked = np.stack([read_image(c.image).array for c in read_manifest(manifest) if c.split == "train"])
    oracle = stacked.astype(np.float64)
    np.testing.assert_allclose(bundle.preprocessing["channel_mean"], oracle.mean(axis=(0, 2, 3, 4)), rtol=1e-12)
    np.testing.assert_allclose(bundle.preprocessing["channel_std"], oracle.std(axis=(0, 2, 3, 4)), rtol=1e-10)

    rng = np.random.default_rng(0)  # images of different sizes and scales, 2 channels, streamed from a generator
    images = [(rng.normal(3 * k, k + 1, (2, 5 + k, 7)) * [[[1]], [[100]]]).astype(np.float32) for k in range(6)]
    statistics = intensity_statistics_of(((image, None) for image in images), "channel")
    voxels = np.concatenate([image.reshape(2, -1) for image in images], axis=1).astype(np.float64)
    np.testing.assert_allclose(statistics["channel_mean"], voxels.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(statistics["channel_std"], voxels.std(axis=1), rtol=1e-10)


def test_slices_of_a_cached_split_stay_lazy(tmp_path):
    test = load_data(
        segmentation(make_set(tmp_path, splits=("train", "test", "test", "test", "test"), unlabelled=()))
    ).split("test")
    part = test.image[1:3]
    assert not test.image.maps._open and len(part) == 2 and part.shapes == test.shapes[1:3]  # nothing read yet
    assert torch.equal(part[1], test.image[2]) and torch.equal(list(test.target[::2])[1], test.target[2])
