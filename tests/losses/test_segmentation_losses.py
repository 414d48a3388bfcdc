"""Focal Tversky (by hand in numpy, and MONAI's soft Dice as an oracle) and the multi-scale supervision sum of DS6."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.losses import DiceLoss

from labelwise.errors import ConfigError, DataError
from labelwise.losses import MSS_WEIGHTS, focal_tversky_loss, mss_loss


def sample(shape: tuple[int, ...], seed: int, p: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(shape, generator=g), (torch.rand(shape, generator=g) < p).float()


def numpy_focal_tversky(logits, target, alpha=0.7, beta=0.3, gamma=0.75, smooth=1.0, per_sample=False):
    """Abraham & Khan 2019, by hand: returns (B, C) per sample or (C,) over the batch."""
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    y = target.astype(np.float64)
    out = np.zeros(p.shape[:2] if per_sample else p.shape[1:2])
    for index in np.ndindex(out.shape):
        sel = index if per_sample else (slice(None), *index)
        pp, yy = p[sel], y[sel]
        tp, fn, fp = (pp * yy).sum(), ((1 - pp) * yy).sum(), (pp * (1 - yy)).sum()
        out[index] = (1 - (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)) ** gamma
    return out


@pytest.mark.parametrize("shape", [(2, 1, 4, 5), (3, 2, 3, 4, 2)])
def test_against_numpy(shape):
    logits, target = sample(shape, 0)
    theirs = numpy_focal_tversky(logits.numpy(), target.numpy())
    assert focal_tversky_loss(logits, target).item() == pytest.approx(theirs.mean(), rel=1e-5)
    per = numpy_focal_tversky(logits.numpy(), target.numpy(), 0.4, 0.6, 2.0, 0.5, per_sample=True)
    none = focal_tversky_loss(logits, target, alpha=0.4, beta=0.6, gamma=2.0, smooth=0.5, reduction="none")
    assert none.shape == shape[:2] and none.dtype == torch.float32
    np.testing.assert_allclose(none.numpy(), per, rtol=1e-5)
    mean = focal_tversky_loss(logits, target, alpha=0.4, beta=0.6, gamma=2.0, smooth=0.5, reduction="mean")
    assert mean.item() == pytest.approx(per.mean(), rel=1e-5)


@pytest.mark.parametrize("shape", [(2, 1, 6, 7), (2, 3, 4, 5, 3)])
def test_equals_monai_soft_dice_when_alpha_beta_half_and_gamma_one(shape):
    """MONAI: 1 - (2 TP + nr) / (sum p + sum y + dr); Tversky at alpha = beta = 1/2 is 1 - (2 TP + 2 s) / (sum p +
    sum y + 2 s), so smooth_nr = smooth_dr = 1 matches smooth = 0.5."""
    logits, target = sample(shape, 1)
    ours = {
        r: focal_tversky_loss(logits, target, alpha=0.5, beta=0.5, gamma=1.0, smooth=0.5, reduction=r)
        for r in ("batch", "mean", "none")
    }
    batch = DiceLoss(sigmoid=True, smooth_nr=1, smooth_dr=1, batch=True)(logits, target)
    mean = DiceLoss(sigmoid=True, smooth_nr=1, smooth_dr=1)(logits, target)
    none = DiceLoss(sigmoid=True, smooth_nr=1, smooth_dr=1, reduction="none")(logits, target)
    torch.testing.assert_close(ours["batch"], batch, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["mean"], mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours["none"], none.reshape(shape[:2]), rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None, database=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.0, 8.0),
    p=st.floats(0.0, 1.0),
    reduction=st.sampled_from(["batch", "none"]),
)
def test_gamma_below_one_raises_the_loss(seed, scale, p, reduction):
    """x ** 0.75 > x on (0, 1): the focal loss exceeds 1 - TI (its gamma = 1 value) while TI is in (0, 1)."""
    logits, target = sample((2, 1, 5, 5), seed, p)
    plain = focal_tversky_loss(scale * logits, target, gamma=1.0, reduction=reduction)
    focal = focal_tversky_loss(scale * logits, target, reduction=reduction)
    assert ((plain >= 0) & (plain < 1)).all()
    inside = (plain > 1e-6) & (plain < 1 - 1e-6)
    assert (focal[inside] > plain[inside]).all()
    torch.testing.assert_close(focal, plain**0.75)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_perfect_prediction_gives_about_zero_with_finite_gradients(dtype):
    _, target = sample((2, 1, 8, 8, 8), 2)
    logits = (40 * (2 * target - 1)).to(dtype).requires_grad_()
    loss = focal_tversky_loss(logits, target)
    loss.backward()
    assert loss.item() < 1e-6 and torch.isfinite(logits.grad).all()


def test_empty_target_has_finite_gradients():
    logits = torch.randn(2, 1, 8, 8).requires_grad_()
    target = torch.zeros(2, 1, 8, 8)
    for reduction in ("batch", "mean"):
        logits.grad = None
        loss = focal_tversky_loss(logits, target, reduction=reduction)
        loss.backward()
        assert 0 < loss.item() < 1
        assert torch.isfinite(logits.grad).all() and (logits.grad > 0).all()  # pushes every logit down
    empty = torch.full((2, 1, 8, 8), -200.0, requires_grad=True)  # empty target predicted empty
    loss = focal_tversky_loss(empty, target)
    loss.backward()
    assert loss.item() < 1e-6 and torch.isfinite(empty.grad).all()


def test_low_precision_logits_are_summed_in_float32():
    logits, target = sample((1, 1, 64, 64, 16), 3)
    ours = focal_tversky_loss(logits.to(torch.bfloat16), target.bool())
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(focal_tversky_loss(logits, target).item(), rel=1e-2)


def test_mss_loss_is_the_weighted_sum():
    outputs = tuple(sample((2, 1, 8, 8), seed)[0] for seed in (4, 5, 6))
    _, target = sample((2, 1, 8, 8), 7)
    each = [focal_tversky_loss(o, target) for o in outputs]
    torch.testing.assert_close(mss_loss(outputs, target), 1.0 * each[0] + 0.66 * each[1] + 0.34 * each[2])
    assert MSS_WEIGHTS == (1.0, 0.66, 0.34)
    torch.testing.assert_close(mss_loss(outputs[0], target), each[0])
    dice = DiceLoss(sigmoid=True)
    torch.testing.assert_close(
        mss_loss(list(outputs[:2]), target, loss_fn=dice, weights=(0.5, 2)),
        0.5 * dice(outputs[0], target) + 2 * dice(outputs[1], target),
    )


def test_bad_loss_inputs():
    logits, target = sample((2, 1, 4, 4), 8)
    with pytest.raises(DataError, match=r"target: expected the logits' shape \(2, 1, 4, 4\), got \(2, 4, 4\)"):
        focal_tversky_loss(logits, target[:, 0])
    with pytest.raises(DataError, match=r"logits: expected a float tensor \(B, C, \*spatial\), got torch.int64"):
        focal_tversky_loss(logits.long(), target)
    with pytest.raises(DataError, match=r"target: expected values in \[0, 1\].*got \[0.0, 2.0\]"):
        focal_tversky_loss(logits, 2 * target)
    with pytest.raises(ConfigError, match=r"alpha: expected a non-negative number, got -0.1"):
        focal_tversky_loss(logits, target, alpha=-0.1)
    with pytest.raises(ConfigError, match=r"gamma: expected a positive number, got 0"):
        focal_tversky_loss(logits, target, gamma=0)
    with pytest.raises(ConfigError, match=r"reduction: expected 'batch', 'mean' or 'none', got 'sum'"):
        focal_tversky_loss(logits, target, reduction="sum")
    with pytest.raises(ConfigError, match=r"weights: expected one weight per output \(2\), got \(1.0, 0.66, 0.34\)"):
        mss_loss((logits, logits), target)
    with pytest.raises(ConfigError, match=r"weights\[1\]: expected a non-negative number, got -1"):
        mss_loss((logits, logits), target, weights=(1, -1))
    with pytest.raises(DataError, match=r"outputs\[1\]: expected full-size logits .*4, 4\), got \(2, 1, 2, 2\)"):
        mss_loss((logits, logits[..., :2, :2]), target, weights=(1, 1))
    with pytest.raises(DataError, match=r"outputs: expected a tensor or a non-empty tuple of tensors, got tuple"):
        mss_loss((), target)


def test_soft_cross_entropy_is_torchs_cross_entropy_with_probability_targets():
    from labelwise.losses import soft_cross_entropy

    torch.manual_seed(0)
    # one channel: binary cross-entropy of the sigmoid against the soft target, by hand
    logits, target = torch.randn(2, 1, 5, 6), torch.rand(2, 1, 5, 6)
    p = torch.sigmoid(logits)
    by_hand = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    torch.testing.assert_close(soft_cross_entropy(logits, target), by_hand)
    # several channels: torch's cross-entropy with class-probability targets
    logits, target = torch.randn(2, 3, 5, 6), torch.softmax(torch.randn(2, 3, 5, 6), 1)
    torch.testing.assert_close(soft_cross_entropy(logits, target), torch.nn.functional.cross_entropy(logits, target))
    # a 0/1 weight zeroes the dropped voxels, the mean still over all of them
    keep = (torch.rand(2, 1, 5, 6) > 0.5).float()
    each = torch.nn.functional.cross_entropy(logits, target, reduction="none").unsqueeze(1)
    torch.testing.assert_close(soft_cross_entropy(logits, target, keep), (keep * each).mean())


def test_agreeing_with_its_own_output_dilates_under_tversky_not_under_cross_entropy():
    """Gradient descent on ``loss(z, sigmoid(z).detach())``, the consistency of a network with its own output: Focal
    Tversky (even with alpha = beta) grows the foreground step after step; cross-entropy is stationary there."""
    from labelwise.losses import soft_cross_entropy

    torch.manual_seed(0)
    start = torch.randn(1, 1, 32, 32) * 2 - 1.5
    grown = {}
    for name, loss_fn, lr in (
        ("tversky", focal_tversky_loss, 50.0),
        ("dice-like", partial(focal_tversky_loss, alpha=0.5, beta=0.5), 50.0),
        ("ce", soft_cross_entropy, 5000.0),
    ):
        z = start.clone().requires_grad_(True)
        for _ in range(100):
            loss = loss_fn(z, torch.sigmoid(z).detach())
            (grad,) = torch.autograd.grad(loss, z)
            with torch.no_grad():
                z -= lr * grad
        grown[name] = float((torch.sigmoid(z) > 0.5).float().mean() - (torch.sigmoid(start) > 0.5).float().mean())
    assert grown["tversky"] > grown["dice-like"] > 0.02
    assert abs(grown["ce"]) < 1e-6
