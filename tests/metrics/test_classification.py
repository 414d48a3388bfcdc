"""Classification metrics against scikit-learn, on random and hypothesis-generated inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from labelwise.metrics import accuracy, balanced_accuracy, confusion_matrix, correct, macro_f1, to_prediction


@st.composite
def predictions(draw):
    """(pred, target, num_classes): class indices, some classes possibly absent from either side."""
    k = draw(st.integers(2, 6))
    b = draw(st.integers(1, 40))
    pred = draw(st.lists(st.integers(0, k - 1), min_size=b, max_size=b))
    target = draw(st.lists(st.integers(0, k - 1), min_size=b, max_size=b))
    return torch.tensor(pred), torch.tensor(target), k


@settings(max_examples=150, deadline=None, database=None)
@given(predictions())
def test_against_sklearn(case):
    pred, target, k = case
    p, t = pred.numpy(), target.numpy()
    assert float(accuracy(pred, target)) == pytest.approx(skm.accuracy_score(t, p), abs=1e-6)
    np.testing.assert_array_equal(
        confusion_matrix(pred, target, k).numpy(), skm.confusion_matrix(t, p, labels=list(range(k)))
    )
    with warnings.catch_warnings():  # scikit-learn warns about classes absent from one side
        warnings.simplefilter("ignore")
        expected_bal = skm.balanced_accuracy_score(t, p)
        expected_f1 = skm.f1_score(t, p, average="macro")
    assert float(balanced_accuracy(pred, target, k)) == pytest.approx(expected_bal, abs=1e-6)
    assert float(macro_f1(pred, target, k)) == pytest.approx(expected_f1, abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_logits_random_against_sklearn(seed):
    g = torch.Generator().manual_seed(seed)
    k, b = 5, 500
    logits = torch.randn(b, k, generator=g)
    target = torch.randint(0, k, (b,), generator=g)
    p, t = logits.argmax(1).numpy(), target.numpy()
    assert float(accuracy(logits, target)) == pytest.approx(skm.accuracy_score(t, p), abs=1e-6)
    assert float(balanced_accuracy(logits, target, k)) == pytest.approx(skm.balanced_accuracy_score(t, p), abs=1e-6)
    assert float(macro_f1(logits, target, k)) == pytest.approx(skm.f1_score(t, p, average="macro"), abs=1e-6)
    np.testing.assert_array_equal(confusion_matrix(logits, target, k).numpy(), skm.confusion_matrix(t, p))


def test_correct_and_shapes():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [0.0, 5.0, 1.0]])
    target = torch.tensor([0, 1, 1])
    assert correct(logits, target).tolist() == [True, False, True]
    assert correct(logits, target).dtype == torch.bool
    acc = accuracy(logits, target)
    assert acc.ndim == 0 and acc.is_floating_point() and float(acc) == pytest.approx(2 / 3)
    assert to_prediction(logits).tolist() == [0, 2, 1]


def test_single_logit_is_binary():
    logit = torch.tensor([[1.5], [-0.3], [0.2]])
    assert to_prediction(logit).tolist() == [1, 0, 1]
    assert float(accuracy(logit, torch.tensor([1, 0, 0]))) == pytest.approx(2 / 3)


def test_perfect_and_empty():
    t = torch.tensor([0, 1, 2, 2])
    assert float(balanced_accuracy(t, t, 3)) == 1.0 and float(macro_f1(t, t, 4)) == 1.0
    empty = torch.zeros(0, dtype=torch.long)
    assert torch.isnan(accuracy(empty, empty))
    assert confusion_matrix(empty, empty, 3).sum() == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="in \\[0, 3\\)"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="target"):
        accuracy(torch.tensor([0, 1]), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="shape"):
        accuracy(torch.zeros(2, 3, 4), torch.tensor([0, 1]))


def test_device_follows_input():
    pred, target = torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])
    assert accuracy(pred, target).device == pred.device
    assert confusion_matrix(pred, target, 2).device == pred.device


@pytest.mark.parametrize("seed", range(4))
def test_f1_from_counts_is_scikit_learns_per_class_f1(seed):
    """The one F1 (used by macro_f1, the multi-label f1_score and the fairness summary) per class, against
    scikit-learn's ``f1_score(average=None)``; a class neither predicted nor present is nan, or ``zero_division``."""
    from labelwise.metrics.classification import f1_from_counts

    rng = np.random.default_rng(seed)
    k = 6
    target, pred = rng.integers(0, k - 1, 60), rng.integers(0, k - 1, 60)  # class k - 1 never occurs
    pred[:5] = 0  # some agreement
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), k).double()
    f1 = f1_from_counts(cm.diagonal(), cm.sum(dim=0), cm.sum(dim=1))
    expected = skm.f1_score(target, pred, labels=range(k), average=None, zero_division=0)
    assert f1.dtype == torch.float64
    np.testing.assert_allclose(f1[: k - 1].numpy(), expected[: k - 1], rtol=0, atol=1e-15)
    assert torch.isnan(f1[k - 1])
    zero = f1_from_counts(cm.diagonal(), cm.sum(dim=0), cm.sum(dim=1), zero_division=0.0)
    np.testing.assert_allclose(zero.numpy(), expected, rtol=0, atol=1e-15)
