"""ONNX Runtime vs torch: forward time of a network exported by ``labelwise export`` against the same network in torch,
on the same input, on the CPU.

Workloads (random weights, eval mode, float32, batch 1):
  unet_mss 2D   configs/unet-mss-synthetic-2d.yaml's model section (widths 16..256), input 1 x 1 x 256 x 256
  unet_mss 3D   configs/unet-mss-synthetic-3d.yaml's model section (widths 16..256), input 1 x 1 x 96^3
  resnet18      MONAI ResNet-18 (widths 64..512, batch norm) classifier, 3 channels, 2 classes, 1 x 3 x 224 x 224
Each network is exported through :func:`labelwise.inference.export_run` (ONNX opset 17, the U-Nets with dynamic spatial
axes, traced at the config's patch size) and run with ONNX Runtime's CPUExecutionProvider (intra_op_num_threads =
--threads, graph optimisations on, the default); torch runs the module under ``torch.inference_mode()`` with
``torch.set_num_threads(--threads)``. Both see the same input; the outputs are compared (max abs difference) before
timing. Each round runs both once, in turn, after one warm-up round; figures are medians of ``--repeats`` rounds.

    python benchmarks/export.py [--repeats 5] [--threads 2] [--only unet2d,unet3d,resnet18]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from timing import interleaved

REPO = Path(__file__).resolve().parents[1]


def random_run(name: str):
    """A RunModel with random weights: the shipped config's model section (or a ResNet-18), no training."""
    from labelwise.config import load_config
    from labelwise.data.datasets import DataBundle
    from labelwise.inference import RunModel
    from labelwise.methods import METHODS

    if name in ("unet2d", "unet3d"):
        dims = 2 if name == "unet2d" else 3
        config = load_config(REPO / "configs" / f"unet-mss-synthetic-{dims}d.yaml", check_files=False)
        data = DataBundle(splits={}, task="segmentation", num_classes=2, in_channels=1, spatial_dims=dims,
                          image_size=tuple(config.data.patch_size), preprocessing={"intensity": "max"})
        shape = (1, 1, *([256, 256] if dims == 2 else [96, 96, 96]))
    else:
        config = load_config({"name": "resnet18", "seed": 0, "method": "supervised",
                              "data": {"path": "unused.npz", "task": "classification", "batch_size": 8},
                              "model": {"name": "resnet18"}, "trainer": {"max_steps": 1, "checkpoint_every": 1}},
                             check_files=False)
        data = DataBundle(splits={}, task="classification", num_classes=2, in_channels=3, spatial_dims=2,
                          class_names=["negative", "positive"], image_size=(224, 224),
                          preprocessing={"intensity": "channel", "image_size": [224, 224]})
        shape = (1, 3, 224, 224)
    torch.manual_seed(0)
    method = METHODS[config.method.name](config, data)
    for net in method.networks.values():
        net.eval()
    return RunModel(method, method.inference_spec(), Path(f"random-{name}"), Path("random weights")), shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="unet2d,unet3d,resnet18")
    args = parser.parse_args()

    import onnxruntime

    from labelwise.inference import export_run

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__} ({args.threads} threads), onnxruntime {onnxruntime.__version__} "
          f"(CPUExecutionProvider, intra_op_num_threads {args.threads}); medians of {args.repeats} interleaved rounds")
    print(f"  {'network':10s} {'input':18s} {'torch s':>9s} {'ORT s':>9s} {'torch/ORT':>10s}   max |diff|   "
          "rounds min-max (torch | ORT)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            run, shape = random_run(name)
            file = Path(tmp) / f"{name}.onnx"
            export_run(run, "onnx", file)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
            x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
            feed = {"image": x.numpy()}
            model = run.model

            def torch_forward():
                with torch.inference_mode():
                    return model(x)

            difference = float((torch.from_numpy(session.run(None, feed)[0]) - torch_forward()).abs().max())
            times = interleaved({"torch": torch_forward, "onnxruntime": lambda: session.run(None, feed)},
                                args.repeats)
            t, o = statistics.median(times["torch"]), statistics.median(times["onnxruntime"])
            print(f"  {name:10s} {'x'.join(map(str, shape)):18s} {t:9.4f} {o:9.4f} {t / o:9.2f}x   {difference:.1e}    "
                  f"{min(times['torch']):.4f}-{max(times['torch']):.4f} | "
                  f"{min(times['onnxruntime']):.4f}-{max(times['onnxruntime']):.4f}", flush=True)


if __name__ == "__main__":
    main()
