"""Multi-task pretraining: the pieces against hand computation (mask, decoder layout, NT-Xent, MoCo loss, k-NN), the
backbone interface against the classifier it transfers to, whole pretrain runs for task subsets, and transfer with
``model.init_from`` (fine-tune and frozen linear probe)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from labelwise.config import load_config
from labelwise.data import load_data
from labelwise.data.npz import save_npz
from labelwise.engine.checkpoint import latest_checkpoint
from labelwise.methods.pretrain import (
    MIMDecoder,
    knn_predict,
    moco_loss,
    nt_xent,
    random_patch_mask,
)
from labelwise.models import build_model
from labelwise.models.backbones import build_backbone
from labelwise.training import build_trainer, train

MODEL = {"name": "resnet10", "channels": [4, 8, 8, 8], "norm": "batch"}


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """16 x 16 images with up to two of three bright quadrant marks as tags; a third of the training tags hidden."""
    rng = np.random.default_rng(0)
    n = 96
    tags = (rng.random((n, 3)) < 0.5).astype(np.int64)
    image = rng.normal(0, 0.2, (n, 1, 16, 16)).astype(np.float32)
    for k, (r, c) in enumerate([(0, 0), (0, 8), (8, 0)]):
        image[tags[:, k] == 1, 0, r : r + 8, c : c + 8] += 1.0
    split = np.array(["train"] * 64 + ["val"] * 16 + ["test"] * 16)
    labelled = np.ones(n, dtype=bool)
    labelled[:20] = False
    folder = tmp_path_factory.mktemp("pretrain")
    save_npz(folder / "tags.npz", {"image": image, "label": tags, "split": split, "labelled": labelled})
    save_npz(folder / "classes.npz", {"image": image, "label": tags[:, 0], "split": split})
    return folder


def config(path, method, steps=3, options=None, model=None):
    return load_config(
        {
            "name": "p",
            "seed": 0,
            "method": {"name": method, **(options or {})},
            "data": {"path": str(path), "task": "classification", "batch_size": 8},
            "model": {**MODEL, **(model or {})},
            "trainer": {"max_steps": steps, "checkpoint_every": steps, "log_every": 1},
        }
    )


def test_random_patch_mask_masks_whole_patches_at_the_ratio():
    mask = random_patch_mask((4, 2, 16, 24), patch=8, ratio=0.5, device=torch.device("cpu"))
    assert mask.shape == (4, 1, 16, 24)
    blocks = mask.reshape(4, 2, 8, 3, 8).permute(0, 1, 3, 2, 4).reshape(4, 6, 64)
    assert ((blocks == 0).all(-1) | (blocks == 1).all(-1)).all()  # every 8 x 8 patch masked or not, whole
    assert (blocks[..., 0].sum(1) == 3).all()  # round(0.5 * 6) patches per sample
    with pytest.raises(Exception, match="must divide"):
        random_patch_mask((1, 1, 10, 10), patch=8, ratio=0.5, device=torch.device("cpu"))


@pytest.mark.parametrize("dims", [2, 3])
def test_mim_decoder_places_each_value_at_its_pixel(dims):
    decoder = MIMDecoder(dim=1, in_channels=2, stride=2, spatial_dims=dims)
    grid = (3,) * dims
    weight = torch.zeros_like(decoder.proj.weight)
    for o in range(weight.shape[0]):
        weight[o, 0] = o + 1  # output channel o of the conv = (o + 1) * input
    with torch.no_grad():
        decoder.proj.weight.copy_(weight)
        decoder.proj.bias.zero_()
    with torch.no_grad():
        out = decoder(torch.ones(1, 1, *grid))
    assert out.shape == (1, 2, *(6,) * dims)
    # channel c, sub-position (s1..sd) came from conv output c * 2^d + flat(s1..sd)
    for c in range(2):
        for sub in np.ndindex(*(2,) * dims):
            flat = int(np.ravel_multi_index(sub, (2,) * dims))
            index = (0, c, *(s + 2 * g for s, g in zip(sub, (1,) * dims, strict=True)))
            assert float(out[index]) == c * 2**dims + flat + 1


def test_nt_xent_and_moco_against_hand_computation():
    z1, z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    # for sample 0: similarities to the others are 0 (z1[1]), 1 (z2[0], positive), 0 (z2[1])
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0)))
    assert float(nt_xent(z1, z2, t)) == pytest.approx(expected, rel=1e-5)
    q, k = torch.tensor([[1.0, 0.0], [0.6, 0.8]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = (q @ k.T) / t
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(2)) * 2 * t
    assert torch.allclose(moco_loss(q, k, t), expected)


def test_knn_predict_votes_by_similarity():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    classes = torch.tensor([0, 0, 1])
    scores = knn_predict(torch.tensor([[1.0, 0.05], [0.0, 1.0]]), bank, classes, k=1, num_classes=2, multilabel=False)
    assert scores.argmax(1).tolist() == [0, 1]
    tags = torch.tensor([[1, 0], [1, 1], [0, 1]])
    both = knn_predict(torch.tensor([[1.0, 0.0]]), bank, tags, k=2, num_classes=2, multilabel=True)
    assert both[0, 0] == pytest.approx(1.0) and 0.3 < float(both[0, 1]) < 0.7  # two close neighbours, one tags 1


def test_backbone_weights_are_the_classifier_without_its_head():
    from labelwise.models.config import ModelConfig

    cfg = ModelConfig(**MODEL)
    for dims in (2, 3):
        backbone = build_backbone(cfg, dims, 1)
        classifier = build_model(cfg, dims, 1, 5, "classification")
        own = set(backbone.state_dict())
        assert own == {k for k in classifier.state_dict() if not k.startswith("fc.")}
        classifier.load_state_dict(backbone.state_dict(), strict=False)
        classifier.fc = torch.nn.Identity()
        x = torch.randn(2, 1, *(16,) * dims)
        backbone.eval(), classifier.eval()
        assert torch.allclose(backbone.embed(x), classifier(x), atol=1e-6)
        assert backbone.features(x)[-1].shape[2:] == (2,) * dims and backbone.stride == 8


@pytest.mark.parametrize(
    "tasks",
    [{"mim": 1.0}, {"contrastive": 1.0}, {"multilabel": 1.0}, {"multilabel": 1.0, "mim": 0.5, "contrastive": 1.0}],
)
def test_pretrain_runs_any_subset_of_tasks(tmp_path, tagged, tasks):
    result = train(config(tagged / "tags.npz", "pretrain", options={"tasks": tasks}), tmp_path / "run")
    assert result.status == "completed" and 0 <= result.test["knn_accuracy"] <= 1
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_record = next(r for r in records if r["split"] == "train")
    assert {f"loss/{t}" for t in tasks} <= set(train_record)
    assert train_record["loss"] == pytest.approx(sum(w * train_record[f"loss/{t}"] for t, w in tasks.items()), rel=1e-4)
    weights = load_file(str(latest_checkpoint(tmp_path / "run" / "checkpoints") / "model.safetensors"))
    assert any(k.startswith("backbone.layer4") for k in weights)


def test_moco_keeps_a_momentum_encoder(tmp_path, tagged):
    cfg = config(
        tagged / "classes.npz",
        "pretrain",
        options={"tasks": {"contrastive": 1.0}, "contrastive": "moco", "momentum": 0.5},
    )
    result = train(cfg, tmp_path / "moco")
    assert result.status == "completed"
    weights = load_file(str(latest_checkpoint(tmp_path / "moco" / "checkpoints") / "model.safetensors"))
    online, key = weights["backbone.conv1.weight"], weights["momentum_backbone.conv1.weight"]
    assert not torch.equal(online, key)  # moved towards the online weights, not equal to them


def test_multilabel_task_needs_tags(tagged):
    cfg = config(tagged / "classes.npz", "pretrain")
    from labelwise.methods import METHODS

    with pytest.raises(Exception, match="multilabel needs image-level tags"):
        METHODS["pretrain"](cfg, load_data(cfg.data, keep_unlabelled=True))


def test_init_from_fine_tune_and_linear_probe(tmp_path, tagged):
    pre = tmp_path / "pre"
    train(config(tagged / "tags.npz", "pretrain", steps=4, options={"tasks": {"mim": 1.0, "contrastive": 1.0}}), pre)
    backbone = load_file(str(latest_checkpoint(pre / "checkpoints") / "model.safetensors"))

    probe = tmp_path / "probe"
    train(
        config(tagged / "classes.npz", "supervised", steps=3, model={"init_from": str(pre), "freeze_backbone": True}),
        probe,
    )
    after = load_file(str(latest_checkpoint(probe / "checkpoints") / "model.safetensors"))
    for key, value in backbone.items():
        if key.startswith("backbone."):
            name = "model." + key[len("backbone.") :]
            assert torch.equal(after[name], value), name  # frozen: weights and batch-norm statistics unchanged
    start = build_model(
        load_config(config(tagged / "classes.npz", "supervised").to_dict()).model, 2, 1, 2, "classification"
    ).state_dict()
    assert not torch.equal(after["model.fc.weight"], start["fc.weight"])  # the head trained

    tuned = tmp_path / "tuned"
    train(config(tagged / "classes.npz", "supervised", steps=3, model={"init_from": str(pre)}), tuned)
    after = load_file(str(latest_checkpoint(tuned / "checkpoints") / "model.safetensors"))
    assert not torch.equal(after["model.layer4.0.conv1.weight"], backbone["backbone.layer4.0.conv1.weight"])

    with pytest.raises(Exception, match="not a run directory"):
        train(config(tagged / "classes.npz", "supervised", model={"init_from": str(tmp_path)}), tmp_path / "bad")


def test_freeze_backbone_alone_probes_the_random_backbone(tmp_path, tagged):
    run = tmp_path / "random-probe"
    train(config(tagged / "classes.npz", "supervised", steps=3, model={"freeze_backbone": True}), run)
    first = load_file(str(run / "checkpoints" / "step-000003" / "model.safetensors"))
    from labelwise.methods import METHODS

    cfg = config(tagged / "classes.npz", "supervised")
    torch.manual_seed(0)
    fresh = METHODS["supervised"](cfg, load_data(cfg.data)).networks["model"].state_dict()
    assert torch.equal(first["model.layer1.0.conv1.weight"], fresh["layer1.0.conv1.weight"])  # frozen, same seed
    assert torch.equal(first["model.bn1.running_mean"], fresh["bn1.running_mean"])  # batch norm kept in eval mode
    assert not torch.equal(first["model.fc.weight"], fresh["fc.weight"])


@pytest.mark.parametrize("source", ["pretrained", "random", "random-old-checkpoint"])
def test_linear_probe_resumes_with_the_same_parameters_frozen(tmp_path, tagged, source):
    """A probe stopped at step 2 and resumed to step 4: the backbone (weights and batch-norm statistics) is still
    frozen and the init_from run is not read again (deleted here); the head goes on training."""
    model = {"freeze_backbone": True}
    if source == "pretrained":
        pre = tmp_path / "pre"
        train(config(tagged / "tags.npz", "pretrain", steps=2, options={"tasks": {"mim": 1.0}}), pre)
        backbone = load_file(str(latest_checkpoint(pre / "checkpoints") / "model.safetensors"))
        model["init_from"] = str(pre)
    run = tmp_path / "probe"
    assert train(config(tagged / "classes.npz", "supervised", steps=2, model=model), run).status == "completed"
    stopped = run / "checkpoints" / "step-000002"
    if source == "pretrained":
        shutil.rmtree(pre)
    if source == "random-old-checkpoint":  # written before checkpoints named the frozen parameters
        state = torch.load(stopped / "trainer_state.pt", weights_only=True)
        assert len(state.pop("frozen")["model"]) > 10
        torch.save(state, stopped / "trainer_state.pt")

    resumed = build_trainer(config(tagged / "classes.npz", "supervised", steps=4, model=model), run).fit(resume=True)
    assert resumed.status == "completed" and resumed.step == 4
    before = load_file(str(stopped / "model.safetensors"))
    after = load_file(str(run / "checkpoints" / "step-000004" / "model.safetensors"))
    head = {"model.fc.weight", "model.fc.bias"}
    assert head < set(after) and len(after) > 20
    for key in set(after) - head:
        assert torch.equal(after[key], before[key]), key  # frozen, batch-norm statistics included
        if source == "pretrained":
            assert torch.equal(after[key], backbone["backbone." + key[len("model.") :]]), key
    assert all(not torch.equal(after[key], before[key]) for key in head)
    frozen = torch.load(run / "checkpoints" / "step-000004" / "trainer_state.pt", weights_only=True)["frozen"]
    assert set(frozen["model"]) == {key[len("model.") :] for key in set(after) - head}  # saved for the next resume


def test_unet_mss_encoder_pretrains_and_starts_a_segmenter(tmp_path, tagged):
    unet = {"name": "unet_mss", "channels": [2, 4, 4, 4, 4], "norm": "batch"}
    pre = tmp_path / "pre-unet"
    result = train(
        config(
            tagged / "tags.npz", "pretrain", steps=2, options={"tasks": {"mim": 1.0, "contrastive": 1.0}}, model=unet
        ),
        pre,
    )
    assert result.status == "completed"
    weights = load_file(str(latest_checkpoint(pre / "checkpoints") / "model.safetensors"))
    seg = tmp_path / "seg"
    raw = {
        "name": "seg",
        "seed": 0,
        "method": {"name": "supervised", "loss": "dice_ce"},
        "data": {"synth": {"n": 40, "size": 16, "num_classes": 2}, "task": "segmentation", "batch_size": 4},
        "model": {**unet, "init_from": str(pre), "freeze_backbone": True},
        "trainer": {"max_steps": 2, "checkpoint_every": 2, "log_every": 1},
    }
    train(load_config(raw), seg)
    after = load_file(str(latest_checkpoint(seg / "checkpoints") / "model.safetensors"))
    encoder = [k for k in weights if k.startswith("backbone.encoder.")]
    assert encoder and all(torch.equal(after["model." + k[len("backbone.") :]], weights[k]) for k in encoder)


@pytest.mark.parametrize(
    "model",
    [
        {"name": "vit", "channels": [16], "layers": [1], "heads": [2], "patch_size": 4},
        {"name": "swin", "channels": [6], "layers": [1, 1, 1, 1], "heads": [1, 1, 1, 1], "patch_size": 1},
    ],
)
def test_transformers_pretrain_with_a_mask_token_and_start_a_probe(tmp_path, tagged, model):
    pre = tmp_path / "pre"
    result = train(config(tagged / "tags.npz", "pretrain", steps=2, model={**model, "norm": "batch"}), pre)
    assert result.status == "completed" and 0 <= result.test["knn_accuracy"] <= 1
    weights = load_file(str(latest_checkpoint(pre / "checkpoints") / "model.safetensors"))
    token_width = model["channels"][0]  # SimMIM: the mask token replaces patch-embedding tokens, not input pixels
    assert weights["mim_decoder.mask_token"].shape == (token_width,)
    probe = tmp_path / "probe"
    train(
        config(
            tagged / "classes.npz",
            "supervised",
            steps=2,
            model={**model, "init_from": str(pre), "freeze_backbone": True},
        ),
        probe,
    )
    after = load_file(str(latest_checkpoint(probe / "checkpoints") / "model.safetensors"))
    encoder = [k for k in weights if k.startswith("backbone.")]
    assert encoder and all(torch.equal(after["model." + k[len("backbone.") :]], weights[k]) for k in encoder)
    assert not torch.equal(after["model.head.weight"], torch.zeros_like(after["model.head.weight"]))


def test_mask_patch_must_cover_whole_tokens(tagged):
    from labelwise.methods import METHODS

    cfg = config(
        tagged / "tags.npz",
        "pretrain",
        options={"mask_patch": 2},
        model={"name": "vit", "channels": [16], "layers": [1], "heads": [2], "patch_size": 4},
    )
    with pytest.raises(Exception, match="multiple of vit's token patch 4"):
        METHODS["pretrain"](cfg, load_data(cfg.data, keep_unlabelled=True))


def test_swin_encoder_pretrains_and_starts_a_swin_unetr(tmp_path, tagged):
    swin = {"name": "swin_unetr", "channels": [12], "layers": [1, 1, 1, 1], "heads": [3, 3, 3, 3]}
    pre = tmp_path / "pre-swin"  # 16 x 16 images: too small for mim at Swin's stride 32; the encoder is size-free
    result = train(
        config(tagged / "tags.npz", "pretrain", steps=1, options={"tasks": {"contrastive": 1.0}}, model=swin), pre
    )
    assert result.status == "completed"
    weights = load_file(str(latest_checkpoint(pre / "checkpoints") / "model.safetensors"))
    raw = {
        "name": "seg",
        "seed": 0,
        "method": {"name": "supervised", "loss": "dice_ce"},
        "data": {"synth": {"n": 20, "size": 32, "num_classes": 2}, "task": "segmentation", "batch_size": 2},
        "model": {**swin, "norm": "group", "init_from": str(pre), "freeze_backbone": True},
        "trainer": {"max_steps": 1, "checkpoint_every": 1, "log_every": 1},
    }
    train(load_config(raw), tmp_path / "seg")
    after = load_file(str(latest_checkpoint(tmp_path / "seg" / "checkpoints") / "model.safetensors"))
    encoder = [k for k in weights if k.startswith("backbone.swinViT.")]
    assert encoder and all(torch.equal(after["model." + k[len("backbone.") :]], weights[k]) for k in encoder)
    assert any(k.startswith("model.decoder") for k in after)  # the segmenter's own decoder, trained from scratch
