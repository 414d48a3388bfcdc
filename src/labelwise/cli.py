"""``labelwise <command>``: commands parse their arguments and call the library, nothing more.

Bad input (a config, a file, a shape) raises :class:`labelwise.errors.LabelwiseError`; :func:`main` prints
its message and exits with code 2, without a traceback.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, cast

import typer

from labelwise.errors import LabelwiseError

app = typer.Typer(
    name="labelwise",
    help="Train, evaluate and explain vision models when labels are imperfect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Datasets: generate the built-in synthetic sets, write classification tables and segmentation manifests.",
    no_args_is_help=True,
)
synth_app = typer.Typer(help="Generate a synthetic dataset.", no_args_is_help=True)
table_app = typer.Typer(
    help="Write a classification table (split, use_label, labels, attributes per sample).", no_args_is_help=True
)
evaluate_app = typer.Typer(help="Score saved model outputs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(evaluate_app, name="evaluate")
data_app.add_typer(synth_app, name="synth")
data_app.add_typer(table_app, name="table")

RUN_DIR_ENV = "LABELWISE_RUN_DIR"  # hands the chosen run directory to the processes Fabric starts

#: Options that take one value per axis, by command path, each with an example for its help. Click options take a
#: fixed number of values, so :func:`expand_per_axis_options` rewrites ``--shape 96 96 96`` to ``--shape 96 --shape 96
#: --shape 96`` before parsing (the repeated form works as well). A new such option only needs an entry here.
PER_AXIS_OPTIONS: dict[tuple[str, ...], dict[str, str]] = {
    ("data", "synth", "vessels"): {"--shape": "96 96 96", "--spacing": "0.8 0.8 1.5"},
    ("predict",): {"--window": "64 64 64"},
}
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def expand_per_axis_options(args: list[str]) -> list[str]:
    """``args`` with each per-axis option of :data:`PER_AXIS_OPTIONS` followed by several numbers rewritten to that
    option repeated once per number: ``predict RUN --window 64 64 32`` ->
    ``predict RUN --window 64 --window 64 --window 32``."""
    args = list(args)
    names = next((names for path, names in PER_AXIS_OPTIONS.items() if tuple(args[: len(path)]) == path), None)
    if not names:
        return args
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        out.append(token)
        i += 1
        if token == "--":
            out.extend(args[i:])
            break
        if token in names:
            values = 0
            while i < len(args) and _NUMBER.fullmatch(args[i]):
                out.extend([token, args[i]] if values else [args[i]])
                values += 1
                i += 1
    return out


def cli_command() -> typer.core.TyperGroup:
    """The click command of :data:`app` (what ``main`` runs), with each per-axis option's help naming the
    space-separated form."""
    command = typer.main.get_command(app)
    for path, options in PER_AXIS_OPTIONS.items():
        target = command
        for name in path:
            target = target.commands[name]  # type: ignore[attr-defined]
        for param in target.params:
            example = next((options[o] for o in param.opts if o in options), None)
            if example is None:
                continue
            assert isinstance(param, typer.core.TyperOption)  # the per-axis names are options (--window)
            if "space-separated" not in (param.help or ""):
                param.help = (
                    f"{(param.help or '').rstrip('.')}; several values space-separated: {param.opts[0]} {example}"
                )
            param.metavar = f"<{'float' if '.' in example else 'int'}> ..."
    return cast(typer.core.TyperGroup, command)  # an app of several commands: a group


def _test_line(test: dict[str, float]) -> str:
    return "  test: " + ", ".join(f"{k} {v:.4f}" for k, v in test.items() if "/" not in k)


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML config (omit with --resume)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a key: --set trainer.max_steps=100")] = None,
    devices: Annotated[int | None, typer.Option(help="number of processes (GPUs, or CPU processes)")] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="where to write the run (default runs/<name>)")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="continue the run in this directory from its last checkpoint")
    ] = None,
    report: Annotated[bool, typer.Option(help="write report.html at the end")] = True,
) -> None:
    """Train a model from a config; writes a run directory with checkpoints, metrics and a report."""
    from labelwise.config import load_config
    from labelwise.engine.rundir import new_run_dir
    from labelwise.training import train as run_training

    overrides = list(set_ or [])
    if devices is not None:
        overrides.append(f"trainer.devices={devices}")
    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise LabelwiseError(f"--resume {resume}: no run there (config.yaml not found)")
        if config is not None:
            typer.echo(f"note: resuming {resume} with its saved config; {config} is not read", err=True)
        cfg = load_config(resume / "config.yaml", overrides)
        target = resume
    elif config is None:
        raise LabelwiseError("give a CONFIG file, or --resume RUN_DIR")
    else:
        cfg = load_config(config, overrides)
        target = Path(os.environ.get(RUN_DIR_ENV) or new_run_dir(cfg.name, run_dir))
    if cfg.trainer.devices > 1:
        os.environ[RUN_DIR_ENV] = str(target)
    result = run_training(cfg, target, resume=resume is not None)
    if result.is_global_zero:
        if report:
            from labelwise.report import build_report

            build_report(result.run_dir)
        typer.echo(f"{result.status}: step {result.step}; run directory {result.run_dir}", err=True)
        if result.message:
            typer.echo(f"  {result.message}", err=True)
        if result.test:
            typer.echo(_test_line(result.test), err=True)
    if result.status != "completed":
        raise typer.Exit(1)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    out: Annotated[Path | None, typer.Option(help="where to write the HTML (default RUN_DIR/report.html)")] = None,
) -> None:
    """Rebuild a run's HTML report from its directory alone."""
    from labelwise.report import build_report

    if not run_dir.is_dir():
        raise LabelwiseError(f"{run_dir}: no such run directory")
    typer.echo(str(build_report(run_dir, out)))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="folder for the demo runs")] = Path("runs"),
    quick: Annotated[bool, typer.Option(help="a much shorter run (for tests)")] = False,
) -> None:
    """Generate small datasets, train, evaluate, write runs/demo*/report.html (about four minutes on two CPU cores)."""
    import json

    from labelwise.demo import run_demo
    from labelwise.report.audit import AUDITS

    for path in run_demo(out, quick=quick):
        summary = json.loads((path.parent / "summary.json").read_text())
        typer.echo(f"{summary['name']}: {summary['status']} in {summary.get('wall_time_s', '?')} s; report {path}")
        typer.echo(_test_line(summary.get("test", {})))
        evaluation = path.parent / "evaluation.json"
        if evaluation.is_file():
            scores = json.loads(evaluation.read_text())
            keys = ("top1", "real_top1", "variable_topk_subset", "asma")
            typer.echo(
                "  multi-label-aware: "
                + ", ".join(f"{k} {scores[k]:.4f}" for k in keys if scores.get(k) is not None)
                + f"; {path.parent / 'evaluation.html'}"
            )
        segmentation = path.parent / "predictions" / "test" / "segmentation.json"
        if segmentation.is_file():
            references = json.loads(segmentation.read_text())["references"]
            typer.echo(
                "  test cases: "
                + "; ".join(
                    f"against {name}: Dice {r['mean']['dice']:.4f}, clDice {r['mean']['cldice']:.4f}"
                    for name, r in references.items()
                    if r["mean"].get("dice") is not None
                )
            )
        index = path.parent / "explanations" / "explanations.json"
        if index.is_file():
            explained = json.loads(index.read_text())
            hits = ", ".join(
                f"{row['method']} {row['pointing_game']:.2f}"
                for row in explained.get("metrics", [])
                if row.get("pointing_game") is not None
            )
            typer.echo(
                f"  explanations: {len(explained.get('entries', []))} maps; pointing game {hits}; {index.parent}"
            )
        audits = path.parent / AUDITS
        if audits.is_file():
            for entry in json.loads(audits.read_text()):
                typer.echo(
                    f"  label audit: {entry['flagged']} suspect {'pixels' if entry['unit'] == 'cases' else 'labels'}"
                    f" in {entry['audited']} {entry['unit']}; {path.parent / entry['page']}"
                )


@app.command()
def predict(
    run_dir: Annotated[
        list[Path],
        typer.Argument(
            help="a run directory (or one of its checkpoint folders); segmentation: several runs predict as an "
            "ensemble (their probabilities averaged)"
        ),
    ],
    input: Annotated[
        list[Path],
        typer.Option(
            help="images, volumes (NIfTI, .npy) or folders of them; classification "
            "runs also a table .csv or a dataset .npz; repeat for more"
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="output folder (segmentation: probabilities/, masks/, figures/, "
            "predictions.json; classification: predictions.csv and .npz)"
        ),
    ],
    reference: Annotated[
        Path | None,
        typer.Option(
            help="segmentation: folder of reference masks (matched to each input by file name (<id>, <id>_mask, _seg, "
            "_label, _gt, _roi) or the data manifest's key rule): Dice and difference maps"
        ),
    ] = None,
    threshold: Annotated[
        str | None,
        typer.Option(
            help="segmentation: 0.5, another number, otsu or argmax (default: the run's method.threshold for one "
            "channel, argmax otherwise)"
        ),
    ] = None,
    overlap: Annotated[
        float | None,
        typer.Option(
            min=0, max=0.95, help="segmentation: overlap of the sliding windows (default: the run's method.overlap)"
        ),
    ] = None,
    window: Annotated[
        list[int] | None,
        typer.Option(
            help="segmentation: sliding-window size, one value or one per axis (default: the run's data.patch_size; "
            "whole images for runs trained on them)"
        ),
    ] = None,
    roi: Annotated[
        Path | None,
        typer.Option(
            help="segmentation: folder of region-of-interest masks (matched like --reference; or one mask for one "
            "input): the mask is background outside it and Dice is scored inside it"
        ),
    ] = None,
    split: Annotated[
        str | None, typer.Option(help="classification: only the rows of this split of a table or dataset .npz")
    ] = None,
    tta: Annotated[
        bool | None,
        typer.Option(
            "--tta/--no-tta", help="segmentation: average over flips along every axis (default: the run's method.tta)"
        ),
    ] = None,
    min_size: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="segmentation: remove connected components smaller than this many voxels (default: the run's "
            "method.min_size)",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="where the network runs: cpu, cuda, cuda:1 (default: cpu)")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="segmentation: sliding windows per forward pass (default 4); classification: images per forward pass "
            "(default 32)",
        ),
    ] = None,
    uncertainty: Annotated[
        bool,
        typer.Option(
            help="segmentation: also write uncertainty/<id>_entropy and _variance, the predictive entropy and the "
            "foreground probability's variance over flips of the input (the mask is unchanged)",
        ),
    ] = False,
) -> None:
    """Predict with a trained run, exactly as it was trained and tested: inputs are read and preprocessed as its
    training data was. Segmentation runs: sliding windows, probability and mask (NIfTI or PNG), a maximum-intensity
    projection and, with --reference, a difference map; several runs: an ensemble, their probabilities averaged.
    Classification runs: class or label probabilities as CSV and .npz, readable by labelwise evaluate
    classification."""
    from labelwise.inference import load_run, predict_classes, predict_files

    runs = [load_run(path, device=device) for path in run_dir]
    run = runs[0]
    if run.task == "classification":
        given = [
            name
            for name, value in (
                ("--reference", reference),
                ("--threshold", threshold),
                ("--overlap", overlap),
                ("--window", window),
                ("--roi", roi),
                ("--tta", tta),
                ("--min-size", min_size),
                ("--uncertainty", uncertainty or None),
            )
            if value is not None and value != []
        ]
        if given:
            raise LabelwiseError(
                f"{', '.join(given)}: only for segmentation runs; {run_dir[0]} is a classification run"
            )
        if len(runs) > 1:
            raise LabelwiseError(
                f"{len(runs)} runs given: ensembles are for segmentation runs; {run_dir[0]} is a classification run"
            )
        files = predict_classes(run, input, out, split=split, batch_size=batch_size or 32)
        typer.echo(f"wrote {files['csv']} and {files['npz']}")
        return
    if split is not None:
        raise LabelwiseError("--split: only for classification runs (a table or dataset .npz)")
    cases = predict_files(
        runs,
        input,
        out,
        threshold=threshold,
        reference=reference,
        window=window or None,
        overlap=overlap,
        roi=roi,
        tta=tta,
        min_size=min_size,
        batch_size=batch_size,
        uncertainty=uncertainty,
    )
    dice = [c["dice"] for c in cases if c.get("dice") is not None]
    tail = (
        f"; mean Dice {sum(dice) / len(dice):.4f} against {reference}{' inside --roi' if roi else ''}" if dice else ""
    )
    typer.echo(f"wrote {len(cases)} case(s) to {out}{tail}")


@evaluate_app.command("classification")
def evaluate_classification(
    predictions: Annotated[
        list[Path],
        typer.Option(help="model outputs: .npy/.npz/.pt, scores (N, C) or classes (N,); repeat for several models"),
    ],
    label_sets: Annotated[
        str | None, typer.Option(help="imagenet-real, imagenetv2-multilabel, or a JSON label-set file")
    ] = None,
    attributes: Annotated[
        Path | None, typer.Option(help="CSV of groups (id + one column per attribute): AUC per group and ES-AUC")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            "--single-labels",
            help="the labels, for whichever figures are asked: a CSV (id + label column(s); rows matched by --ids, or "
            "in file order) or one single label per row (.npy, .npz with target/label, JSON or text). "
            "--label-sets: the original single label (top-k); --attributes or alone: the targets of AUC and "
            "fairness. --single-labels is an alias",
        ),
    ] = None,
    label_column: Annotated[
        list[str] | None,
        typer.Option(
            help="label column(s) of a --labels CSV; several: multi-label, --attributes path only (default: label)"
        ),
    ] = None,
    attribute: Annotated[
        list[str] | None, typer.Option(help="attribute column(s) of --attributes to use (default: all)")
    ] = None,
    ids: Annotated[
        Path | None, typer.Option(help="one image id per prediction row (text lines or a JSON list)")
    ] = None,
    topk: Annotated[str, typer.Option(help="k values for top-k and ReaL top-k, comma-separated")] = "1,5",
    threshold: Annotated[
        float | None, typer.Option(help="also multi-label model metrics (mAP, F1, ...) at this score threshold")
    ] = None,
    bootstrap: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="bootstrap resamples for 95% intervals, 0: none (default: 0 with --label-sets, 1000 for the AUC with "
            "--attributes/--labels)",
        ),
    ] = None,
    logits: Annotated[
        bool,
        typer.Option(
            "--logits",
            help="--attributes/--labels: the scores are logits; applies a sigmoid per column (one column: binary; "
            "several --label-column: multi-label) or a softmax over the columns (exclusive classes). Without it, "
            "scores outside [0, 1] are refused",
        ),
    ] = False,
    asma_metric: Annotated[str, typer.Option(help="per-subgroup metric that ASMA averages")] = "variable_topk_subset",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the scores as JSON here")] = None,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="write one row per model as CSV here")] = None,
    report_out: Annotated[Path | None, typer.Option("--report", help="write an HTML report here")] = None,
) -> None:
    """Score classifiers against multi-label sets (--label-sets: top-k, ReaL, variable top-k, per-subgroup accuracy,
    ASMA), or probabilities against labels overall and per patient group (--attributes/--labels: AUC with
    bootstrap CI, accuracy, balanced accuracy, macro-F1, sensitivity at 90% specificity, ECE, per-group AUC,
    ES-AUC). --labels feeds either."""
    from rich.console import Console
    from rich.table import Table

    if label_sets is not None and attributes is not None:
        raise LabelwiseError(
            "give --label-sets (multi-label-aware scores) or --attributes (AUC and fairness across "
            "groups), not both: each writes its own --json and --report"
        )
    if label_sets is None:
        if attributes is None and labels is None:
            raise LabelwiseError(
                "give --label-sets (multi-label-aware scores) or --attributes/--labels (AUC and fairness across groups)"
            )
        if len(predictions) != 1:
            raise LabelwiseError("--attributes/--labels score one --predictions file at a time")
        _evaluate_fairness(
            predictions[0],
            attributes,
            labels,
            label_column or ["label"],
            attribute,
            ids,
            1000 if bootstrap is None else bootstrap,
            logits,
            json_out,
            report_out,
        )
        return
    if logits:
        raise LabelwiseError("--logits is for --attributes/--labels; --label-sets ranks the scores as they are")

    from labelwise.evaluation.classification import evaluate_classification as run
    from labelwise.evaluation.classification import write_outputs
    from labelwise.report.common import fmt
    from labelwise.report.evaluation import table_columns

    try:
        ks = [int(k) for k in topk.split(",") if k.strip()]
    except ValueError:
        raise LabelwiseError(f"--topk {topk!r}: expected comma-separated integers such as 1,5") from None
    if not ks or min(ks) < 1:
        raise LabelwiseError(f"--topk {topk!r}: each k must be a positive integer")
    result = run(
        predictions,
        label_sets,
        ids=ids,
        single_labels=labels,
        topk=ks,
        threshold=threshold,
        bootstrap=bootstrap or 0,
        asma_metric=asma_metric,
        label_columns=label_column or ["label"],
    )
    columns = table_columns(result)
    table = Table(title=f"label sets: {result['label_set']}")  # one column per model: fits a terminal
    table.add_column("metric")
    for model in result["models"]:
        table.add_column(model["model"], justify="right")
    for column in columns:
        table.add_row(column, *(fmt(model.get(column)) for model in result["models"]))
    console = Console()
    console.print(table)
    for model in result["models"]:
        if model["unavailable"]:
            reasons = "; ".join(f"{k}: {why}" for k, why in model["unavailable"].items())
            console.print(f"{model['model']}: not computed: {reasons}", highlight=False)
    for path in write_outputs(result, json_out, csv_out, report_out):
        typer.echo(f"wrote {path}")


def _evaluate_fairness(
    predictions: Path,
    attributes: Path | None,
    labels: Path | None,
    label_columns: list[str],
    attribute_columns: list[str] | None,
    ids: Path | None,
    resamples: int,
    logits: bool,
    json_out: Path | None,
    report_out: Path | None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    from labelwise.evaluation.fairness import evaluate_fairness, write_fairness_json
    from labelwise.report.common import fmt

    result = evaluate_fairness(
        predictions, attributes, labels, label_columns, attribute_columns, ids, resamples, logits=logits
    )
    summary = result["summary"]
    console = Console()
    table = Table(title=f"{predictions}: {summary['kind']}, {summary['n']} cases")
    table.add_column("metric")
    table.add_column("value", justify="right")
    ci = summary.get("auc_ci")
    if ci:
        table.add_row("AUC (95% CI)", f"{fmt(summary['auc'])} ({fmt(ci[0])}-{fmt(ci[1])})")
    else:
        table.add_row("AUC", fmt(summary["auc"]))
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "sensitivity_at_90_specificity", "ece"):
        table.add_row(key, fmt(summary.get(key)))
    for name, per_group in summary["group_auc"].items():
        table.add_row(f"ES-AUC {name}", fmt(summary["es_auc"].get(name)))
        for group, value in per_group.items():
            note = summary["group_notes"].get(name, {}).get(group)
            table.add_row(f"  AUC {name}={group}", note if value is None and note else fmt(value))
    console.print(table)
    if json_out is not None:
        typer.echo(f"wrote {write_fairness_json(result, json_out)}")
    if report_out is not None:
        from labelwise.report.fairness import build_fairness_report

        scores, target = result["scores"], result["target"]
        positive = scores[:, 1] if summary["kind"] == "binary" else scores
        path = build_fairness_report(
            summary, positive, target, result["groups"], report_out, title=f"Fairness evaluation: {predictions.name}"
        )
        typer.echo(f"wrote {path}")


@evaluate_app.command("segmentation")
def evaluate_segmentation(
    pred: Annotated[Path, typer.Option(help="folder of predicted masks (a labelwise predict folder: its masks/)")],
    truth: Annotated[
        list[Path],
        typer.Option(
            help="folder of reference masks, matched to each input by file name (<id>, <id>_mask, _seg, _label, _gt, "
            "_roi) or the data manifest's key rule; repeat for several raters: scores against each, and the raters' "
            "agreement between themselves"
        ),
    ],
    json_out: Annotated[Path | None, typer.Option("--json", help="write the scores as JSON here")] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="write one row per case (+ mean, std) as CSV here")
    ] = None,
    allow_missing: Annotated[bool, typer.Option(help="skip cases found on one side only instead of refusing")] = False,
    roi: Annotated[
        Path | None,
        typer.Option(
            help="folder of region-of-interest masks, matched like --truth: every score is computed inside them (e.g. "
            "a fundus field of view)"
        ),
    ] = None,
    class_names: Annotated[
        str | None,
        typer.Option(
            help="names of the labels 1, 2, ... separated by commas (e.g. artery,vein): scores per class under these "
            "names (default: per class, named 1, 2, ..., when a mask holds labels above 1)"
        ),
    ] = None,
    ignore: Annotated[
        list[int] | None,
        typer.Option(
            help="a reference mask value that carries no label (e.g. 255, as data.ignore): those voxels are scored "
            "nowhere; repeat for several"
        ),
    ] = None,
    soft_truth: Annotated[
        bool,
        typer.Option(
            help="the --truth files are probability masks (a foreground probability, or one map per class, as "
            "data.soft_labels reads them): scored as the mask where it exceeds 0.5 (the likeliest class)"
        ),
    ] = False,
) -> None:
    """Score segmentations: Dice, IoU, precision, sensitivity, volumetric similarity, HD95, ASSD (physical units)
    and clDice, per case and mean ± std; label maps with several classes also per class."""
    from rich.console import Console
    from rich.table import Table

    from labelwise.evaluation.segmentation import evaluate_raters, format_table, raters_csv, to_csv, to_json
    from labelwise.evaluation.segmentation import evaluate_segmentation as run

    names = None
    if class_names is not None:
        names = [name.strip() for name in class_names.split(",")]
        if not all(names):
            raise LabelwiseError(
                f"--class-names {class_names!r}: expected names separated by commas such as artery,vein"
            )
    options: dict = {"allow_missing": allow_missing, "roi": roi, "class_names": names, "ignore": ignore or []}
    options["soft_truth"] = soft_truth
    several = len(truth) > 1
    result = evaluate_raters(pred, truth, **options) if several else run(pred, truth[0], **options)
    console = Console()
    for k, scored in enumerate(result["raters"] if several else [result], start=1):
        rows = format_table(scored)
        who = f"rater {k}: " if several else ""
        table = Table(title=f"{who}{scored['n']} case(s): {pred} vs {truth[k - 1]}{f' inside {roi}' if roi else ''}")
        for i, column in enumerate(rows[0]):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in rows[1:]:
            table.add_row(*row)
        console.print(table)
        for note in scored.get("notes", []):
            console.print(f"note: {note}", highlight=False)
    if several:
        summary = Table(title="mean Dice: the model against each rater, and the raters between themselves")
        for column in ("", *(f"rater {k}" for k in range(1, len(truth) + 1))):
            summary.add_column(column, justify="right")
        summary.add_row("model", *(f"{d:.3f}" for d in result["model"]))
        between = {tuple(p["raters"]): p["dice"] for p in result["between_raters"]["pairs"]}
        for j in range(1, len(truth) + 1):
            cells = ["-" if j == k else f"{between[(min(j, k), max(j, k))]:.3f}" for k in range(1, len(truth) + 1)]
            summary.add_row(f"rater {j}", *cells)
        console.print(summary)
        console.print(f"raters between themselves: mean Dice {result['between_raters']['dice']:.3f}", highlight=False)
    if json_out is not None:
        to_json(result, json_out)
        typer.echo(f"wrote {json_out}")
    if csv_out is not None:
        (raters_csv if several else to_csv)(result, csv_out)
        typer.echo(f"wrote {csv_out}")


@app.command()
def explain(
    input_: Annotated[
        list[Path],
        typer.Option(
            "--input",
            help="image (png/jpg/tif), .npy, NIfTI or Harvard-GDP .npz file, or a folder of them; repeat for more",
        ),
    ],
    run: Annotated[Path | None, typer.Option(help="a run directory (the weights it tested)")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="one checkpoint folder, RUN/checkpoints/step-XXXXXX")] = None,
    method: Annotated[
        list[str] | None, typer.Option(help="gradcam (default), gradcam++, scorecam, ...; repeat for more")
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            help="class or label to explain, by index or name (default: the predicted one; segmentation: each "
            "foreground class); repeat for more"
        ),
    ] = None,
    layer: Annotated[
        str | None,
        typer.Option(
            help="target layer, e.g. layer4 (default: the last spatial layer; ViT: the last block's tokens as a grid)"
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default RUN_DIR/explanations)")] = None,
    report: Annotated[
        bool, typer.Option(help="rebuild the run's report, with the gallery, when --out is in the run")
    ] = True,
) -> None:
    """Explain a trained model's predictions: Grad-CAM family maps as overlays (2D) or NIfTI, montage and MIP (3D)."""
    from rich.progress import Progress

    from labelwise.explain import METHOD_NAMES
    from labelwise.inference import explain_files, input_files, load_run

    if (run is None) == (checkpoint is None):
        raise LabelwiseError("give one of --run RUN_DIR or --checkpoint CHECKPOINT_FOLDER")
    methods = method or ["gradcam"]
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown:
        raise LabelwiseError(f"--method {unknown[0]!r}: unknown; choose from {', '.join(METHOD_NAMES)}")
    source = run or checkpoint
    assert source is not None  # one of them, checked above
    model = load_run(source)
    out = out or model.run_dir / "explanations"
    files = input_files(input_)
    with Progress(transient=True) as bar:
        task = bar.add_task("explaining", total=len(files))
        entries = explain_files(
            model,
            files,
            out,
            methods,
            target,
            layer,
            progress=lambda path: bar.update(task, advance=1, description=path.name),
        )
    typer.echo(f"wrote {len(entries)} map(s) for {len(files)} input(s) to {out}")
    if report and out.resolve().is_relative_to(model.run_dir.resolve()):
        from labelwise.report import build_report

        typer.echo(f"report {build_report(model.run_dir)}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (or one of its checkpoint folders)")],
    out: Annotated[
        Path,
        typer.Option(
            help="output file (model.onnx, model.pt); its sidecar FILE.json is written "
            "beside it: input shape, preprocessing, activation, class names, settings"
        ),
    ],
    format: Annotated[str, typer.Option("--format", help="onnx (opset 17) or torchscript (a traced module)")] = "onnx",
) -> None:
    """Export a trained run's predicting network as ONNX or TorchScript, with a JSON sidecar of what using it
    needs: input shape (dynamic batch; U-Net segmenters any size that is a multiple of their divisor), the
    preprocessing with the training statistics, output activation and class names, threshold, window and overlap."""
    from labelwise.inference import load_run
    from labelwise.inference.export import export_format, export_run

    chosen = export_format(format)  # refused before the run is loaded
    files = export_run(load_run(run_dir), chosen, out)
    typer.echo(f"wrote {files[0]} and {files[1]}")


@app.command()
def audit(
    run_dir: Annotated[
        Path, typer.Argument(help="a run directory: segmentation, or classification trained on a table")
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="output folder: cases.csv and suspects/ (masks) or samples.csv (labels), figures/, report.html, "
            "audit.json"
        ),
    ],
    input: Annotated[
        Path | None,
        typer.Option(help="the manifest (masks) or classification table (labels) to audit (default: the run's own)"),
    ] = None,
    folds: Annotated[
        int | None,
        typer.Option(
            min=2,
            help="audit the run's training cases too, with K runs of its config each trained without one fold "
            "(in OUT/folds/; a killed audit resumes them)",
        ),
    ] = None,
    split: Annotated[
        list[str] | None,
        typer.Option(help="audit only the cases or samples of this split (train, val, test); repeat for more"),
    ] = None,
    fix: Annotated[
        Path | None,
        typer.Option(
            help="also write a corrected copy, ready for labelwise train: FIX/manifest.csv with each suspect pixel "
            "flipped to its likeliest class in FIX/labels/, or FIX/table.csv with the flagged class labels replaced "
            "(the original files are never written)"
        ),
    ] = None,
    fix_action: Annotated[
        str,
        typer.Option(
            help="class labels, with --fix: relabel (the flagged label replaced by the likely one) or unlabel (the "
            "flagged training sample kept as an unlabelled image, use_label 0: supervised training leaves it out)"
        ),
    ] = "relabel",
) -> None:
    """Find suspect labels where they disagree with the run's out-of-sample probabilities (confident learning): in
    masks, missed structure (likelier foreground, labelled background) and extra (the reverse); in class labels,
    the samples whose label is likely another. A quality score per case or sample, the worst on a page, and with
    --fix a corrected copy. The run's probabilities are out of sample only for what it did not train on; its
    training cases need --folds K."""
    from labelwise.audit import audit_run

    audit_run(run_dir, out, manifest=input, folds=folds, fix=fix, splits=split, fix_action=fix_action)


@app.command()
def calibrate(
    run_dir: Annotated[Path, typer.Argument(help="a binary segmentation run directory")],
    out: Annotated[
        Path,
        typer.Option(
            help="output folder: calibration.json, probabilities/ and folds/ (an audit's folder with the same folds "
            "is reused)"
        ),
    ],
    folds: Annotated[
        int,
        typer.Option(
            min=2,
            help="K runs of the run's config, each trained without one fold of its training cases (in OUT/folds/; a "
            "killed calibration resumes them): out-of-sample probabilities for every training case",
        ),
    ] = 3,
    input: Annotated[
        Path | None, typer.Option(help="the run's training manifest, where the run cannot find it (moved data)")
    ] = None,
) -> None:
    """Calibrate a run's probabilities on cross-fitted predictions: an isotonic map of the foreground probability
    fitted on every training case's out-of-fold probabilities and the validation cases', written into the run
    (predict, export and the report use it; the run's test outputs are rewritten through it). Masks and Dice do not
    change: the mask is decided before the map."""
    from labelwise.audit.calibrate import calibrate_run

    calibrate_run(run_dir, folds, out, manifest=input)


@synth_app.command("shapes")
def synth_shapes(
    out: Annotated[Path, typer.Option(help="output .npz file")],
    n: Annotated[int, typer.Option(min=1, help="number of samples")] = 600,
    size: Annotated[int, typer.Option(min=8, help="image side in pixels/voxels")] = 32,
    dim: Annotated[int, typer.Option(min=2, max=3, help="2 (images) or 3 (volumes)")] = 2,
    classes: Annotated[int, typer.Option(min=2, max=4, help="number of shape classes")] = 3,
    noise: Annotated[float, typer.Option(min=0.0, help="std of the gaussian noise")] = 0.3,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
) -> None:
    """Shapes on a noisy background, with class labels and masks (classification and segmentation)."""
    from labelwise.data.npz import save_npz
    from labelwise.data.synth import make_shapes

    arrays = make_shapes(n=n, size=size, dim=dim, num_classes=classes, noise=noise, seed=seed)
    save_npz(out, arrays)
    typer.echo(f"wrote {out}: {n} samples of {'x'.join([str(size)] * dim)}, splits train/val/test")


@synth_app.command("patchml")
def synth_patchml(
    out: Annotated[Path, typer.Option(help="output folder")],
    source: Annotated[
        str, typer.Option(help="'digits' (scikit-learn's bundled digits) or a folder of class subfolders")
    ] = "digits",
    grid: Annotated[int, typer.Option(min=1, help="cells per side")] = 2,
    objects: Annotated[str, typer.Option(help="objects per image, MIN-MAX")] = "1-4",
    n: Annotated[int, typer.Option(min=1, help="number of images")] = 1000,
    cell: Annotated[int | None, typer.Option(help="cell side in pixels (default: from the source)")] = None,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    images: Annotated[bool, typer.Option(help="also write one PNG per image")] = True,
) -> None:
    """Multi-label images of object patches on a grid, with label sets and object boxes (PatchML)."""
    from labelwise.data.synth import make_patchml, write_patchml

    low, _, high = objects.partition("-")
    try:
        counts = (int(low), int(high or low))
    except ValueError:
        raise LabelwiseError(f"--objects {objects!r}: expected MIN-MAX such as 1-4") from None
    arrays = make_patchml(source=source, n=n, grid=grid, objects=counts, cell=cell, seed=seed)
    write_patchml(out, arrays, images=images)
    multi = float((arrays["labels"].sum(1) >= 2).mean())
    typer.echo(
        f"wrote {out}: {n} images {arrays['image'].shape[-1]}x{arrays['image'].shape[-1]}, "
        f"{len(arrays['class_names'])} classes, {multi:.0%} with 2 or more labels"
    )


@synth_app.command("vessels")
def synth_vessels(
    out: Annotated[Path, typer.Option(help="output folder (images/, labels/, truth/, radius/, manifest.csv)")],
    dim: Annotated[
        int, typer.Option(min=2, max=3, help="2 (fundus-like pictures) or 3 (angiography-like volumes)")
    ] = 3,
    n: Annotated[int, typer.Option(min=1, help="number of cases (11: 6 train / 2 val / 3 test, as in DS6)")] = 11,
    shape: Annotated[
        list[int] | None, typer.Option(help="size per axis, one value or one per axis (default 96 in 3D, 256 in 2D)")
    ] = None,
    spacing: Annotated[
        list[float] | None, typer.Option(help="voxel size per axis in mm (NIfTI header; default 1)")
    ] = None,
    seed: Annotated[int, typer.Option(help="random seed; case i depends on (seed, i) only")] = 0,
) -> None:
    """Synthetic vessel trees with a clean mask and a noisy semi-automatic one (Frangi vesselness + threshold)."""
    from labelwise.data.synth.vessels import write_vessels

    size = shape or [96 if dim == 3 else 256]
    size = size * dim if len(size) == 1 else size
    manifest = write_vessels(out, dim, n, size, seed=seed, spacing=spacing, progress=typer.echo)
    typer.echo(
        f"wrote {manifest}: {n} cases {'x'.join(map(str, size))}; labels/ holds the noisy masks training "
        "sees, truth/ the clean ones for evaluation"
    )


@synth_app.command("rnflt")
def synth_rnflt(
    out: Annotated[Path, typer.Option(help="output folder for data_0001.npz, ... (the Harvard-GDP layout)")],
    n: Annotated[int, typer.Option(min=1, help="number of patients")] = 1000,
    seed: Annotated[int, typer.Option(help="random seed; patient i depends on (seed, i) only")] = 0,
    labelled: Annotated[
        float, typer.Option(min=0, max=1, help="table.csv: share of training patients whose label may be used")
    ] = 1.0,
    val: Annotated[
        float, typer.Option(min=0, max=1, help="table.csv: share of patients in the validation split")
    ] = 0.15,
    test: Annotated[float, typer.Option(min=0, max=1, help="table.csv: share of patients in the test split")] = 0.25,
) -> None:
    """Synthetic retinal nerve fibre layer thickness maps with glaucoma, visual fields, progression and
    demographics whose prevalence and image statistics differ by group; plus OUT/table.csv (splits by patient,
    use_label, labels and attributes; rewrite it with `labelwise data table harvard`)."""
    from rich.progress import track

    from labelwise.data.synth.rnflt import make_patient, patient_seed, save_patient
    from labelwise.data.table import write_harvard_table

    glaucoma = 0
    for i in track(range(n), description="patients", transient=True):
        patient = make_patient(patient_seed(seed, i))
        save_patient(out, i, patient)
        glaucoma += int(patient["glaucoma"])
    table = write_harvard_table(out, val=val, test=test, labelled=labelled, seed=seed)
    typer.echo(f"wrote {n} patients to {out} ({glaucoma / n:.0%} with glaucoma) and {table}")


@table_app.command("harvard")
def table_harvard(
    folder: Annotated[Path, typer.Argument(help="folder of data_XXXX.npz files (the Harvard-GDP layout)")],
    out: Annotated[Path | None, typer.Option(help="CSV to write (default FOLDER/table.csv)")] = None,
    labelled: Annotated[
        float, typer.Option(min=0, max=1, help="share of training patients whose label may be used")
    ] = 1.0,
    val: Annotated[float, typer.Option(min=0, max=1, help="share of patients in the validation split")] = 0.15,
    test: Annotated[float, typer.Option(min=0, max=1, help="share of patients in the test split")] = 0.25,
    seed: Annotated[int, typer.Option(help="random seed of the split")] = 0,
) -> None:
    """A classification table of a Harvard-GDP folder: split and use_label per patient, glaucoma,
    progression_1..6, md, and the attributes age, age_band, male, race, hispanic."""
    from labelwise.data.table import write_harvard_table

    typer.echo(f"wrote {write_harvard_table(folder, out, val=val, test=test, labelled=labelled, seed=seed)}")


@table_app.command("folder")
def table_folder(
    folder: Annotated[Path, typer.Argument(help="folder with one subfolder of images per class")],
    out: Annotated[Path | None, typer.Option(help="CSV to write (default FOLDER/table.csv)")] = None,
    labelled: Annotated[
        float, typer.Option(min=0, max=1, help="share of training images whose label may be used")
    ] = 1.0,
    val: Annotated[float, typer.Option(min=0, max=1, help="share of images in the validation split")] = 0.15,
    test: Annotated[float, typer.Option(min=0, max=1, help="share of images in the test split")] = 0.25,
    seed: Annotated[int, typer.Option(help="random seed of the split")] = 0,
) -> None:
    """A classification table of an image folder (FOLDER/<class>/<image>): id, image, split, use_label, label."""
    from labelwise.data.table import write_folder_table

    typer.echo(f"wrote {write_folder_table(folder, out, val=val, test=test, labelled=labelled, seed=seed)}")


@data_app.command("manifest")
def data_manifest(
    images: Annotated[Path, typer.Option(help="folder of images (NIfTI, PNG, TIFF, JPG, .npy)")],
    labels: Annotated[Path, typer.Option(help="folder of their masks, paired with the images by name")],
    out: Annotated[Path, typer.Option(help="manifest CSV to write; paths in it are relative to its folder")],
    roi: Annotated[Path | None, typer.Option(help="folder of region-of-interest masks (e.g. fields of view)")] = None,
    truth: Annotated[Path | None, typer.Option(help="folder of reference masks used only for evaluation")] = None,
    val: Annotated[
        float | None,
        typer.Option(min=0, max=1, help="share of the labelled cases drawn for the validation split (default 0.1)"),
    ] = None,
    test: Annotated[
        float | None,
        typer.Option(min=0, max=1, help="share of the labelled cases drawn for the test split (default 0.2)"),
    ] = None,
    split_from: Annotated[
        Path | None, typer.Option(help="CSV with id and split columns (e.g. an earlier manifest): each case's split")
    ] = None,
    split: Annotated[str | None, typer.Option(help="put every case into this split: train, val or test")] = None,
    seed: Annotated[int, typer.Option(help="random seed of the drawn split")] = 0,
    prefix: Annotated[str, typer.Option(help="text prepended to every id")] = "",
    unlabelled: Annotated[bool, typer.Option(help="keep images without a label, as unlabelled training cases")] = False,
    append: Annotated[
        bool, typer.Option(help="add the cases to the existing --out manifest (ids must stay unique)")
    ] = False,
) -> None:
    """A segmentation manifest (id, image, label, split[, truth][, roi]) of a folder of images and a folder of their
    masks, paired by whole name or by the part of the names that differs from file to file (21_training.tif with
    21_manual1.gif); splits drawn by --seed, given by --split, or taken from --split-from."""
    from labelwise.data.pairing import assign_splits, pair_files, write_manifest

    rows = pair_files(
        images,
        labels,
        roi=roi,
        truth=truth,
        allow_unlabelled=unlabelled,
        prefix=prefix,
        warn=lambda message: typer.echo(f"warning: {message}", err=True),
    )
    rows = assign_splits(rows, val=val, test=test, seed=seed, split=split, split_from=split_from)
    cases = write_manifest(rows, out, append=append)
    counts = ", ".join(f"{name} {sum(c.split == name for c in cases)}" for name in ("train", "val", "test"))
    added = f" ({len(rows)} added)" if append else ""
    typer.echo(f"wrote {len(cases)} cases ({counts}) to {out}{added}")


@data_app.command("degrade")
def data_degrade(
    manifest: Annotated[Path, typer.Option(help="segmentation manifest whose training masks are degraded")],
    kind: Annotated[
        str,
        typer.Option(
            help="thin, erode, dilate, drop, semi-automatic or mixed (each case draws its own kind and strength)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="folder for labels/, noise.csv and manifest.csv")],
    strength: Annotated[
        float | None,
        typer.Option(
            help="in pixels/voxels of the mask's own grid for thin "
            "(narrowest width kept, default 3), erode and dilate "
            "(border shift, default 1): scale it with the resolution "
            "for the same noise; drop: share of components removed "
            "(default 0.3); semi-automatic: smallest component kept, "
            "in squares (2D) / cubes (3D) of the mean vessel width "
            "(default 2); mixed: a scale on the drawn thin, erode and "
            "dilate strengths (default 1)"
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="random seed (drop, mixed), combined with each case's id")] = 0,
) -> None:
    """Imperfect training masks from clean ones, to study label noise on real images: OUT/labels/, OUT/noise.csv
    (each case's kind, strength and Dice to its clean mask) and OUT/manifest.csv, whose training rows use the
    degraded masks and keep the clean ones as truth; validation and test cases keep their references."""
    from labelwise.data.degrade import degrade_manifest

    def progress(done: int, total: int, case_id: str) -> None:
        typer.echo(f"  {done}/{total} {case_id}", err=True)

    path = degrade_manifest(manifest, kind, out, strength=strength, seed=seed, progress=progress)
    typer.echo(f"wrote {path} and {path.parent / 'noise.csv'}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; bad input exits 2 with one message, no traceback. Per-axis options take their
    values space-separated (:func:`expand_per_axis_options`)."""
    args = expand_per_axis_options(sys.argv[1:] if argv is None else argv)
    try:
        cli_command()(args=args, standalone_mode=True)
    except LabelwiseError as err:
        for line in str(err).splitlines():
            typer.echo(f"error: {line}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
