"""Options with one value per axis take their values space-separated (``--shape 96 96 96``) as their help says, the
repeated form still works, and the help texts say what the commands do (and how long the demo takes)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from labelwise.cli import PER_AXIS_OPTIONS, cli_command, expand_per_axis_options, main
from labelwise.data.volumes import read_volume


def _synth(out, *axis_args: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["data", "synth", "vessels", "--out", str(out), "--dim", "3", "--n", "1", *axis_args])
    assert info.value.code in (0, None)


def test_vessels_shape_and_spacing_space_separated(tmp_path):
    _synth(tmp_path / "spaced", "--shape", "24", "20", "16", "--spacing", "0.8", "0.7", "1.5", "--seed", "3")
    _synth(
        tmp_path / "repeated",
        "--shape",
        "24",
        "--shape",
        "20",
        "--shape",
        "16",
        "--spacing",
        "0.8",
        "--spacing",
        "0.7",
        "--spacing",
        "1.5",
        "--seed",
        "3",
    )
    spaced = read_volume(tmp_path / "spaced" / "images" / "vessel_000.nii.gz")
    repeated = read_volume(tmp_path / "repeated" / "images" / "vessel_000.nii.gz")
    assert spaced.array.shape[-3:] == (24, 20, 16)
    assert spaced.spacing == pytest.approx((0.8, 0.7, 1.5))
    assert np.array_equal(spaced.array, repeated.array) and spaced.spacing == repeated.spacing


def _predict_params(args: list[str]) -> dict:
    command = cli_command().commands["predict"]
    return command.make_context("predict", expand_per_axis_options(["predict", *args])[1:]).params


def test_predict_roi_space_separated_is_parsed_like_the_repeated_form():
    base = ["--input", "a.nii.gz", "--out", "o"]
    spaced = _predict_params(["runs/x", *base, "--window", "64", "64", "32"])
    assert spaced["window"] == [64, 64, 32] and [str(r) for r in spaced["run_dir"]] == ["runs/x"]
    assert _predict_params(["runs/x", *base, "--window", "64", "--window", "64", "--window", "32"])["window"] == [
        64,
        64,
        32,
    ]
    # values stop at the first token that is not a number: the run directory may follow
    before = _predict_params(["--window", "48", "40", "runs/x", *base, "--overlap", "0.25"])
    assert before["window"] == [48, 40] and [str(r) for r in before["run_dir"]] == ["runs/x"]
    assert before["overlap"] == 0.25
    assert _predict_params(["runs/x", *base, "--window", "96"])["window"] == [96]
    # several runs (an ensemble), before or after the per-axis values
    for args in (
        ["runs/a", "runs/b", *base, "--window", "64", "32"],
        ["--window", "64", "32", "runs/a", "runs/b", *base],
    ):
        params = _predict_params(args)
        assert [str(r) for r in params["run_dir"]] == ["runs/a", "runs/b"] and params["window"] == [64, 32]


def test_expand_per_axis_options_touches_only_the_listed_options():
    assert expand_per_axis_options(["data", "synth", "vessels", "--shape", "96", "96", "--n", "3"]) == [
        "data",
        "synth",
        "vessels",
        "--shape",
        "96",
        "--shape",
        "96",
        "--n",
        "3",
    ]
    assert expand_per_axis_options(["data", "synth", "shapes", "--size", "16", "16"]) == [
        "data",
        "synth",
        "shapes",
        "--size",
        "16",
        "16",
    ]  # not a per-axis option: click reports the extra value
    assert expand_per_axis_options(["train", "c.yaml", "--set", "a=1"]) == ["train", "c.yaml", "--set", "a=1"]
    assert expand_per_axis_options(["predict", "r", "--", "--window", "1", "2"]) == [
        "predict",
        "r",
        "--",
        "--window",
        "1",
        "2",
    ]
    assert expand_per_axis_options(["data", "synth", "vessels", "--spacing", ".5", "1e-1", "2."]) == [
        "data",
        "synth",
        "vessels",
        "--spacing",
        ".5",
        "--spacing",
        "1e-1",
        "--spacing",
        "2.",
    ]


def test_every_listed_option_exists_and_its_help_shows_the_spaced_form():
    command = cli_command()
    for path, options in PER_AXIS_OPTIONS.items():
        target = command
        for name in path:
            target = target.commands[name]
        for option, example in options.items():
            param = next(p for p in target.params if option in p.opts)
            assert param.multiple and f"space-separated: {option} {example}" in param.help
    result = run_cli("data", "synth", "vessels", "--help", env={"COLUMNS": "300"})
    assert result.returncode == 0 and "space-separated: --shape 96 96 96" in result.stdout
    result = run_cli("predict", "--help", env={"COLUMNS": "300"})
    assert result.returncode == 0 and "space-separated: --window 64 64 64" in result.stdout


def test_help_gives_the_demo_duration():
    """README: about four minutes on two CPU cores (246 s measured)."""
    for args in (["--help"], ["demo", "--help"]):
        result = run_cli(*args, env={"COLUMNS": "300"})
        assert result.returncode == 0
        assert "about four minutes on two CPU cores" in result.stdout and "2 minutes" not in result.stdout
