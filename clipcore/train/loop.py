"""The training loop: contrastive image-text training of a CLIP model, readable from top to bottom.

    trainer = Trainer(model, data, TrainConfig(steps=1000, lr=5e-4, warmup=100))
    history = trainer.fit()        # resumes from config.checkpoint_dir when it holds a checkpoint

One optimizer step:
1. set the learning rate for this step (warmup + cosine, a pure function of the step);
2. forward and backward over `accum_freq` micro-batches. With accumulation, the features of all micro-batches
   are first computed without a graph; then each micro-batch is encoded again with its graph and scored
   against the cached features of the others, so every step optimises the loss of the whole accumulated
   batch (all negatives), at the memory cost of one micro-batch (OpenCLIP's scheme);
3. with several processes, sum the gradients over ranks and rescale them to the whole-batch gradient;
4. (unscale, clip,) AdamW step; clamp the logit scale to [0, ln 100] like the reference's training;
5. every `checkpoint_every` steps, and at the end, write a checkpoint atomically.

Resuming restores weights, optimizer state, grad scaler, step and every random generator; the data position
follows from the step (data sources replay a seeded order from any batch index), so a resumed run ends with
exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from clipcore.errors import CheckpointError, ConfigError
from clipcore.train import checkpointing
from clipcore.train.distributed import World, all_mean, reduce_gradients
from clipcore.train.loss import LOSSES, SIGLIP_EXCHANGES, ClipLoss, SigLipLoss, make_loss
from clipcore.train.optim import build_optimizer
from clipcore.train.schedule import SCHEDULES, learning_rate, set_learning_rate

__all__ = ["PRECISIONS", "BatchSource", "TrainConfig", "Trainer", "train"]

logger = logging.getLogger("clipcore.train")

# OpenCLIP's training precisions that keep fp32 weights: name -> autocast dtype (None: no autocast).
# fp16 needs a gradient scaler (its range is too small for raw gradients); bf16 does not.
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "amp": torch.float16,
    "amp_fp16": torch.float16,
    "amp_bf16": torch.bfloat16,
    "amp_bfloat16": torch.bfloat16,
}

# The reference clamps the learned temperature's log after every step: exp(logit_scale) stays in [1, 100].
LOGIT_SCALE_MAX = math.log(100.0)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (and is saved in its checkpoints).

    Defaults are OpenCLIP's training defaults for ViTs, except `warmup` (OpenCLIP: 10000 steps).

    steps: optimizer steps in the whole run (each uses `accum_freq` micro-batches); the schedule spans them.
    lr, weight_decay, betas, eps: AdamW (see optim.py for which parameters are not decayed;
        `exclude_embeddings_from_decay` also spares parameters named '*embedding*').
    warmup, schedule: linear warmup steps, then 'cosine' (to 0 at `steps`) or 'const'.
    precision: 'fp32', 'amp_bf16' (= 'amp_bfloat16'), or 'amp_fp16' (= 'amp', with a gradient scaler).
    grad_clip_norm: clip the global gradient norm (after un-scaling); None: no clipping.
    grad_checkpointing: recompute transformer blocks in backward (model.set_grad_checkpointing).
    loss: 'clip' (local_loss, gather_with_grad as OpenCLIP) or 'siglip' (siglip_exchange).
    lock_image*, lock_text*: freeze towers (model.lock_image_tower / lock_text_tower, OpenCLIP's options).
    checkpoint_dir, checkpoint_every, keep_checkpoints, resume: where and how often to write checkpoints
        (always at the end when a folder is set), how many to keep, and whether `fit` resumes from the newest.
    log_every: steps between log lines (logger 'clipcore.train'; every step is in the returned history).
    seed: seeds torch/python/numpy (plus the rank) at the start of a fresh run; None leaves them alone.
    deterministic: torch.use_deterministic_algorithms(True) for the process (a global switch).
    """

    steps: int
    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    exclude_embeddings_from_decay: bool = False
    warmup: int = 0
    schedule: str = "cosine"
    accum_freq: int = 1
    precision: str = "fp32"
    grad_clip_norm: float | None = None
    grad_checkpointing: bool = False
    loss: str = "clip"
    local_loss: bool = False
    gather_with_grad: bool = False
    siglip_exchange: str = "bidir"
    lock_image: bool = False
    lock_image_unlocked_groups: int = 0
    lock_image_freeze_bn_stats: bool = False
    lock_text: bool = False
    lock_text_unlocked_layers: int = 0
    lock_text_freeze_layer_norm: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int | None = 2
    resume: bool = True
    log_every: int = 10
    seed: int | None = 0
    deterministic: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        for name, allowed in _RULES.items():
            value = getattr(self, name)
            problem = allowed(value)
            if problem:
                raise ConfigError(
                    f"TrainConfig.{name} = {value!r} is not allowed: it must be {problem}",
                    fix=f"set {name} to {problem}",
                )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out


def _rule(check: Callable[[Any], bool], allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if check(v) else allowed


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_RULES = {
    "steps": _rule(lambda v: _is_int(v) and v > 0, "a positive integer"),
    "lr": _rule(lambda v: _is_num(v) and v >= 0, "a non-negative number"),
    "weight_decay": _rule(lambda v: _is_num(v) and v >= 0, "a non-negative number"),
    "betas": _rule(
        lambda v: len(v) == 2 and all(_is_num(b) and 0 <= b < 1 for b in v), "two numbers in [0, 1)"
    ),
    "eps": _rule(lambda v: _is_num(v) and v > 0, "a positive number"),
    "warmup": _rule(lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "schedule": _rule(lambda v: v in SCHEDULES, f"one of {sorted(SCHEDULES)}"),
    "accum_freq": _rule(lambda v: _is_int(v) and v > 0, "a positive integer"),
    "precision": _rule(lambda v: v in PRECISIONS, f"one of {sorted(PRECISIONS)}"),
    "grad_clip_norm": _rule(lambda v: v is None or (_is_num(v) and v > 0), "None or a positive number"),
    "loss": _rule(lambda v: v in LOSSES, f"one of {LOSSES}"),
    "siglip_exchange": _rule(lambda v: v in SIGLIP_EXCHANGES, f"one of {SIGLIP_EXCHANGES}"),
    "lock_image_unlocked_groups": _rule(lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "lock_text_unlocked_layers": _rule(lambda v: _is_int(v) and v >= 0, "a non-negative integer"),
    "checkpoint_every": _rule(lambda v: v is None or (_is_int(v) and v > 0), "None or a positive integer"),
    "keep_checkpoints": _rule(lambda v: v is None or (_is_int(v) and v > 0), "None or a positive integer"),
    "log_every": _rule(lambda v: _is_int(v) and v > 0, "a positive integer"),
    "seed": _rule(lambda v: v is None or _is_int(v), "None or an integer"),
}


# --- where batches come from --------------------------------------------------------------------------------


@runtime_checkable
class BatchSource(Protocol):
    """A replayable stream of (images, tokens) batches: `len()` batches per epoch, each epoch in a fixed
    (e.g. seeded) order, enterable at any batch index. `clipcore.train.data.CaptionBatches` is one."""

    def __len__(self) -> int: ...

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class _SequenceSource:
    """Any re-iterable with a length (a list of batches, a DataLoader) as a BatchSource. Resuming skips the
    first batches of the epoch, so it is exact only if iterating again gives the same batches."""

    def __init__(self, batches: Sequence) -> None:
        self.data = batches

    def __len__(self) -> int:
        return len(self.data)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        it = iter(self.data)
        for _ in range(start):
            next(it)
        return it


def as_batch_source(data: Any) -> BatchSource:
    if isinstance(data, BatchSource):
        return data
    try:
        len(data)
        iter(data)
    except TypeError:
        raise ConfigError(
            f"the training data ({type(data).__name__}) is neither a BatchSource nor a sized iterable "
            "of batches",
            fix="pass clipcore.train.data.CaptionBatches, a list of (images, tokens) pairs, or a DataLoader",
        ) from None
    return _SequenceSource(data)


def _micro_batches(source: BatchSource, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Micro-batches from global index `start` on, epoch after epoch."""
    per_epoch = len(source)
    if per_epoch == 0:
        raise ConfigError("the training data has no batches", fix="add data or lower the batch size")
    epoch, index = divmod(start, per_epoch)
    while True:
        yield from source.batches(epoch, index)
        epoch, index = epoch + 1, 0


# --- the trainer --------------------------------------------------------------------------------------------


class Trainer:
    """Trains `model` (a clipcore CLIP, or anything with encode_image/encode_text/logit_scale) on `data`.

    `data` yields this rank's share of each batch: with several processes every rank passes its own
    `CaptionBatches(..., rank=r, world_size=n)`. `model_config` (default: `model.config`) and
    `preprocess_config` (default: the data's `preprocess`) go into the checkpoints, so that a checkpoint
    folder loads as an OpenCLIP `local-dir:` model.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        config: TrainConfig,
        *,
        device: str | torch.device | None = None,
        world: World | None = None,
        model_config: Any = None,
        preprocess_config: Any = None,
    ) -> None:
        self.config = config
        self.world = world or World.current()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device)
        self.data = as_batch_source(data)
        self.model_config = model_config if model_config is not None else getattr(model, "config", None)
        self.preprocess_config = preprocess_config or getattr(data, "preprocess", None)
        if config.deterministic:
            torch.use_deterministic_algorithms(True)
        if config.seed is not None:  # dropout & co; each rank draws differently, reproducibly
            _seed_everything(config.seed + self.world.rank)

        self._apply_model_options()
        self.loss: ClipLoss | SigLipLoss = make_loss(
            config.loss,
            local_loss=config.local_loss,
            gather_with_grad=config.gather_with_grad,
            siglip_exchange=config.siglip_exchange,
            world=self.world,
        )
        self.optimizer = build_optimizer(
            self.model,
            config.lr,
            config.weight_decay,
            config.betas,
            config.eps,
            config.exclude_embeddings_from_decay,
        )
        self.amp_dtype = PRECISIONS[config.precision]
        needs_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type) if needs_scaler else None
        shared = [
            p for p in (self.model.logit_scale, getattr(self.model, "logit_bias", None)) if p is not None
        ]
        self.shared_params = [p for p in shared if p.requires_grad]
        self.tower_params = [
            p for p in self.model.parameters() if p.requires_grad and all(p is not s for s in shared)
        ]
        self.step = 0
        self.history: list[dict[str, Any]] = []

    def _apply_model_options(self) -> None:
        """Locking (LiT-style frozen towers) and gradient checkpointing, through the model's own methods
        (OpenCLIP's names and arguments). Locking happens before the optimizer is built, so frozen
        parameters are not in it at all."""
        cfg = self.config
        if cfg.lock_image:
            self._call_model(
                "lock_image_tower",
                unlocked_groups=cfg.lock_image_unlocked_groups,
                freeze_bn_stats=cfg.lock_image_freeze_bn_stats,
            )
        if cfg.lock_text:
            self._call_model(
                "lock_text_tower",
                unlocked_layers=cfg.lock_text_unlocked_layers,
                freeze_layer_norm=cfg.lock_text_freeze_layer_norm,
            )
        if cfg.grad_checkpointing:
            self._call_model("set_grad_checkpointing", enable=True)

    def _call_model(self, method: str, **kwargs: Any) -> None:
        if not callable(getattr(self.model, method, None)):
            raise ConfigError(
                f"the training config asks for {method} but {type(self.model).__name__} has no such method",
                fix=f"use a clipcore CLIP model (it has {method}) or turn the option off",
            )
        getattr(self.model, method)(**kwargs)

    # --- one step ------------------------------------------------------------------------------------------

    def autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def encode(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised (image features, text features)."""
        return self.model.encode_image(images, normalize=True), self.model.encode_text(texts, normalize=True)

    def _logit_params(self, live: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(exp(logit_scale), logit_bias), detached unless `live`."""
        scale, bias = self.model.logit_scale, getattr(self.model, "logit_bias", None)
        if not live:
            scale, bias = scale.detach(), (None if bias is None else bias.detach())
        return scale.exp(), bias

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def forward_backward(self, micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Accumulate into .grad the gradient of the loss over all micro-batches together; returns the loss.

        With one micro-batch this is plain forward + backward. With several, each backward pass treats the
        other micro-batches' cached features as constants; the logit scale and bias are live in only one of
        the passes, so the sum of the passes is exactly the gradient of the whole accumulated batch's loss.
        (OpenCLIP keeps them live in every pass, which multiplies their gradient by accum_freq.)
        """
        batches = [
            (i.to(self.device, non_blocking=True), t.to(self.device, non_blocking=True))
            for i, t in micro_batches
        ]
        if len(batches) == 1:
            with self.autocast():
                loss = self.loss(*self.encode(*batches[0]), *self._logit_params(live=True))
            self._backward(loss)
            return loss.detach()

        with torch.no_grad(), self.autocast():
            cached = [self.encode(images, texts) for images, texts in batches]
        for j, (images, texts) in enumerate(batches):
            with self.autocast():
                live = self.encode(images, texts)
                features = [
                    torch.cat([c[k] for c in cached[:j]] + [live[k]] + [c[k] for c in cached[j + 1 :]])
                    for k in (0, 1)
                ]
                loss = self.loss(*features, *self._logit_params(live=j == 0))
            self._backward(loss)
        return loss.detach()

    def train_step(self, micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        """One optimizer step on `accum_freq` micro-batches; returns the step's record."""
        cfg, started = self.config, time.perf_counter()
        self.model.train()
        lr = learning_rate(self.step, cfg.lr, cfg.warmup, cfg.steps, cfg.schedule)
        set_learning_rate(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)

        loss = self.forward_backward(micro_batches)
        reduce_gradients(self.tower_params, self.shared_params, self.world, self.loss.tower_grad_copies)
        if self.scaler is not None:
            if cfg.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if cfg.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
            self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        self.step += 1

        record = {
            "step": self.step,
            "loss": all_mean(loss.float(), self.world),
            "lr": lr,
            "logit_scale": float(self.model.logit_scale.detach().exp().mean()),
            "seconds": time.perf_counter() - started,
        }
        self.history.append(record)
        return record

    # --- the run -------------------------------------------------------------------------------------------

    def fit(self, callback: Callable[[Trainer, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Train up to `config.steps` (resuming first, if asked and possible); returns this run's records.

        `callback(trainer, record)` runs after every step (e.g. to evaluate or stop early by raising).
        """
        cfg = self.config
        if cfg.checkpoint_dir is not None and cfg.resume:
            self.resume()
        stream = _micro_batches(self.data, self.step * cfg.accum_freq)
        while self.step < cfg.steps:
            record = self.train_step([next(stream) for _ in range(cfg.accum_freq)])
            if self.world.is_main and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                logger.info(
                    "step %d/%d  loss %.4f  lr %.3g  logit scale %.2f  %.3fs",
                    self.step,
                    cfg.steps,
                    record["loss"],
                    record["lr"],
                    record["logit_scale"],
                    record["seconds"],
                )
            due = cfg.checkpoint_every is not None and self.step % cfg.checkpoint_every == 0
            if cfg.checkpoint_dir is not None and (due or self.step == cfg.steps):
                self.save_checkpoint()
            if callback is not None:
                callback(self, record)
        return self.history

    # --- checkpoints ---------------------------------------------------------------------------------------

    def _barrier(self) -> None:
        if self.world.size > 1:
            dist.barrier()

    def save_checkpoint(self, root: str | Path | None = None) -> Path:
        """Write the current state under `root` (default: config.checkpoint_dir); every rank must call this.

        Ranks share the folder (a shared file system): each writes its random-generator state into the
        staging folder, then rank 0 writes the rest and renames it into place.
        """
        root = Path(root if root is not None else self.config.checkpoint_dir)
        staging = checkpointing.staging_dir(root, self.step)
        if self.world.is_main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self._barrier()
        checkpointing.write_rng(staging, self.world.rank, checkpointing.capture_rng())
        self._barrier()
        folder = checkpointing.checkpoint_dir(root, self.step)
        if self.world.is_main:
            optimizer_tensors, groups = checkpointing.optimizer_tensors(self.optimizer)
            state = {
                "train_config": self.config.to_dict(),
                "world_size": self.world.size,
                "optimizer_groups": groups,
                "grad_scaler": self.scaler.state_dict() if self.scaler is not None else None,
            }
            folder = checkpointing.write_checkpoint(
                root,
                self.step,
                model_state=self.model.state_dict(),
                optimizer_state=optimizer_tensors,
                state=state,
                rng_states={},
                model_config=self._openclip_config(),
                keep=self.config.keep_checkpoints,
            )
        self._barrier()
        return folder

    def _openclip_config(self) -> dict[str, Any] | None:
        """open_clip_config.json: the model config, and the preprocessing when known."""
        if self.model_config is None or not hasattr(self.model_config, "to_openclip"):
            return None
        out: dict[str, Any] = {"model_cfg": self.model_config.to_openclip()}
        p = self.preprocess_config
        if p is not None:
            # a spec PreprocessConfig (image_size, fill_color) or a clipcore Preprocess (size (h, w), fill)
            size = getattr(p, "image_size", None) or getattr(p, "size", None)
            out["preprocess_cfg"] = {
                "size": size if isinstance(size, int) or size[0] != size[1] else size[0],
                "mean": list(p.mean),
                "std": list(p.std),
                "interpolation": p.interpolation,
                "resize_mode": p.resize_mode,
                "fill_color": getattr(p, "fill_color", getattr(p, "fill", 0)),
            }
        return out

    def resume(self, folder: str | Path | None = None) -> bool:
        """Restore from `folder` (default: the newest checkpoint in config.checkpoint_dir); False if none."""
        if folder is None:
            if self.config.checkpoint_dir is None:
                return False
            folder = checkpointing.latest_checkpoint(self.config.checkpoint_dir)
            if folder is None:
                return False
        folder = Path(folder)
        state, model_state = checkpointing.read_checkpoint(folder)
        try:
            self.model.load_state_dict(model_state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(
                f"the model in {folder} does not fit this model: {err}",
                fix="resume with the model configuration that wrote the checkpoint",
            ) from None
        checkpointing.load_optimizer(self.optimizer, folder, state["optimizer_groups"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        rng_file = folder / f"rng_rank{self.world.rank}.json"
        if rng_file.exists():
            checkpointing.restore_rng(checkpointing.read_json(rng_file))
        else:
            logger.warning(
                "%s has no random state for rank %d: this rank continues unseeded", folder, self.world.rank
            )
        self.step = int(state["step"])
        if self.world.is_main:
            logger.info("resumed from %s at step %d", folder, self.step)
        return True


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def train(model: nn.Module, data: Any, config: TrainConfig, **kwargs: Any) -> list[dict[str, Any]]:
    """`Trainer(model, data, config, **kwargs).fit()`: train, resuming if possible; the step records."""
    return Trainer(model, data, config, **kwargs).fit()
