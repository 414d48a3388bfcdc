"""The Method interface: what a training recipe defines; the engine (``labelwise.engine``) runs it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol, cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from labelwise.augment.pipeline import Augment, AugmentOptions
from labelwise.data.config import DataConfig
from labelwise.data.datasets import DataBundle
from labelwise.data.patches import MAPS
from labelwise.errors import ConfigError
from labelwise.metrics import classification as cls_metrics
from labelwise.metrics import segmentation as seg_metrics
from labelwise.metrics.surface import IGNORE, inside, score_case, scored_classes
from labelwise.models.backbones import build_backbone, encoder_state, freeze_encoder, load_encoder
from labelwise.models.config import ModelConfig
from labelwise.models.outputs import Threshold, most_foreground, remove_small_components, segment
from labelwise.models.windows import sliding_window_predict
from labelwise.settings import OptimizerConfig, TrainerConfig


class RunConfig(Protocol):
    """What a method reads of its run's config. :class:`labelwise.config.Config`, one layer up, composes these
    sections (and checks the method's name and options against the registry)."""

    @property
    def seed(self) -> int: ...

    @property
    def data(self) -> DataConfig: ...

    @property
    def model(self) -> ModelConfig: ...

    @property
    def optimizer(self) -> OptimizerConfig: ...

    @property
    def trainer(self) -> TrainerConfig: ...

    @property
    def augment(self) -> AugmentOptions | None: ...

    def method_options(self) -> BaseModel: ...


class NoOptions(BaseModel):
    """A method without options of its own."""

    model_config = ConfigDict(extra="forbid")


class Method:
    """A training recipe: owns its networks, defines one training step and how to predict.

    Subclasses set ``name`` and ``Options`` (a pydantic model of ``method:`` keys), build their networks in
    ``__init__`` and register them in ``self.networks`` (saved in checkpoints, wrapped by the engine for
    devices and data parallelism), and implement :meth:`training_step`."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    uses_unlabelled: ClassVar[bool] = False  # True: unlabelled training cases are loaded (flag "labelled" = False)
    augments: ClassVar[bool] = False  # True: the method applies the config's augment section (see augment_batch)
    # True: voxels without a label (data.ignore, an ignore column) count in none of its losses, and the batch's maps
    # (a weight column, soft labels, data.raters: sample's votes) are honoured
    honours_ignore: ClassVar[bool] = False
    threshold: float | Literal["otsu", "calibrate"] = (
        0.5  # one-channel (sigmoid) segmenters: foreground where p > threshold, "otsu", "calibrate"
    )
    calibrated: float | None = None  # threshold: calibrate: the validation cases' best threshold (binary masks)
    calibration_tolerance: float = 0.005  # threshold: calibrate: mean validation Dice given up to stay nearer 0.5
    temperature: float = 1.0  # segmenters: predict divides the logits by it (temperature: fit, chosen on validation)
    fits_temperature: bool = False  # True: fit_temperature runs on the validation cases at the end of training
    isotonic: tuple[list[float], list[float]] | None = None  # the foreground probability's map (knots), if fitted
    fits_isotonic: bool = False  # True: fit_isotonic runs on the validation cases at the end of training
    overlap: float = 0.5  # segmenters: overlap of the sliding windows of predict
    window: list[int] | None = None  # segmenters: sliding-window size of predict (None: the whole image)
    tta: bool = False  # segmenters: average the logits over flips along every spatial axis
    scales: tuple[float, ...] = (1.0,)  # binary segmenters: magnifications predicted; per voxel the most foreground
    min_size: int = 0  # segmenters: connected components smaller than this (voxels) become background
    window_batch: int = 4  # segmenters: windows per forward pass of predict
    predictor: str | None = "model"  # the network that predicts (what inference loads); None: no classifier head
    step: int = 0  # the engine sets the number of the step about to run before each training_step
    manual_optimization: ClassVar[bool] = False  # True: the method steps its own optimizers (configure_optimizers)
    fabric: Any = None  # the engine's Fabric, set before training (backward, clipping, devices)
    lr: float = 0.0  # the scheduled learning rate of the step about to run, set by the engine

    def __init__(self, config: RunConfig, data: DataBundle):
        self.config = config
        self.options: Any = config.method_options()
        self.data = data
        self.networks: dict[str, nn.Module] = {}
        # outputs of the predicting network: classes / labels (classification) or segmentation classes; one-channel
        # segmenters (sigmoid of the foreground) set 1
        self.out_channels = data.num_classes
        self.augmenter = Augment(config.augment) if config.augment is not None and self.augments else None
        if config.data.ignore and not self.honours_ignore:
            raise ConfigError(
                f"data.ignore: method {self.name} does not leave the voxels without a label out of its losses yet; "
                "methods supervised and ds6 do"
            )
        partial = [
            what
            for what, given in (
                ("an ignore column", data.unlabelled_voxels and not config.data.ignore),
                ("a weight column", "weight" in data.maps),
                ("soft labels", "soft" in data.maps),
                ("raters to sample (data.raters: sample)", "votes" in data.maps),
            )
            if given
        ]
        if partial and not self.honours_ignore:
            raise ConfigError(
                f"the manifest's masks come with {' and '.join(partial)}; method {self.name} does not honour them in "
                "its losses yet; methods supervised and ds6 do"
            )

    @property
    def activation(self) -> str | None:
        """How the predictor's logits become probabilities: ``softmax`` (over classes), ``sigmoid`` (per label, or of
        the one foreground channel); None: no classifier output (an embedding)."""
        if self.predictor is None:
            return None
        if self.data.task == "classification":
            return "sigmoid" if self.data.multilabel else "softmax"
        return "sigmoid" if self.out_channels == 1 else "softmax"

    def output_names(self) -> list[str]:
        """A name per output class: the class or label names (classification); ``background`` then the foreground
        classes (segmentation; ``foreground`` for a binary mask without names)."""
        d = self.data
        if d.task == "classification":
            return [d.class_names[k] if k < len(d.class_names) else str(k) for k in range(d.num_classes)]
        if d.num_classes == 2 and not d.class_names:
            return ["background", "foreground"]
        return ["background", *(self._class_name(k) for k in range(1, d.num_classes))]

    def inference_spec(self) -> dict[str, Any]:
        """What inference needs besides the weights (written to the run's ``inference.json``; see
        docs/run-directory.md): the network and its arguments, the output and its activation, the preprocessing
        with the training split's statistics, and the inference settings."""
        d, model = self.data, self.config.model
        return {
            "format": 1,
            "method": self.name,
            "task": d.task,
            "network": {
                "key": self.predictor,
                "name": model.name if self.predictor else None,
                "arguments": model.model_dump(mode="json", exclude={"init_from", "freeze_backbone"}),
                "spatial_dims": d.spatial_dims,
                "in_channels": d.in_channels,
                "out_channels": self.out_channels if self.predictor else None,
                "image_size": list(d.image_size) if d.image_size else None,
            },
            "output": {
                "activation": self.activation,
                "multilabel": d.multilabel,
                "num_classes": d.num_classes,
                "class_names": self.output_names(),
            },
            "preprocessing": {"reader": "labelwise.data.volumes.read_image", **d.preprocessing},
            "inference": {
                "threshold": self.threshold,
                "calibrated_threshold": self.calibrated,
                "temperature": self.temperature,
                "isotonic": {"x": self.isotonic[0], "y": self.isotonic[1]} if self.isotonic else None,
                "overlap": self.overlap,
                "window": self.window,
                "tta": self.tta,
                "scales": list(self.scales),
                "min_size": self.min_size,
            },
        }

    def parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of all networks (what the default optimizer updates)."""
        return [p for net in self.networks.values() for p in net.parameters() if p.requires_grad]

    def build_optimizer(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The configured optimizer (``optimizer.name``, lr, weight decay, momentum) over ``parameters``."""
        return build_optimizer(self.config, parameters)

    def load_backbone(self, tensors: dict[str, torch.Tensor] | None, freeze: bool, source: str) -> dict[str, list[str]]:
        """``model.init_from``: the backbone weights among a pretrain run's checkpoint ``tensors`` into the network
        ``model`` (by name and shape), frozen with ``freeze`` (a linear probe); ``tensors`` None with ``freeze``: the
        randomly initialised backbone frozen. Returns the frozen state-dict names per network (saved in checkpoints,
        so that :meth:`refreeze` freezes the same ones on resume)."""
        target = self._transfer_target()
        if tensors is None:
            names = set(self._backbone_state())
            state = {k: v for k, v in target.state_dict().items() if k in names}
        else:
            state = encoder_state(tensors)
        loaded = load_encoder(target, state, freeze=freeze, source=source)
        return {"model": loaded} if freeze else {}

    def refreeze(self, saved: dict[str, list[str]] | None) -> dict[str, list[str]]:
        """Resuming a run with ``model.freeze_backbone``: freeze the names frozen at its start (``saved``, from its
        checkpoint; None for a checkpoint from before they were saved: the backbone's parameters of the same names
        and shapes)."""
        target = self._transfer_target()
        if saved is None:
            backbone, own = self._backbone_state(), target.state_dict()
            saved = {"model": [k for k, v in backbone.items() if k in own and own[k].shape == v.shape]}
        freeze_encoder(target, list(saved["model"]))
        return {"model": list(saved["model"])}

    def _backbone_state(self) -> dict[str, torch.Tensor]:
        """The state dict of ``model.name``'s backbone at the data's sizes: which of the network's entries it covers."""
        d = self.data
        return build_backbone(self.config.model, d.spatial_dims, d.in_channels, d.image_size).state_dict()

    def _transfer_target(self) -> nn.Module:
        target = self.networks.get("model")
        if target is None:
            raise ConfigError(
                f"model.init_from / freeze_backbone: method {self.name} has no network 'model' to load into"
            )
        return target

    def augment_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with its images (and segmentation masks, the same geometry) augmented as the config's
        ``augment:`` section says (:class:`labelwise.augment.pipeline.Augment`); unchanged without one."""
        if self.augmenter is None:
            return batch
        if self.data.task != "segmentation":
            return {**batch, "image": self.augmenter(batch["image"], None)[0]}
        names = [name for name in MAPS if name in batch]  # per-voxel maps move with the mask
        image, target, maps = self.augmenter.with_maps(batch["image"], batch["target"], [batch[n] for n in names])
        assert target is not None  # a mask in, a mask out
        return {**batch, "image": image, "target": target, **dict(zip(names, maps))}

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses of one batch: ``"loss"`` is minimised (manual optimisation: only logged and checked to be finite);
        other entries are logged as ``loss/<key>``."""
        raise NotImplementedError

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Manual optimisation: the method's optimizers by name, set up with ``self.fabric`` (saved in checkpoints)."""
        raise NotImplementedError

    def optimizer_step(
        self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, lr: float, module: nn.Module
    ) -> None:
        """Manual optimisation: one step of ``optimizer`` (which updates ``module``) on ``loss`` at ``lr``, gradients
        clipped as configured (:meth:`clip_gradients`)."""
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        self.clip_gradients(module, optimizer)
        optimizer.step()

    def clip_gradients(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Clip the gradients of the parameters ``optimizer`` updates (those of ``module``) to the joint L2 norm
        ``trainer.gradient_clip``, through Fabric, which unscales them first under ``16-mixed`` precision (so call it
        once per step of each optimizer, after the backward passes)."""
        clip = self.config.trainer.gradient_clip
        if clip:
            self.fabric.clip_gradients(module, optimizer, max_norm=clip, error_if_nonfinite=False)

    def after_step(self) -> None:
        """Called after each step's optimizer update (e.g. a teacher's moving average)."""

    def chosen_options(self) -> dict[str, Any]:
        """Values this method chose for options the config left unset (``null``), e.g. those a ``variant`` fills in.
        A fresh run writes them into its ``config.yaml``, so a resumed run goes on with them even after a later
        version changes the variant's values."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Method state beyond network weights and optimizers that a resumed run needs (tensors, numbers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def predict(self, image: torch.Tensor, spacing: tuple[float, ...] | None = None) -> torch.Tensor:
        """Logits ``(B, K)`` (classification) or ``(B, K, *spatial)`` (segmentation) for a batch of images, from the
        :attr:`predictor` network; segmenters see overlapping windows of :attr:`window` (None: the whole image,
        padded to a size the network takes) blended as :func:`labelwise.models.windows.sliding_window_predict` does,
        and with :attr:`tta` the mean of the logits over every combination of flips of the spatial axes. ``spacing``:
        the voxel spacing of the batch's images, for methods whose output depends on it (Frangi's scales).
        Segmentation logits are divided by :attr:`temperature` (1 unless ``temperature: fit`` chose one)."""
        assert self.predictor is not None  # a method without a predictor (pretraining) has its own predict
        model = self.networks[self.predictor]
        if self.data.task == "segmentation":
            views = [self._magnified(model, image, s) for s in self.scales]
            logits = views[0] if len(views) == 1 else most_foreground(views)
            return logits if self.temperature == 1.0 else logits / self.temperature
        out = model(image)
        return out[0] if isinstance(out, (tuple, list)) else out

    def _magnified(self, model: nn.Module, image: torch.Tensor, scale: float) -> torch.Tensor:
        """Logits of ``image`` magnified by ``scale`` (resampled linearly; 1: as it is), with :attr:`tta` the mean
        over flips, resampled back to the image's grid."""
        if scale != 1.0:
            size = image.shape[2:]
            mode = "bilinear" if image.ndim == 4 else "trilinear"
            image = F.interpolate(image, scale_factor=scale, mode=mode, align_corners=False)
        if not self.tta:
            logits = self._windows(model, image)
        else:
            flips = self._flips(image.ndim)
            total = sum(self._flipped_windows(model, image, f) for f in flips)
            logits = cast(torch.Tensor, total) / len(flips)  # tensors summed: a tensor (typed "| float")
        if scale == 1.0:
            return logits
        # back to the image's grid; 2D with an anti-aliasing filter (torch has none for 3D)
        return F.interpolate(logits, size=size, mode=mode, align_corners=False, antialias=image.ndim == 4)

    def flip_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Segmentation logits ``(F, B, K, *spatial)`` of a batch under each of the ``F`` combinations of flips of
        its spatial axes (the first unflipped; each flipped back), divided by :attr:`temperature`: the samples whose
        mean :meth:`predict` takes with :attr:`tta` (``labelwise predict --uncertainty`` measures their spread)."""
        assert self.predictor is not None and self.data.task == "segmentation"
        model = self.networks[self.predictor]
        samples = torch.stack([self._flipped_windows(model, image, f) for f in self._flips(image.ndim)])
        return samples if self.temperature == 1.0 else samples / self.temperature

    @staticmethod
    def _flips(ndim: int) -> list[list[int]]:
        """Every combination of the spatial axes of a batch with ``ndim`` axes (the first: none)."""
        dims = list(range(2, ndim))
        return [[d for k, d in enumerate(dims) if mask >> k & 1] for mask in range(2 ** len(dims))]

    def _flipped_windows(self, model: nn.Module, image: torch.Tensor, axes: list[int]) -> torch.Tensor:
        """The windows' logits of ``image`` flipped along ``axes``, flipped back."""
        if not axes:
            return self._windows(model, image)
        return self._windows(model, image.flip(axes)).flip(axes)

    def _windows(self, model: nn.Module, image: torch.Tensor) -> torch.Tensor:
        if self.window is None:  # whole images: one window each, the batch in one forward pass
            return sliding_window_predict(model, image, tuple(image.shape[2:]), sw_batch_size=len(image))
        return sliding_window_predict(model, image, self.window, overlap=self.overlap, sw_batch_size=self.window_batch)

    def evaluate(
        self, outputs: torch.Tensor, target: torch.Tensor, rois: Sequence[torch.Tensor | None] | None = None
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Metrics of a whole split and its per-sample predictions, from stacked logits and targets; segmentation cases
        with a region of interest (``rois``, one bool mask or None per case) are predicted background and scored
        inside it only."""
        k = self.data.num_classes
        metrics: Mapping[str, float | torch.Tensor]
        if self.data.task == "classification" and self.data.multilabel:
            probability = torch.sigmoid(outputs.float())
            prediction = (probability > 0.5).long()
            metrics = {
                "accuracy": (prediction == target).float().mean(),  # mean over labels and samples
                "exact_match": (prediction == target).all(dim=1).float().mean(),
                "loss": nn.functional.binary_cross_entropy_with_logits(outputs.float(), target.float()),
                "auc": macro_auc(probability, target.bool()),
            }
            predictions = {"prediction": prediction, "probability": probability, "target": target}
        elif self.data.task == "classification":
            probability = outputs.float().softmax(dim=1)
            prediction = probability.argmax(dim=1)
            onehot = target[:, None] == torch.arange(k)[None]
            scored = slice(1, 2) if k == 2 else slice(None)  # binary: the positive class only; else one-vs-rest
            metrics = {
                "accuracy": cls_metrics.accuracy(prediction, target),
                "balanced_accuracy": cls_metrics.balanced_accuracy(prediction, target, k),
                "macro_f1": cls_metrics.macro_f1(prediction, target, k),
                "loss": nn.functional.cross_entropy(outputs.float(), target),
                "auc": macro_auc(probability[:, scored], onehot[:, scored]),
            }
            predictions = {"prediction": prediction, "probability": probability, "target": target}
        elif isinstance(outputs, (list, tuple)):  # whole cases of their own sizes
            pairs = [self.segment(o[None]) for o in outputs]
            probability, prediction = [p[0] for p, _ in pairs], [m[0] for _, m in pairs]
            regions = list(rois) if rois is not None else [None] * len(prediction)
            prediction = [inside(m, r) for m, r in zip(prediction, regions)]  # background outside the roi
            target = [inside(t, r) for t, r in zip(target, regions)]
            metrics = self._dice_metrics(self._case_dice(prediction, target))
            predictions = {"prediction": prediction, "probability": probability, "target": target}
        else:
            prediction = self.segment(outputs)[1]
            metrics = self._dice_metrics(self._case_dice(prediction, target))
            predictions = {"prediction": prediction, "target": target}
        return {key: float(value) for key, value in metrics.items()}, predictions

    def _case_dice(self, prediction: Any, target: Any) -> torch.Tensor:
        """Per-case, per-class Dice ``(N, K - 1)`` float64 of label maps (one per case) by the package's one per-case
        scorer, :func:`labelwise.metrics.surface.score_case`, its overlap scores only (a validation stays fast)."""
        classes = scored_classes(self.data.num_classes)
        scores = [score_case(m, t, classes=classes, distances=False) for m, t in zip(prediction, target)]
        return torch.tensor(
            [[c["dice"] for c in s["per_class"].values()] or [s["foreground"]["dice"]] for s in scores],
            dtype=torch.float64,
        ).reshape(len(scores), -1)

    def segment(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, K, *spatial)`` logits -> foreground probability ``(B, *spatial)`` and label map ``(B, *spatial)``
        (:func:`labelwise.models.outputs.segment` at :meth:`segment_threshold`), components smaller than
        :attr:`min_size` removed; with an :attr:`isotonic` map, the probability goes through it (the labels are the
        network's own: the map changes no mask)."""
        probability, labels, _ = segment(logits, self.segment_threshold(logits.shape[1]))
        return self.recalibrated(probability), remove_small_components(labels, self.min_size)

    def recalibrated(self, probability: torch.Tensor) -> torch.Tensor:
        """The foreground probability through the :attr:`isotonic` map (fitted on the validation cases with
        ``isotonic: true``, or on cross-fitted cases by ``labelwise calibrate``), unchanged without one."""
        if self.isotonic is None:
            return probability
        return seg_metrics.interpolate(probability, *self.isotonic)

    def segment_threshold(self, channels: int) -> Threshold:
        """The threshold of a segmenter with ``channels`` outputs: the calibrated one (:meth:`calibrate`) for binary
        masks (one sigmoid channel, or two softmax channels: on 1 - p(background)) once it is set; else
        :attr:`threshold` for one channel (0.5 while ``calibrate`` has not run) and the argmax (None) for several."""
        if self.calibrated is not None and channels <= 2:
            return self.calibrated
        if channels != 1:
            return None
        return 0.5 if self.threshold == "calibrate" else self.threshold

    @property
    def calibrates(self) -> bool:
        """Whether :meth:`calibrate` chooses the threshold on the validation cases (``threshold: calibrate``)."""
        return self.data.task == "segmentation" and self.threshold == "calibrate"

    def calibrate(
        self,
        outputs: list[torch.Tensor] | torch.Tensor,
        target: list[torch.Tensor] | torch.Tensor,
        rois: Sequence[torch.Tensor | None] | None = None,
    ) -> tuple[float, float]:
        """``threshold: calibrate``: set :attr:`calibrated` to the threshold on the foreground probability with the
        highest mean Dice over the validation cases (their logits ``outputs`` and masks ``target``, each inside its
        region of interest), 0.01 ... 0.99 by 0.01; among those within :attr:`calibration_tolerance` of the highest,
        the one nearest 0.5 (:func:`labelwise.metrics.segmentation.best_threshold`). Returns the threshold and its
        mean Dice. Validation masks of the quality wanted beside training masks with a systematic error (too thin,
        too wide) move the threshold to where the wanted borders are."""
        probability = [segment(o[None].float(), None)[0][0] for o in outputs]  # each case (K, *spatial)
        value, score = seg_metrics.best_threshold(
            probability,
            [t > 0 for t in target],
            labelled_regions(list(target), rois),
            tolerance=self.calibration_tolerance,
        )
        self.calibrated = value
        return value, score

    def fit_temperature(
        self,
        outputs: list[torch.Tensor] | torch.Tensor,
        target: list[torch.Tensor] | torch.Tensor,
        rois: Sequence[torch.Tensor | None] | None = None,
    ) -> dict[str, float]:
        """``temperature: fit``: set :attr:`temperature` by :func:`labelwise.metrics.segmentation.fit_temperature` on
        the validation cases (their logits at temperature 1 ``outputs`` and masks ``target``, inside each roi, voxels
        without a label left out). Returns it with the validation voxels' negative log-likelihood and expected
        calibration error (of the foreground probability, 15 bins) before and after."""
        from labelwise.metrics.fairness import expected_calibration_error

        value = seg_metrics.fit_temperature(list(outputs), list(target), rois)  # voxels without a label left out
        z, y = seg_metrics.labelled_voxels(list(outputs), list(target), rois)
        foreground = (y > 0).numpy()
        found = {"temperature": value}
        for when, t in (("before", 1.0), ("after", value)):
            found[f"val_nll_{when}"] = seg_metrics.calibration_nll(z, y, t)
            found[f"val_ece_{when}"] = expected_calibration_error(
                seg_metrics.foreground_probability(z, t).numpy(), foreground
            )
        self.temperature = value
        return found

    def fit_isotonic(
        self,
        outputs: list[torch.Tensor] | torch.Tensor,
        target: list[torch.Tensor] | torch.Tensor,
        rois: Sequence[torch.Tensor | None] | None = None,
    ) -> dict[str, Any]:
        """``isotonic: true``: set :attr:`isotonic` by :func:`labelwise.metrics.segmentation.fit_isotonic` on the
        foreground probability of the validation cases (their logits ``outputs``, already divided by the fitted
        temperature, and masks ``target``, inside each roi, voxels without a label left out). Returns the number of
        knots and the validation voxels' expected calibration error (15 bins) before and after: the after is
        in-sample, so near 0 by construction; the test cases tell how well the map holds."""
        from labelwise.metrics.fairness import expected_calibration_error

        z, y = seg_metrics.labelled_voxels(list(outputs), list(target), rois)
        probability, foreground = seg_metrics.foreground_probability(z), (y > 0)
        self.isotonic = seg_metrics.fit_isotonic(probability, foreground)
        return {
            "isotonic_knots": len(self.isotonic[0]),
            "val_ece_before_isotonic": expected_calibration_error(probability.numpy(), foreground.numpy()),
            "val_ece_after_isotonic": expected_calibration_error(
                self.recalibrated(probability).numpy(), foreground.numpy()
            ),
        }

    def _dice_metrics(self, per_class: torch.Tensor) -> dict[str, torch.Tensor]:
        metrics = {"dice": torch.nanmean(per_class)}
        for c in range(per_class.shape[1]):
            metrics[f"dice/{self._class_name(c + 1)}"] = torch.nanmean(per_class[:, c])
        return metrics

    def _class_name(self, segment_class: int) -> str:
        names = self.data.class_names
        return names[segment_class - 1] if segment_class - 1 < len(names) else str(segment_class)


def labelled_regions(
    target: Sequence[torch.Tensor], rois: Sequence[torch.Tensor | None] | None
) -> list[torch.Tensor | None]:
    """Per case the voxels to score or calibrate on: its roi (None: everywhere) without the voxels of label
    :data:`~labelwise.metrics.surface.IGNORE` (``data.ignore``)."""
    regions = list(rois) if rois is not None else [None] * len(target)
    return [
        r if bool((t != IGNORE).all()) else (t != IGNORE) if r is None else r & (t != IGNORE)
        for t, r in zip(target, regions)
    ]


def build_optimizer(config: RunConfig, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    """``optimizer.name`` (adam, adamw, sgd) over ``parameters`` with the config's lr, weight decay and momentum."""
    opt = config.optimizer
    if opt.name == "sgd":
        return torch.optim.SGD(parameters, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    cls = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    return cls(parameters, lr=opt.lr, weight_decay=opt.weight_decay)


def frozen_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose parameters take no gradient (a teacher or momentum encoder, updated by
    :func:`ema_update`)."""
    import copy

    frozen = copy.deepcopy(net)
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


def warmed_decay(decay: float, step: int) -> float:
    """A teacher's moving-average decay at ``step``: ``min(decay, (step + 1) / (step + 10))``, so that in the first
    steps the teacher follows the student closely instead of averaging in its random start."""
    return min(decay, (step + 1) / (step + 10))


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, decay: float) -> None:
    """target = decay * target + (1 - decay) * online, parameter by parameter; buffers (batch-norm statistics)
    copied."""
    for p, q in zip(online.parameters(), target.parameters(), strict=True):
        q.lerp_(p.detach(), 1 - decay)
    for b, c in zip(online.buffers(), target.buffers(), strict=True):
        c.copy_(b)


def macro_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean AUC over the columns of ``(N, K)`` scores against boolean labels (columns with one class left out;
    nan when none has two)."""
    import numpy as np

    from labelwise.metrics.fairness import roc_auc

    values = [roc_auc(scores[:, j].numpy(), labels[:, j].numpy()) for j in range(scores.shape[1])]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")
