"""AdamW with OpenCLIP's two parameter groups: no weight decay on gains, biases and the logit scale.

The rule is OpenCLIP's training script's (`open_clip_train/main.py`, 3.x), applied to the dotted parameter
name `n` and the tensor `p`:

    no decay  <=>  p.ndim < 2  or  'bn' in n  or  'ln' in n  or  'bias' in n  or  'logit_scale' in n

So LayerNorm/BatchNorm gains (1-d, and names containing 'ln'/'bn'), every bias, the class embedding (1-d),
the logit scale and bias (0-d), LayerScale gammas and per-head scales (< 2-d) are not decayed. Note what
this rule does NOT exclude: the 2-d token and positional embeddings and the projections are decayed, as in
the reference. `exclude_embeddings=True` also spares parameters whose name contains 'embedding' (a common
variant); it is off by default to stay with the reference.

Frozen parameters (requires_grad False, e.g. a locked tower) are left out of the optimizer entirely, so an
optimizer step cannot move them (AdamW's decoupled weight decay would otherwise shrink them).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["NO_DECAY_NAME_PARTS", "build_optimizer", "is_no_decay", "param_groups"]

# Substrings of a parameter's name that exempt it from weight decay (besides having fewer than 2 dims).
NO_DECAY_NAME_PARTS = ("bn", "ln", "bias", "logit_scale")


def is_no_decay(name: str, param: torch.Tensor, exclude_embeddings: bool = False) -> bool:
    """True when `param` (called `name` in named_parameters()) gets no weight decay; see the module doc."""
    if param.ndim < 2 or any(part in name for part in NO_DECAY_NAME_PARTS):
        return True
    return exclude_embeddings and "embedding" in name


def param_groups(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    exclude_embeddings: bool = False,
) -> list[dict]:
    """[{no-decay params, weight_decay 0}, {the rest, weight_decay}], trainable parameters only, in order.

    Each group also carries the parameters' names (`names`), so a checkpoint can check that the optimizer
    state it restores belongs to the same parameters.
    """
    groups = {True: {"params": [], "names": [], "weight_decay": 0.0}}
    groups[False] = {"params": [], "names": [], "weight_decay": weight_decay}
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        group = groups[is_no_decay(name, param, exclude_embeddings)]
        group["params"].append(param)
        group["names"].append(name)
    return [groups[True], groups[False]]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
    exclude_embeddings: bool = False,
) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters, grouped by `param_groups`.

    The defaults are OpenCLIP's for ViTs (for ResNets it uses betas (0.9, 0.999) and eps 1e-8).
    """
    groups = param_groups(model.named_parameters(), weight_decay, exclude_embeddings)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
