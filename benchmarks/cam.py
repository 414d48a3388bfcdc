"""Grad-CAM speed: labelwise vs captum vs MONAI vs a forward pass without gradients, in the same process.

Settings (MONAI ResNet-18, eval mode, one class per image, a different class for each image):
    2d: batch 16 x 3 x 224^2;   3d: batch 2 x 1 x 96^3.
Each repeat runs every contender once, in turn (A B C D A B C D ...), so machine drift hits all alike; medians of
``--repeats`` after one warm-up round. captum is LayerGradCam(relu_attributions=True) plus bilinear/trilinear
interpolation to the input; MONAI is monai.visualize.GradCAM with its default upsampler and normaliser. With
``--scorecam``, also Score-CAM's time on one image as a multiple of one forward pass of that image.

    python benchmarks/cam.py [--repeats 7] [--settings 2d,3d] [--threads 2] [--scorecam]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from monai.networks import nets
from timing import interleaved

SETTINGS = {"2d": (2, (16, 3, 224, 224)), "3d": (3, (2, 1, 96, 96, 96))}


def contenders(model: torch.nn.Module, x: torch.Tensor, targets: list[int]) -> dict:
    from captum.attr import LayerAttribution, LayerGradCam
    from monai.visualize import GradCAM as MonaiGradCAM

    from labelwise.explain import GradCAM

    size = tuple(x.shape[2:])
    mode = "bilinear" if len(size) == 2 else "trilinear"
    ours = GradCAM(model, "layer4")
    captum = LayerGradCam(model, model.layer4)
    # MONAI keeps its hooks on the model for good: give it its own copy, so they do not slow the others down.
    monai = MonaiGradCAM(copy.deepcopy(model), target_layers="layer4")
    index = torch.tensor(targets)

    def forward():
        with torch.no_grad():
            return model(x)

    def captum_cam():
        maps = captum.attribute(x, target=targets, relu_attributions=True)
        return LayerAttribution.interpolate(maps, size, mode)

    return {
        "forward (no grad)": forward,
        "labelwise GradCAM": lambda: ours(x, targets),
        "captum LayerGradCam": captum_cam,
        "MONAI GradCAM": lambda: monai(x, class_idx=index),
    }


def run(setting: str, repeats: int) -> dict[str, float]:
    dims, shape = SETTINGS[setting]
    torch.manual_seed(0)
    model = nets.resnet18(spatial_dims=dims, n_input_channels=shape[1], num_classes=10).eval()
    x = torch.randn(shape)
    targets = [i % 10 for i in range(shape[0])]
    times = interleaved(contenders(model, x, targets), repeats)
    return {name: statistics.median(t) for name, t in times.items()}


def scorecam_multiple(repeats: int) -> tuple[float, float]:
    from labelwise.explain import ScoreCAM

    torch.manual_seed(0)
    model = nets.resnet18(spatial_dims=2, n_input_channels=3, num_classes=10).eval()
    x = torch.randn(1, 3, 224, 224)
    forward = []
    for r in range(repeats + 2):  # two warm-up passes
        start = time.perf_counter()
        with torch.no_grad():
            model(x)
        if r >= 2:
            forward.append(time.perf_counter() - start)
    start = time.perf_counter()
    ScoreCAM(model, "layer4", batch_size=32)(x, 1)
    return time.perf_counter() - start, statistics.median(forward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--settings", default="2d,3d")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--scorecam", action="store_true", help="also time Score-CAM on one 224^2 image")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats} (interleaved)")
    for setting in args.settings.split(","):
        medians = run(setting, args.repeats)
        base = medians["forward (no grad)"]
        ours = medians["labelwise GradCAM"]
        print(f"\n{setting}: batch {'x'.join(map(str, SETTINGS[setting][1]))}")
        print(f"  {'':22s} {'seconds':>8s} {'x forward':>10s} {'x labelwise':>12s}")
        for name, t in medians.items():
            print(f"  {name:22s} {t:8.3f} {t / base:10.2f} {t / ours:12.2f}")
    if args.scorecam:
        total, forward = scorecam_multiple(args.repeats)
        print(f"\nScore-CAM, 1 x 3 x 224^2, 512 channels, 32 masked images per pass: {total:.2f} s = "
              f"{total / forward:.0f} x one forward pass of that image ({forward * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
