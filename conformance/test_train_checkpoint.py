"""Checkpoints: resuming after a crash ends with exactly the weights of an uninterrupted run; files are
written atomically, hold no pickle, and load in OpenCLIP as a `local-dir:` model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipcore.errors import CheckpointError
from clipcore.train import build_optimizer, checkpointing, latest_checkpoint, list_checkpoints
from conformance.train_cases import RESUME_SETUPS, random_batch, resume_trainer

REPO = Path(__file__).resolve().parents[1]
STEPS, STOP_AT = 6, 3


# Tiny tensors: thread start-up would cost more than the work (and CI machines are shared).
pytestmark = pytest.mark.usefixtures("one_thread")


class Stop(Exception):
    """Raised by a callback: the process 'dies' right after a step."""


def stop_after(step: int):
    def callback(trainer, record):
        if record["step"] == step:
            raise Stop

    return callback


def assert_same_training_state(a, b) -> None:
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), f"{name} differs"
    tensors_a, groups_a = checkpointing.optimizer_tensors(a.optimizer)
    tensors_b, groups_b = checkpointing.optimizer_tensors(b.optimizer)
    assert groups_a == groups_b and tensors_a.keys() == tensors_b.keys()
    assert all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)


@pytest.fixture(scope="module")
def uninterrupted():
    """setup -> (the trainer after STEPS uninterrupted steps, its history, the torch RNG state after it)."""
    out = {}
    for setup in RESUME_SETUPS:
        trainer = resume_trainer(setup, STEPS, None)
        history = trainer.fit()
        out[setup] = (trainer, history, torch.get_rng_state())
    return out


@pytest.mark.parametrize("setup", RESUME_SETUPS)
def test_resume_equals_uninterrupted(uninterrupted, setup, tmp_path):
    first = resume_trainer(setup, STEPS, tmp_path, checkpoint_every=STOP_AT)
    with pytest.raises(Stop):
        first.fit(callback=stop_after(STOP_AT))
    torch.manual_seed(1234)  # whatever the process did meanwhile
    del first  # every in-memory state is gone; a different initialisation proves the weights are loaded
    second = resume_trainer(setup, STEPS, tmp_path, model_seed=99)
    history = second.fit()
    expected, expected_history, expected_rng = uninterrupted[setup]
    assert [r["step"] for r in history] == list(range(STOP_AT + 1, STEPS + 1))
    assert [r["loss"] for r in history] == [r["loss"] for r in expected_history[STOP_AT:]]
    assert_same_training_state(second, expected)
    assert torch.equal(torch.get_rng_state(), expected_rng)
    if second.scaler is not None:
        assert second.scaler.state_dict() == expected.scaler.state_dict()


def test_resume_after_a_kill_during_a_checkpoint_write(uninterrupted, tmp_path):
    """A process killed while writing checkpoint STOP_AT + 1 leaves checkpoint STOP_AT as the newest complete
    one; resuming from it still ends exactly where the uninterrupted run does."""
    setup = "clip-patch-dropout"
    code = (
        "from conformance.train_cases import crash_while_saving; "
        f"crash_while_saving({setup!r}, {str(tmp_path)!r}, {STEPS}, {STOP_AT + 1})"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()[-2000:]  # SIGKILL, as intended
    assert [p.name for p in list_checkpoints(tmp_path)] == [f"step_{s:08d}" for s in range(1, STOP_AT + 1)]
    staging = checkpointing.staging_dir(tmp_path, STOP_AT + 1)
    assert (staging / checkpointing.MODEL_FILE).exists()  # the half-published checkpoint is there, ignored

    resumed = resume_trainer(setup, STEPS, tmp_path, model_seed=99, checkpoint_every=1)
    history = resumed.fit()
    assert history[0]["step"] == STOP_AT + 1
    assert_same_training_state(resumed, uninterrupted[setup][0])
    assert not staging.exists()  # cleaned up by the next write
    assert latest_checkpoint(tmp_path).name == f"step_{STEPS:08d}"


def test_checkpoint_files(tmp_path):
    trainer = resume_trainer("clip-patch-dropout", 4, tmp_path, checkpoint_every=1, keep_checkpoints=2)
    trainer.fit()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]  # pruned
    folder = latest_checkpoint(tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        [
            "open_clip_model.safetensors",
            "open_clip_config.json",
            "optimizer.safetensors",
            "train_state.json",
            "rng_rank0.json",
        ]
    )  # safetensors and JSON only: nothing to unpickle
    state = json.loads((folder / "train_state.json").read_text())
    assert state["step"] == 4 and state["format"] == checkpointing.CHECKPOINT_FORMAT
    assert state["train_config"]["steps"] == 4 and state["world_size"] == 1
    saved = checkpointing.read_tensors(folder / "open_clip_model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in trainer.model.state_dict().items())


def test_checkpoint_loads_in_openclip(tmp_path):
    """The checkpoint folder is an OpenCLIP `local-dir:` model with the same outputs."""
    import open_clip

    trainer = resume_trainer("clip-patch-dropout", 2, tmp_path)
    trainer.fit()
    ours = trainer.model.eval()
    theirs = open_clip.create_model(f"local-dir:{latest_checkpoint(tmp_path)}").eval()
    images, tokens = random_batch(5, 4, ours.config)
    with torch.no_grad():
        assert torch.allclose(theirs.encode_image(images), ours.encode_image(images), rtol=1e-5, atol=1e-6)
        assert torch.allclose(theirs.encode_text(tokens), ours.encode_text(tokens), rtol=1e-5, atol=1e-6)


def test_broken_checkpoints_are_refused(tmp_path):
    trainer = resume_trainer("clip-patch-dropout", 1, tmp_path)
    trainer.fit()
    folder = latest_checkpoint(tmp_path)

    other_model = resume_trainer("siglip-fp16-accum2-clip", 2, tmp_path)  # has a logit_bias: other keys
    with pytest.raises(CheckpointError, match="does not fit this model"):
        other_model.fit()

    (folder / "train_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"train_state\.json cannot be read as JSON"):
        resume_trainer("clip-patch-dropout", 2, tmp_path).fit()

    (folder / "train_state.json").write_text(json.dumps({"format": "something else", "step": 1}))
    with pytest.raises(CheckpointError, match="not a clipcore training checkpoint"):
        resume_trainer("clip-patch-dropout", 2, tmp_path).fit()

    (folder / "optimizer.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=r"optimizer\.safetensors"):
        checkpointing.read_tensors(folder / "optimizer.safetensors")


def test_resume_with_other_trainable_parameters_is_refused(tmp_path):
    resume_trainer("clip-patch-dropout", 1, tmp_path).fit()
    changed = resume_trainer("clip-patch-dropout", 2, tmp_path)
    changed.model.visual.conv1.weight.requires_grad_(False)  # e.g. a tower locked now but not before
    changed.optimizer = build_optimizer(changed.model, 1e-3, 0.2)
    with pytest.raises(CheckpointError, match="other parameters than the model now trains"):
        changed.fit()
