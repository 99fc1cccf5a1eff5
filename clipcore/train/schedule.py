"""The learning rate as a function of the optimizer step: linear warmup, then a cosine decay to zero.

This is OpenCLIP's `cosine_lr` (and `const_lr`): during warmup, step s (0-based) gets base_lr * (s + 1) /
warmup, so the first step already moves; afterwards lr = base_lr * (1 + cos(pi * e / (total - warmup))) / 2
with e = s - warmup, reaching 0 at s = total. A pure function of the step, so a resumed run needs no
scheduler state: the step count in the checkpoint is enough.
"""

from __future__ import annotations

import math

import torch

from clipcore.errors import ConfigError

__all__ = ["SCHEDULES", "learning_rate", "set_learning_rate"]


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# name -> the factor applied to base_lr after warmup, as a function of progress in [0, 1]
SCHEDULES = {"cosine": _cosine, "const": lambda progress: 1.0}


def learning_rate(step: int, base_lr: float, warmup: int, total: int, schedule: str = "cosine") -> float:
    """The learning rate for optimizer step `step` (0-based) of a `total`-step run."""
    if schedule not in SCHEDULES:
        raise ConfigError(
            f"learning-rate schedule {schedule!r} is unknown", fix=f"use one of {sorted(SCHEDULES)}"
        )
    if step < warmup:
        return base_lr * (step + 1) / warmup
    decay_steps = total - warmup
    progress = (step - warmup) / decay_steps if decay_steps > 0 else 1.0
    return base_lr * SCHEDULES[schedule](min(progress, 1.0))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
