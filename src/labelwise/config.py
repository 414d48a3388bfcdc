"""Configs: YAML in, validated pydantic objects out.

Every config has ``seed``, ``method``, ``data``, ``model`` and ``trainer``. Unknown keys, wrong types,
missing files and out-of-range numbers are refused before any work with a :class:`ConfigError` whose
message names the key (and suggests the closest valid key for a typo).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from labelwise.augment.pipeline import AugmentOptions
from labelwise.data.config import DataConfig, SynthData
from labelwise.errors import ConfigError
from labelwise.io import atomic_write
from labelwise.methods import METHODS
from labelwise.models import MODELS
from labelwise.models.config import ModelConfig
from labelwise.settings import OptimizerConfig, Section, TrainerConfig, check_choice, did_you_mean

__all__ = [
    "Config",
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimizerConfig",
    "SynthData",
    "TrainerConfig",
    "load_config",
    "save_config",
]


class MethodConfig(Section):
    """The training recipe; ``method: supervised`` is short for ``method: {name: supervised}``.

    Each method validates its own options (see ``labelwise.methods``)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str

    @field_validator("name")
    @classmethod
    def _known_method(cls, name: str) -> str:
        return check_choice(name, METHODS, "method")

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
        description="augmentation of the labelled training images; omit: none, {}: the defaults of the run's task "
        "(preset: segmentation or classification; labelwise.augment.pipeline)",
    )

    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _method_options(self) -> Config:
        if self.model.name is None:  # the saved config names the network that ran
            self.model.name = DEFAULT_MODELS[self.data.task]
        try:
            check_choice(self.model.name, MODELS, "model")
        except ValueError as err:
            raise ConfigError(f"model.name: {err}") from None

        if self.augment is not None and not METHODS[self.method.name].augments:
            raise ConfigError(
                f"augment: method {self.method.name} does not take the augment section (it trains "
                "without labelled images, or draws its own views)"
            )
        if self.augment is not None and self.augment.preset == "auto":  # the saved config names the preset used
            self.augment = self.augment.for_task(self.data.task)
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
            hint = did_you_mean(loc[-1], owner.model_fields) if owner else ""
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
