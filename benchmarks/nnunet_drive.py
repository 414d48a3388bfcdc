"""nnU-Net v2 on DRIVE (retinal vessels) as a benchmark peer of labelwise, in its own environment.

Runs under ``.venv-nnunet/bin/python`` (``make nnunet-env``); it never imports labelwise, and nnunetv2 is never a
dependency of labelwise::

    .venv-nnunet/bin/python benchmarks/nnunet_drive.py --drive /work/shared/data/drive --work runs/nnunet \\
        --fold-split val_ids.txt --minutes 30 --seed 0 --out runs/nnunet/pred

Steps (each a function below; the nnU-Net steps run nnU-Net's own commands from the same venv as subprocesses,
with ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` set to folders under ``--work``):

1. :func:`convert`: DRIVE into nnU-Net's raw format, ``Dataset501_DRIVE``. nnU-Net stores every input channel
   in its own file *except RGB natural images*: its ``NaturalImage2DIO`` reads one RGB PNG as 3 channels (its
   ``Dataset120_RoadSegmentation`` conversion does the same). So each case is ONE file ``<case>_0000.png`` (RGB,
   from the TIFF) and ``dataset.json`` names three channels ``{"0": "R", "1": "G", "2": "B"}``; three grey files
   ``_0000/_0001/_0002`` would be read the same way. ``labelsTr/<case>.png``: 0/1 from
   ``training/1st_manual/*_manual1.gif``; ``imagesTs``: the 20 test images. Cases are ``drive_21`` ...
   ``drive_40`` (training) and ``drive_01`` ... ``drive_20`` (test).
2. :func:`plan_and_preprocess`: ``nnUNetv2_plan_and_preprocess -d 501 -c 2d --verify_dataset_integrity``.
3. :func:`write_splits`: ``splits_final.json`` with one split (fold 0): the 2 validation ids of ``--fold-split``
   and the other 18 training cases, so the split equals labelwise's. ``--fold-split`` is a text file of ids (``25``
   or ``drive_25``, separated by spaces, commas or new lines) or a labelwise manifest CSV (``id`` and ``split``
   columns: its ``val`` rows). Without it: the ids that ``labelwise data manifest --val 0.1 --test 0 --seed 0``
   draws for DRIVE's training folder (:func:`labelwise_default_val_ids`, the same permutation, re-implemented
   here: 25 and 40).
4. :func:`train`: ``nnUNetv2_train 501 2d 0 -tr nnUNetTrainerWallClock -device cpu``: nnU-Net's default trainer
   cut to a wall-clock budget (:func:`make_trainer_class`), then nnU-Net's own final validation on the 2 val cases.
5. :func:`predict`: ``nnUNetv2_predict ... -f 0 -chk checkpoint_final.pth -device cpu --save_probabilities`` on the
   20 test images, then :func:`export_predictions` writes per test image ``<out>/<id>_test.png`` (0/255 mask,
   nnU-Net's argmax) and ``<out>/<id>_test.npy`` (vessel probability, float32, H x W as the TIFF), and
   ``<out>/timing.json``. :func:`dice_in_fov` scores the masks against ``test/1st_manual`` inside ``test/mask``
   (``<out>/dice_fov.json``).

Where the trainer lives. nnU-Net finds a trainer by class name (``-tr``) by importing, in order, the modules of
its own package ``nnunetv2.training.nnUNetTrainer`` and then its sub-packages (``primus`` before ``variants``),
then the folders of ``nnUNet_extTrainer``. In this environment the ``primus`` sub-package cannot be imported:
it imports timm, which imports torchvision, and PyPI's torchvision is a CUDA build whose ops do not load against
torch+cpu (``RuntimeError: operator torchvision::nms does not exist``); the search does not skip that error. So a
trainer in ``variants/`` or in ``nnUNet_extTrainer`` is never reached. :func:`install_trainer` therefore writes a
five-line module ``nnUNetTrainerWallClock.py`` into the installed package's top folder
(``.venv-nnunet/.../nnunetv2/training/nnUNetTrainer/``), which is searched before any sub-package; it loads this
script by path and calls :func:`make_trainer_class`. It is rewritten on every run; training and
``nnUNetv2_predict`` (which looks the trainer up again to build the network) both find it.

Threads (2 cores): ``nnUNetv2_train -device cpu`` and ``nnUNetv2_predict -device cpu`` call
``torch.set_num_threads(cpu_count)`` (2 here). Data augmentation runs in ``--da-processes`` background processes
(``nnUNet_n_proc_DA``); the default 0 runs it in the main process between steps: a batch takes ~0.1 s against
~50 s for the step, a worker would only compete with torch's two threads, and in the main process it is seeded.
``OMP_NUM_THREADS=1`` keeps numpy/scipy single-threaded in helper processes (torch's own count is set explicitly),
``nnUNet_def_n_proc`` and ``-np/-npfp/-npp/-nps`` are set to ``--threads`` (default: the number of cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

DATASET_ID = 501
DATASET_NAME = "Dataset501_DRIVE"
CONFIGURATION = "2d"
FOLD = 0
PLANS = "nnUNetPlans"
TRAINER = "nnUNetTrainerWallClock"
CHECKPOINT = "checkpoint_final.pth"
CASE_PREFIX = "drive_"
#: Environment variable that hands the budget and the seed to the trainer in the nnUNetv2_train process.
BUDGET_ENV = "NNUNET_DRIVE_BUDGET"
#: What the trainer writes next to its checkpoints: epochs done, iterations, seconds.
BUDGET_REPORT = "wallclock.json"


# ----------------------------------------------------------------------------------------------- data and split

def drive_ids(drive: Path, part: str) -> list[str]:
    """The ids of DRIVE's ``training`` (21..40) or ``test`` (01..20) images, sorted by number."""
    ids = [p.name.split("_")[0] for p in (drive / part / "images").glob(f"*_{part}.tif")]
    if not ids:
        raise SystemExit(f"no {part} images in {drive / part / 'images'} (expected NN_{part}.tif)")
    return sorted(ids, key=int)


def labelwise_default_val_ids(train_ids: list[str], val: float = 0.1, seed: int = 0) -> list[str]:
    """The validation ids labelwise draws for these training ids with ``labelwise data manifest --val 0.1 --test 0
    --seed 0``: ids in natural order, permuted by ``numpy.random.default_rng(seed)``, the first ``round(val * n)``
    (half up, at least 1) are val. Re-implemented here (this script must not import labelwise); for DRIVE: 25, 40."""
    ids = sorted(train_ids, key=int)
    n_val = max(1, math.floor(val * len(ids) + 0.5))
    order = np.random.default_rng(seed).permutation(len(ids))
    return sorted((ids[i] for i in order[:n_val]), key=int)


def _plain_id(token: str) -> str:
    token = token.strip()
    if token.startswith(CASE_PREFIX):
        token = token[len(CASE_PREFIX):]
    return f"{int(token):02d}" if token.isdecimal() else token


def read_val_ids(path: Path) -> list[str]:
    """Validation ids from ``path``: a labelwise manifest CSV (``id`` and ``split`` columns, the ``val`` rows) or a
    text file of ids separated by spaces, commas or new lines (``#`` starts a comment)."""
    text = path.read_text()
    first = text.splitlines()[0] if text.strip() else ""
    if "split" in first and "id" in first and "," in first:
        with path.open(newline="") as handle:
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in csv.DictReader(handle)]
        return sorted({_plain_id(r["id"]) for r in rows if r.get("split") == "val"}, key=int)
    tokens = re.split(r"[\s,;]+", re.sub(r"#.*", "", text))
    return sorted({_plain_id(t) for t in tokens if t.strip()}, key=int)


def convert(drive: Path, raw_root: Path) -> Path:
    """DRIVE -> ``raw_root/Dataset501_DRIVE`` (imagesTr, labelsTr, imagesTs, dataset.json); returns that folder."""
    out = raw_root / DATASET_NAME
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    train_ids = drive_ids(drive, "training")
    for i in train_ids:
        rgb = np.asarray(Image.open(drive / "training" / "images" / f"{i}_training.tif").convert("RGB"))
        label = np.asarray(Image.open(drive / "training" / "1st_manual" / f"{i}_manual1.gif").convert("L"))
        if rgb.shape[:2] != label.shape:
            raise SystemExit(f"training {i}: image {rgb.shape} and label {label.shape} differ")
        Image.fromarray(rgb).save(out / "imagesTr" / f"{CASE_PREFIX}{i}_0000.png")
        Image.fromarray((label > 127).astype(np.uint8)).save(out / "labelsTr" / f"{CASE_PREFIX}{i}.png")
    for i in drive_ids(drive, "test"):
        rgb = np.asarray(Image.open(drive / "test" / "images" / f"{i}_test.tif").convert("RGB"))
        Image.fromarray(rgb).save(out / "imagesTs" / f"{CASE_PREFIX}{i}_0000.png")
    dataset = {
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": {"background": 0, "vessel": 1},
        "numTraining": len(train_ids),
        "file_ending": ".png",
        "name": DATASET_NAME,
        "description": "DRIVE retinal vessels (Staal et al. 2004), first observer; one RGB PNG per case",
    }
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    return out


def write_splits(preprocessed_root: Path, train_ids: list[str], val_ids: list[str]) -> Path:
    """``splits_final.json`` with fold 0 = the given val ids and every other training id for training."""
    unknown = sorted(set(val_ids) - set(train_ids))
    if unknown or not val_ids:
        raise SystemExit(f"--fold-split: validation ids must be DRIVE training ids (21..40); got {val_ids}")
    split = {"train": [CASE_PREFIX + i for i in train_ids if i not in val_ids],
             "val": [CASE_PREFIX + i for i in val_ids]}
    path = preprocessed_root / DATASET_NAME / "splits_final.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([split], indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------------------------------ trainer

def make_trainer_class():
    """``nnUNetTrainerWallClock``: nnU-Net's default ``nnUNetTrainer`` (network, loss, augmentation, SGD with
    poly learning rate, deep supervision, oversampling, checkpoints, final validation: all unchanged) whose length
    is set by a wall-clock budget instead of 1000 epochs x 250 iterations.

    The budget (``budget_s`` in the JSON of the environment variable ``NNUNET_DRIVE_BUDGET``) counts from the
    start of ``run_training`` (data loaders, unpacking, every epoch with its validation, checkpoint and plot) to the
    end of the last epoch; nnU-Net's final validation on the val cases comes after it.

    Why it cuts iterations per epoch as well as epochs. On 2 CPU cores the default 2d plan costs seconds per
    iteration, so 250 iterations make one epoch of many minutes: a 30-minute budget would hold one or two epochs,
    i.e. one or two steps of the poly schedule, which then would not decay at all. So:

    * epoch 0 is a calibration epoch of ``calibration_iterations`` (3) training and 1 validation iterations at the
      initial learning rate (the poly schedule's value at epoch 0 whatever its length); it measures seconds per
      training iteration (without the first, warm-up one), per validation iteration and the fixed cost per epoch;
    * then the rest of the budget, times a 0.97 safety factor, is planned: iterations per epoch
      ``I = clip(total affordable iterations // target_epochs, min_iterations, 250)`` (target 50 epochs, at least
      4 iterations), validation iterations ``max(1, I // 5)`` (nnU-Net's 250:50), and as many epochs of that size
      as fit (at most 1000). ``num_epochs`` and the scheduler's ``max_steps`` are set to the planned total, so
      ``lr = 0.01 * (1 - epoch / num_epochs) ** 0.9`` still decays to its last step at the end of the budget;
    * at the end of every epoch the elapsed time is checked: when the planned epochs would overrun the budget (at
      the mean of the last 3 epochs), the remaining epoch count is cut to what fits and ``max_steps``
      with it (the rate then decays faster from there on, no jump back up); training stops when the budget is
      spent, also within an epoch (after the iteration that crosses it; that epoch's validation still runs: a
      budget smaller than the calibration epoch overruns by at most one iteration and one validation iteration).
      A budget that holds 50 or more full epochs keeps 250 iterations per epoch and cuts epochs only.

    Seeded (``seed`` in the same JSON): ``random``, ``numpy`` and ``torch`` before the network is built, so weights
    and, with ``nnUNet_n_proc_DA=0``, the augmentation stream repeat; background augmentation workers draw their own
    seeds (nnU-Net's ``NonDetMultiThreadedAugmenter``), so with workers runs are not bit-identical.
    Writes ``wallclock.json`` (epochs, iterations, seconds) next to the checkpoints.
    """
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerWallClock(nnUNetTrainer):
        calibration_iterations = 3
        target_epochs = 50
        min_iterations = 4
        safety = 0.97

        def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                     device: torch.device = torch.device("cuda")):
            config = json.loads(os.environ.get(BUDGET_ENV, "{}"))
            self.budget_s = float(config.get("budget_s", math.inf))
            self.seed = int(config.get("seed", 0))
            random.seed(self.seed)
            np.random.seed(self.seed)
            torch.manual_seed(self.seed)
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.default_iterations = self.num_iterations_per_epoch  # 250
            self.default_val_iterations = self.num_val_iterations_per_epoch  # 50
            self.num_iterations_per_epoch = self.calibration_iterations
            self.num_val_iterations_per_epoch = 1
            self.epoch_records: list[dict] = []
            self.stop_reason = ""

        def _set_length(self, iterations: int, epochs_total: int) -> None:
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = max(1, round(iterations * self.default_val_iterations
                                                             / self.default_iterations))
            self.num_epochs = max(epochs_total, self.current_epoch)
            self.lr_scheduler.max_steps = self.num_epochs

        def _plan(self, remaining_s: float) -> None:
            """After the calibration epoch: iterations per epoch and number of epochs for ``remaining_s``."""
            cal = self.epoch_records[0]
            per_it = cal["train_s_per_it"]
            per_val = cal["val_s_per_it"]
            fixed = max(0.0, cal["epoch_s"] - cal["train_s"] - cal["val_s"])
            val_ratio = self.default_val_iterations / self.default_iterations
            per_it_all = per_it + val_ratio * per_val
            affordable = max(0.0, remaining_s * self.safety - self.target_epochs * fixed) / per_it_all
            iterations = int(min(self.default_iterations, max(self.min_iterations,
                                                              affordable // self.target_epochs)))
            epoch_s = iterations * per_it + max(1, round(iterations * val_ratio)) * per_val + fixed
            epochs = int(min(1000 - self.current_epoch, remaining_s * self.safety // epoch_s))
            if epochs <= 0:  # the calibration epoch was all the budget held
                iterations = self.num_iterations_per_epoch
            self._set_length(iterations, self.current_epoch + epochs)
            self.print_to_log_file(
                f"wall-clock budget: {remaining_s:.0f} s left after calibration ({per_it:.2f} s per training "
                f"iteration, {per_val:.2f} s per validation iteration, {fixed:.2f} s fixed per epoch): "
                f"{epochs} more epochs of {iterations} iterations, poly schedule over {self.num_epochs} epochs")

        def _replan_if_late(self, remaining_s: float) -> None:
            done = self.epoch_records[1:]
            if not done:
                return
            epoch_s = float(np.mean([r["epoch_s"] for r in done[-3:]]))  # recent epochs: the machine may be shared
            left = self.num_epochs - self.current_epoch
            if left * epoch_s <= remaining_s:
                return
            fits = int(remaining_s // epoch_s)
            self._set_length(self.num_iterations_per_epoch, self.current_epoch + fits)
            self.print_to_log_file(f"wall-clock budget: running late ({epoch_s:.1f} s per epoch, {remaining_s:.0f} s "
                                   f"left): {fits} more epochs, poly schedule now over {self.num_epochs} epochs")

        def run_training(self):
            start = time.perf_counter()
            deadline = start + self.budget_s
            self.on_train_start()
            self.setup_s = time.perf_counter() - start
            while self.current_epoch < self.num_epochs:
                t0 = time.perf_counter()
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs, marks = [], []
                for _ in range(self.num_iterations_per_epoch):
                    outputs.append(self.train_step(next(self.dataloader_train)))
                    marks.append(time.perf_counter())
                    if marks[-1] > deadline:  # a hard cap, even inside the calibration epoch of a tiny budget
                        break
                self.on_train_epoch_end(outputs)
                t1 = time.perf_counter()
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val_outputs = [self.validation_step(next(self.dataloader_val))
                                   for _ in range(self.num_val_iterations_per_epoch)]
                    self.on_validation_epoch_end(val_outputs)
                t2 = time.perf_counter()
                iterations, val_iterations = len(outputs), self.num_val_iterations_per_epoch
                lr = self.optimizer.param_groups[0]["lr"]
                self.on_epoch_end()  # checkpoints, progress plot; current_epoch += 1
                t3 = time.perf_counter()
                steady = np.diff(marks) if len(marks) > 1 else np.array([marks[0] - t0])
                self.epoch_records.append({
                    "epoch": self.current_epoch - 1, "iterations": iterations, "val_iterations": val_iterations,
                    "lr": lr, "epoch_s": t3 - t0, "train_s": t1 - t0, "val_s": t2 - t1,
                    "train_s_per_it": float(np.median(steady)), "val_s_per_it": (t2 - t1) / val_iterations})
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    if self.current_epoch < self.num_epochs:
                        self.stop_reason = "budget spent before the planned epochs were done"
                        self.num_epochs = self.current_epoch
                        self.print_to_log_file(f"wall-clock budget spent: stopping after epoch "
                                               f"{self.current_epoch - 1}")
                    break
                if len(self.epoch_records) == 1:
                    self._plan(remaining)
                else:
                    self._replan_if_late(remaining)
            self.train_loop_s = time.perf_counter() - start
            self._write_report()
            self.on_train_end()

        def _write_report(self) -> None:
            after = self.epoch_records[1:] or self.epoch_records  # the planned epochs, else the calibration one
            report = {
                "budget_s": self.budget_s, "seed": self.seed, "train_loop_s": self.train_loop_s,
                "setup_s": self.setup_s, "epochs_done": len(self.epoch_records),
                "calibration_iterations": self.calibration_iterations,
                "iterations_per_epoch": after[-1]["iterations"] if after else None,
                "val_iterations_per_epoch": after[-1]["val_iterations"] if after else None,
                "num_epochs_planned": self.num_epochs,
                "iterations_done": int(sum(r["iterations"] for r in self.epoch_records)),
                "s_per_iteration": float(np.median([r["train_s_per_it"] for r in self.epoch_records])),
                "s_per_val_iteration": float(np.median([r["val_s_per_it"] for r in self.epoch_records])),
                "s_per_epoch": float(np.mean([r["epoch_s"] for r in after])),
                "final_lr": self.epoch_records[-1]["lr"] if self.epoch_records else None,
                "stop_reason": self.stop_reason or "planned epochs done",
                "batch_size": self.batch_size, "patch_size": list(self.configuration_manager.patch_size),
                "torch_threads": torch.get_num_threads(), "epochs": self.epoch_records,
            }
            Path(self.output_folder, BUDGET_REPORT).write_text(json.dumps(report, indent=2) + "\n")

    return nnUNetTrainerWallClock


def install_trainer() -> Path:
    """Write the module that makes ``-tr nnUNetTrainerWallClock`` findable (see the module docstring)."""
    import importlib.util

    spec = importlib.util.find_spec("nnunetv2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nnunetv2 is not installed in this Python: run `make nnunet-env` and use "
                         ".venv-nnunet/bin/python")
    target = Path(list(spec.submodule_search_locations)[0]) / "training" / "nnUNetTrainer" / f"{TRAINER}.py"
    target.write_text(
        "# Written by labelwise's benchmarks/nnunet_drive.py at run time (rewritten on every run). nnU-Net finds\n"
        "# trainers by class name in this package; the class lives in that script.\n"
        "import importlib.util as _util\n\n"
        f"_spec = _util.spec_from_file_location('_nnunet_drive_runner', {str(Path(__file__).resolve())!r})\n"
        "_module = _util.module_from_spec(_spec)\n"
        "_spec.loader.exec_module(_module)\n"
        f"{TRAINER} = _module.make_trainer_class()\n")
    return target


# ---------------------------------------------------------------------------------------------- nnU-Net steps

def nnunet_environment(work: Path, da_processes: int, threads: int) -> dict:
    """The environment of the nnU-Net subprocesses: paths under ``work`` and process counts for ``threads`` cores."""
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": str(work / "nnUNet_raw"),
        "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
        "nnUNet_results": str(work / "nnUNet_results"),
        "nnUNet_n_proc_DA": str(da_processes),
        "nnUNet_def_n_proc": str(threads),
        "nnUNet_compile": "f",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _command(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{path} not found: run `make nnunet-env` and use .venv-nnunet/bin/python")
    return str(path)


def run_logged(args: list[str], env: dict, log: Path, quiet: bool = False) -> float:
    """Run ``args``; its output goes to ``log`` (and to stdout unless ``quiet``). Returns wall seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(args), flush=True)
    start = time.perf_counter()
    with log.open("w") as handle, subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                   text=True, bufsize=1) as proc:
        for line in proc.stdout:
            handle.write(line)
            if not quiet:
                sys.stdout.write(line)
        rc = proc.wait()
    seconds = time.perf_counter() - start
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"{args[0]} failed (exit {rc}); log {log}:\n{tail}")
    return seconds


def plan_and_preprocess(env: dict, work: Path, processes: int) -> float:
    # The planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for 0: give it the process count here.
    env = dict(env, nnUNet_n_proc_DA=str(max(1, processes)))
    return run_logged([_command("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", CONFIGURATION,
                       "--verify_dataset_integrity", "-npfp", str(processes), "-np", str(processes)],
                      env, work / "logs" / "plan_and_preprocess.log", quiet=True)


def train(env: dict, work: Path, budget_s: float, seed: int) -> float:
    env = dict(env, **{BUDGET_ENV: json.dumps({"budget_s": budget_s, "seed": seed})})
    return run_logged([_command("nnUNetv2_train"), str(DATASET_ID), CONFIGURATION, str(FOLD), "-tr", TRAINER,
                       "-device", "cpu"], env, work / "logs" / "train.log")


def results_folder(work: Path) -> Path:
    return work / "nnUNet_results" / DATASET_NAME / f"{TRAINER}__{PLANS}__{CONFIGURATION}"


def predict(env: dict, work: Path, raw_out: Path, processes: int, tta: bool = True) -> float:
    args = [_command("nnUNetv2_predict"), "-i", str(work / "nnUNet_raw" / DATASET_NAME / "imagesTs"),
            "-o", str(raw_out), "-d", str(DATASET_ID), "-c", CONFIGURATION, "-tr", TRAINER, "-f", str(FOLD),
            "-chk", CHECKPOINT, "-device", "cpu", "--save_probabilities", "-npp", str(processes),
            "-nps", str(processes), "--disable_progress_bar"]
    if not tta:
        args.append("--disable_tta")
    return run_logged(args, env, work / "logs" / "predict.log")


def export_predictions(raw_out: Path, out: Path, test_ids: list[str], drive: Path) -> None:
    """nnU-Net's outputs -> ``<id>_test.png`` (0/255) and ``<id>_test.npy`` (vessel probability, float32, H x W)."""
    out.mkdir(parents=True, exist_ok=True)
    for i in test_ids:
        case = f"{CASE_PREFIX}{i}"
        seg = np.asarray(Image.open(raw_out / f"{case}.png"))
        prob = np.load(raw_out / f"{case}.npz")["probabilities"]  # (classes, 1, H, W) for 2D natural images
        vessel = np.asarray(prob[1], dtype=np.float32).reshape(seg.shape)
        with Image.open(drive / "test" / "images" / f"{i}_test.tif") as im:
            expected = (im.height, im.width)
        if seg.shape != expected:
            raise SystemExit(f"{case}: prediction {seg.shape} but the image is {expected}")
        Image.fromarray(np.where(seg > 0, 255, 0).astype(np.uint8)).save(out / f"{i}_test.png")
        np.save(out / f"{i}_test.npy", vessel)


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)  # mean 1-based rank of each tie group
    n_pos = int(truth.sum())
    n_neg = len(truth) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def dice_in_fov(out: Path, drive: Path, test_ids: list[str]) -> dict:
    """Dice of ``<id>_test.png`` against ``test/1st_manual`` inside ``test/mask``: per image, mean, and pooled over
    the pixels of all images; also the pooled ROC AUC of ``<id>_test.npy`` (shows whether the probabilities rank
    vessels first even when the 0.5 threshold does not fit yet, as after a very short training)."""
    per_image, tp_all, sum_all, probs, truths = {}, 0, 0, [], []
    for i in test_ids:
        pred = np.asarray(Image.open(out / f"{i}_test.png")) > 127
        truth = np.asarray(Image.open(drive / "test" / "1st_manual" / f"{i}_manual1.gif").convert("L")) > 127
        fov = np.asarray(Image.open(drive / "test" / "mask" / f"{i}_test_mask.gif").convert("L")) > 127
        p, t = pred[fov], truth[fov]
        tp, total = int(np.sum(p & t)), int(p.sum() + t.sum())
        per_image[i] = 2 * tp / total if total else 1.0
        tp_all, sum_all = tp_all + tp, sum_all + total
        probs.append(np.load(out / f"{i}_test.npy")[fov])
        truths.append(t)
    return {"mean": float(np.mean(list(per_image.values()))), "pooled": 2 * tp_all / sum_all if sum_all else 1.0,
            "auc_pooled": roc_auc(np.concatenate(probs), np.concatenate(truths)),
            "predicted_vessel_share": float(np.mean([np.mean(np.asarray(Image.open(out / f"{i}_test.png")) > 127)
                                                     for i in test_ids])),
            "per_image": per_image}


# --------------------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drive", type=Path, required=True, help="DRIVE folder (training/, test/)")
    parser.add_argument("--work", type=Path, required=True, help="nnU-Net's raw, preprocessed and results folders")
    parser.add_argument("--fold-split", type=Path, default=None,
                        help="validation ids (text file, or a labelwise manifest CSV: its val rows); default: "
                             "labelwise's draw for --val 0.1 --seed 0, i.e. 25 and 40")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget of the training loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="where <id>_test.png/.npy and timing.json go")
    parser.add_argument("--da-processes", type=int, default=0,
                        help="nnUNet_n_proc_DA: augmentation worker processes; 0 (default) = in the main process, "
                             "seeded and reproducible, and on 2 cores no slower (augmenting a batch takes ~0.1 s "
                             "of a ~50 s step)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="processes for preprocessing/export (torch uses all cores in nnU-Net's CPU mode)")
    parser.add_argument("--no-tta", action="store_true", help="predict without mirroring (nnU-Net default: with)")
    parser.add_argument("--skip-preprocess", action="store_true",
                        help="reuse the converted and preprocessed data already under --work")
    args = parser.parse_args(argv)

    import nnunetv2  # noqa: F401  (fail early outside .venv-nnunet)
    import torch
    from importlib.metadata import version

    drive, work, out = args.drive.resolve(), args.work.resolve(), args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    train_ids, test_ids = drive_ids(drive, "training"), drive_ids(drive, "test")
    val_ids = read_val_ids(args.fold_split) if args.fold_split else labelwise_default_val_ids(train_ids)
    env = nnunet_environment(work, args.da_processes, args.threads)
    timing: dict = {"nnunetv2_version": version("nnunetv2"), "torch_version": torch.__version__,
                    "cpu_count": os.cpu_count(), "nnUNet_n_proc_DA": args.da_processes, "seed": args.seed,
                    "budget_minutes": args.minutes, "val_ids": val_ids, "dataset": DATASET_NAME,
                    "configuration": CONFIGURATION, "fold": FOLD, "trainer": TRAINER}
    print(f"nnU-Net {timing['nnunetv2_version']} on DRIVE: val ids {val_ids}, budget {args.minutes} min, "
          f"seed {args.seed}, work {work}", flush=True)

    if not args.skip_preprocess:
        start = time.perf_counter()
        convert(drive, work / "nnUNet_raw")
        timing["convert_s"] = time.perf_counter() - start
        timing["plan_and_preprocess_s"] = plan_and_preprocess(env, work, args.threads)
    write_splits(work / "nnUNet_preprocessed", train_ids, val_ids)
    plans = json.loads((work / "nnUNet_preprocessed" / DATASET_NAME / f"{PLANS}.json").read_text())
    config = plans["configurations"][CONFIGURATION]
    timing["patch_size"], timing["batch_size"] = config["patch_size"], config["batch_size"]
    print(f"2d plan: patch size {config['patch_size']}, batch size {config['batch_size']}", flush=True)

    print(f"trainer module: {install_trainer()}", flush=True)
    timing["train_process_s"] = train(env, work, args.minutes * 60.0, args.seed)
    report = json.loads((results_folder(work) / f"fold_{FOLD}" / BUDGET_REPORT).read_text())
    timing.update({
        "train_wall_s": report["train_loop_s"], "epochs_done": report["epochs_done"],
        "iterations_per_epoch": report["iterations_per_epoch"],
        "val_iterations_per_epoch": report["val_iterations_per_epoch"],
        "calibration_iterations": report["calibration_iterations"],
        "iterations_done": report["iterations_done"], "s_per_iteration": report["s_per_iteration"],
        "s_per_epoch": report["s_per_epoch"], "final_lr": report["final_lr"], "torch_threads": report["torch_threads"],
    })
    summary = results_folder(work) / f"fold_{FOLD}" / "validation" / "summary.json"
    if summary.exists():
        timing["nnunet_val_dice"] = json.loads(summary.read_text())["foreground_mean"]["Dice"]

    raw_out = work / "predictions_raw"
    timing["predict_s"] = predict(env, work, raw_out, args.threads, tta=not args.no_tta)
    timing["tta"] = not args.no_tta
    export_predictions(raw_out, out, test_ids, drive)
    (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")

    scores = dice_in_fov(out, drive, test_ids)
    (out / "dice_fov.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(f"training {timing['train_wall_s']:.0f} s ({timing['epochs_done']} epochs, "
          f"{timing['iterations_done']} iterations, {timing['s_per_iteration']:.2f} s/iteration); "
          f"prediction {timing['predict_s']:.0f} s", flush=True)
    print(f"Dice inside the FOV on the 20 test images: mean {scores['mean']:.4f}, pooled {scores['pooled']:.4f}; "
          f"ROC AUC of the probabilities {scores['auc_pooled']:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
