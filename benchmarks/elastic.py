"""Elastic deformation speed: labelwise (one field per batch) vs MONAI's Rand3DElastic(d) (one field per sample).

Workload: a batch of 8 x 1 x 64^3 image (float32), label (int64, 0/1) and prediction (float32), all warped with the
same deformation: 3 x 8 = 24 warped volumes per round. Contenders:
  labelwise              RandomElastic(spacing=(5, 7), magnitude=(0.01, 0.03))(image, label), then warp(pred, field)
                         as DS6 does later: one field for the batch; image and prediction trilinear, label nearest.
  MONAI Rand3DElastic    per sample, as MONAI works: Rand3DElastic(sigma_range=(5, 7), prob=1) on the image
                         (randomize=True), then on its label (mode nearest) and prediction with randomize=False, so the
                         three share the sample's random offsets; each call rebuilds and smooths the dense field.
  MONAI Rand3DElasticd   the dictionary version: one field per sample, resampled for the three keys (MONAI's fastest).
MONAI's magnitude_range (10, 28) scales Gaussian-smoothed uniform noise (voxels); it is chosen so that the RMS
displacement matches labelwise's at 64^3 (about 0.05-0.15 voxel); the time does not depend on it. Padding: border for
all. Each round runs every contender once, in turn (A B C A B C ...), after one warm-up round; the figures are medians
of ``--repeats`` rounds. The gradient through T(f(x)) is checked in tests/augment/test_elastic.py
(test_gradcheck_through_warp: gradcheck in float64, 2D and 3D, w.r.t. the warped tensor and the field;
test_ds6_consistency_loss_backpropagates_through_t_of_f_x), not timed here.

    python benchmarks/elastic.py [--repeats 7] [--batch 8] [--size 64] [--threads N]
"""

from __future__ import annotations

import argparse

import torch
from timing import interleaved, print_peer_table


def contenders(image: torch.Tensor, label: torch.Tensor, pred: torch.Tensor) -> dict:
    from monai.transforms import Rand3DElastic, Rand3DElasticd

    from labelwise.augment import RandomElastic, warp

    elastic = RandomElastic(spacing=(5, 7), magnitude=(0.01, 0.03), generator=torch.Generator().manual_seed(0))
    monai = Rand3DElastic(sigma_range=(5, 7), magnitude_range=(10, 28), prob=1.0, padding_mode="border")
    monai.set_random_state(0)
    keys = ("image", "label", "pred")
    monai_d = Rand3DElasticd(keys, sigma_range=(5, 7), magnitude_range=(10, 28), prob=1.0,
                             mode=("bilinear", "nearest", "bilinear"), padding_mode="border")
    monai_d.set_random_state(0)

    def ours():
        (image_t, label_t), field = elastic(image, label)
        return image_t, label_t, warp(pred, field)

    def monai_per_call():
        out = []
        for i in range(image.shape[0]):
            out.append((monai(image[i], mode="bilinear", randomize=True),
                        monai(label[i], mode="nearest", randomize=False),
                        monai(pred[i], mode="bilinear", randomize=False)))
        return out

    def monai_dict():
        return [monai_d({"image": image[i], "label": label[i], "pred": pred[i]}) for i in range(image.shape[0])]

    return {"labelwise": ours, "MONAI Rand3DElastic": monai_per_call, "MONAI Rand3DElasticd": monai_dict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, 1, *[args.size] * 3)
    image = torch.rand(shape, generator=g)
    label = (image > 0.5).long()
    pred = torch.rand(shape, generator=g)
    volumes = 3 * args.batch
    times = interleaved(contenders(image, label, pred), args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {'x'.join(map(str, shape))}, "
          f"image + label + prediction = {volumes} warped volumes per round; median of {args.repeats} (interleaved)")
    print_peer_table(times, volumes, "volumes", digits=3)
    print("gradient through T(f(x)): checked by tests/augment/test_elastic.py::test_gradcheck_through_warp and "
          "::test_ds6_consistency_loss_backpropagates_through_t_of_f_x")


if __name__ == "__main__":
    main()
