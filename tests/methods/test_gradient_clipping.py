"""Gradient clipping goes through Fabric: under 16-mixed precision the gradients are unscaled before their norm is
clipped (a GradScaler on the CPU stands in for the GPU's), once per optimizer step; manual-optimisation methods clip
each optimizer's network (pseudo_supervisor: the predictor and the policy)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.fabric import Fabric
from lightning.fabric.plugins.precision import MixedPrecision
from torch import nn

from labelwise.config import load_config
from labelwise.data import load_data
from labelwise.data.npz import save_npz
from labelwise.engine.trainer import Trainer
from labelwise.methods import METHODS
from labelwise.methods.base import Method

MAX_NORM = 0.5
SCALE = 1000.0  # the loss multiplier: gradients far above MAX_NORM


def cpu_fabric(precision: str) -> Fabric:
    """A CPU Fabric; ``16-mixed``: with a loss-scaling GradScaler (scale 65536), as on a GPU."""
    if precision == "16-mixed":
        fabric = Fabric(accelerator="cpu", devices=1, plugins=[MixedPrecision("16-mixed", "cpu")])
        assert fabric.strategy.precision.scaler is not None
        return fabric
    return Fabric(accelerator="cpu", devices=1, precision=precision)


def spy_clip_gradients(fabric: Fabric, monkeypatch) -> list[tuple[nn.Module, torch.optim.Optimizer]]:
    """Record the (module, optimizer) of every ``fabric.clip_gradients`` call, then run the real one."""
    calls, real = [], fabric.clip_gradients

    def clip_gradients(module, optimizer, **kwargs):
        calls.append((module, optimizer))
        return real(module, optimizer, **kwargs)

    monkeypatch.setattr(fabric, "clip_gradients", clip_gradients)
    return calls


def linear(n_in: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n_in, 1, bias=False)


def expected_update(gradient: torch.Tensor, max_norm: float) -> torch.Tensor:
    """SGD at lr 1 after clipping by norm, by hand (torch's clip coefficient max_norm / (norm + 1e-6), at most 1)."""
    return gradient * min(1.0, max_norm / (float(gradient.norm()) + 1e-6))


@pytest.mark.parametrize("precision", ["32-true", "16-mixed"])
def test_method_optimizer_step_clips_the_unscaled_gradient_through_fabric(precision, monkeypatch):
    fabric = cpu_fabric(precision)
    net = linear(4, 0)
    module = fabric.setup_module(net)
    optimizer = fabric.setup_optimizers(torch.optim.SGD(net.parameters(), lr=1.0, momentum=0.0))
    calls = spy_clip_gradients(fabric, monkeypatch)
    method = Method.__new__(Method)  # only what optimizer_step reads
    method.config = SimpleNamespace(trainer=SimpleNamespace(gradient_clip=MAX_NORM))
    method.fabric = fabric

    x = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    before = net.weight.detach().clone()
    loss = SCALE * net(x).sum()  # d loss / d weight = SCALE * x (norm about 3800)
    method.optimizer_step(optimizer, loss, lr=1.0, module=module)

    step = before - net.weight.detach()
    assert torch.allclose(step, expected_update(SCALE * x, MAX_NORM), rtol=1e-4, atol=0)
    assert float(step.norm()) == pytest.approx(MAX_NORM, rel=1e-4)  # not MAX_NORM / 65536 (clipped while scaled)
    assert calls == [(module, optimizer)]


def test_engine_clips_the_joint_norm_once_per_step_under_16_mixed(monkeypatch):
    """Two trainable networks, one optimizer: one clip of both (a second unscale in one step is an error)."""
    fabric = cpu_fabric("16-mixed")
    a, b = linear(3, 1), linear(2, 2)
    networks = {"a": fabric.setup_module(a), "b": fabric.setup_module(b)}
    optimizer = fabric.setup_optimizers(torch.optim.SGD([*a.parameters(), *b.parameters()], lr=1.0, momentum=0.0))
    calls = spy_clip_gradients(fabric, monkeypatch)
    trainer = Trainer.__new__(Trainer)  # only what _optimize reads
    trainer.config = SimpleNamespace(trainer=SimpleNamespace(gradient_clip=MAX_NORM))
    trainer.fabric, trainer.optimizer = fabric, optimizer
    trainer.method = SimpleNamespace(networks=networks)

    xa, xb = torch.tensor([[1.0, 2.0, -1.0]]), torch.tensor([[-3.0, 0.5]])
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    trainer._optimize(SCALE * (a(xa).sum() + b(xb).sum()), lr=1.0)

    joint = expected_update(SCALE * torch.cat([xa, xb], dim=1), MAX_NORM)
    assert torch.allclose(wa - a.weight.detach(), joint[:, :3], rtol=1e-4, atol=0)
    assert torch.allclose(wb - b.weight.detach(), joint[:, 3:], rtol=1e-4, atol=0)
    assert len(calls) == 1 and calls[0][1] is optimizer


@pytest.fixture(scope="module")
def semi_npz(tmp_path_factory):
    """Two classes (a bright or a dark square), 24 train (8 labelled) / 8 val / 8 test."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 40)
    image = rng.normal(0, 0.3, (40, 1, 12, 12)).astype(np.float32)
    image[:, 0, 3:9, 3:9] += np.where(label == 1, 1.0, -1.0)[:, None, None]
    labelled = np.arange(40) < 8
    path = tmp_path_factory.mktemp("clip") / "data.npz"
    save_npz(
        path,
        {
            "image": image,
            "label": label,
            "split": np.array(["train"] * 24 + ["val"] * 8 + ["test"] * 8),
            "labelled": labelled | (np.arange(40) >= 24),
        },
    )
    return path


def test_pseudo_supervisor_clips_the_predictor_and_the_policy_each_through_fabric(semi_npz, monkeypatch):
    cfg = load_config(
        {
            "name": "clip",
            "seed": 0,
            "method": {"name": "pseudo_supervisor", "window": 2, "variant": "paper"},
            "data": {"path": str(semi_npz), "task": "classification", "batch_size": 8, "labelled_per_batch": 4},
            "model": {"name": "resnet10", "channels": [4, 8, 8, 8], "norm": "group"},
            "trainer": {"max_steps": 2, "checkpoint_every": 2, "gradient_clip": 1e-3},  # every step clipped
        }
    )
    method = METHODS["pseudo_supervisor"](cfg, load_data(cfg.data, keep_unlabelled=True))
    fabric = cpu_fabric("32-true")
    for name in ("model", "policy"):
        method.networks[name] = fabric.setup_module(method.networks[name])
    method.fabric, method.lr = fabric, 1e-3
    optimizers = method.configure_optimizers()
    clipped: list[tuple[str, str, float]] = []
    real = fabric.clip_gradients

    def clip_gradients(module, optimizer, **kwargs):
        out = real(module, optimizer, **kwargs)
        norm = float(
            torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters() if p.grad is not None]))
        )
        network = next(k for k, v in method.networks.items() if v is module)
        which = next(k for k, v in optimizers.items() if v is optimizer)
        clipped.append((network, which, norm))
        return out

    monkeypatch.setattr(fabric, "clip_gradients", clip_gradients)
    losses = iter([1.0, 0.5, 0.7, 0.9])  # held-out loss before / after each pseudo step: rewards e^0.5 - 1, then 0
    monkeypatch.setattr(method, "heldout_loss", lambda image, target: next(losses))
    train = method.data.split("train")
    rows = [0, 1, 2, 3, 10, 11, 12, 13]  # 4 labelled, 4 unlabelled
    batch = {"image": train.image[rows], "target": train.target[rows], "labelled": train.labelled[rows]}
    assert batch["labelled"].tolist() == [True] * 4 + [False] * 4
    method.training_step(batch)
    method.training_step(batch)

    # per step the supervised and the pseudo-label step of the predictor; after the window of 2 the policy's step
    assert [(network, which) for network, which, _ in clipped] == [("model", "predictor")] * 4 + [("policy", "policy")]
    for network, _, norm in clipped:
        assert norm == pytest.approx(1e-3, rel=1e-3), network  # that network's gradients, clipped
