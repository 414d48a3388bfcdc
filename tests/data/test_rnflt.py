"""Synthetic thickness maps in the Harvard-GDP layout: read back by the layout's reader, deterministic, and with
the properties the fairness figures need (disease thins the map and the field; groups differ)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from sklearn.metrics import roc_auc_score

from labelwise.data.harvard import read_patients
from labelwise.data.synth.rnflt import (
    VF_POINTS,
    _grid,
    make_patient,
    patient_seed,
    write_rnflt,
)
from labelwise.errors import ConfigError


@pytest.fixture(scope="module")
def patients(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rnflt")
    write_rnflt(folder, 240, seed=3)
    return read_patients(folder)


def test_layout_and_determinism(tmp_path, patients):
    assert patients.ids[:2] == ["data_0001", "data_0002"] and len(patients) == 240
    assert patients.rnflt.shape == (240, 225, 225) and patients.tds.shape == (240, 52)
    assert (patients.rnflt[:, 112, 112] == 0).all()  # inside the disc: no measurement
    assert len({tuple(p) for p in VF_POINTS}) == 52 and (15, 3) not in {tuple(p) for p in VF_POINTS}
    a, b = make_patient(patient_seed(3, 5)), make_patient(patient_seed(3, 5))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(a["rnflt"], patients.rnflt[5])  # patient i depends on (seed, i) only
    with pytest.raises(ConfigError, match="n must be"):
        write_rnflt(tmp_path, 0)


def test_disease_thins_the_map_and_the_field(patients):
    g = patients.glaucoma.astype(bool)
    assert 0.3 < g.mean() < 0.7
    radius, _ = _grid()
    ring = (radius > 0.95) & (radius < 1.5)  # mm around the disc, where the peripapillary RNFL is measured
    thickness = patients.rnflt[:, ring].mean(axis=1)
    assert thickness[g].mean() < thickness[~g].mean() - 3  # microns (about 6 at seed 0)
    assert roc_auc_score(g, -patients.md) > 0.9  # the field agrees with the map
    assert patients.tds[~g].mean() > patients.tds[g].mean() + 3
    assert patients.progression[g].mean() > 3 * patients.progression[~g].mean()


def test_groups_differ_in_prevalence_and_image_statistics(patients):
    race, g = patients.attributes["race"], patients.glaucoma
    prevalence = [g[race == r].mean() for r in range(3)]
    assert max(prevalence) - min(prevalence) > 0.1
    healthy = patients.rnflt[:, 30:195, 30:195].mean(axis=(1, 2))
    means = [healthy[(race == r) & (g == 0)].mean() for r in range(3)]
    assert max(means) - min(means) > 3  # microns: a score that ignores this is less fair


def test_cli_writes_the_files(tmp_path):
    result = run_cli("data", "synth", "rnflt", "--n", "3", "--out", str(tmp_path), "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "wrote 3 patients" in result.stdout
    assert len(read_patients(tmp_path)) == 3
