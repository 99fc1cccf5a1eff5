"""The training loop's pieces: weight-decay groups, the schedule, accumulation, checkpointing of activations,
mixed precision, locking, the logit-scale clamp, and the configuration's validation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from clipcore.errors import ConfigError
from clipcore.train import TrainConfig, Trainer, World, is_no_decay, learning_rate, param_groups
from conformance.reference import openclip_model
from conformance.train_cases import TensorBatches, random_batch, tiny_config, tiny_model

# Tiny tensors: thread start-up would cost more than the work (and CI machines are shared).
pytestmark = pytest.mark.usefixtures("one_thread")


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = ours.double(), theirs.double()
    return float((ours - theirs).norm() / theirs.norm().clamp_min(1e-12))


# --- AdamW parameter groups -------------------------------------------------------------------------------


def openclip_training_rule(name: str, p: torch.Tensor) -> bool:
    """open_clip_train/main.py (3.x): which parameters get weight decay 0."""
    return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


@pytest.mark.parametrize(
    "config",
    [
        tiny_config(),
        tiny_config(init_logit_bias=-10.0, custom_text=True),
        tiny_config(vision={"layers": (1, 1, 1, 1), "width": 8, "image_size": 32, "head_width": 8}),
        tiny_config(vision={"ls_init_value": 0.1}, text={"proj_bias": True}),
    ],
    ids=["vit", "custom-text-bias", "resnet", "layerscale-projbias"],
)
def test_weight_decay_groups_follow_openclip_rule(config):
    """Same split as OpenCLIP's training script, on our model and on OpenCLIP's model of the same config."""
    ours = tiny_model(0, config)
    groups = param_groups(ours.named_parameters(), weight_decay=0.2)
    assert [g["weight_decay"] for g in groups] == [0.0, 0.2]
    theirs = dict(openclip_model(config, device="meta").named_parameters())
    assert set(dict(ours.named_parameters())) == set(theirs)
    expected_no_decay = [n for n, p in theirs.items() if openclip_training_rule(n, p)]
    assert sorted(groups[0]["names"]) == sorted(expected_no_decay)
    assert sorted(groups[1]["names"]) == sorted(set(theirs) - set(expected_no_decay))
    # the documented consequences
    no_decay = set(groups[0]["names"])
    text = config.text_prefix
    assert {"logit_scale", f"{text}ln_final.weight"} <= no_decay
    assert {f"{text}positional_embedding", f"{text}text_projection"} & no_decay == set()  # 2-d: decayed
    if config.vision.kind == "vit":
        assert {"visual.class_embedding", "visual.ln_post.weight"} <= no_decay
    else:
        assert "visual.bn1.weight" in no_decay and "visual.attnpool.positional_embedding" not in no_decay


def test_weight_decay_options():
    model = tiny_model()
    names = {g["weight_decay"]: set(g["names"]) for g in param_groups(model.named_parameters(), 0.1, True)}
    assert {"token_embedding.weight", "positional_embedding", "visual.positional_embedding"} <= names[0.0]
    model.visual.requires_grad_(False)
    trained = {n for g in param_groups(model.named_parameters(), 0.1) for n in g["names"]}
    assert not any(n.startswith("visual.") for n in trained)  # frozen parameters are not optimised at all
    assert is_no_decay("x.weight", torch.zeros(3)) and not is_no_decay("x.weight", torch.zeros(3, 3))


# --- the schedule -------------------------------------------------------------------------------------------


def test_warmup_then_cosine():
    lr = [learning_rate(s, 1.0, warmup=10, total=110) for s in range(111)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)  # OpenCLIP: base * (step + 1) / warmup
    assert lr[10] == pytest.approx(1.0)
    assert lr[60] == pytest.approx(0.5)  # halfway through the decay
    assert lr[110] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(lr[10:]))
    for s in range(10, 110):  # OpenCLIP's cosine_lr formula
        assert lr[s] == pytest.approx(0.5 * (1 + math.cos(math.pi * (s - 10) / 100)))
    assert learning_rate(50, 2.0, warmup=0, total=100, schedule="const") == 2.0
    with pytest.raises(ConfigError, match="'linear'"):
        learning_rate(0, 1.0, 0, 10, schedule="linear")


# --- gradients: accumulation and activation checkpointing ---------------------------------------------------


def gradients(
    options: dict, n: int = 12, micro: int = 1, config=None, seed: int = 0
) -> dict[str, torch.Tensor]:
    model = tiny_model(seed, config)
    trainer = Trainer(model, [], TrainConfig(steps=1, seed=None, **options), world=World())
    images, tokens = random_batch(seed + 1, n, model.config)
    trainer.forward_backward(list(zip(images.chunk(micro), tokens.chunk(micro), strict=True)))
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss", ["clip", "siglip"])
@pytest.mark.parametrize("micro", [2, 3, 4])
def test_accumulation_equals_one_big_batch(loss, micro):
    config = tiny_config(init_logit_bias=-5.0) if loss == "siglip" else None
    whole = gradients({"loss": loss}, config=config)
    accumulated = gradients({"loss": loss, "accum_freq": micro}, micro=micro, config=config)
    assert set(accumulated) == set(whole)
    worst = max((relative_error(accumulated[k], whole[k]), k) for k in whole)
    assert worst[0] <= 1e-5, worst  # logit_scale and logit_bias included: live in one pass only


def test_gradient_checkpointing_changes_nothing():
    plain = gradients({})
    checkpointed = gradients({"grad_checkpointing": True})
    assert all(torch.allclose(checkpointed[k], plain[k], rtol=1e-6, atol=1e-9) for k in plain)


# --- one step, and precision --------------------------------------------------------------------------------


def fixed_data(model, n: int = 16, batches: int = 1) -> TensorBatches:
    images, tokens = random_batch(7, n * batches, model.config)
    return TensorBatches(images, tokens, n)


def test_logit_scale_is_clamped_like_the_reference():
    model = tiny_model()
    with torch.no_grad():
        model.logit_scale.fill_(6.0)  # exp(6) = 403 > 100
    Trainer(model, fixed_data(model), TrainConfig(steps=1, lr=1e-4)).fit()
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))


@pytest.mark.parametrize("precision", ["amp_bf16", "amp_fp16"])
def test_mixed_precision_trains(precision):
    model = tiny_model()
    trainer = Trainer(model, fixed_data(model), TrainConfig(steps=25, lr=3e-3, precision=precision))
    history = trainer.fit()
    assert all(math.isfinite(r["loss"]) for r in history)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]  # one fixed batch: it must be memorised
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in model.parameters())
    assert (trainer.scaler is not None) == (precision == "amp_fp16")  # fp16 gradients need scaling


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "amp_bf16", "amp_fp16"])
def test_mixed_precision_trains_on_cuda(precision):
    model = tiny_model().cuda()
    history = Trainer(model, fixed_data(model), TrainConfig(steps=25, lr=3e-3, precision=precision)).fit()
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


def test_gradient_clipping_bounds_the_update():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(
        model, fixed_data(model), TrainConfig(steps=1, lr=1.0, weight_decay=0.0, grad_clip_norm=1e-9)
    ).fit()
    # AdamW's first step is lr * g / (|g| + eps): with |g| ~ 1e-9 clipped, eps = 1e-6 keeps it tiny.
    moved = max((model.state_dict()[k] - before[k]).abs().max().item() for k in before)
    assert 0 < moved < 1e-2


# --- locking (LiT) ------------------------------------------------------------------------------------------

# The towers provide OpenCLIP's lock_image_tower / lock_text_tower (the loop only calls them); which
# parameters each option freezes is compared with the reference in test_openclip.py.


def step_once(model, **options) -> dict[str, tuple[torch.Tensor, torch.Tensor, bool]]:
    """name -> (before, after, trainable) over the state dict, for one training step with `options`.

    (Freezing BatchNorm statistics may turn its weight and bias into buffers: the state dict still has them.)
    """
    parameters = {name for name, _ in model.named_parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(model, fixed_data(model), TrainConfig(steps=1, lr=1e-3, **options)).fit()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    after = model.state_dict()
    return {
        k: (before[k], after[k], k in trainable)
        for k in before.keys() & after.keys()
        if k in parameters or "running" in k
    }


def assert_frozen_exactly(changes, frozen) -> None:
    assert any(frozen(name) for name in changes) and not all(frozen(name) for name in changes)
    for name, (old, new, trainable) in changes.items():
        if frozen(name):
            assert torch.equal(old, new), f"{name} moved although frozen"
            assert not trainable, name
        elif "running" not in name:
            assert trainable, f"{name} is frozen"
            assert not torch.equal(old, new), f"{name} did not move although trainable"


def test_lock_image_tower():
    changes = step_once(tiny_model(), lock_image=True)
    assert_frozen_exactly(changes, lambda n: n.startswith("visual."))


def test_lock_image_tower_keeps_last_groups_trainable():
    # OpenCLIP's ViT groups: [embeddings + ln_pre], block 0, ..., [last block + ln_post], proj
    changes = step_once(tiny_model(), lock_image=True, lock_image_unlocked_groups=2)
    trainable = ("visual.proj", "visual.ln_post.", "visual.transformer.resblocks.1.")
    assert_frozen_exactly(changes, lambda n: n.startswith("visual.") and not n.startswith(trainable))


def test_lock_text_tower():
    text_parts = ("token_embedding", "positional_embedding", "transformer.", "ln_final", "text_projection")
    changes = step_once(tiny_model(), lock_text=True)
    assert_frozen_exactly(changes, lambda n: n.startswith(text_parts))


def test_lock_both_towers_trains_only_the_temperature():
    changes = step_once(tiny_model(), lock_image=True, lock_text=True)
    assert_frozen_exactly(changes, lambda n: n != "logit_scale")


def test_lock_resnet_with_frozen_batch_norm_statistics():
    config = tiny_config(vision={"layers": (1, 1, 1, 1), "width": 8, "image_size": 32, "head_width": 8})
    changes = step_once(tiny_model(0, config), lock_image=True, lock_image_freeze_bn_stats=True)
    assert "visual.bn1.running_mean" in changes  # a training step would update it, were it not frozen
    assert_frozen_exactly(changes, lambda n: n.startswith("visual."))


# --- configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"steps": 0}, "steps"),
        ({"precision": "fp8"}, "precision"),
        ({"accum_freq": 0}, "accum_freq"),
        ({"betas": (0.9, 1.5)}, "betas"),
        ({"loss": "triplet"}, "loss"),
        ({"siglip_exchange": "ring"}, "siglip_exchange"),
        ({"grad_clip_norm": -1.0}, "grad_clip_norm"),
        ({"lr": float("nan")}, "lr"),
    ],
)
def test_bad_configs_name_the_field(changes, field):
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{field} ="):
        TrainConfig(**{"steps": 10, **changes})


def test_data_must_be_batches():
    with pytest.raises(ConfigError, match="neither a BatchSource"):
        Trainer(tiny_model(), 42, TrainConfig(steps=1))
    with pytest.raises(ConfigError, match="no batches"):
        Trainer(tiny_model(), [], TrainConfig(steps=1)).fit()
