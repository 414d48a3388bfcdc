"""``labelwise evaluate classification``: files in, the documented JSON out, bad input refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labelwise.cli import main
from labelwise.data.labelsets import load_label_sets
from labelwise.metrics import multilabel as ml

KEYS = {
    "n_images",
    "top1",
    "top5",
    "real_top1",
    "real_top5",
    "n_real_scored",
    "variable_topk_subset",
    "variable_topk_fraction",
    "subgroup_accuracy",
    "asma",
    "multi_label_fraction",
}


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
    code, stdout, _ = _run(
        capsys,
        "--predictions",
        str(tmp_path / "model.npy"),
        "--label-sets",
        "imagenetv2-multilabel",
        "--ids",
        str(tmp_path / "ids.txt"),
        "--json",
        str(out),
        "--report",
        str(tmp_path / "r.html"),
    )
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
    code, _, _ = _run(
        capsys,
        "--predictions",
        str(tmp_path / "a.npy"),
        "--predictions",
        str(tmp_path / "b.npy"),
        "--label-sets",
        str(tmp_path / "sets.json"),
        "--csv",
        str(tmp_path / "t.csv"),
        "--json",
        str(tmp_path / "t.json"),
    )
    assert code in (0, None)
    result = json.loads((tmp_path / "t.json").read_text())
    b = result["models"][1]
    assert b["model"] == "b" and b["real_top1"] == 1.0 and b["n_real_scored"] == 3
    assert b["variable_topk_subset"] is None and "variable_topk_subset" in b["unavailable"]
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("model,n_images,")


@pytest.mark.parametrize(
    "case, message",
    [
        ("bad_id", "--ids entry 2 ('nothere.jpeg') is not in label set imagenetv2-multilabel"),
        ("rows", "the predictions have 300 rows but label set imagenet-real has 50000 images"),
        ("class", "row 3 predicts class 1000, outside [0, 1000)"),
        ("no_ids", "label set imagenetv2-multilabel has no row order: give --ids"),
        ("topk", "--topk '1,x'"),
    ],
)
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
        _run(
            capsys,
            "--predictions",
            str(tmp_path / name),
            "--label-sets",
            str(tmp_path / "sets.json"),
            "--single-labels",
            str(tmp_path / "m.npz"),
            "--json",
            str(tmp_path / f"{name}.json"),
        )
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


# --- integer dtypes, one --labels for both paths, logits and bootstrap of the fairness path -----------------------


def _sets_and_classes(tmp_path, n: int = 60, c: int = 100):
    rng = np.random.default_rng(7)
    sets = [sorted(set(rng.integers(0, c, rng.integers(0, 4)).tolist())) for _ in range(n)]
    (tmp_path / "sets.json").write_text(json.dumps(sets))
    classes = np.array([s[0] if s and rng.random() < 0.6 else rng.integers(0, c) for s in sets], dtype=np.int64)
    single = np.array([s[-1] if s else rng.integers(0, c) for s in sets], dtype=np.int64)
    return sets, classes, single


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int8, np.uint8])
def test_integer_predictions_of_any_dtype_score_as_int64(tmp_path, capsys, dtype):
    """cleanlab's published ImageNet argmax file is a uint16 .npy: any integer dtype gives the int64 result."""
    _, classes, single = _sets_and_classes(tmp_path)
    results = {}
    for name, kind in (("int64", np.int64), ("other", dtype)):
        np.save(tmp_path / f"{name}.npy", classes.astype(kind))
        np.save(tmp_path / f"{name}_labels.npy", single.astype(kind))
        code, _, err = _run(
            capsys,
            "--predictions",
            str(tmp_path / f"{name}.npy"),
            "--label-sets",
            str(tmp_path / "sets.json"),
            "--labels",
            str(tmp_path / f"{name}_labels.npy"),
            "--bootstrap",
            "20",
            "--json",
            str(tmp_path / f"{name}.json"),
        )
        assert code in (0, None), err
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["other"]["top1"] is not None and results["other"]["real_top1"] is not None
    assert {k: v for k, v in results["other"].items() if k not in ("model", "file")} == {
        k: v for k, v in results["int64"].items() if k not in ("model", "file")
    }


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int8])
def test_integer_scores_and_tensors_of_any_dtype(dtype):
    import torch

    sets, classes, single = _sets_and_classes_in_memory()
    matrix = ml.label_set_matrix(sets, 100)
    scores = np.random.default_rng(3).integers(0, 120, (len(sets), 100))
    expected = ml.summarize(scores, matrix, single, threshold=60)
    got = ml.summarize(scores.astype(dtype), matrix, single.astype(dtype), threshold=60)
    assert got == expected
    as_tensor = ml.summarize(torch.from_numpy(classes.astype(dtype)), matrix, torch.from_numpy(single.astype(dtype)))
    assert as_tensor == ml.summarize(classes, matrix, single)


def _sets_and_classes_in_memory():
    rng = np.random.default_rng(5)
    sets = [sorted(set(rng.integers(0, 100, rng.integers(1, 4)).tolist())) for _ in range(40)]
    return sets, rng.integers(0, 100, 40), np.array([s[0] for s in sets])


def test_labels_csv_or_single_label_file_feed_the_label_set_scores(tmp_path, capsys):
    """--labels takes a CSV (matched by --ids, or in file order) or a single-label file; --single-labels is its
    alias."""
    sets, classes, single = _sets_and_classes(tmp_path)
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((len(sets), 100)).astype(np.float32)
    scores[np.arange(len(sets)), classes] += 2
    np.save(tmp_path / "model.npy", scores)
    np.save(tmp_path / "single.npy", single)
    ids = [f"val/{i}.jpeg" for i in range(len(sets))]
    (tmp_path / "ids.txt").write_text("\n".join(ids))
    # the label-set file is a list: its ids are "0", "1", ...; write them as a JSON object keyed by image name
    (tmp_path / "sets_by_id.json").write_text(json.dumps({f"{i}.jpeg": s for i, s in enumerate(sets)}))
    order = rng.permutation(len(sets))
    (tmp_path / "labels.csv").write_text("id,other,label\n" + "".join(f"{i}.jpeg,x,{single[i]}\n" for i in order))
    (tmp_path / "in_order.csv").write_text("id,label\n" + "".join(f"r{i},{single[i]}\n" for i in range(len(sets))))
    runs = {
        "npy": ["--label-sets", str(tmp_path / "sets.json"), "--labels", str(tmp_path / "single.npy")],
        "alias": ["--label-sets", str(tmp_path / "sets.json"), "--single-labels", str(tmp_path / "single.npy")],
        "csv_by_id": [
            "--label-sets",
            str(tmp_path / "sets_by_id.json"),
            "--ids",
            str(tmp_path / "ids.txt"),
            "--labels",
            str(tmp_path / "labels.csv"),
        ],
        "csv_in_order": ["--label-sets", str(tmp_path / "sets.json"), "--labels", str(tmp_path / "in_order.csv")],
    }
    expected = ml.summarize(scores, ml.label_set_matrix(sets, 100), single)
    for name, args in runs.items():
        code, _, err = _run(
            capsys, "--predictions", str(tmp_path / "model.npy"), *args, "--json", str(tmp_path / f"{name}.json")
        )
        assert code in (0, None), (name, err)
        got = json.loads((tmp_path / f"{name}.json").read_text())
        for key in ("top1", "top5", "real_top1", "variable_topk_subset", "asma"):
            assert got[key] == pytest.approx(expected[key]), (name, key)
    # a CSV label column with text, ids not in the CSV, several columns: refused by name
    code, _, err = _run(
        capsys,
        "--predictions",
        str(tmp_path / "model.npy"),
        *runs["csv_by_id"][:4],
        "--labels",
        str(tmp_path / "labels.csv"),
        "--label-column",
        "other",
    )
    assert code == 2 and "labels.csv: column(s) other must hold integer labels" in err
    (tmp_path / "ids.txt").write_text("\n".join([*ids[:-1], "val/missing.jpeg"]))
    code, _, err = _run(capsys, "--predictions", str(tmp_path / "model.npy"), *runs["csv_by_id"])
    assert code == 2 and "1 prediction id(s) not found, e.g. val/missing.jpeg" in err


def _fairness_files(tmp_path, n: int = 120):
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, n)
    logit = 2.0 * (labels - 0.5) + rng.standard_normal(n) * 1.5
    group = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]
    ids = [f"p{i}" for i in range(n)]
    (tmp_path / "logits.csv").write_text("id,p\n" + "".join(f"{i},{v:.6f}\n" for i, v in zip(ids, logit)))
    (tmp_path / "labels.csv").write_text("id,label\n" + "".join(f"{i},{v}\n" for i, v in zip(ids, labels)))
    (tmp_path / "groups.csv").write_text("id,site\n" + "".join(f"{i},{g}\n" for i, g in zip(ids, group)))
    (tmp_path / "ids.txt").write_text("\n".join(ids))
    return np.round(logit, 6), labels, group


def test_fairness_refuses_scores_outside_0_1_and_takes_logits(tmp_path, capsys):
    from scipy.special import expit, softmax

    from labelwise.metrics.fairness import summarize, summarize_binary

    logit, labels, group = _fairness_files(tmp_path)
    base = [
        "--predictions",
        str(tmp_path / "logits.csv"),
        "--labels",
        str(tmp_path / "labels.csv"),
        "--attributes",
        str(tmp_path / "groups.csv"),
    ]
    code, _, err = _run(capsys, *base)
    assert code == 2 and "Traceback" not in err
    line = err.strip()
    assert "\n" not in line and "logits.csv" in line and "--logits" in line
    assert f"{logit.min():.4g} to {logit.max():.4g}, outside [0, 1]" in line
    # one column: a sigmoid
    code, _, err = _run(capsys, *base, "--logits", "--bootstrap", "50", "--json", str(tmp_path / "b.json"))
    assert code in (0, None), err
    got = json.loads((tmp_path / "b.json").read_text())
    expected = summarize_binary(expit(logit), labels, {"site": group}, resamples=50)
    for key in ("auc", "auc_ci", "ece", "accuracy", "es_auc"):
        assert got[key] == pytest.approx(expected[key]), key
    # several exclusive classes: a softmax over the columns
    rng = np.random.default_rng(1)
    target = rng.integers(0, 3, len(labels))
    three = rng.standard_normal((len(labels), 3)) * 2
    three[np.arange(len(labels)), target] += 1.5
    three = np.round(three, 6)
    (tmp_path / "three.csv").write_text(
        "id,a,b,c\n" + "".join(f"p{i},{r[0]:.6f},{r[1]:.6f},{r[2]:.6f}\n" for i, r in enumerate(three))
    )
    (tmp_path / "target.txt").write_text("\n".join(map(str, target)))
    code, _, err = _run(
        capsys,
        "--predictions",
        str(tmp_path / "three.csv"),
        "--labels",
        str(tmp_path / "target.txt"),
        "--logits",
        "--bootstrap",
        "0",
        "--json",
        str(tmp_path / "m.json"),
    )
    assert code in (0, None), err
    got = json.loads((tmp_path / "m.json").read_text())
    expected = summarize(softmax(three, axis=1), target, class_names=["a", "b", "c"], resamples=0)
    assert got["kind"] == "multiclass"
    for key in ("auc", "accuracy", "macro_f1", "ece"):
        assert got[key] == pytest.approx(expected[key]), key
    # several labels (multi-label): a sigmoid per column
    tags = rng.integers(0, 2, (len(labels), 2))
    (tmp_path / "tags.csv").write_text("id,x,y\n" + "".join(f"p{i},{a},{b}\n" for i, (a, b) in enumerate(tags)))
    code, _, err = _run(
        capsys,
        "--predictions",
        str(tmp_path / "three.csv"),
        "--labels",
        str(tmp_path / "tags.csv"),
        "--label-column",
        "x",
        "--label-column",
        "y",
        "--logits",
        "--bootstrap",
        "0",
        "--json",
        str(tmp_path / "ml.json"),
    )
    assert code == 2 and "three.csv: 3 score columns for 2 labels" in err and "Traceback" not in err
    (tmp_path / "two.csv").write_text(
        "id,x,y\n" + "".join(f"p{i},{r[0]:.6f},{r[1]:.6f}\n" for i, r in enumerate(three))
    )
    code, _, err = _run(
        capsys,
        "--predictions",
        str(tmp_path / "two.csv"),
        "--labels",
        str(tmp_path / "tags.csv"),
        "--label-column",
        "x",
        "--label-column",
        "y",
        "--logits",
        "--bootstrap",
        "0",
        "--json",
        str(tmp_path / "ml.json"),
    )
    assert code in (0, None), err
    got = json.loads((tmp_path / "ml.json").read_text())
    expected = summarize(expit(three[:, :2]), tags, multilabel=True, class_names=["x", "y"], resamples=0)
    assert got["kind"] == "multilabel" and got["auc"] == pytest.approx(expected["auc"])


def test_fairness_bootstrap_zero_means_no_interval(tmp_path, capsys):
    logit, labels, group = _fairness_files(tmp_path)
    (tmp_path / "p.csv").write_text(
        "id,p\n" + "".join(f"p{i},{v:.6f}\n" for i, v in enumerate(1 / (1 + np.exp(-logit))))
    )
    base = [
        "--predictions",
        str(tmp_path / "p.csv"),
        "--labels",
        str(tmp_path / "labels.csv"),
        "--attributes",
        str(tmp_path / "groups.csv"),
    ]
    code, out, _ = _run(capsys, *base, "--bootstrap", "0", "--json", str(tmp_path / "none.json"))
    assert code in (0, None)
    assert json.loads((tmp_path / "none.json").read_text())["auc_ci"] is None and "95% CI" not in out
    _run(capsys, *base, "--json", str(tmp_path / "default.json"))
    _run(capsys, *base, "--bootstrap", "1000", "--json", str(tmp_path / "thousand.json"))
    default = json.loads((tmp_path / "default.json").read_text())["auc_ci"]
    assert len(default) == 2 and default[0] < default[1]
    assert default == json.loads((tmp_path / "thousand.json").read_text())["auc_ci"]


def test_fairness_labels_from_a_single_label_file_equal_the_csv(tmp_path, capsys):
    logit, labels, _ = _fairness_files(tmp_path)
    np.save(tmp_path / "labels.npy", labels.astype(np.uint16))
    results = []
    for source in ("labels.csv", "labels.npy"):
        code, _, err = _run(
            capsys,
            "--predictions",
            str(tmp_path / "logits.csv"),
            "--labels",
            str(tmp_path / source),
            "--ids",
            str(tmp_path / "ids.txt"),
            "--attributes",
            str(tmp_path / "groups.csv"),
            "--logits",
            "--json",
            str(tmp_path / f"{source}.json"),
        )
        assert code in (0, None), err
        results.append(json.loads((tmp_path / f"{source}.json").read_text()))
    assert results[0] == results[1]


def test_label_sets_and_attributes_together_are_refused(tmp_path, capsys):
    _fairness_files(tmp_path)
    code, _, err = _run(
        capsys,
        "--predictions",
        str(tmp_path / "logits.csv"),
        "--label-sets",
        "imagenet-real",
        "--attributes",
        str(tmp_path / "groups.csv"),
    )
    assert code == 2 and "not both" in err
