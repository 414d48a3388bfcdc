"""The one training loop: runs any Method on Lightning Fabric.

Devices and data parallelism (``trainer.devices`` processes: gloo on CPU, NCCL on GPU), precision,
deterministic seeding, gradient clipping, a non-finite-loss guard, atomic checkpoints and exact resume,
progress, the metrics log and the end-of-run evaluation all live here, once, for every method. The files a run
writes at its end (predictions, figures, summaries) go through one output hook, ``write_outputs``, for every task:
the engine knows no prediction format (it writes its own run files: config.yaml, inference.json, metrics.jsonl,
summary.json, checkpoints).
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from lightning.fabric import Fabric
from torch.utils.data import DataLoader

import labelwise
from labelwise.config import Config, load_config, save_config
from labelwise.data import DataBundle, MixedBatchSampler, StepBatchSampler, load_data
from labelwise.data.patches import VolumeDataset
from labelwise.engine.checkpoint import (
    latest_checkpoint,
    load_state,
    load_weights,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from labelwise.engine.progress import StepProgress
from labelwise.engine.rundir import RunDir
from labelwise.errors import ConfigError, LabelwiseError
from labelwise.io import atomic_path, atomic_write
from labelwise.methods.base import Method

if TYPE_CHECKING:
    from lightning.fabric.wrappers import _FabricOptimizer


class NonFiniteLossError(LabelwiseError):
    """The loss became NaN or infinite; the run stopped and its last good checkpoint is kept."""


@dataclass
class TrainResult:
    """How a run ended (``message`` says why): ``status`` is completed; interrupted (Ctrl-C or SIGTERM, a checkpoint
    written); failed (a non-finite loss: nothing saved after it); or stopped (interrupted after a non-finite loss the
    loop had not yet checked: no checkpoint written, the last good one kept)."""

    run_dir: Path
    step: int
    status: str
    message: str
    test: dict[str, float]
    is_global_zero: bool = True


#: Config keys a resumed run keeps (a name ending in ``.`` covers its section): the network and what its shapes
#: follow (every model key; the data's task, labels, channels and sizes), the data preprocessing its weights were
#: trained under, and the optimizer whose state the checkpoint holds. Method options are not compared (a method may
#: fill in unset ones, see ``Method.chosen_options``); one that changes the networks fails as their weights load.
RESUME_FIXED = (
    "model.",
    "method.name",
    "optimizer.name",
    "data.task",
    "data.labels",
    "data.modalities",
    "data.image_size",
    "data.patch_size",
    "data.synth.",
    "data.intensity",
    "data.reorient",
    "data.spacing",
)


def _changed_keys(saved: dict[str, Any], given: dict[str, Any], keys: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """``(key, saved value, given value)`` per dotted key under ``keys`` whose values differ (unset: ``null``)."""

    def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in tree.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{name}."))
            else:
                out[f"{prefix}{name}"] = value
        return out

    def text(value: Any) -> str:
        return "null" if value is None else str(value)

    a, b = flat(saved), flat(given)
    names = [k for k in dict.fromkeys([*a, *b]) if any(k == f or (f.endswith(".") and k.startswith(f)) for f in keys)]
    return [(k, text(a.get(k)), text(b.get(k))) for k in names if a.get(k) != b.get(k)]


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the random draws (dropout, augmentation) of one step on one process: resuming at any step
    reproduces them exactly, and processes draw differently."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


def reseed(seed: int) -> None:
    """Seed torch's CPU generator, and the GPU ones if CUDA is in use (``torch.manual_seed`` without its
    per-call cost of queueing lazy CUDA/XPU/MTIA seeding)."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


def learning_rate(config: Config, step: int) -> float:
    """Learning rate at ``step``: linear warm-up, then constant or cosine decay to zero."""
    opt, total = config.optimizer, config.trainer.max_steps
    if opt.warmup_steps and step < opt.warmup_steps:
        return opt.lr * (step + 1) / opt.warmup_steps
    if opt.scheduler == "cosine":
        progress = (step - opt.warmup_steps) / max(1, total - opt.warmup_steps)
        return opt.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return opt.lr


def make_fabric(config: Config) -> Fabric:
    """A Fabric for the config's devices and precision; refuses combinations the machine cannot run."""
    t = config.trainer
    accelerator = t.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator: 'gpu' asked for but no CUDA device is visible")
    if accelerator == "gpu" and t.devices > torch.cuda.device_count():
        raise ConfigError(f"trainer.devices: {t.devices} asked for but {torch.cuda.device_count()} GPUs are visible")
    if accelerator == "cpu" and t.precision == "16-mixed":
        raise ConfigError("trainer.precision: 16-mixed needs a GPU; use bf16-mixed or 32-true on the CPU")
    if t.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return Fabric(
        accelerator=accelerator,
        devices=t.devices,
        strategy="ddp" if t.devices > 1 else "auto",
        precision=t.precision,
    )


class Trainer:
    """Runs one Method from a Config into a run directory.

    ``method``: the Method class (``labelwise.methods.METHODS[config.method.name]``), built once the data is loaded.
    ``write_outputs``: the end-of-run output hook, one for every task: called as
    ``write_outputs(predictions_folder, split, data, predictions, seed)`` with the test split's predictions from
    :meth:`Method.evaluate`, it writes the run's output files and returns metrics to log beside the Method's
    (``labelwise.inference.run_outputs.write_run_outputs`` does: per-case masks, figures and segmentation.json, or
    the prediction arrays and the classification summary); None writes none. ``labelwise.training.train`` wires
    both."""

    def __init__(
        self,
        config: Config,
        run_dir: str | Path,
        method: type[Method],
        fabric: Fabric | None = None,
        write_outputs: Callable[[Path, str, DataBundle, dict[str, Any], int], dict[str, float] | None] | None = None,
    ):
        self.config = config
        self.method_class = method
        self.write_outputs = write_outputs
        self.run = RunDir(run_dir)
        self.fabric = fabric or make_fabric(config)
        self.frozen: dict[str, list[str]] = {}  # model.freeze_backbone: the frozen state-dict names per network

    # --- setup ---------------------------------------------------------------------------------

    def _setup(self, resume: bool) -> int:
        cfg, fabric = self.config, self.fabric
        if resume:
            self._check_resume_config()
        elif latest_checkpoint(self.run.checkpoints) is not None:  # before any process could write one of this run
            raise LabelwiseError(
                f"{self.run.path}: holds a run's checkpoints already; resume it "
                f"(labelwise train --resume {self.run.path}) or pick another folder"
            )
        fabric.launch()
        fabric.seed_everything(cfg.seed, verbose=False)
        if cfg.trainer.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.data: DataBundle = load_data(cfg.data, keep_unlabelled=self.method_class.uses_unlabelled, seed=cfg.seed)
        self.method: Method = self.method_class(cfg, self.data)
        checkpoint = latest_checkpoint(self.run.checkpoints) if resume else None
        if cfg.model.init_from is not None or cfg.model.freeze_backbone:
            self._transfer(checkpoint)  # resumed from a checkpoint: only the same parameters frozen again
        self.raw_networks = dict(self.method.networks)
        self.start_step = 0
        if checkpoint is not None:
            load_weights(checkpoint, self.raw_networks)
        for name, net in self.raw_networks.items():  # frozen networks (a teacher) need no data-parallel wrapper
            trainable = any(p.requires_grad for p in net.parameters())
            self.method.networks[name] = fabric.setup_module(net) if trainable else fabric.to_device(net)
        self.method.fabric = fabric
        self.optimizer: _FabricOptimizer | None = None
        self.method_optimizers: dict[str, torch.optim.Optimizer] = {}
        if self.method.manual_optimization:
            self.method_optimizers = self.method.configure_optimizers()
        elif parameters := self.method.parameters():  # none: a method without gradient training (e.g. frangi)
            # one optimizer in, that one out (Fabric's return type also covers several)
            self.optimizer = cast("_FabricOptimizer", fabric.setup_optimizers(self.method.build_optimizer(parameters)))
        if checkpoint is not None:
            state = load_state(checkpoint)
            if self.optimizer is not None:
                self.optimizer.load_state_dict(state["optimizer"])
            for name, optimizer in self.method_optimizers.items():
                optimizer.load_state_dict(state["optimizer"][name])
            self.method.load_state_dict(state.get("method", {}))
            set_rng_states(state["rng"])
            self.start_step = int(state["step"])
        if fabric.is_global_zero:
            self.run.create()
            if resume:
                self.run.truncate_metrics(self.start_step)
            else:  # a fresh start in the folder of a run killed before its first checkpoint: not its log
                self.run.metrics.unlink(missing_ok=True)
            saved = cfg.model_copy(deep=True)  # the caller's config is left as it was given
            for key, value in self.method.chosen_options().items():  # e.g. a variant's values: a resume keeps them
                setattr(saved.method, key, value)
            save_config(saved, self.run.config)  # resumed: with its --set overrides, so that config.yaml says what ran
            atomic_write(self.run.inference, json.dumps(self.method.inference_spec(), indent=2) + "\n")
            self._write_cases()
            self.run.update_summary(
                name=cfg.name,
                status="running",
                step=self.start_step,
                max_steps=cfg.trainer.max_steps,
                message="",
                labelwise_version=labelwise.__version__,
                world_size=fabric.world_size,
                **({} if resume else {"best": None, "tested_step": None}),
                data={
                    "task": self.data.task,
                    "num_classes": self.data.num_classes,
                    "in_channels": self.data.in_channels,
                    "spatial_dims": self.data.spatial_dims,
                    "class_names": self.data.class_names,
                    "image_size": list(self.data.image_size) if self.data.image_size else None,
                },
            )
        fabric.barrier()
        return self.start_step

    def _write_cases(self) -> None:
        """``cases.json``: the absolute path of the data file the run trained on (as found then, so a moved run still
        knows it) and the sample ids of each split (what ``labelwise audit`` needs to tell in-sample samples from
        the others, even when the data file has moved too). Only for data whose samples have ids."""
        if self.data.ids is None:
            return
        source = self.config.data.manifest or self.config.data.path
        splits = {}
        for name, split in self.data.splits.items():
            indices = getattr(split, "volumes", split).indices  # a PatchDataset cuts the cases of its volumes
            splits[name] = [str(self.data.ids[int(i)]) for i in indices]
        record = {"data": None if source is None else str(Path(source).resolve()), "splits": splits}
        atomic_write(self.run.cases, json.dumps(record) + "\n")
        if self.data.raters is not None:
            atomic_write(self.run.raters, json.dumps(self.data.raters, indent=1) + "\n")

    def _check_resume_config(self) -> None:
        """Refuse, before anything is written, a resumed run whose ``trainer.max_steps`` is below its last
        checkpoint's step; whose config changes a key of :data:`RESUME_FIXED` (the network, the data it was built for,
        the optimizer whose state the checkpoint holds: its weights would not fit, or would go on under other
        inputs); or changes ``trainer.max_steps`` under the cosine schedule: its decay is spread over max_steps
        (:func:`learning_rate`), so the steps already run would have followed another curve. With the constant
        schedule a run may be extended; the other keys (trainer.log_every, checkpoint_every, devices, ...) may
        change."""
        cfg = self.config
        if latest_checkpoint(self.run.checkpoints) is not None:
            pointer = json.loads((self.run.checkpoints / "latest.json").read_text())
            if cfg.trainer.max_steps < int(pointer["step"]):
                raise ConfigError(
                    f"trainer.max_steps: {cfg.trainer.max_steps} refused when resuming {self.run.path}: its last "
                    f"checkpoint is at step {pointer['step']} ({self.run.checkpoints / pointer['path']}); give "
                    f"trainer.max_steps >= {pointer['step']}"
                )
        if not self.run.config.is_file():
            return
        saved = load_config(self.run.config, check_files=False)
        changed = _changed_keys(saved.to_dict(), cfg.to_dict(), RESUME_FIXED)
        if changed:
            raise ConfigError(
                f"{', '.join(f'{key}: {old} -> {new}' for key, old, new in changed)} refused when resuming "
                f"{self.run.path}: its checkpoint holds the network, optimizer and data settings of its config.yaml; "
                "keep them, or start a new run"
            )
        old, new = saved.trainer.max_steps, cfg.trainer.max_steps
        if old != new and "cosine" in (saved.optimizer.scheduler, cfg.optimizer.scheduler):
            raise ConfigError(
                f"trainer.max_steps: {old} -> {new} refused when resuming {self.run.path}: the cosine schedule "
                f"spreads its decay over max_steps, so the steps already run would have followed another curve; keep "
                f"{old}, or start a new run to train longer"
            )

    def _train_loader(self, start_step: int) -> DataLoader:
        cfg, fabric = self.config, self.fabric
        n_train, batch = len(self.data.split("train")), cfg.data.batch_size
        if batch % fabric.world_size:
            raise ConfigError(f"data.batch_size: {batch} is not divisible by trainer.devices={fabric.world_size}")
        if batch > n_train:
            raise ConfigError(f"data.batch_size: {batch} is larger than the training split ({n_train} samples)")
        sampler = self._mixed_sampler(start_step) or StepBatchSampler(
            n_train,
            batch,
            cfg.trainer.max_steps,
            cfg.seed,
            start_step=start_step,
            rank=fabric.global_rank,
            world=fabric.world_size,
        )
        loader = DataLoader(
            self.data.split("train"),
            batch_sampler=sampler,
            num_workers=cfg.trainer.num_workers,
            persistent_workers=False,
            pin_memory=fabric.device.type == "cuda",
        )
        return cast(DataLoader, fabric.setup_dataloaders(loader, use_distributed_sampler=False))  # one in, one out

    def _transfer(self, resumed: Path | None) -> None:
        """``model.init_from`` / ``model.freeze_backbone``: the engine reads the pretrain run's latest checkpoint (or,
        resuming, the names frozen at the start, saved in every checkpoint) and the Method loads and freezes
        (:meth:`labelwise.methods.Method.load_backbone`, :meth:`~labelwise.methods.Method.refreeze`)."""
        from labelwise.engine.checkpoint import STATE, WEIGHTS, read_weights

        cfg = self.config.model
        if resumed is not None:
            if cfg.freeze_backbone:
                saved = torch.load(resumed / STATE, map_location="cpu", weights_only=True, mmap=True).get("frozen")
                self.frozen = self.method.refreeze(saved)
            return
        if cfg.init_from is None:  # freeze_backbone alone: a linear probe on the randomly initialised backbone
            self.frozen = self.method.load_backbone(None, freeze=True, source="(random initialisation)")
            return
        checkpoint = latest_checkpoint(Path(cfg.init_from) / "checkpoints")
        if checkpoint is None:
            raise ConfigError(f"model.init_from: {cfg.init_from} is not a run directory with a checkpoint")
        self.frozen = self.method.load_backbone(
            read_weights(checkpoint / WEIGHTS), freeze=cfg.freeze_backbone, source=str(cfg.init_from)
        )

    def _mixed_sampler(self, start_step: int) -> MixedBatchSampler | None:
        """Batches with a fixed labelled part (``data.labelled_per_batch``, default half) for methods that learn from
        unlabelled samples, when the training split has both kinds (classification; segmentation when asked)."""
        cfg, train = self.config, self.data.split("train")
        flags = getattr(train, "labelled", None)
        asked = cfg.data.labelled_per_batch
        if not self.method.uses_unlabelled or flags is None or bool(flags.all()) or not bool(flags.any()):
            return None
        if self.data.task != "classification" and asked is None:
            return None
        n_labelled = asked or max(1, cfg.data.batch_size // 2)
        labelled, unlabelled = torch.nonzero(flags).flatten().tolist(), torch.nonzero(~flags).flatten().tolist()
        try:
            return MixedBatchSampler(
                labelled,
                unlabelled,
                cfg.data.batch_size,
                n_labelled,
                cfg.trainer.max_steps,
                cfg.seed,
                start_step=start_step,
                rank=self.fabric.global_rank,
                world=self.fabric.world_size,
            )
        except ValueError as err:
            raise ConfigError(f"data.labelled_per_batch / data.batch_size: {err}") from None

    # --- the loop ------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> TrainResult:
        """Train to ``trainer.max_steps`` (from the last checkpoint if ``resume``), evaluate, save."""
        cfg, fabric = self.config, self.fabric
        start = self._setup(resume)
        t = cfg.trainer
        step = start
        window_losses: dict[str, torch.Tensor] = {}
        window_counts: dict[str, int] = {}  # per key: a method may report some terms only on some steps
        first_bad = torch.tensor(-1, device=fabric.device)
        started = time.perf_counter()
        previous_sigterm = _sigterm_as_interrupt()
        progress = StepProgress(t.max_steps, start, enabled=fabric.is_global_zero)
        status, message = "completed", ""
        self._train_mode()
        try:
            with progress:
                for batch in self._train_loader(start):
                    reseed(step_seed(cfg.seed, step, fabric.global_rank))
                    lr = learning_rate(cfg, step)
                    self.method.step, self.method.lr = step, lr
                    losses = self.method.training_step(batch)
                    loss = losses["loss"]
                    if self.optimizer is not None:
                        self._optimize(loss, lr)
                    self.method.after_step()
                    step += 1
                    finite = torch.isfinite(loss.detach())
                    first_bad = torch.where(
                        (first_bad < 0) & ~finite, torch.tensor(step, device=fabric.device), first_bad
                    )
                    for key, value in losses.items():
                        window_losses[key] = window_losses.get(key, 0.0) + value.detach().float()
                        window_counts[key] = window_counts.get(key, 0) + 1

                    is_last = step == t.max_steps
                    if step % t.log_every == 0 or is_last:
                        self._check_finite(first_bad)
                        record = self._log_train(step, window_losses, window_counts, lr, started)
                        progress.update(step, record["loss"])
                        window_losses, window_counts = {}, {}
                    if t.val_every and step % t.val_every == 0 and not is_last:
                        self._track_best(self._evaluate("val", step, started), step)
                        self._train_mode()
                    if step % t.checkpoint_every == 0 or is_last:
                        self._check_finite(first_bad)
                        self._save(step)
                    progress.update(step)
        except KeyboardInterrupt:
            try:
                self._check_finite(first_bad)
            except NonFiniteLossError as err:  # a non-finite loss not yet caught: nothing after it is saved
                status, message = "stopped", f"interrupted at step {step}; {err}"
            else:
                status = "interrupted"
                self._save(step)
                message = f"interrupted at step {step}; continue with: labelwise train --resume {self.run.path}"
        except NonFiniteLossError as err:
            status, message = "failed", str(err)
        finally:
            signal.signal(signal.SIGTERM, previous_sigterm)

        test: dict[str, float] = {}
        if status == "completed":
            val = self.predict_split("val") if self._has("val") else None
            self._track_best(self._evaluate("val", step, started, predicted=val), step)
            tested = self._load_best(step)
            self._calibrate(tested, started, val if tested == step else None)  # the same weights: not predicted again
            test = self._evaluate("test", tested, started, save_predictions=True)
        if fabric.is_global_zero:
            wall = time.perf_counter() - started
            self.run.update_summary(status=status, step=step, message=message, test=test, wall_time_s=round(wall, 2))
        fabric.barrier()
        return TrainResult(self.run.path, step, status, message, test, fabric.is_global_zero)

    # --- pieces of the loop --------------------------------------------------------------------

    def _optimize(self, loss: torch.Tensor, lr: float) -> None:
        """One optimizer step on ``loss`` at learning rate ``lr``, the gradients of everything the optimizer updates
        clipped to one joint norm (Fabric clips all of an optimizer's parameters whichever network is named, and
        unscales them first under 16-mixed precision, which may happen only once per step)."""
        optimizer = self.optimizer
        assert optimizer is not None  # called only for a method that has the engine's optimizer (see fit)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        if self.config.trainer.gradient_clip:
            trainable = next(
                net for net in self.method.networks.values() if any(p.requires_grad for p in net.parameters())
            )
            self.fabric.clip_gradients(
                trainable, optimizer, max_norm=self.config.trainer.gradient_clip, error_if_nonfinite=False
            )
        optimizer.step()

    def _train_mode(self) -> None:
        for net in self.method.networks.values():
            net.train()

    def _check_finite(self, first_bad: torch.Tensor) -> None:
        """Stop every process if any saw a non-finite loss since the start; nothing after it is saved."""
        # a tensor in, a tensor out (Fabric's return type also covers collections)
        bad = cast(torch.Tensor, self.fabric.all_reduce(first_bad.float(), reduce_op="max"))
        if bad >= 0:
            checkpoint = latest_checkpoint(self.run.checkpoints)
            kept = f"last good checkpoint: {checkpoint}" if checkpoint else "no checkpoint was written before it"
            raise NonFiniteLossError(
                f"non-finite loss at step {int(bad)}; stopped ({kept}). Try a lower optimizer.lr, "
                "trainer.gradient_clip, or check the data for NaN/inf values"
            )

    def _log_train(
        self, step: int, sums: dict[str, Any], counts: dict[str, int], lr: float, started: float
    ) -> dict[str, Any]:
        """One train record: each term's mean over the steps of the window that reported it."""
        keys = sorted(sums)
        stacked = torch.stack([torch.as_tensor(sums[k], device=self.fabric.device) / counts[k] for k in keys])
        mean = cast(torch.Tensor, self.fabric.all_reduce(stacked, reduce_op="mean")).tolist()
        record: dict[str, Any] = {
            "step": step,
            "split": "train",
            "time": round(time.perf_counter() - started, 3),
            "lr": lr,
        }
        for key, value in zip(keys, mean, strict=True):
            record["loss" if key == "loss" else f"loss/{key}"] = value
        if self.fabric.is_global_zero:
            self.run.append_metrics(record)
        return record

    def _track_best(self, metrics: dict[str, float], step: int) -> None:
        """Keep the weights of the best validation ``trainer.select_best`` so far in ``checkpoints/best``."""
        name = self.config.trainer.select_best
        if name is None:
            return
        if name not in metrics:
            raise ConfigError(
                f"trainer.select_best: the validation metrics have no {name!r}; they are "
                f"{', '.join(sorted(metrics)) or 'none (no validation split?)'}"
            )
        value, best = float(metrics[name]), self.run.summary().get("best")
        lower = name == "loss" or name.startswith("loss/")
        better = best is None or (value < best["value"] if lower else value > best["value"])
        if math.isfinite(value) and better and self.fabric.is_global_zero:
            folder = self.run.checkpoints / "best"
            folder.mkdir(parents=True, exist_ok=True)
            from safetensors.torch import save_file

            from labelwise.engine.checkpoint import WEIGHTS, network_tensors

            with atomic_path(folder / WEIGHTS) as tmp:
                save_file(network_tensors(self.raw_networks), str(tmp), metadata={"step": str(step)})
            self.run.update_summary(best={"step": step, "metric": name, "value": value})
        self.fabric.barrier()

    def _calibrate(self, step: int, started: float, predicted: tuple[Any, Any] | None = None) -> None:
        """With the weights about to be tested, on the validation cases: a method that fits its temperature
        (``method.temperature: fit``) does so first, then one that chooses its threshold (``method.threshold:
        calibrate``) chooses it on the tempered probabilities, and last one that maps its probabilities
        (``method.isotonic: true``) fits the map on them; ``inference.json`` then holds all three, so predict and
        export apply them too. Without validation cases the method keeps temperature 1, its uncalibrated threshold
        and no map, and the summary says so. ``predicted``: the validation outputs and targets of these weights, if
        already predicted."""
        if not (self.method.calibrates or self.method.fits_temperature or self.method.fits_isotonic):
            return
        if not self._has("val"):
            if self.fabric.is_global_zero:
                self.run.update_summary(
                    calibration="no validation cases: temperature 1, threshold 0.5 (argmax), no isotonic map"
                )
            return
        outputs, target = predicted if predicted is not None else self.predict_split("val")
        dataset = self.data.split("val")
        rois = dataset.rois if isinstance(dataset, VolumeDataset) else None
        record: dict[str, Any] = {"step": step}
        if self.method.fits_temperature:
            record.update(self.method.fit_temperature(outputs, target, rois))
            t = record["temperature"]
            outputs = [o / t for o in outputs] if isinstance(outputs, list) else outputs / t
        if self.method.calibrates:
            value, score = self.method.calibrate(outputs, target, rois)
            record.update(threshold=value, val_dice=score)
        if self.method.fits_isotonic:
            record.update(self.method.fit_isotonic(outputs, target, rois))
        if self.fabric.is_global_zero:
            atomic_write(self.run.inference, json.dumps(self.method.inference_spec(), indent=2) + "\n")
            self.run.update_summary(calibration=record)
            logged = {"calibrated_threshold": "threshold", "dice_at_calibrated_threshold": "val_dice"}
            logged |= {
                k: k
                for k in ("temperature", "val_nll_before", "val_nll_after", "val_ece_before", "val_ece_after")
                + ("isotonic_knots", "val_ece_before_isotonic", "val_ece_after_isotonic")
            }
            self.run.append_metrics(
                {
                    "step": step,
                    "split": "val",
                    "time": round(time.perf_counter() - started, 3),
                    **{name: record[key] for name, key in logged.items() if key in record},
                }
            )

    def _load_best(self, step: int) -> int:
        """Load the best validation weights (when ``trainer.select_best`` chose others than the last); the step whose
        weights are tested."""
        best = self.run.summary().get("best") if self.config.trainer.select_best else None
        if not best or best["step"] == step:
            return step
        from labelwise.engine.checkpoint import WEIGHTS

        load_weights(self.run.checkpoints / "best" / WEIGHTS, self.raw_networks)
        if self.fabric.is_global_zero:
            self.run.update_summary(tested_step=best["step"])
        return int(best["step"])

    def _save(self, step: int) -> None:
        if self.fabric.is_global_zero:
            optimizers = {name: opt.state_dict() for name, opt in self.method_optimizers.items()}
            state = {
                "optimizer": self.optimizer.state_dict() if self.optimizer is not None else optimizers,
                "method": self.method.state_dict(),
                "scheduler": {"name": self.config.optimizer.scheduler, "last_step": step},
                "frozen": self.frozen,  # state-dict names per network frozen by model.freeze_backbone
                "rng": rng_states(),
                "world_size": self.fabric.world_size,
            }
            save_checkpoint(
                self.run.checkpoints, step, self.raw_networks, state, keep=self.config.trainer.keep_checkpoints
            )
            self.run.update_summary(step=step)
        self.fabric.barrier()

    @torch.no_grad()
    def predict_split(self, split: str) -> tuple[Any, Any]:
        """Logits and targets of a whole split, on the CPU (every process computes all of it); for cases of their own
        sizes (:class:`VolumeDataset`) lists with one tensor per case."""
        dataset = self.data.split(split)
        for net in self.method.networks.values():
            net.eval()
        if isinstance(dataset, VolumeDataset):
            logits = [
                self.method.predict(image[None].to(self.fabric.device), spacing=spacing)[0].float().cpu()
                for image, spacing in zip(dataset.image, dataset.spacings)
            ]
            return logits, dataset.target
        outputs = []
        bs = self.config.data.eval_batch_size
        for start in range(0, len(dataset), bs):
            image = dataset.image[start : start + bs].to(self.fabric.device)
            outputs.append(self.method.predict(image).float().cpu())
        return torch.cat(outputs), dataset.target

    def _has(self, split: str) -> bool:
        return split in self.data.splits and len(self.data.splits[split]) > 0

    def _evaluate(
        self,
        split: str,
        step: int,
        started: float,
        save_predictions: bool = False,
        predicted: tuple[Any, Any] | None = None,
    ) -> dict[str, float]:
        """Score ``split`` (its outputs and targets ``predicted``, or predicted now) and log the metrics."""
        if not self._has(split):
            return {}
        outputs, target = predicted if predicted is not None else self.predict_split(split)
        rois = self.data.split(split).rois if isinstance(self.data.split(split), VolumeDataset) else None
        metrics, predictions = self.method.evaluate(outputs, target, rois=rois)
        if not self.fabric.is_global_zero:
            return metrics
        if save_predictions and self.write_outputs is not None:
            metrics.update(
                self.write_outputs(self.run.predictions, split, self.data, predictions, self.config.seed) or {}
            )
        self.run.append_metrics(
            {"step": step, "split": split, "time": round(time.perf_counter() - started, 3), **metrics}
        )
        return metrics


def _sigterm_as_interrupt() -> Any:
    """Treat SIGTERM (a scheduler's pre-emption) like Ctrl-C: checkpoint and stop cleanly."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return signal.getsignal(signal.SIGTERM)


__all__ = ["NonFiniteLossError", "TrainResult", "Trainer", "learning_rate", "step_seed"]
