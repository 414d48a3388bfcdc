"""The ``data`` section of a run's config: where the samples come from and how they are batched."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from labelwise.settings import Section

__all__ = ["DataConfig", "SynthData"]


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
    class_names: list[str] | None = Field(
        None,
        description="segmentation: the names of the mask's labels 1, 2, ... (background is 0), as nnU-Net's "
        "dataset.json labels; predict, explain --target and the report use them (default: an .npz's class_names, "
        "else foreground or the label numbers)",
    )
    modalities: list[str] = Field(["rnflt"], min_length=1, description="Harvard-GDP .npz: channels rnflt and/or tds")
    image_size: list[int] | None = Field(
        None, description="classification (table or .npz): resize every image to this size (bilinear)"
    )
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
    sparse_masks: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="segmentation (manifest): a training mask with fewer foreground voxels than this share of the "
        "training masks' median is treated as unlabelled (an annotator who skipped the image's structures): "
        "semi-supervised methods learn from its image alone, the others leave the case out; 0: every mask counts",
    )
    ignore: list[int] = Field(
        default_factory=list,
        description="segmentation (manifest): mask values that carry no label (e.g. [255]: not annotated): those "
        "voxels count in no loss and no score, and no training patch is centred on one",
    )
    raters: Literal["consensus", "majority", "mean", "sample", "first"] = Field(
        "consensus",
        description="segmentation (manifest) with label_2, label_3, ... columns (several raters' masks per case): "
        "the target is their STAPLE consensus (each rater's sensitivity and specificity fitted by EM on the "
        "training cases, written to the run's raters.json), their majority vote, their mean (a soft target: the "
        "share of raters who drew foreground; binary masks), one rater per case drawn anew at every step (sample; "
        "scored against the majority), or the first rater's (label)",
    )
    soft_labels: bool = Field(
        False,
        description="segmentation (manifest): the label files are foreground probabilities in [0, 1] (float NIfTI "
        "or .npy; pictures: 8/16-bit grey scaled to [0, 1], 0/1 kept), or one probability map per class, background "
        "first (.npy (K, *spatial), NIfTI (X, Y, Z, K); summing to 1), trained as soft targets; scores and patch "
        "sampling use the mask where the probability exceeds 0.5 (per class: the likeliest class)",
    )
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

    @field_validator("class_names")
    @classmethod
    def _class_names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        names = [n.strip() for n in value]
        if not names or not all(names) or len(set(names)) < len(names) or "background" in names:
            raise ValueError(
                "expected distinct, non-empty names of labels 1, 2, ... (background is label 0 and is not listed), "
                f"got {value}"
            )
        return names

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
        if self.class_names is not None:
            if self.task != "segmentation":
                raise ValueError(
                    "data.class_names: classification takes its class names from the table's label column or the "
                    ".npz's class_names"
                )
        if self.sparse_masks and (self.task != "segmentation" or self.manifest is None):
            raise ValueError("data.sparse_masks: judges the masks of a segmentation manifest's training cases")
        if self.ignore and (self.task != "segmentation" or self.manifest is None):
            raise ValueError("data.ignore: values of the masks of a segmentation manifest")
        if self.soft_labels and (self.task != "segmentation" or self.manifest is None):
            raise ValueError("data.soft_labels: probability masks of a segmentation manifest")
        if self.soft_labels and self.ignore:
            raise ValueError(
                "data.soft_labels with data.ignore: a probability mask has no ignore values; give the voxels without "
                "a label as a mask in the manifest's ignore column"
            )
        if any(v < 1 for v in self.ignore) or len(set(self.ignore)) != len(self.ignore):
            raise ValueError(
                f"data.ignore: expected distinct mask values >= 1 (0 is the background), got {self.ignore}"
            )
        if self.image_size is not None and (len(self.image_size) not in (2, 3) or min(self.image_size) < 1):
            raise ValueError(f"data.image_size: expected 2 or 3 positive sizes, got {self.image_size}")
        if self.patch_size is not None and (len(self.patch_size) not in (2, 3) or min(self.patch_size) < 1):
            raise ValueError(f"data.patch_size: expected 2 or 3 positive sizes, got {self.patch_size}")
        if isinstance(self.spacing, list) and (len(self.spacing) not in (2, 3) or min(self.spacing) <= 0):
            raise ValueError(f"data.spacing: expected 2 or 3 positive values, 'median' or null, got {self.spacing}")
        return self
