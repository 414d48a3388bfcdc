"""The ``model`` section of a run's config: a network of :data:`labelwise.models.MODELS` and its sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from labelwise.settings import Section

__all__ = ["ModelConfig"]


class ModelConfig(Section):
    """A network from the model registry; sizes left out are taken from the data."""

    name: str | None = Field(
        None,
        description="a network of the model registry (default: resnet18 for classification, unet for segmentation); "
        "labelwise.config checks the name against the registry",
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

    @field_validator("channels", "layers", "heads", "image_size")
    @classmethod
    def _positive(cls, values: list[int] | None) -> list[int] | None:
        if values is not None and (not values or min(values) <= 0):
            raise ValueError("must be a non-empty list of positive integers")
        return values
