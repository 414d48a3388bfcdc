"""``labelwise evaluate classification``: files in, the documented JSON out, bad input refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelwise.cli import main
from labelwise.data.labelsets import load_label_sets
from labelwise.metrics import multilabel as ml

KEYS = {"n_images", "top1", "top5", "real_top1", "real_top5", "n_real_scored", "variable_topk_subset",
        "variable_topk_fraction", "subgroup_accuracy", "asma", "multi_label_fraction"}


def _run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "classification", *args])
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def _v2_files(tmp_path, rows: int = 300):
    """Scores for the first ``rows`` ImageNetV2 images, ids in the dataset's ``<class>/<sha1>.jpeg`` layout."""
    v2 = load_label_sets("imagenetv2-multilabel")
    rng = np.random.default_rng(0)
    keys = v2.ids[:rows]
    folder = rng.integers(0, 1000, rows)
    scores = rng.standard_normal((rows, 1000)).astype(np.float16)
    scores[np.arange(rows), folder] += 3  # the model often picks the folder class
    np.save(tmp_path / "model.npy", scores)
    (tmp_path / "ids.txt").write_text("\n".join(f"imagenetv2/{f}/{k}" for f, k in zip(folder, keys, strict=True)))
    return v2, keys, folder, scores


def test_json_for_imagenetv2_with_class_folders(tmp_path, capsys):
    v2, keys, folder, scores = _v2_files(tmp_path)
    out = tmp_path / "scores.json"
    code, stdout, _ = _run(capsys, "--predictions", str(tmp_path / "model.npy"), "--label-sets", "imagenetv2-multilabel",
                           "--ids", str(tmp_path / "ids.txt"), "--json", str(out), "--report", str(tmp_path / "r.html"))
    assert code in (0, None)
    result = json.loads(out.read_text())
    assert KEYS <= set(result) and result["n_images"] == 300
    sets = [v2.sets[v2.ids.index(k)] for k in keys]
    expected = ml.summarize(scores, ml.label_set_matrix(sets, 1000), folder)
    for key in ("top1", "top5", "real_top1", "variable_topk_subset", "asma", "multi_label_fraction"):
        assert result[key] == pytest.approx(expected[key])
    assert all(0 <= result[k] <= 1 for k in ("top1", "real_top5", "variable_topk_fraction"))
    assert "real_top1" in stdout and (tmp_path / "r.html").read_text().count("<img") == 2


def test_several_models_csv_and_integer_predictions(tmp_path, capsys):
    rng = np.random.default_rng(1)
    sets = [[0], [1, 2], [], [3]]
    (tmp_path / "sets.json").write_text(json.dumps(sets))
    np.save(tmp_path / "a.npy", rng.standard_normal((4, 5)).astype(np.float32))
    np.save(tmp_path / "b.npy", np.array([0, 2, 4, 3]))
    code, _, _ = _run(capsys, "--predictions", str(tmp_path / "a.npy"), "--predictions", str(tmp_path / "b.npy"),
                      "--label-sets", str(tmp_path / "sets.json"), "--csv", str(tmp_path / "t.csv"),
                      "--json", str(tmp_path / "t.json"))
    assert code in (0, None)
    result = json.loads((tmp_path / "t.json").read_text())
    b = result["models"][1]
    assert b["model"] == "b" and b["real_top1"] == 1.0 and b["n_real_scored"] == 3
    assert b["variable_topk_subset"] is None and "variable_topk_subset" in b["unavailable"]
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("model,n_images,")


@pytest.mark.parametrize("case, message", [
    ("bad_id", "--ids entry 2 ('nothere.jpeg') is not in label set imagenetv2-multilabel"),
    ("rows", "the predictions have 300 rows but label set imagenet-real has 50000 images"),
    ("class", "row 3 predicts class 1000, outside [0, 1000)"),
    ("no_ids", "label set imagenetv2-multilabel has no row order: give --ids"),
    ("topk", "--topk '1,x'"),
])
def test_bad_input_is_refused_with_the_entry_named(tmp_path, capsys, case, message):
    _v2_files(tmp_path)
    model, ids = str(tmp_path / "model.npy"), tmp_path / "ids.txt"
    args = ["--predictions", model, "--label-sets", "imagenetv2-multilabel", "--ids", str(ids)]
    if case == "bad_id":
        lines = ids.read_text().splitlines()
        ids.write_text("\n".join([lines[0], "nothere.jpeg", *lines[2:]]))
    elif case == "rows":
        args = ["--predictions", model, "--label-sets", "imagenet-real"]
    elif case == "class":
        np.save(tmp_path / "classes.npy", np.array([1, 2, 1000] + [0] * 297))
        args[1] = str(tmp_path / "classes.npy")
    elif case == "no_ids":
        args = args[:4]
    elif case == "topk":
        args += ["--topk", "1,x"]
    code, _, err = _run(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_pt_and_npz_inputs_read_the_same_scores(tmp_path, capsys):
    import torch

    rng = np.random.default_rng(4)
    scores = rng.standard_normal((4, 5)).astype(np.float32)
    (tmp_path / "sets.json").write_text(json.dumps({"a": [0], "b": [1, 2], "c": [3], "d": [4]}))
    torch.save({"logits": torch.from_numpy(scores), "step": torch.tensor(3)}, tmp_path / "m.pt")
    np.savez(tmp_path / "m.npz", probability=scores, target=np.arange(4))
    results = []
    for name in ("m.pt", "m.npz"):
        _run(capsys, "--predictions", str(tmp_path / name), "--label-sets", str(tmp_path / "sets.json"),
             "--single-labels", str(tmp_path / "m.npz"), "--json", str(tmp_path / f"{name}.json"))
        results.append(json.loads((tmp_path / f"{name}.json").read_text()))
    keys = ("top1", "real_top1", "variable_topk_subset", "asma")
    assert [results[0][k] for k in keys] == [results[1][k] for k in keys]


def test_data_synth_patchml_cli(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "synth", "patchml", "--out", str(tmp_path / "p"), "--n", "40", "--objects", "2-3", "--no-images"])
    assert info.value.code in (0, None)
    sets = json.loads((tmp_path / "p" / "label_sets.json").read_text())
    assert len(sets) == 40 and all(1 <= len(s) <= 3 for s in sets.values())
    assert not (tmp_path / "p" / "images").exists()
    code, _, err = _run(capsys, "--predictions", "x.npy", "--label-sets", "nope.json")
    assert code == 2 and "not a built-in set" in err
