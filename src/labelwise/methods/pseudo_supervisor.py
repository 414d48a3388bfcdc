"""``method: pseudo_supervisor``: a policy network that labels the unlabelled images, rewarded by how much its
labels help the predictor on held-out labelled data (Luo et al., "Harvard Glaucoma Detection and Progression: A
Multimodal Multitask Dataset and Generalization-Reinforced Semi-Supervised Learning", ICCV 2023).

Each step:

1. the predictor takes one optimizer step on the labelled part of the batch;
2. the policy (same architecture, never shown a true label) gives p per unlabelled image and a pseudo label is
   *sampled* from it (Bernoulli per label; a categorical draw for single-label classes);
3. the predictor's loss on a random batch of the **validation** split is measured, the predictor takes one step on
   the pseudo labels, and the loss is measured again; reward = max(exp(alpha (before - after)) - 1, 0);
4. every ``window`` steps, discounted returns (gamma; a return restarts at a zero reward), normalised (centred only
   when their spread is zero), give one REINFORCE step of the policy: mean over images of -log pi(a | x) R.

Unlike the paper's public code, the held-out batch comes from the validation split (never the test split), and
which samples are unlabelled is said by the data (``use_label``), never by file order.

``variant: paper`` is the public code's recipe as above: from the first step the predictor takes full steps on
labels sampled from an untrained policy. The default variant keeps the paper's idea (a policy proposes pseudo
labels and is rewarded by the change of a held-out loss) and changes when and how much the predictor listens:

- ``warmup`` (share of ``trainer.max_steps``, default 0.3): the predictor trains on the labelled data alone first;
  no pseudo step, no reward, no policy update before that;
- ``policy_init: predictor``: when the warm-up ends the policy starts from the predictor's weights, so its first
  pseudo labels are informed instead of coin flips;
- ``pseudo_rampup`` (share of ``trainer.max_steps``, default 0.2): the pseudo-label loss weight rises by the
  sigmoid ramp of mean teacher over that many steps after the warm-up;
- ``reward_share`` (default 0.5): that share of the validation split (drawn with the run's seed) gives the reward
  batches only; model selection and the validation scores use the rest, so the selected model is not chosen on
  the data that trained the policy;
- ``policy_follow`` (default 0.99): after each step past the warm-up the policy moves toward the predictor by that
  moving-average decay, so it keeps up with what the predictor has learnt since; REINFORCE still adjusts it;
- ``confidence`` (default 0.95; ``adaptive``: the running mean of the policy's own sureness, as FreeMatch's global
  threshold, Wang et al. 2023): a sampled pseudo label counts (in the predictor's step and in the policy's
  REINFORCE credit) only where the policy's largest class probability (per label: max(p, 1 - p)) reaches it; a
  step in which no label counts takes no pseudo step at all (an optimizer step on a zero loss would still move the
  predictor by Adam's momentum). ``soft`` (SoftMatch's truncated Gaussian, Chen et al. 2023): every label counts,
  fully where the sureness reaches the running mean mu of the policy's sureness, else with the weight
  exp(-(sureness - mu)^2 / (2 var)), var its running variance; labels are kept in number, the unsure ones weigh
  less;
- ``align`` (default on; distribution alignment, Berthelot et al., ReMixMatch, 2020): before sampling, the
  policy's class probabilities are multiplied by the labelled training samples' class frequencies over the running
  mean (decay :data:`ALIGN_DECAY`) of its own probabilities on unlabelled images, and renormalised (per label: the
  same on the odds). A policy whose labels drift towards one class is pulled back to the labelled prior;
- ``reward_gate`` (default off: it did not help where measured): the pseudo-label loss weight is multiplied by a
  trust in [0, 1] (1 at the warm-up's end), halved after every ``window`` in which the pseudo steps raised the
  held-out loss on average and doubled (at most to 1) after one in which they lowered it, so the held-out change
  that rewards the policy also limits how far the predictor follows it;
- ``strong`` (default 0: off): the predictor's pseudo step sees a strong view (FixMatch's RandAugment-like operations
  and cutout, of this magnitude) of the images whose labels the policy sampled from the weak view (the batch as the
  ``augment:`` section made it), so the predictor learns an invariance instead of confirming its own view.

Each option may also be set alone; ``variant`` only chooses the values of those not set."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from labelwise.augment.views import strong_view
from labelwise.data.datasets import DataBundle
from labelwise.errors import ConfigError
from labelwise.methods.base import RunConfig, ema_update
from labelwise.methods.semi import SemiSupervised, classification_loss, ramp_up


class PseudoSupervisorOptions(BaseModel):
    """Options of ``method: pseudo_supervisor``."""

    model_config = ConfigDict(extra="forbid")
    policy_lr: float = Field(1e-4, gt=0, description="learning rate of the policy (the predictor uses optimizer.lr)")
    alpha: float = Field(1.0, gt=0, description="reward = max(exp(alpha * (loss_before - loss_after)) - 1, 0)")
    gamma: float = Field(0.9, ge=0, le=1, description="discount of the returns")
    window: int = Field(50, gt=0, description="steps between policy updates (TIMEWINDOW)")
    heldout_batch_size: int | None = Field(
        None, gt=0, description="validation images per reward (default: data.batch_size)"
    )
    variant: Literal["default", "paper"] = Field(
        "default",
        description="paper: the public code's recipe (no "
        "warm-up, random policy, full pseudo weight, all of val for both)",
    )
    warmup: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="share of max_steps on labelled data only before pseudo steps (default 0.3; paper 0)",
    )
    policy_init: Literal["predictor", "random"] | None = Field(
        None, description="the policy's weights when the warm-up ends (default predictor; paper random)"
    )
    pseudo_rampup: float | None = Field(
        None,
        ge=0,
        le=1,
        description="share of max_steps of the sigmoid ramp of the "
        "pseudo-label loss weight after the warm-up (default 0.2; paper 0)",
    )
    reward_share: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="share of the validation split used only for "
        "rewards, never for model selection (default 0.5; paper 0: all of it for both)",
    )
    policy_follow: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="after the warm-up, policy = follow * policy + "
        "(1 - follow) * predictor after every step (default 0.99; paper 0: off)",
    )
    confidence: float | Literal["adaptive", "soft"] | None = Field(
        None,
        description="pseudo labels count only where the policy is at least this sure, in [0, 1) (default 0.95; "
        "paper 0: all); adaptive: the running mean of the policy's own largest probability on unlabelled images "
        "(FreeMatch's self-adaptive global threshold); soft: every label counts, weighted by a Gaussian below that "
        "mean (SoftMatch)",
    )
    align: bool | None = Field(
        None,
        description="distribution alignment of the policy's probabilities to the labelled "
        "class frequencies before sampling (default on; paper off)",
    )
    reward_gate: bool | None = Field(
        None,
        description="the pseudo-label weight halves after a window whose pseudo "
        "steps raised the held-out loss on average, doubles (to 1) after one that "
        "lowered it (default off; paper off)",
    )
    strong: float | None = Field(
        None,
        ge=0,
        le=1,
        description="the predictor's pseudo step sees a strong view (labelwise.augment.strong_view of this "
        "magnitude) of the images the policy labelled, as FixMatch's; 0: the same view (default 0; paper 0)",
    )

    @field_validator("confidence")
    @classmethod
    def _confidence(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, float | int) and not 0 <= value < 1:
            raise ValueError(f"expected a sureness in [0, 1), adaptive or soft, got {value}")
        return value


VARIANTS: dict[str, dict[str, Any]] = {
    "default": {
        "warmup": 0.3,
        "policy_init": "predictor",
        "pseudo_rampup": 0.2,
        "reward_share": 0.5,
        "policy_follow": 0.99,
        "confidence": 0.95,
        "align": True,
        "reward_gate": False,
        "strong": 0.0,
    },
    "paper": {
        "warmup": 0.0,
        "policy_init": "random",
        "pseudo_rampup": 0.0,
        "reward_share": 0.0,
        "policy_follow": 0.0,
        "confidence": 0.0,
        "align": False,
        "reward_gate": False,
        "strong": 0.0,
    },
}
ALIGN_DECAY = 0.99  # running mean of the policy's probabilities over about the last 100 batches (ReMixMatch: 128)


def class_frequencies(target: Tensor, num_classes: int, multilabel: bool) -> Tensor:
    """Laplace-smoothed class frequencies of labelled targets: (count + 1) / (n + K) per class, or per label the
    positive share (positives + 1) / (n + 2); never 0 or 1, so their logarithms are finite."""
    n = len(target)
    if multilabel:
        return (target.float().sum(dim=0) + 1) / (n + 2)
    return (torch.bincount(target.long(), minlength=num_classes).float() + 1) / (n + num_classes)


def alignment_offset(prior: Tensor, running: Tensor, multilabel: bool, eps: float = 1e-6) -> Tensor:
    """What distribution alignment adds to the logits: p' proportional to p prior / running is softmax(logits +
    log prior - log running); per label, the odds are scaled, logit(p') = logit(p) + logit(prior) - logit(running)."""
    running = running.clamp(eps, 1 - eps)
    if multilabel:
        return torch.logit(prior) - torch.logit(running)
    return prior.log() - running.log()


def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    """R_t = r_t + gamma R_{t+1}, restarted (R_t = 0) wherever r_t = 0, as the paper's code."""
    returns = torch.zeros_like(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = 0.0 if rewards[t] == 0 else float(rewards[t]) + gamma * running
        returns[t] = running
    return returns


def normalise_returns(returns: Tensor, eps: float = 1e-8) -> Tensor:
    """(R - mean) / std; only centred when the std is (near) zero, instead of dividing by it."""
    centred = returns - returns.mean()
    std = returns.std(unbiased=False) if len(returns) > 1 else returns.new_tensor(0.0)
    return centred / std if std > eps else centred


class PseudoSupervisor(SemiSupervised):
    """Predictor ``model`` and policy ``policy`` (the same architecture); see the module docstring."""

    name = "pseudo_supervisor"
    augments = True
    Options = PseudoSupervisorOptions
    manual_optimization = True

    def __init__(self, config: RunConfig, data: DataBundle) -> None:
        super().__init__(config, data)
        self.networks["policy"] = self.build_network()
        o, steps = self.options, config.trainer.max_steps
        chosen = {k: (getattr(o, k) if getattr(o, k) is not None else v) for k, v in VARIANTS[o.variant].items()}
        self.warmup_steps = int(round(chosen["warmup"] * steps))
        self.rampup_steps = int(round(chosen["pseudo_rampup"] * steps))
        self.policy_init, self.reward_share = chosen["policy_init"], chosen["reward_share"]
        self.policy_follow, self.confidence = chosen["policy_follow"], chosen["confidence"]
        self.align, self.reward_gate, self.strong = chosen["align"], chosen["reward_gate"], chosen["strong"]
        self.chosen = {k: v for k, v in chosen.items() if getattr(o, k) is None}
        self.prior: Tensor | None = None  # labelled class frequencies (align)
        self.running: Tensor | None = None  # running mean of the policy's probabilities on unlabelled images (align)
        self.trust = 1.0  # the reward gate's factor of the pseudo-label weight
        self.threshold_mean: float | None = None  # confidence: adaptive, soft: the running mean of its sureness
        self.threshold_var: float | None = None  # confidence: soft: the running variance of the policy's sureness
        if data.splits and self.align:
            train = data.split("train")
            self.prior = class_frequencies(train.target[train.labelled], data.num_classes, self.multilabel)
        if data.splits:  # training (a clear error when there is no validation split); no splits: loaded for inference
            self.heldout = data.split("val")
            if self.reward_share > 0:
                self.heldout = self._reserve_rewards(data, config.seed)
        # (unlabelled images, sampled labels, mask, alignment offset, reward, held-out loss change of the pseudo step)
        self.memory: list[tuple[Tensor, Tensor, Tensor, Tensor, float, float]] = []

    def _reserve_rewards(self, data, seed: int):
        """Split the validation split: ``reward_share`` of it (drawn with ``seed``, at least one sample) becomes the
        reward set, the rest stays the validation split the engine selects and scores on."""
        val = data.split("val")
        if len(val) < 2:
            raise ConfigError(
                f"method.reward_share: the validation split has {len(val)} sample(s); it needs two "
                "to keep one for rewards and one for model selection (or set reward_share: 0)"
            )
        count = min(len(val) - 1, max(1, int(round(self.reward_share * len(val)))))
        order = torch.randperm(len(val), generator=torch.Generator().manual_seed(seed))
        reward, rest = order[:count].sort().values, order[count:].sort().values
        data.splits["val"] = val.subset(rest)
        return val.subset(reward)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        predictor = self.build_optimizer(list(self.networks["model"].parameters()))
        policy = self.build_optimizer(list(self.networks["policy"].parameters()))
        self.optimizers = {
            "predictor": self.fabric.setup_optimizers(predictor),
            "policy": self.fabric.setup_optimizers(policy),
        }
        return self.optimizers

    def _distribution(self, logits: Tensor) -> torch.distributions.Distribution:
        if self.multilabel:
            return torch.distributions.Bernoulli(logits=logits.float())
        return torch.distributions.Categorical(logits=logits.float())

    @torch.no_grad()
    def _aligned(self, logits: Tensor) -> Tensor:
        """The alignment offset for this batch of policy logits (zero without ``align``); updates the running mean."""
        if not self.align:
            return torch.zeros_like(logits[0], dtype=torch.float32)
        mean = self.probabilities(logits.float()).mean(dim=0)
        self.running = mean if self.running is None else ALIGN_DECAY * self.running.to(mean) + (1 - ALIGN_DECAY) * mean
        assert self.prior is not None  # align: set from the labelled training cases
        return alignment_offset(self.prior.to(mean), self.running, self.multilabel)

    def _log_prob(self, logits: Tensor, action: Tensor, mask: Tensor) -> Tensor:
        """log pi(action | x) per image, over the labels that counted (``mask``, 0/1 like ``action``)."""
        log_prob = self._distribution(logits).log_prob(action) * mask
        return log_prob.sum(dim=1) if self.multilabel else log_prob

    def _sure(self, logits: Tensor) -> Tensor:
        """How much each label counts, per image (or per label): 1 where the policy is at least :attr:`confidence`
        sure, else 0; ``adaptive``: at least the running mean (decay :data:`ALIGN_DECAY`, from 1 / classes) of its
        sureness; ``soft``: 1 at or above that mean, exp(-(sureness - mean)^2 / (2 var)) below it, var the running
        variance (from 1, as SoftMatch). The running figures are updated here."""
        p = self.probabilities(logits.float())
        sure = torch.maximum(p, 1 - p) if self.multilabel else p.max(dim=1).values
        if self.confidence in ("adaptive", "soft"):
            if self.threshold_mean is None:
                self.threshold_mean, self.threshold_var = (0.5 if self.multilabel else 1.0 / p.shape[1]), 1.0
            self.threshold_mean = ALIGN_DECAY * self.threshold_mean + (1 - ALIGN_DECAY) * float(sure.mean())
            var = float(sure.var()) if sure.numel() > 1 else 0.0
            self.threshold_var = (
                ALIGN_DECAY * (self.threshold_var if self.threshold_var is not None else 1.0) + (1 - ALIGN_DECAY) * var
            )
            if self.confidence == "adaptive":
                return (sure >= self.threshold_mean).float()
            below = torch.exp(-((sure - self.threshold_mean) ** 2) / (2 * max(self.threshold_var, 1e-8)))
            return torch.where(sure >= self.threshold_mean, torch.ones_like(sure), below)
        return (sure >= float(self.confidence)).float()

    def pseudo_loss(self, logits: Tensor, action: Tensor, mask: Tensor) -> Tensor:
        """Cross-entropy (per label: binary) of the predictor against the sampled labels, those outside ``mask``
        counting 0; the mean over all images (labels), as FixMatch counts unconfident ones."""
        if self.multilabel:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, action.float(), reduction="none")
        else:
            loss = nn.functional.cross_entropy(logits, action, reduction="none")
        return (loss * mask).mean()

    @torch.no_grad()
    def heldout_loss(self, image: Tensor, target: Tensor) -> float:
        """The predictor's loss on a held-out batch, in evaluation mode (batch-norm statistics untouched)."""
        model = self.networks["model"]
        model.eval()
        loss = classification_loss(model(image).float(), target, self.multilabel)
        model.train()
        return float(loss)

    def training_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        xl, yl, xu = self.split_batch(batch)
        model, policy = self.networks["model"], self.networks["policy"]
        if self.step == self.warmup_steps and self.warmup_steps > 0 and self.policy_init == "predictor":
            policy.load_state_dict(model.state_dict())  # the warm-up is over: informed first pseudo labels
        predictor_lr = self.lr
        policy_lr = self.options.policy_lr * self.lr / self.config.optimizer.lr  # follows warm-up and decay
        supervised = self.supervised_loss(model(xl), yl)
        if len(xl):
            self.optimizer_step(self.optimizers["predictor"], supervised, predictor_lr, model)
        zero = supervised.new_tensor(0.0)
        if len(xu) == 0 or self.step < self.warmup_steps:
            return {"loss": supervised.detach(), "supervised": supervised.detach(), "pseudo": zero, "reward": zero}

        with torch.no_grad():
            proposal = policy(xu).float()
            offset = self._aligned(proposal)
            proposal = proposal + offset
            action = self._distribution(proposal).sample()
            mask = self._sure(proposal)
        if not self.multilabel:
            action = action.long()
        if not bool(mask.any()):  # no label counts: no pseudo step (Adam's momentum alone would move the predictor)
            return {
                "loss": supervised.detach(),
                "supervised": supervised.detach(),
                "pseudo": zero,
                "reward": zero,
                "kept": zero,
            }
        size = self.options.heldout_batch_size or self.config.data.batch_size
        rows = torch.randint(len(self.heldout), (min(size, len(self.heldout)),))
        device = xu.device
        xv, yv = self.heldout.image[rows].to(device), self.heldout.target[rows].to(device)
        before = self.heldout_loss(xv, yv)
        shown = strong_view(xu, magnitude=self.strong) if self.strong > 0 else xu
        pseudo = self.pseudo_loss(model(shown), action, mask)
        weight = ramp_up(self.step - self.warmup_steps, self.rampup_steps) * self.trust
        self.optimizer_step(self.optimizers["predictor"], weight * pseudo, predictor_lr, model)
        after = self.heldout_loss(xv, yv)
        reward = max(math.exp(self.options.alpha * (before - after)) - 1.0, 0.0)
        self.memory.append((xu.detach(), action, mask, offset, reward, after - before))
        if len(self.memory) >= self.options.window:
            self.update_trust()
            self.update_policy(policy_lr)
        logged = {
            "loss": (supervised + pseudo).detach(),
            "supervised": supervised.detach(),
            "pseudo": pseudo.detach(),
            "reward": zero + reward,
            "heldout": zero + after,
            "kept": mask.mean(),
        }
        if self.reward_gate:  # the trust is 1 throughout without the gate: not logged then
            logged["trust"] = zero + self.trust
        if self.threshold_mean is not None:  # confidence: adaptive or soft
            logged["threshold"] = zero + self.threshold_mean
        return logged

    def update_trust(self) -> None:
        """``reward_gate``: halve the trust after a window whose pseudo steps raised the held-out loss on average,
        double it (at most 1) after one that lowered it."""
        if self.reward_gate:
            change = sum(c for *_, c in self.memory) / len(self.memory)
            self.trust = self.trust / 2 if change > 0 else min(1.0, self.trust * 2) if change < 0 else self.trust

    def chosen_options(self) -> dict[str, Any]:
        return dict(self.chosen)

    @torch.no_grad()
    def after_step(self) -> None:
        if self.policy_follow > 0 and self.step >= self.warmup_steps:
            ema_update(self.networks["model"], self.networks["policy"], self.policy_follow)

    def update_policy(self, lr: float) -> None:
        """One REINFORCE step over the remembered window, gradients accumulated one step's images at a time."""
        rewards = torch.tensor([r for *_, r, _ in self.memory], dtype=torch.float32)
        returns = normalise_returns(discounted_returns(rewards, self.options.gamma))
        optimizer, policy = self.optimizers["policy"], self.networks["policy"]
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        total = sum(len(x) for x, *_ in self.memory)
        for (image, action, mask, offset, *_), ret in zip(self.memory, returns.tolist(), strict=True):
            loss = -(self._log_prob(policy(image).float() + offset, action, mask) * ret).sum() / total
            self.fabric.backward(loss)
        self.clip_gradients(policy, optimizer)
        optimizer.step()
        self.memory = []

    def state_dict(self) -> dict[str, Any]:
        memory: list[Sequence[Any]] = list(zip(*self.memory)) or [[]] * 6
        images, actions, masks, offsets, rewards, changes = memory
        return {
            "images": [x.cpu() for x in images],
            "actions": [a.cpu() for a in actions],
            "masks": [m.cpu() for m in masks],
            "offsets": [o.cpu() for o in offsets],
            "rewards": torch.tensor(rewards, dtype=torch.float64),
            "changes": torch.tensor(changes, dtype=torch.float64),
            "trust": self.trust,
            "running": None if self.running is None else self.running.cpu(),
            "threshold_mean": self.threshold_mean,
            "threshold_var": self.threshold_var,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        device = self.fabric.device
        n = len(state["actions"])
        # runs from before a key existed: every label counted, no alignment, no held-out change, full trust
        masks = state.get("masks") or [torch.ones(a.shape, dtype=torch.float32) for a in state["actions"]]
        offsets = state.get("offsets") or [torch.zeros(1) for _ in range(n)]
        changes = state["changes"].tolist() if "changes" in state else [0.0] * n
        self.memory = [
            (x.to(device), a.to(device), m.to(device), o.to(device), float(r), float(c))
            for x, a, m, o, r, c in zip(
                state["images"], state["actions"], masks, offsets, state["rewards"].tolist(), changes, strict=True
            )
        ]
        self.trust = float(state.get("trust", 1.0))
        self.threshold_mean = state.get("threshold_mean")
        self.threshold_var = state.get("threshold_var")
        self.running = state.get("running")
