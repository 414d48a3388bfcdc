"""Configs: YAML in, validated pydantic objects out.

Every config has ``seed``, ``method``, ``data``, ``model`` and ``trainer``. Unknown keys, wrong types,
missing files and out-of-range numbers are refused before any work with a :class:`ConfigError` whose
message names the key (and suggests the closest valid key for a typo).
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labelwise.augment.pipeline import AugmentOptions
from labelwise.errors import ConfigError
from labelwise.io import atomic_write
from labelwise.methods import METHODS
from labelwise.models import MODELS


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SynthData(Section):
    """A built-in dataset generated in memory (deterministic for its seed)."""

    kind: Literal["shapes"] = "shapes"
    n: int = Field(600, gt=0)
    size: int = Field(32, ge=8)
    dim: Literal[2, 3] = 2
    num_classes: int = Field(3, ge=2, le=4)
    noise: float = Field(0.3, ge=0)
    seed: int = 0


class DataConfig(Section):
    """Where the samples come from and how they are batched."""

    path: Path | None = None
    synth: SynthData | None = None
    manifest: Path | None = Field(
        None,
        description="CSV of image files: segmentation id,image,label,split[,truth]; "
        "classification id,image,split[,use_label,patient] + label and attribute columns",
    )
    task: Literal["classification", "segmentation"] = "classification"
    labels: list[str] = Field(
        ["label"],
        min_length=1,
        description="classification table: label column(s), "
        "several: multi-label (0/1 each); .npz: the key of the labels, (N,) or (N, K) 0/1 tags",
    )
    attributes: list[str] = Field([], description="classification table: columns of groups for fairness figures")
    modalities: list[str] = Field(["rnflt"], min_length=1, description="Harvard-GDP .npz: channels rnflt and/or tds")
    image_size: list[int] | None = Field(None, description="classification table: resize every image to this size")
    batch_size: int = Field(32, gt=0, description="global batch size, split over devices")
    labelled_per_batch: int | None = Field(
        None,
        gt=0,
        description="semi-supervised methods: labelled samples per "
        "batch, the rest unlabelled (default: half the batch)",
    )
    eval_batch_size: int = Field(64, gt=0)
    patch_size: list[int] | None = Field(None, description="manifest data: train on random patches of this size")
    patches_per_volume: int = Field(100, gt=0, description="random patches per training case and epoch")
    foreground_ratio: float = Field(0.5, ge=0, le=1, description="share of patches centred on a labelled voxel")
    intensity: Literal["max", "zscore", "channel", "percentile", "none"] = Field(
        "max",
        description="max/zscore: per image; channel: per channel with the training split's mean and std; "
        "percentile: clipped to the training foreground's 0.5-99.5 percentiles, then its mean and std (CT)",
    )
    cache: Path | None = Field(
        None,
        description="manifest data (segmentation): folder of the preprocessed case "
        "cache, read through memory maps (relative: to the manifest's folder; default: "
        ".labelwise-cache next to the manifest)",
    )
    reorient: bool = Field(
        True,
        description="manifest data (segmentation): NIfTI volumes and masks turned to the "
        "closest canonical orientation (RAS+: axes permuted and flipped, no interpolation); "
        "predict writes its outputs back in the input's own orientation",
    )
    spacing: list[float] | Literal["median"] | None = Field(
        "median",
        description="manifest data (segmentation): resample every case to this voxel spacing (images "
        "trilinear/bilinear, masks nearest); median: the per-axis median of the training cases; null: never. A case "
        "already at the spacing (within 1e-3) is left as it is; predict resamples its outputs back",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if sum(x is not None for x in (self.path, self.synth, self.manifest)) != 1:
            raise ValueError(
                "give exactly one of data.path (an .npz file), data.synth (a built-in dataset) or "
                "data.manifest (a CSV of image files)"
            )
        if self.labelled_per_batch is not None and self.labelled_per_batch > self.batch_size:
            raise ValueError(
                f"data.labelled_per_batch: {self.labelled_per_batch} is larger than data.batch_size {self.batch_size}"
            )
        if self.intensity == "percentile" and self.task != "segmentation":
            raise ValueError("data.intensity: percentile uses the training masks' foreground; it is for segmentation")
        if self.image_size is not None and (len(self.image_size) not in (2, 3) or min(self.image_size) < 1):
            raise ValueError(f"data.image_size: expected 2 or 3 positive sizes, got {self.image_size}")
        if self.patch_size is not None and (len(self.patch_size) not in (2, 3) or min(self.patch_size) < 1):
            raise ValueError(f"data.patch_size: expected 2 or 3 positive sizes, got {self.patch_size}")
        if isinstance(self.spacing, list) and (len(self.spacing) not in (2, 3) or min(self.spacing) <= 0):
            raise ValueError(f"data.spacing: expected 2 or 3 positive values, 'median' or null, got {self.spacing}")
        return self


class ModelConfig(Section):
    """A network from the model registry; sizes left out are taken from the data."""

    name: str | None = Field(
        None,
        description="a network of the model registry (default: resnet18 for classification, unet for segmentation)",
    )
    spatial_dims: Literal[2, 3] | None = None
    in_channels: int | None = Field(None, gt=0)
    out_channels: int | None = Field(None, gt=0)
    channels: list[int] | None = None
    layers: list[int] | None = None
    norm: Literal["batch", "instance", "group"] = "batch"
    dropout: float = Field(0.0, ge=0, lt=1)
    deep_supervision: bool = Field(True, description="unet_mss: extra outputs at 1/2 and 1/4 resolution")
    heads: list[int] | None = Field(None, description="vit/unetr: [attention heads]; swin/swin_unetr: heads per stage")
    patch_size: int | None = Field(
        None,
        gt=0,
        description="vit: side of a token's patch (default 16); swin/swin_unetr: "
        "of the patch embedding (default 2); unetr: always 16",
    )
    image_size: list[int] | None = Field(
        None,
        description="vit/unetr: the input size their position embeddings are "
        "built for (default: the data's image or data.patch_size)",
    )
    init_from: Path | None = Field(None, description="a pretrain run directory: start from its backbone's weights")
    freeze_backbone: bool = Field(
        False,
        description="train only the head: a linear probe of the init_from backbone "
        "(without init_from: of the random one)",
    )

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str | None) -> str | None:
        return None if name is None else _check_choice(name, MODELS, "model")

    @field_validator("channels", "layers", "heads", "image_size")
    @classmethod
    def _positive(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and (not values or min(values) <= 0):
            raise ValueError("must be a non-empty list of positive integers")
        return values


class OptimizerConfig(Section):
    """Optimizer and learning-rate schedule."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)


class TrainerConfig(Section):
    """How the engine runs: steps, checkpoints, devices, precision."""

    max_steps: int = Field(gt=0)
    checkpoint_every: int = Field(gt=0)
    log_every: int = Field(10, gt=0)
    val_every: int = Field(0, ge=0, description="0: validate only at the end")
    select_best: str | None = Field(
        None,
        description="validation metric (e.g. auc, dice; loss: lowest) whose best "
        "value picks the weights scored on the test split; checked at every val_every",
    )
    devices: int = Field(1, gt=0)
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    gradient_clip: float | None = Field(1.0, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    num_workers: int = Field(0, ge=0)
    deterministic: bool = True


class MethodConfig(Section):
    """The training recipe; ``method: supervised`` is short for ``method: {name: supervised}``.

    Each method validates its own options (see ``labelwise.methods``)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str

    @field_validator("name")
    @classmethod
    def _known_method(cls, name: str) -> str:
        return _check_choice(name, METHODS, "method")

    def options(self) -> dict[str, Any]:
        """The method's own options (everything but ``name``)."""
        return dict(self.model_extra or {})


DEFAULT_MODELS = {"classification": "resnet18", "segmentation": "unet"}


class Config(Section):
    """A whole run."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int
    method: MethodConfig
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    trainer: TrainerConfig
    augment: AugmentOptions | None = Field(
        None,
        description="augmentation of the labelled training images; omit: "
        "none, {}: the defaults (labelwise.augment.pipeline)",
    )

    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _method_options(self) -> Config:
        if self.model.name is None:  # the saved config names the network that ran
            self.model.name = DEFAULT_MODELS[self.data.task]

        if self.augment is not None and not METHODS[self.method.name].augments:
            raise ConfigError(
                f"augment: method {self.method.name} does not take the augment section (it trains "
                "without labelled images, or draws its own views)"
            )
        options_model = METHODS[self.method.name].Options
        try:
            options_model(**self.method.options())
        except ValidationError as err:
            raise ConfigError(_format_errors(err, prefix="method", model=options_model)) from None
        return self

    def method_options(self) -> BaseModel:
        """The validated options object of the configured method."""
        return METHODS[self.method.name].Options(**self.method.options())

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to ``config.yaml`` (paths as strings)."""
        return self.model_dump(mode="json")


# --- loading -------------------------------------------------------------------------------------


def load_config(
    source: str | Path | dict[str, Any], overrides: list[str] | None = None, check_files: bool = True
) -> Config:
    """Read a YAML file (or a dict), apply ``key.sub=value`` overrides, validate, check files.

    Relative data paths are resolved against the config file's folder first, then the working directory.
    ``check_files=False`` (a run loaded for inference: its data may be gone) keeps the data paths as written.
    Raises :class:`ConfigError` with one line per problem, each naming the key."""
    base_dir = None
    if isinstance(source, dict):
        raw: Any = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
        base_dir = path.parent
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys (seed, method, data, model, trainer)")
    raw = _apply_overrides(raw, overrides or [])
    try:
        config = Config(**raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, model=Config)) from None
    if check_files:
        _check_files(config, base_dir)
    return config


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML. Data files are written relative to the folder of ``path`` (a run's
    ``config.yaml``: its run directory), so a project folder copied elsewhere with its runs and data still resolves
    them; a file on another drive stays absolute."""
    raw = config.to_dict()
    for key in ("path", "manifest"):
        value = getattr(config.data, key)
        if value is not None and Path(value).is_absolute():
            try:
                raw["data"][key] = os.path.relpath(Path(value), Path(path).parent.resolve())
            except ValueError:  # another drive (Windows)
                pass
    atomic_write(path, yaml.safe_dump(raw, sort_keys=False))  # a resumed run rewrites it while other processes read it


def _apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``trainer.max_steps=10`` sets raw['trainer']['max_steps'] = 10 (value parsed as YAML)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. trainer.max_steps=100")
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str) and part == "method":
                child = {"name": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
            node[part] = child
            node = child
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    return raw


def _check_files(config: Config, base_dir: Path | None) -> None:
    for key in ("path", "manifest"):
        path = getattr(config.data, key)
        if path is None:
            continue
        candidates = [path] if path.is_absolute() else [p for p in (base_dir and base_dir / path, path) if p]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise ConfigError(f"data.{key}: file not found: {path}")
        setattr(config.data, key, found.resolve())


# --- error messages ------------------------------------------------------------------------------


def _check_choice(name: str, registry: dict[str, Any], what: str) -> str:
    if name not in registry:
        hint = _did_you_mean(name, registry)
        raise ValueError(f"unknown {what} {name!r}{hint}; choose from {', '.join(sorted(registry))}")
    return name


def _did_you_mean(word: str | int, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at ``loc[:-1]``, following nested sections."""
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        args = getattr(annotation, "__args__", None) or (annotation,)
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return model


def _format_errors(err: ValidationError, prefix: str = "", model: type[BaseModel] | None = None) -> str:
    """One line per problem: ``key.path: what is wrong`` (+ "did you mean" for unknown keys)."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc) or "config"
        kind = e["type"]
        if kind == "extra_forbidden":
            owner = _model_at(model, loc)
            hint = _did_you_mean(loc[-1], owner.model_fields) if owner else ""
            lines.append(f"{key}: unknown key{hint}")
        elif kind == "missing":
            lines.append(f"{key}: required key is missing")
        elif kind in ("value_error", "assertion_error"):
            message = str(e.get("ctx", {}).get("error", e["msg"]))
            lines.append(f"{key}: {message}")
        else:
            got = e.get("input")
            shown = f", got {got!r}" if not isinstance(got, dict) else ""
            lines.append(f"{key}: {e['msg'].lower()}{shown}")
    return "\n".join(lines)
