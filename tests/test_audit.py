"""`labelwise audit` on the user's path: PNG images and masks on disk, a trained run, the audit's files, the fix,
and training on the fixed manifest; the refusal of in-sample training cases; a killed cross-fitting resumed."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, REPO, TINY_3D, bar, invoke_cli, require_chromium

from labelwise.config import load_config
from labelwise.data.manifest import read_manifest
from labelwise.data.table import read_table
from labelwise.data.volumes import read_volume, write_volume
from labelwise.training import train

SPLITS = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
UNSEEN = ("--split", "val", "--split", "test")  # the cases the run did not train on


def make_pngs(folder, corrupt: dict[int, str]):
    """12 grey pictures of a bright bar and their masks; ``corrupt`` {case: "missed" | "extra"} damages a mask: the
    bar's top half taken out, or a blob where there is nothing."""
    rng = np.random.default_rng(0)
    rows = ["id,image,label,split"]
    for i, split in enumerate(SPLITS):
        truth = bar(i)
        image = np.clip(0.2 + 0.6 * truth + rng.normal(0, 0.05, truth.shape), 0, 1)
        label = truth.copy()
        if corrupt.get(i) == "missed":
            label[4:16] = 0
        elif corrupt.get(i) == "extra":
            label[26:31, 22:30] = 1
        write_volume(folder / "images" / f"case{i}.png", image)
        write_volume(folder / "labels" / f"case{i}.png", label)
        rows.append(f"case{i},images/case{i}.png,labels/case{i}.png,{split}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def config(manifest, steps=60):
    return load_config(
        {
            "name": "audit-2d",
            "seed": 0,
            "method": "supervised",
            "data": {
                "manifest": str(manifest),
                "task": "segmentation",
                "patch_size": [32, 32],
                "batch_size": 4,
                "patches_per_volume": 4,
            },
            "model": {"name": "unet", "channels": [8, 16], "norm": "instance"},
            "optimizer": {"name": "adam", "lr": 0.01},
            "trainer": {"max_steps": steps, "checkpoint_every": steps, "log_every": 20},
        }
    )


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    """A run trained on clean bars; a copy of the data whose val case 8 misses half its bar and test case 11 has an
    extra blob, and whose training case 0 misses half its bar."""
    root = tmp_path_factory.mktemp("audit")
    clean = make_pngs(root / "clean", {})
    run = root / "run"
    train(config(clean), run)
    noisy = make_pngs(root / "noisy", {8: "missed", 11: "extra", 0: "missed"})
    return root, run, noisy


def rows_of(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_audit_finds_the_damaged_val_and_test_masks(bars, tmp_path):
    root, run, noisy = bars
    out = tmp_path / "audit"
    code, text = invoke_cli("audit", str(run), "--input", str(noisy), "--out", str(out), *UNSEEN)
    assert code == 0, text
    rows = rows_of(out / "cases.csv")
    assert {r["id"] for r in rows} == {"case8", "case9", "case10", "case11"}  # the training cases are left out
    assert [r["id"] for r in rows[:2]] == ["case8", "case11"] or [r["id"] for r in rows[:2]] == ["case11", "case8"]
    by_id = {r["id"]: r for r in rows}
    assert int(by_id["case8"]["missed"]) > 30 and int(by_id["case11"]["extra"]) > 20
    # the suspect map: a PNG in the mask's geometry, missed pixels on the removed half of the bar
    truth, label = bar(8), read_volume(root / "noisy" / "labels" / "case8.png", mask=True).array
    suspects = read_volume(out / "suspects" / "case8.png", mask=True).array
    assert suspects.shape == truth.shape
    removed = (truth > 0) & (label == 0)
    assert (suspects[removed] == 1).mean() > 0.8 and (suspects[~removed] == 1).mean() < 0.02
    blob = np.zeros_like(truth, dtype=bool)
    blob[26:31, 22:30] = bar(11)[26:31, 22:30] == 0
    suspects = read_volume(out / "suspects" / "case11.png", mask=True).array
    assert (suspects[blob] == 2).mean() > 0.8
    summary = json.loads((out / "audit.json").read_text())
    assert summary["cases"] == 4 and len(summary["thresholds"]) == 2
    # the noise estimate: a column per true class, each a distribution over the labels
    np.testing.assert_allclose(np.sum(summary["noise"], axis=0), [1, 1])
    # the suspicion map: 8 bit in a PNG, high on the removed half of the bar, low on the rest of the mask
    suspicion = read_volume(out / "suspicion" / "case8.png").array[0]
    assert suspicion.shape == truth.shape and 0 <= suspicion.min() and suspicion.max() <= 1
    assert np.median(suspicion[removed]) > 0.5 and np.median(suspicion[~removed]) < 0.1
    check_page_in_chromium(out / "report.html", rows, summary["noise"])


def check_page_in_chromium(page_path, rows, noise=None):
    """The page as Debian's chromium renders it: every row in the table, worst first, the figures of the 12
    worst drawn, and for masks the estimated ``noise`` as percentages."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_path.resolve().as_uri())
            table = page.locator("#cases-table")
            assert table.is_visible()
            shown = table.locator("tbody tr").all_inner_texts()
            assert [line.split()[1] for line in shown] == [r["id"] for r in rows]
            widths = page.evaluate("Array.from(document.images).map(img => img.complete ? img.naturalWidth : 0)")
            assert len(widths) == min(len(rows), 12) and all(w > 0 for w in widths), widths
            if noise is not None:
                cells = [line.split()[2:] for line in page.locator("#noise-table tbody tr").all_inner_texts()]
                assert cells == [[f"{100 * v:.1f}%" for v in row] for row in noise]
        finally:
            browser.close()


def test_training_cases_are_refused_without_folds(bars, tmp_path):
    _, run, noisy = bars
    code, text = invoke_cli("audit", str(run), "--input", str(noisy), "--out", str(tmp_path / "a"))
    assert code == 2
    assert "in-sample" in text and "--folds" in text and "case0" in text
    code, text = invoke_cli("audit", str(run), "--out", str(tmp_path / "b"), "--fix-action", "unlabel")
    assert code == 2 and "for class labels; a mask's fix flips its suspect pixels" in text


def test_fix_then_train_on_the_fixed_manifest(bars, tmp_path):
    root, run, noisy = bars
    out, fixed = tmp_path / "audit", tmp_path / "fixed"
    code, text = invoke_cli(
        "audit",
        str(run),
        "--input",
        str(noisy),
        "--out",
        str(out),
        "--split",
        "val",
        "--split",
        "test",
        "--fix",
        str(fixed),
    )
    assert code == 0, text
    cases = {c.id: c for c in read_manifest(fixed / "manifest.csv")}
    assert len(cases) == len(SPLITS)
    # the damaged masks are repaired towards the truth; the originals are untouched
    for i in (8, 11):
        original = read_volume(root / "noisy" / "labels" / f"case{i}.png", mask=True).array
        repaired = read_volume(cases[f"case{i}"].label, mask=True).array
        truth = bar(i)
        assert (repaired != truth).sum() < (original != truth).sum() / 4
    assert cases["case0"].label == (root / "noisy" / "labels" / "case0.png").resolve()  # not audited: unchanged
    rows = {r["id"]: r for r in rows_of(fixed / "manifest.csv")}
    assert rows["case8"]["audit"].endswith("swapped") and int(rows["case8"]["audit"].split()[0]) > 30
    assert rows["case0"]["audit"] == "not audited"
    result = train(config(fixed / "manifest.csv", steps=2), tmp_path / "retrained")
    assert result.status == "completed"


def test_folds_audit_training_cases_and_resume(bars, tmp_path, monkeypatch):
    """--folds 2 cross-fits two runs; a kill during the second fold leaves the first done, and the rerun trains
    only the second."""
    root, run, noisy = bars
    out = tmp_path / "audit"
    import labelwise.training as training

    real, calls = training.train, []

    def killed_in_fold_two(cfg, run_dir, resume=False):
        calls.append((str(run_dir), resume))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(cfg, run_dir, resume)

    monkeypatch.setattr(training, "train", killed_in_fold_two)
    from labelwise.audit import audit_run

    with pytest.raises(KeyboardInterrupt):  # (the CLI turns it into an abort)
        audit_run(run, out, manifest=noisy, folds=2, progress=False)
    assert (out / "folds" / "fold-0" / "run" / "summary.json").is_file()
    calls.clear()
    monkeypatch.setattr(
        training, "train", lambda cfg, run_dir, resume=False: calls.append(run_dir) or real(cfg, run_dir, resume)
    )
    code, text = invoke_cli("audit", str(run), "--input", str(noisy), "--out", str(out), "--folds", "2")
    assert code == 0, text
    assert [p.parent.name for p in calls] == ["fold-1"]
    rows = {r["id"]: r for r in rows_of(out / "cases.csv")}
    assert len(rows) == len(SPLITS)
    assert rows["case0"]["probabilities"].startswith("fold-") and rows["case8"]["probabilities"] == "run"
    assert int(rows["case0"]["missed"]) > 0


def audit_links(report):
    """The audit rows of a run report: (link target or None, text of the row)."""
    from html.parser import HTMLParser

    class Rows(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.inside = [], False

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "table" and attrs.get("id") == "audits-table":
                self.inside = True
            elif self.inside and tag == "tr":
                self.rows.append([None, ""])
            elif self.inside and tag == "a" and "audit-link" in (attrs.get("class") or ""):
                self.rows[-1][0] = attrs["href"]

        def handle_endtag(self, tag):
            if tag == "table":
                self.inside = False

        def handle_data(self, data):
            if self.inside and self.rows:
                self.rows[-1][1] += data

    parser = Rows()
    parser.feed(report.read_text())
    return parser.rows[1:]  # without the header row


def test_the_run_report_links_to_its_audits_also_after_the_run_moved(bars, tmp_path):
    import shutil

    root, run, noisy = bars
    mine = root / "run-report"  # beside the run: its config names the training data relative to its folder
    shutil.copytree(run, mine)
    (mine / "audits.json").unlink(missing_ok=True)  # the other tests' audits of the shared run
    for out in (mine / "audit", tmp_path / "elsewhere"):
        code, text = invoke_cli("audit", str(mine), "--input", str(noisy), "--out", str(out), *UNSEEN)
        assert code == 0, text
    code, text = invoke_cli("audit", str(mine), "--input", str(noisy), "--out", str(mine / "audit"), *UNSEEN)
    assert code == 0, text  # the same audit again: replaced, not listed twice
    moved = tmp_path / "moved" / "run"
    shutil.move(mine, moved)
    code, text = invoke_cli("report", str(moved))
    assert code == 0, text
    rows = audit_links(moved / "report.html")
    assert len(rows) == 2  # the latest last
    pages = [(moved / href).resolve() for href, _ in rows]
    assert pages == [(tmp_path / "elsewhere" / "report.html").resolve(), (moved / "audit" / "report.html").resolve()]
    assert all(p.is_file() for p in pages)
    audited = json.loads((moved / "audit" / "audit.json").read_text())
    flagged = audited["missed"] + audited["extra"] + audited["swapped"]
    assert "4 cases" in rows[1][1] and f"{flagged} pixels" in rows[1][1] and flagged > 0
    shutil.rmtree(tmp_path / "elsewhere")
    invoke_cli("report", str(moved))
    rows = audit_links(moved / "report.html")
    assert rows[0][0] is None and "page not found" in rows[0][1] and rows[1][0] is not None


def test_a_calibrated_run_is_audited_on_probabilities_recentred_on_its_threshold(bars, tmp_path):
    """A run whose threshold was calibrated away from 0.5 (here set to 0.3 in a copy's inference.json, as
    ``threshold: calibrate`` writes it) decides its masks at 0.3; the audit weighs the labels against its
    probabilities with the foreground's logit moved by the threshold's, which audit.json and the page state. The
    suspicion is checked by hand from the saved (raw) probabilities."""
    import shutil

    root, run, noisy = bars
    mine = root / "run-calibrated"  # beside the run: its config names the training data relative to its folder
    shutil.copytree(run, mine)
    spec = json.loads((mine / "inference.json").read_text())
    spec["inference"] |= {"threshold": "calibrate", "calibrated_threshold": 0.3}
    (mine / "inference.json").write_text(json.dumps(spec))
    out = tmp_path / "audit"
    code, text = invoke_cli("audit", str(mine), "--input", str(noisy), "--out", str(out), *UNSEEN)
    assert code == 0, text
    summary = json.loads((out / "audit.json").read_text())
    assert summary["decision_thresholds"] == {"run": 0.3}
    noise = np.array(summary["noise"])
    for row in rows_of(out / "cases.csv"):
        label = read_volume(root / "noisy" / "labels" / f"{row['id']}.png", mask=True).array.astype(np.int64)
        p = np.load(out / "probabilities" / f"{row['id']}.npy").astype(np.float64)
        logit = np.log(np.clip(p[1], 1e-12, 1) / np.clip(p[0], 1e-12, 1)) - np.log(0.3 / 0.7)
        fg = 1 / (1 + np.exp(-logit))
        given, other = np.where(label == 1, fg, 1 - fg), np.where(label == 1, 1 - fg, fg)
        expected = 1 - given * noise[label, label] / (given * noise[label, label] + other * noise[label, 1 - label])
        suspicion = read_volume(out / "suspicion" / f"{row['id']}.png").array[0]
        np.testing.assert_allclose(suspicion, expected, atol=1 / 255 + 1e-3)  # an 8-bit PNG
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto((out / "report.html").resolve().as_uri())
            said = page.locator("#recentred").inner_text()
            assert "recentred" in said and "run 0.3" in said, said
        finally:
            browser.close()
    # the run itself takes the argmax: nothing recentred, nothing said
    plain = tmp_path / "plain"
    assert invoke_cli("audit", str(run), "--input", str(noisy), "--out", str(plain), *UNSEEN)[0] == 0
    assert json.loads((plain / "audit.json").read_text())["decision_thresholds"] == {"run": None}  # an argmax
    assert "recentred" not in (plain / "report.html").read_text()


def test_a_moved_run_is_audited_from_its_recorded_cases(bars, tmp_path):
    """A run moved away from its data (its config names the manifest relative to its old folder) still knows what
    it trained on: ``cases.json`` holds the manifest's absolute path and every split's ids, so the audit of its own
    cases runs, and an --input manifest's training cases are still refused as in-sample."""
    import shutil

    root, run, noisy = bars
    recorded = json.loads((run / "cases.json").read_text())
    by_split = {s: [c.id for c in read_manifest(root / "clean" / "manifest.csv") if c.split == s] for s in SPLITS}
    assert recorded["splits"] == by_split and recorded["data"] == str((root / "clean" / "manifest.csv").resolve())
    moved = tmp_path / "far" / "away" / "run"
    shutil.copytree(run, moved)
    (moved / "audits.json").unlink(missing_ok=True)
    code, text = invoke_cli("audit", str(moved), "--out", str(tmp_path / "own"))
    assert code == 0, text
    assert "8 training case(s) left out" in text
    assert {r["id"] for r in rows_of(tmp_path / "own" / "cases.csv")} == {"case8", "case9", "case10", "case11"}
    code, text = invoke_cli("audit", str(moved), "--input", str(noisy), "--out", str(tmp_path / "refused"))
    assert code == 2 and "in-sample" in text and "case0" in text
    (moved / "cases.json").unlink()  # a run from before cases.json, moved: the message says what to do
    code, text = invoke_cli("audit", str(moved), "--out", str(tmp_path / "lost"))
    assert code == 2 and "is not there (was the run or its data moved?)" in text and "--input" in text


# --- class labels --------------------------------------------------------------------------------------------------

CLASS_SPLITS = ["train"] * 48 + ["val"] * 16 + ["test"] * 16
FLIPPED = {"s50", "s53", "s66", "s70"}  # val and test samples whose label is wrong


def make_table(folder, flipped=frozenset(), names=("dark", "bright")):
    """Grey 12 x 12 pictures: class 1 (bright) has a bright square, class 0 (dark) none; labels by name."""
    rng = np.random.default_rng(0)
    rows = ["id,image,split,label"]
    for i, split in enumerate(CLASS_SPLITS):
        truth = i % 2
        image = np.clip(0.3 + rng.normal(0, 0.05, (12, 12)), 0, 1)
        if truth:
            image[3:9, 3:9] += 0.5
        write_volume(folder / "images" / f"s{i}.png", np.clip(image, 0, 1))
        label = 1 - truth if f"s{i}" in flipped else truth
        rows.append(f"s{i},images/s{i}.png,{split},{names[label]}")
    (folder / "table.csv").write_text("\n".join(rows) + "\n")
    return folder / "table.csv"


def class_config(table, steps=40):
    return load_config(
        {
            "name": "audit-classes",
            "seed": 0,
            "method": "supervised",
            "data": {"manifest": str(table), "task": "classification", "batch_size": 8},
            "model": {"name": "resnet10", "channels": [4, 8, 8, 8], "norm": "group"},
            "optimizer": {"name": "adam", "lr": 0.01},
            "trainer": {"max_steps": steps, "checkpoint_every": steps, "log_every": 20},
        }
    )


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-classes")
    run = root / "run"
    train(class_config(make_table(root / "clean")), run)
    return root, run, make_table(root / "noisy", FLIPPED | {"s0"})


def test_class_audit_finds_the_flipped_labels_and_fixes_them(squares, tmp_path):
    root, run, noisy = squares
    out, fixed = tmp_path / "audit", tmp_path / "fixed"
    code, text = invoke_cli("audit", str(run), "--input", str(noisy), "--out", str(out), *UNSEEN, "--fix", str(fixed))
    assert code == 0, text
    rows = rows_of(out / "samples.csv")
    assert len(rows) == 32 and {r["split"] for r in rows} == {"val", "test"}
    flagged = {r["id"] for r in rows if r["issue"] == "1"}
    assert flagged == FLIPPED
    assert {r["id"] for r in rows[:4]} == FLIPPED  # the flagged first
    by_id = {r["id"]: r for r in rows}
    assert by_id["s50"]["label"] == "bright" and by_id["s50"]["likely"] == "dark"
    assert json.loads((out / "audit.json").read_text())["issues"] == 4
    check_page_in_chromium(out / "report.html", rows)
    # the fixed table: the flipped labels back, by name, the rest as they were; training reads it
    fixed_rows = {r["id"]: r for r in rows_of(fixed / "table.csv")}
    truth = {r["id"]: r for r in rows_of(make_table(tmp_path / "truth"))}
    assert all(fixed_rows[i]["label"] == truth[i]["label"] for i in by_id)
    assert fixed_rows["s50"]["audit"] == "relabelled from bright" and fixed_rows["s51"]["audit"] == "kept"
    assert fixed_rows["s0"]["label"] == "bright" and fixed_rows["s0"]["audit"] == "not audited"
    assert train(class_config(fixed / "table.csv", steps=2), tmp_path / "retrained").status == "completed"


def test_class_audit_refuses_training_samples_without_folds(squares, tmp_path):
    import shutil

    _, run, noisy = squares
    code, text = invoke_cli("audit", str(run), "--input", str(noisy), "--out", str(tmp_path / "a"))
    assert code == 2 and "in-sample" in text and "s0" in text
    moved = tmp_path / "elsewhere" / "run"  # moved away from its table: cases.json still says what trained it
    shutil.copytree(run, moved)
    code, text = invoke_cli("audit", str(moved), "--input", str(noisy), "--out", str(tmp_path / "b"))
    assert code == 2 and "in-sample" in text and "s0" in text


def test_class_audit_cross_fits_the_training_samples(squares, tmp_path):
    _, run, noisy = squares
    out = tmp_path / "audit"
    fixed = tmp_path / "fixed"
    code, text = invoke_cli(
        "audit", str(run), "--input", str(noisy), "--out", str(out), "--folds", "2", "--fix", str(fixed),
        "--fix-action", "unlabel",
    )  # fmt: skip
    assert code == 0, text
    rows = {r["id"]: r for r in rows_of(out / "samples.csv")}
    assert len(rows) == len(CLASS_SPLITS)
    assert rows["s0"]["issue"] == "1" and rows["s0"]["likely"] == "dark"  # a training label, found out of sample
    assert rows["s0"]["probabilities"] in ("fold-0", "fold-1") and rows["s50"]["probabilities"] == "run"
    flagged = {i for i, r in rows.items() if r["issue"] == "1"}
    assert flagged >= FLIPPED | {"s0"}
    # unlabel: a flagged training sample keeps its label but is not used; flagged val/test samples stay scored
    fixed_rows = {r["id"]: r for r in rows_of(fixed / "table.csv")}
    assert fixed_rows["s0"]["use_label"] == "0" and fixed_rows["s0"]["label"] == "bright"
    assert fixed_rows["s0"]["audit"] == "unlabelled" and fixed_rows["s50"]["use_label"] == ""
    assert fixed_rows["s50"]["audit"].startswith("flagged, kept") and fixed_rows["s50"]["label"] == "bright"
    unlabelled = {i for i, r in fixed_rows.items() if r["use_label"] == "0"}
    assert unlabelled == {i for i in flagged if rows[i]["split"] == "train"}
    table = read_table(fixed / "table.csv", ["label"])
    assert {table.ids[i] for i in np.flatnonzero(table.target < 0)} == unlabelled  # what training leaves out
    code, text = invoke_cli("audit", str(run), "--out", str(tmp_path / "m"), "--fix-action", "drop")
    assert code == 2 and "--fix-action drop: use one of relabel, unlabel" in text


def test_a_3d_nifti_audit_writes_suspicion_volumes_with_the_masks_geometry(tmp_path):
    """A 3D NIfTI run (synthetic vessels with a non-trivial affine) audited through the CLI: the suspects and
    suspicion are NIfTI volumes with the mask's shape and affine; the suspicion, float32, is Bayes' posterior of a
    wrong label, recomputed here by hand from the saved probabilities and audit.json's noise estimate."""
    import nibabel as nib

    from labelwise.data.synth.vessels import write_vessels

    manifest = write_vessels(tmp_path / "v3d", 3, 5, [24, 24, 24], seed=1, spacing=[0.8, 0.8, 1.5])
    run = tmp_path / "run"
    config = load_config(REPO / "configs" / "unet-mss-synthetic-3d.yaml", [f"data.manifest={manifest}", *TINY_3D])
    assert train(config, run).status == "completed"
    moved = tmp_path / "moved"
    run.rename(moved)
    out = tmp_path / "audit"
    code, text = invoke_cli("audit", str(moved), "--out", str(out), *UNSEEN)
    assert code == 0, text
    summary = json.loads((out / "audit.json").read_text())
    noise, audited = np.array(summary["noise"]), rows_of(out / "cases.csv")
    assert audited and noise.shape == (2, 2)
    cases = {c.id: c for c in read_manifest(manifest)}
    for row in audited:
        label_image = nib.load(cases[row["id"]].label)
        label = np.asarray(label_image.dataobj).astype(np.int64)
        for folder in ("suspects", "suspicion"):
            written = nib.load(out / folder / f"{row['id']}.nii.gz")
            assert written.shape == label.shape
            np.testing.assert_allclose(written.affine, label_image.affine)
        suspicion = nib.load(out / "suspicion" / f"{row['id']}.nii.gz")
        assert suspicion.get_data_dtype() == np.float32
        p = np.load(out / "probabilities" / f"{row['id']}.npy").astype(np.float64)  # (2, X, Y, Z)
        given, other = np.where(label == 1, p[1], p[0]), np.where(label == 1, p[0], p[1])
        expected = 1 - given * noise[label, label] / (given * noise[label, label] + other * noise[label, 1 - label])
        np.testing.assert_allclose(np.asarray(suspicion.dataobj), expected, atol=1e-5)
