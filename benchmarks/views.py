"""Contrastive-view speed: labelwise's batched contrastive_views vs the same recipe per sample with MONAI transforms.

Workloads (float32, on the CPU): a 2D batch 64 x 1 x 64 x 64 and a 3D batch 8 x 1 x 64^3;
two views of every sample, so 2 x B augmented images per round. Contenders:
  labelwise              contrastive_views(x): per view random_resized_crop (scale 0.2-1, ratio 3/4-4/3, separable
                         bilinear or trilinear interpolation back to the input size) -> random_flip (every spatial axis, p 0.5) ->
                         intensity_jitter (contrast and brightness 0.4) -> p 0.5 random_gamma (0.7-1.5) -> p 0.5
                         gaussian_blur (sigma 0.1-2.0), each a vectorised call for the whole batch.
  labelwise (generator)  the same with a seeded CPU torch.Generator (2D only).
  MONAI                  Compose([RandScaleCrop(0.2^(1/d), 1.0, random_size=True), Resize(input size, bilinear or
                         trilinear), RandFlip(prob=0.5, spatial_axis=a) for each axis a,
                         RandScaleIntensityFixedMean(prob=1, factors=0.4), RandStdShiftIntensity(0.4, prob=1),
                         RandAdjustContrast(prob=0.5, gamma=(0.7, 1.5)), RandGaussianSmooth(sigma 0.1-2.0 per axis,
                         prob=0.5)]) called on each (C, *spatial) sample in a Python loop, twice
                         (two views), then torch.stack; MONAI's default meta tracking (MetaTensor) is on.
  MONAI no meta          the same inside monai.data.set_track_meta(False) (plain tensors, MONAI's fastest path).
Where the MONAI recipe differs (same cost class, not the same distribution): the crop draws each side independently
and uniformly in [ceil(0.2^(1/d) * n), n] voxels (area/volume fraction 0.2-1, no aspect-ratio bound, integer box,
then Resize by F.interpolate), not labelwise's uniform area at a log-uniform aspect with a sub-voxel box; brightness is
shifted by 0.4 x the std after the contrast change (labelwise: before); the blur draws one sigma per axis
(anisotropic; labelwise: one isotropic sigma), uses MONAI's default erf-integrated kernel (labelwise: a sampled,
normalised one; MONAI's approx="sampled" is not normalised, up to 4x gain per axis at sigma 0.1), truncates at 4 sigma
of the drawn value (labelwise: 3 x the largest, 2.0) and pads with zeros (labelwise: replicated borders). Each round
runs every contender once, in turn (A B C A B C ...), after one warm-up round; the figures are medians of
``--repeats`` rounds. Run it on idle cores: with more torch threads than free cores, OpenMP stalls make the batched
(multi-threaded) calls erratic, up to tens of times slower in some rounds (--threads 1 avoids it).

    python benchmarks/views.py [--repeats 7] [--batch2d 64] [--size2d 64] [--batch3d 8] [--size3d 64] [--threads N]
"""

from __future__ import annotations

import argparse

import torch
from timing import interleaved, print_peer_table


def monai_views(x: torch.Tensor):
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandFlip,
        RandGaussianSmooth,
        RandScaleCrop,
        RandScaleIntensityFixedMean,
        RandStdShiftIntensity,
        Resize,
    )

    dims = x.ndim - 2
    blur = dict(zip(("sigma_x", "sigma_y", "sigma_z"), [(0.1, 2.0)] * 3))
    recipe = Compose([
        RandScaleCrop(0.2 ** (1 / dims), 1.0, random_size=True),
        Resize(tuple(x.shape[2:]), mode="bilinear" if dims == 2 else "trilinear", align_corners=False),
        *(RandFlip(prob=0.5, spatial_axis=a) for a in range(dims)),
        RandScaleIntensityFixedMean(prob=1.0, factors=0.4),
        RandStdShiftIntensity(0.4, prob=1.0),
        RandAdjustContrast(prob=0.5, gamma=(0.7, 1.5)),
        RandGaussianSmooth(**blur, prob=0.5),  # approx="erf"; "sampled" is not normalised
    ])
    recipe.set_random_state(0)
    return lambda: tuple(torch.stack([recipe(sample) for sample in x]) for _ in range(2))


def contenders(x: torch.Tensor) -> dict:
    from monai.data import set_track_meta

    from labelwise.augment.views import contrastive_views

    monai = monai_views(x)

    def monai_no_meta():
        set_track_meta(False)
        try:
            return monai()
        finally:
            set_track_meta(True)

    fns = {"labelwise": lambda: contrastive_views(x)}
    if x.ndim == 4:
        g = torch.Generator().manual_seed(0)
        fns["labelwise (generator)"] = lambda: contrastive_views(x, generator=g)
    return {**fns, "MONAI": monai, "MONAI no meta": monai_no_meta}


def bench(x: torch.Tensor, repeats: int) -> None:
    times = interleaved(contenders(x), repeats)
    images = 2 * x.shape[0]
    print(f"batch {'x'.join(map(str, x.shape))}, two views = {images} images per round; "
          f"median of {repeats} (interleaved)")
    print_peer_table(times, images, "images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch2d", type=int, default=64)
    parser.add_argument("--size2d", type=int, default=64)
    parser.add_argument("--batch3d", type=int, default=8)
    parser.add_argument("--size3d", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import monai

    print(f"torch {torch.__version__}, monai {monai.__version__}, {torch.get_num_threads()} threads")
    g = torch.Generator().manual_seed(0)
    bench(torch.rand(args.batch2d, 1, args.size2d, args.size2d, generator=g), args.repeats)
    bench(torch.rand(args.batch3d, 1, *[args.size3d] * 3, generator=g), args.repeats)


if __name__ == "__main__":
    main()
