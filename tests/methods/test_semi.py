"""Semi-supervised classification methods: the pseudo supervisor's reward, returns and REINFORCE update against
hand computation, the baselines' losses, the mean teacher's moving average, and whole runs through the engine
(mixed batches, exact resume of the policy's memory, the end-of-run fairness summary)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from labelwise.config import load_config
from labelwise.data import load_data
from labelwise.data.npz import save_npz
from labelwise.errors import ConfigError
from labelwise.methods import METHODS
from labelwise.methods.pseudo_supervisor import (
    alignment_offset,
    class_frequencies,
    discounted_returns,
    normalise_returns,
)
from labelwise.methods.semi import classification_loss, confident_pseudo_loss, ramp_up
from labelwise.training import build_trainer, train

SEMI = ("pseudo_supervisor", "pseudo_label", "mean_teacher", "fixmatch")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """Two classes (a bright or a dark square), 80 train (16 labelled) / 20 val / 20 test, a sex attribute."""
    rng = np.random.default_rng(0)
    n = 120
    label = rng.integers(0, 2, n)
    image = rng.normal(0, 0.3, (n, 1, 12, 12)).astype(np.float32)
    image[:, 0, 3:9, 3:9] += np.where(label == 1, 1.0, -1.0)[:, None, None]
    split = np.array(["train"] * 80 + ["val"] * 20 + ["test"] * 20)
    labelled = np.ones(n, dtype=bool)
    labelled[16:80] = False
    path = tmp_path_factory.mktemp("semi") / "data.npz"
    save_npz(
        path,
        {
            "image": image,
            "label": label,
            "split": split,
            "labelled": labelled,
            "attribute_sex": np.array(["f", "m"] * 60),
        },
    )
    return path


def config(path, method, steps=4, **method_options):
    return load_config(
        {
            "name": "semi",
            "seed": 0,
            "method": {"name": method, **method_options},
            "data": {"path": str(path), "task": "classification", "batch_size": 8, "labelled_per_batch": 4},
            "model": {"name": "resnet10", "channels": [4, 8, 8, 8], "norm": "group"},
            "optimizer": {"name": "adamw", "lr": 1e-3},
            "trainer": {"max_steps": steps, "checkpoint_every": steps, "log_every": 1},
        }
    )


def test_discounted_returns_restart_at_zero_rewards():
    rewards = torch.tensor([0.5, 0.0, 0.2, 0.1])
    expected = [0.5, 0.0, 0.2 + 0.9 * 0.1, 0.1]  # R_t = r_t + 0.9 R_{t+1}; R_1 = 0 cuts the chain
    assert torch.allclose(discounted_returns(rewards, 0.9), torch.tensor(expected))


def test_normalised_returns_never_divide_by_zero():
    same = normalise_returns(torch.full((5,), 0.3))
    assert torch.equal(same, torch.zeros(5))  # centred only
    spread = normalise_returns(torch.tensor([1.0, 2.0, 4.0]))
    assert abs(float(spread.mean())) < 1e-6 and abs(float(spread.std(unbiased=False)) - 1) < 1e-5


def test_confident_pseudo_loss_counts_confident_predictions_only():
    logits = torch.tensor([[2.0, -1.0], [0.3, 0.1]])
    probability = torch.tensor([[0.97, 0.03], [0.6, 0.4]])
    loss, kept = confident_pseudo_loss(logits, probability, multilabel=False, threshold=0.95)
    expected = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0])) / 2  # mean over both samples
    assert torch.allclose(loss, expected) and float(kept) == 0.5
    multi, kept = confident_pseudo_loss(torch.zeros(1, 3), torch.tensor([[0.99, 0.5, 0.02]]), True, 0.95)
    assert torch.allclose(multi, torch.tensor(2 * math.log(2) / 3)) and abs(float(kept) - 2 / 3) < 1e-6
    empty = classification_loss(torch.zeros(0, 2, requires_grad=True), torch.zeros(0, dtype=torch.long), False)
    assert float(empty.detach()) == 0 and empty.requires_grad


def test_ramp_up():
    assert ramp_up(0, 100) == pytest.approx(math.exp(-5)) and ramp_up(100, 100) == 1.0 and ramp_up(5, 0) == 1.0


class FakeFabric:
    device = torch.device("cpu")

    def backward(self, loss):
        loss.backward()

    def setup_optimizers(self, optimizer):
        return optimizer

    def clip_gradients(self, module, optimizer, max_norm, error_if_nonfinite):
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm, error_if_nonfinite=error_if_nonfinite)


def pseudo_supervisor(npz, **options):
    """A pseudo supervisor outside the engine (a fake Fabric), and a batch of 4 labelled and 4 unlabelled images."""
    cfg = config(npz, "pseudo_supervisor", **options)
    method = METHODS["pseudo_supervisor"](cfg, load_data(cfg.data, keep_unlabelled=True))
    method.fabric, method.lr, method.step = FakeFabric(), 1e-3, 0
    method.configure_optimizers()
    train = method.data.split("train")
    rows = [0, 1, 2, 3, 40, 41, 42, 43]  # 4 labelled, 4 unlabelled (target -1)
    return method, {"image": train.image[rows], "target": train.target[rows], "labelled": train.labelled[rows]}


def test_pseudo_supervisor_reward_memory_and_policy_update(npz, monkeypatch):
    method, batch = pseudo_supervisor(npz, window=2, variant="paper")
    torch.manual_seed(0)  # centred returns cancel when both steps sample the same labels (p >= 1/16): fix the draw
    assert (batch["target"][4:] == -1).all()
    losses = iter([1.0, 0.5, 0.7, 0.9])  # held-out loss before / after each pseudo step
    monkeypatch.setattr(method, "heldout_loss", lambda image, target: next(losses))
    policy_before = [p.detach().clone() for p in method.networks["policy"].parameters()]
    out = method.training_step(batch)
    assert float(out["reward"]) == pytest.approx(math.exp(0.5) - 1)  # max(exp(alpha (1.0 - 0.5)) - 1, 0)
    assert len(method.memory) == 1
    assert all(torch.equal(a, b) for a, b in zip(policy_before, method.networks["policy"].parameters(), strict=True))
    out = method.training_step(batch)
    assert float(out["reward"]) == 0.0  # the loss went up: no reward
    assert method.memory == []  # window of 2: the policy was updated and the memory emptied
    changed = [
        not torch.equal(a, b) for a, b in zip(policy_before, method.networks["policy"].parameters(), strict=True)
    ]
    assert any(changed)


def test_pseudo_supervisor_default_warms_up_then_starts_the_policy_from_the_predictor(npz, monkeypatch):
    """Default variant, 20 steps: 6 warm-up steps (0.3) on labelled data only; at step 6 the policy takes the
    predictor's weights; the pseudo step's loss is weighted by the sigmoid ramp over 4 steps (0.2). (Every label
    counts, ``confidence: 0``: an untrained policy is never 0.95 sure, and a step where none counts has no pseudo
    step.)"""
    method, batch = pseudo_supervisor(npz, steps=20, window=50, confidence=0.0)
    assert (method.warmup_steps, method.rampup_steps, method.policy_init) == (6, 4, "predictor")
    steps = []
    real_step = method.optimizer_step
    monkeypatch.setattr(
        method,
        "optimizer_step",
        lambda opt, loss, lr, module: (
            steps.append((opt is method.optimizers["predictor"], float(loss.detach()))),
            real_step(opt, loss, lr, module),
        ),
    )
    policy = [p.detach().clone() for p in method.networks["policy"].parameters()]
    for step in range(6):
        method.step = step
        out = method.training_step(batch)
        assert float(out["pseudo"]) == 0 and float(out["reward"]) == 0 and method.memory == []
    assert len(steps) == 6  # the predictor's labelled steps only
    assert all(torch.equal(a, b) for a, b in zip(policy, method.networks["policy"].parameters(), strict=True))
    predictor = {k: v.clone() for k, v in method.networks["model"].state_dict().items()}
    for step in (6, 7):
        method.step = step
        out = method.training_step(batch)
        if step == 6:  # the policy now holds the predictor's weights as they were before this step
            for k, v in method.networks["policy"].state_dict().items():
                assert torch.equal(v, predictor[k]), k
        pseudo_weighted = steps[-1][1]
        assert steps[-1][0] and pseudo_weighted == pytest.approx(ramp_up(step - 6, 4) * float(out["pseudo"]), rel=1e-5)
    assert len(method.memory) == 2


def test_pseudo_supervisor_keeps_part_of_the_validation_split_for_rewards(npz):
    """reward_share 0.5 of the 20 validation samples: 10 give rewards, the other 10 stay the split the engine
    selects and scores on; disjoint, drawn by the seed; variant paper keeps all 20 for both."""
    cfg = config(npz, "pseudo_supervisor")
    data = load_data(cfg.data, keep_unlabelled=True)
    everything = set(data.split("val").indices.tolist())
    method = METHODS["pseudo_supervisor"](cfg, data)
    reward, selection = set(method.heldout.indices.tolist()), set(data.split("val").indices.tolist())
    assert len(reward) == len(selection) == 10 and not reward & selection and reward | selection == everything
    again = METHODS["pseudo_supervisor"](cfg, load_data(cfg.data, keep_unlabelled=True))
    assert set(again.heldout.indices.tolist()) == reward
    val = load_data(cfg.data).split("val")
    for i, index in enumerate(method.heldout.indices.tolist()):  # images and targets follow their rows
        row = (val.indices == index).nonzero().item()
        assert torch.equal(method.heldout.image[i], val.image[row])
        assert torch.equal(method.heldout.target[i], val.target[row])
    paper = METHODS["pseudo_supervisor"](
        config(npz, "pseudo_supervisor", variant="paper"), load_data(cfg.data, keep_unlabelled=True)
    )
    assert len(paper.heldout) == 20


@pytest.mark.parametrize("method", SEMI)
def test_methods_train_through_the_engine(tmp_path, npz, method):
    result = train(config(npz, method), tmp_path / method)
    assert result.status == "completed"
    records = [json.loads(x) for x in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")
    evaluation = json.loads((tmp_path / method / "predictions" / "test_evaluation.json").read_text())
    assert evaluation["kind"] == "binary" and set(evaluation["group_auc"]["sex"]) == {"f", "m"}
    assert result.test["auc"] == pytest.approx(evaluation["auc"])
    saved = np.load(tmp_path / method / "predictions" / "test.npz")
    assert saved["attribute_sex"].tolist() == ["f", "m"] * 10


def test_mean_teacher_follows_the_student_by_moving_average(npz):
    cfg = config(npz, "mean_teacher", ema_decay=0.9)
    method = METHODS["mean_teacher"](cfg, load_data(cfg.data, keep_unlabelled=True))
    student, teacher = method.networks["model"], method.networks["teacher"]
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(p is not q for p in method.parameters() for q in teacher.parameters())  # not optimised
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    old = [p.clone() for p in teacher.parameters()]
    method.step = 1000  # past the early-step warm-up of the decay
    method.after_step()
    for t, s, o in zip(teacher.parameters(), student.parameters(), old, strict=True):
        assert torch.allclose(t, 0.9 * o + 0.1 * s, atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"align": True, "reward_gate": True, "window": 2, "confidence": 0.0}])
def test_pseudo_supervisor_resume_restores_the_policy_memory(tmp_path, npz, capfd, options):
    """6 steps with checkpoints at 3 and 6 (the default variant: warm-up to step 2, the policy copied then and
    following the predictor, one remembered step of a window of 4 at the checkpoint; or with alignment's running
    mean and the reward gate's trust); resumed from the step-3 checkpoint, the run ends with the same weights as the
    uninterrupted one."""
    import shutil

    straight = tmp_path / "straight"
    cfg = config(npz, "pseudo_supervisor", steps=6, **{"window": 4, **options})
    cfg.trainer.checkpoint_every = 3
    train(cfg, straight)
    split = tmp_path / "split"
    shutil.copytree(straight, split)
    shutil.rmtree(split / "checkpoints" / "step-000006")  # as if killed after the step-3 checkpoint
    (split / "checkpoints" / "latest.json").write_text(json.dumps({"step": 3, "path": "step-000003"}))
    (split / "summary.json").unlink()
    capfd.readouterr()
    build_trainer(cfg, split).fit(resume=True)
    progress = capfd.readouterr().err
    assert "step 4/6" in progress and "step 1/6" not in progress  # resumed after step 3, not retrained
    a = load_file(str(straight / "checkpoints" / "step-000006" / "model.safetensors"))
    b = load_file(str(split / "checkpoints" / "step-000006" / "model.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("policy.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_semi_supervised_methods_refuse_segmentation(tmp_path):
    from conftest import make_set

    manifest = make_set(tmp_path, shape=(8, 8, 8))
    cfg = load_config(
        {
            "name": "x",
            "seed": 0,
            "method": "fixmatch",
            "data": {"manifest": str(manifest), "task": "segmentation", "batch_size": 1},
            "model": {"name": "unet"},
            "trainer": {"max_steps": 1, "checkpoint_every": 1},
        }
    )
    with pytest.raises(Exception, match="fixmatch is for classification"):
        METHODS["fixmatch"](cfg, load_data(cfg.data, keep_unlabelled=True))


def test_npz_labelled_flag_concerns_training_rows_only(tmp_path):
    image = np.zeros((6, 1, 4, 4), np.float32)
    label = np.array([1, -1, 0, 1, 0, 1])  # -1: an unlabelled training row may carry no label at all
    split = np.array(["train", "train", "train", "val", "test", "test"])
    labelled = np.array([True, False, True, False, True, True])  # the val row's flag is ignored: it is scored
    save_npz(tmp_path / "d.npz", {"image": image, "label": label, "split": split, "labelled": labelled})
    cfg = config(tmp_path / "d.npz", "fixmatch")
    data = load_data(cfg.data, keep_unlabelled=True)
    assert data.num_classes == 2 and data.split("train").labelled.tolist() == [True, False, True]
    assert data.split("val").target.tolist() == [1] and bool(data.split("val").labelled.all())
    assert len(load_data(cfg.data).split("train")) == 2


def test_pseudo_supervisor_counts_sure_labels_only_and_the_policy_follows_the_predictor(npz, monkeypatch):
    """confidence: the predictor's pseudo loss and the REINFORCE credit count only images whose policy probability
    reaches it (hand computation); policy_follow: after a step past the warm-up the policy is the moving average of
    itself and the predictor, before it unchanged."""
    method, batch = pseudo_supervisor(
        npz, steps=10, warmup=0.2, confidence=0.6, policy_follow=0.9, window=50, align=False
    )
    assert (method.confidence, method.policy_follow) == (0.6, 0.9)
    method.step = 2  # the warm-up's end: the policy starts as the predictor is now
    xu = batch["image"][~batch["labelled"]]
    with torch.no_grad():
        sure = torch.softmax(method.networks["model"](xu), 1).max(1).values
    method.confidence = float(sure.median())  # half of the images are sure enough
    torch.manual_seed(0)
    out = method.training_step(batch)
    _, action, mask, *_ = method.memory[-1]
    torch.testing.assert_close(mask, (sure >= method.confidence).float())
    assert 0 < float(out["kept"]) < 1
    logits = torch.randn(4, 2)
    by_hand = (torch.nn.functional.cross_entropy(logits, action, reduction="none") * mask).sum() / 4
    torch.testing.assert_close(method.pseudo_loss(logits, action, mask), by_hand)
    log_prob = method._log_prob(torch.zeros(4, 2), action, mask)  # REINFORCE credit: the counted images only
    torch.testing.assert_close(log_prob, torch.full((4,), math.log(0.5)) * mask)
    policy, model = method.networks["policy"], method.networks["model"]
    before = [p.detach().clone() for p in policy.parameters()]
    method.step = 1  # in the warm-up: the policy does not follow
    method.after_step()
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))
    method.step = 3
    method.after_step()
    for a, p, q in zip(before, model.parameters(), policy.parameters(), strict=True):
        torch.testing.assert_close(q, 0.9 * a + 0.1 * p.detach())


def test_distribution_alignment_against_a_hand_computation():
    """ReMixMatch's alignment p' = normalise(p * prior / running) as an offset of the logits; per label, the odds of
    p times those of the prior over those of the running mean."""
    assert torch.allclose(class_frequencies(torch.tensor([0, 0, 2]), 3, False), torch.tensor([3, 1, 2]) / 6)
    assert torch.allclose(class_frequencies(torch.tensor([[1, 0], [1, 0]]), 2, True), torch.tensor([3 / 4, 1 / 4]))
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.3, 0.1]])
    prior, running = torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.6, 0.3, 0.1])
    p = logits.softmax(1)
    by_hand = p * prior / running
    by_hand = by_hand / by_hand.sum(1, keepdim=True)
    torch.testing.assert_close((logits + alignment_offset(prior, running, False)).softmax(1), by_hand)
    q, pi, m = torch.tensor([0.9, 0.2]), torch.tensor([0.4, 0.4]), torch.tensor([0.8, 0.1])
    odds = q / (1 - q) * (pi / (1 - pi)) / (m / (1 - m))
    torch.testing.assert_close(torch.sigmoid(torch.logit(q) + alignment_offset(pi, m, True)), odds / (1 + odds))


def test_pseudo_supervisor_align_pulls_a_one_class_policy_to_the_labelled_frequencies(npz, monkeypatch):
    """A policy that calls every unlabelled image class 0 with p = 0.99: aligned, its first batch's labels are drawn
    from the labelled training samples' (smoothed) class frequencies, and REINFORCE credits the aligned draw."""
    method, batch = pseudo_supervisor(npz, steps=10, warmup=0.0, align=True, confidence=0.0, window=50)
    train = method.data.split("train")
    labels = train.target[train.labelled]
    expected = (torch.bincount(labels, minlength=2).float() + 1) / (len(labels) + 2)
    torch.testing.assert_close(method.prior, expected)
    one_class = torch.tensor([math.log(99.0), 0.0])  # softmax: 0.99, 0.01
    monkeypatch.setattr(method.networks["policy"], "forward", lambda x: one_class.expand(len(x), 2).clone())
    torch.manual_seed(0)
    method.training_step(batch)
    _, action, mask, offset, *_ = method.memory[-1]
    torch.testing.assert_close((one_class + offset).softmax(0), expected)
    torch.testing.assert_close(method.running, torch.tensor([0.99, 0.01]))
    torch.testing.assert_close(method._log_prob(one_class + offset, action[:1], mask[:1]), expected[action[:1]].log())
    method.confidence = 0.95  # sure before alignment (0.99), not after: the aligned probabilities decide
    method.training_step(batch)  # the running mean moves by (1 - decay) toward the batch mean: here it stays
    torch.testing.assert_close(method.running, torch.tensor([0.99, 0.01]))
    assert len(method.memory) == 1  # no label counted: no pseudo step, nothing remembered


def test_pseudo_supervisor_reward_gate_halves_and_restores_the_pseudo_weight(npz, monkeypatch):
    """reward_gate, window 2: two pseudo steps that raise the held-out loss halve the trust, two more halve it
    again, two that lower it double it; the pseudo loss enters the predictor's step times the trust."""
    method, batch = pseudo_supervisor(
        npz, steps=20, warmup=0.0, pseudo_rampup=0.0, reward_gate=True, window=2, confidence=0.0
    )
    losses = iter([1.0, 1.2] * 4 + [1.0, 0.8] * 2 + [1.0, 1.0])
    monkeypatch.setattr(method, "heldout_loss", lambda image, target: next(losses))
    weights = []
    real_step = method.optimizer_step

    def step(optimizer, loss, lr, model):
        weights.append(float(loss.detach()))
        real_step(optimizer, loss, lr, model)

    monkeypatch.setattr(method, "optimizer_step", step)
    trust = []
    for _ in range(7):
        out = method.training_step(batch)
        trust.append(float(out["trust"]))
    assert trust == [1.0, 0.5, 0.5, 0.25, 0.25, 0.5, 0.5]
    pseudo = float(out["pseudo"])
    assert weights[-1] == pytest.approx(0.5 * pseudo, rel=1e-5)  # the seventh step's pseudo step, at trust 0.5
    state = method.state_dict()  # a checkpoint keeps the trust and the window's held-out changes
    again, _ = pseudo_supervisor(npz, steps=20, warmup=0.0, pseudo_rampup=0.0, reward_gate=True, window=2)
    again.load_state_dict(state)
    assert again.trust == 0.5 and [m[-1] for m in again.memory] == pytest.approx([0.0])
    default, _ = pseudo_supervisor(npz, steps=20)
    paper, _ = pseudo_supervisor(npz, steps=20, variant="paper")
    assert (default.align, default.reward_gate, paper.align, paper.reward_gate) == (True, False, False, False)


def test_a_run_writes_the_values_its_variant_chose_into_config_yaml(tmp_path, npz, monkeypatch):
    """Options left unset take the variant's values; config.yaml records them, so a resumed run keeps them even if
    a later version changes the variant (simulated by changing VARIANTS), while a value the user set stays as set."""
    import yaml

    from labelwise.methods import pseudo_supervisor as ps

    cfg = config(npz, "pseudo_supervisor", steps=4, warmup=0.5)
    train(cfg, tmp_path / "run")
    assert cfg.method.options().get("align") is None  # the caller's config is not changed
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["method"]
    assert saved["warmup"] == 0.5  # set by the user
    chosen = {k: v for k, v in ps.VARIANTS["default"].items() if k != "warmup"}
    assert {k: saved[k] for k in chosen} == chosen
    monkeypatch.setitem(ps.VARIANTS, "default", {**ps.VARIANTS["default"], "pseudo_rampup": 0.0, "align": False})
    resumed = load_config(tmp_path / "run" / "config.yaml")
    method = METHODS["pseudo_supervisor"](resumed, load_data(resumed.data, keep_unlabelled=True))
    assert method.rampup_steps == round(0.2 * 4) and method.align is True
    fresh = METHODS["pseudo_supervisor"](cfg, load_data(cfg.data, keep_unlabelled=True))
    assert fresh.rampup_steps == 0 and fresh.align is False  # what the changed variant gives a new run


def test_pseudo_supervisor_strong_view_for_the_predictor_only(npz, monkeypatch):
    """``strong``: the policy labels the batch's unlabelled images as they are (its remembered images are those), and
    the predictor's pseudo step is computed on their strong view of that magnitude; off by default."""
    from labelwise.methods import pseudo_supervisor as ps

    method, batch = pseudo_supervisor(npz, steps=10, warmup=0.0, window=50, strong=0.7, confidence=0.0)
    calls = []

    def fake_strong(x, magnitude):
        calls.append((x.clone(), magnitude))
        return x.flip(-1) + 1.0  # any view the predictor would not see otherwise

    monkeypatch.setattr(ps, "strong_view", fake_strong)
    xu = batch["image"][~batch["labelled"]]
    seen = []

    def pseudo_loss(logits, action, mask):  # what the predictor was shown, against its output on the strong view now
        with torch.no_grad():
            seen.append((logits.detach(), method.networks["model"](xu.flip(-1) + 1.0)))
        return logits.sum() * 0

    monkeypatch.setattr(method, "pseudo_loss", pseudo_loss)
    method.training_step(batch)
    assert len(calls) == 1 and calls[0][1] == 0.7 and torch.equal(calls[0][0], xu)
    assert torch.equal(method.memory[-1][0], xu)  # the policy's credit is for the view it labelled
    torch.testing.assert_close(*seen[0])
    default, _ = pseudo_supervisor(npz, steps=10)
    assert default.strong == 0.0


def test_pseudo_supervisor_takes_no_pseudo_step_when_no_label_counts(npz, monkeypatch):
    """With no pseudo label sure enough, the step is the supervised one alone: one optimizer step, nothing
    remembered for the policy (a step on a zero loss would still move the predictor by Adam's momentum)."""
    method, batch = pseudo_supervisor(npz, steps=10, warmup=0.0, confidence=0.999999, window=50, align=False)
    steps = []
    original = method.optimizer_step
    monkeypatch.setattr(method, "optimizer_step", lambda *a, **k: steps.append(a[1]) or original(*a, **k))
    out = method.training_step(batch)
    assert len(steps) == 1 and method.memory == [] and float(out["kept"]) == 0.0


def test_pseudo_supervisor_adaptive_confidence_by_hand(npz):
    """``confidence: adaptive``: the threshold starts at 1 / classes and follows the running mean (decay 0.99) of
    the policy's largest probability; a label counts where the policy is at least that sure."""
    from labelwise.methods.pseudo_supervisor import ALIGN_DECAY

    method, _ = pseudo_supervisor(npz, steps=10, confidence="adaptive")
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.1], [0.0, -3.0], [0.3, 0.0]])
    sure = torch.softmax(logits, 1).max(1).values
    expected = ALIGN_DECAY * 0.5 + (1 - ALIGN_DECAY) * float(sure.mean())
    torch.testing.assert_close(method._sure(logits), (sure >= expected).float())
    assert method.threshold_mean == pytest.approx(expected)
    again = ALIGN_DECAY * expected + (1 - ALIGN_DECAY) * float(sure.mean())
    method._sure(logits)
    assert method.threshold_mean == pytest.approx(again)
    with pytest.raises(ConfigError, match="adaptive"):
        config(npz, "pseudo_supervisor", confidence=1.5)


def test_pseudo_supervisor_soft_confidence_by_hand(npz):
    """``confidence: soft`` (SoftMatch): every label counts; at or above the running mean of the policy's sureness
    with weight 1, below it with the Gaussian weight exp(-(s - mean)^2 / (2 var)), mean and variance running
    (decay 0.99) from 1 / classes and 1; the weights reach the predictor's loss."""
    import math

    from labelwise.methods.pseudo_supervisor import ALIGN_DECAY

    method, _ = pseudo_supervisor(npz, steps=10, confidence="soft")
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.1], [0.0, -3.0], [0.3, 0.0]])
    sure = [max(math.exp(a), math.exp(b)) / (math.exp(a) + math.exp(b)) for a, b in logits.tolist()]
    n = len(sure)
    mean_s = sum(sure) / n
    var_s = sum((s - mean_s) ** 2 for s in sure) / (n - 1)
    mean = ALIGN_DECAY * 0.5 + (1 - ALIGN_DECAY) * mean_s
    var = ALIGN_DECAY * 1.0 + (1 - ALIGN_DECAY) * var_s
    assert method._sure(logits).tolist() == [1.0] * n  # the first mean, near 1 / classes, is below every sureness
    assert method.threshold_mean == pytest.approx(mean) and method.threshold_var == pytest.approx(var)
    method.threshold_mean, method.threshold_var = 0.8, 0.01  # later in training: a mean inside the sureness range
    mean = ALIGN_DECAY * 0.8 + (1 - ALIGN_DECAY) * mean_s
    var = ALIGN_DECAY * 0.01 + (1 - ALIGN_DECAY) * var_s
    expected = [1.0 if s >= mean else math.exp(-((s - mean) ** 2) / (2 * var)) for s in sure]
    weights = method._sure(logits)
    assert weights.tolist() == pytest.approx(expected, rel=1e-5)
    assert 0 < min(expected) < 1 and max(expected) == 1.0  # both sides of the mean are in the hand case
    # a weighted label counts by its weight in the pseudo loss: cross-entropy times weight, mean over images
    out = torch.tensor([[0.5, -0.5], [1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]])
    action = torch.tensor([0, 1, 0, 1])
    ce = torch.nn.functional.cross_entropy(out, action, reduction="none")
    assert float(method.pseudo_loss(out, action, weights)) == pytest.approx(float((ce * weights).mean()), rel=1e-6)
