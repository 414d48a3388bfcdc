"""Config sections that every layer may use: :class:`Section` (the base of every section), the optimizer and
trainer settings, and the "did you mean" helpers of config errors. A section lives beside its user
(:class:`labelwise.data.config.DataConfig`, :class:`labelwise.models.config.ModelConfig`, each method's
``Options``, :class:`labelwise.augment.pipeline.AugmentOptions`); :mod:`labelwise.config` composes them into a run's
:class:`~labelwise.config.Config`, loads YAML and checks the registries' names."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["OptimizerConfig", "Section", "TrainerConfig", "check_choice", "did_you_mean"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


def check_choice(name: str, registry: dict[str, Any], what: str) -> str:
    if name not in registry:
        hint = did_you_mean(name, registry)
        raise ValueError(f"unknown {what} {name!r}{hint}; choose from {', '.join(sorted(registry))}")
    return name


def did_you_mean(word: str | int, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
