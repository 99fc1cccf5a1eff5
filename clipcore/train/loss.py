"""The two contrastive objectives of CLIP training, single- or multi-process.

ClipLoss (CLIP, Radford et al. 2021): the image-text similarity matrix, scaled by the learned temperature
exp(logit_scale), is read both ways as a classification problem: each image must pick its own caption among
all captions of the batch, and each caption its own image. The loss is the mean of the two cross-entropies.

SigLipLoss (SigLIP, Zhai et al. 2023): every image-text pair is an independent binary problem, positive on
the diagonal and negative elsewhere, with logits scale * sim + bias. The sum of -log sigmoid(sign * logit)
over all pairs is divided by the number of images.

Both take features that are already L2-normalised and the *exponentiated* scale, as OpenCLIP's losses do.
Values and gradients match OpenCLIP 3.3.0's `ClipLoss`/`SigLipLoss` for every option (the conformance suite
checks this on 1, 2 and 4 processes).

Across processes, each rank holds a share of the batch. `tower_grad_copies` tells the training loop how the
feature gradients that a backward pass produces relate to the whole-batch gradient, so that after summing
over ranks it can rescale them exactly (see `distributed.reduce_gradients`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clipcore.errors import ConfigError, ShapeError
from clipcore.train.distributed import (
    World,
    all_gather_with_grad,
    all_reduce_with_grad,
    exchange,
    gather_features,
)

__all__ = ["SIGLIP_EXCHANGES", "ClipLoss", "SigLipLoss", "make_loss"]


def _check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ShapeError(
            f"the loss needs image and text features of the same shape (batch, embed_dim), got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}",
            fix="pass one caption per image, both encoded to the joint embedding",
        )


class ClipLoss(nn.Module):
    """Symmetric cross-entropy over the image-text logits (OpenCLIP's `ClipLoss`).

    Options, as in OpenCLIP (they only matter with more than one process):
    - `local_loss`: each rank scores only its own images and captions against everyone's (a block of rows of
      the full matrix) instead of computing the whole matrix. The mean over ranks is the whole-batch loss.
    - `gather_with_grad`: other ranks' features are gathered differentiably, so gradients reach the rank that
      produced them. Without it, only a rank's own features get a gradient; with `local_loss` that gradient
      then misses the terms where those features serve as other ranks' negatives (an approximation).
    """

    def __init__(
        self, local_loss: bool = False, gather_with_grad: bool = False, world: World | None = None
    ) -> None:
        super().__init__()
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.world = world or World.current()

    @property
    def tower_grad_copies(self) -> int:
        """The summed-over-ranks feature gradient divided by the whole-batch feature gradient.

        Without `local_loss` and without `gather_with_grad` every rank computes the whole-batch loss and only
        its own slot is live, so each rank already holds its exact share: 1. Otherwise the gradient reaching a
        rank is the sum over ranks of per-rank losses whose mean is the batch loss: world size. (With
        `local_loss` but no `gather_with_grad` the result is the reference's approximation.)
        """
        replicated = not self.local_loss and not self.gather_with_grad
        return 1 if replicated else self.world.size

    def logits(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits_per_image, logits_per_text, labels): row i's right answer is column labels[i]."""
        n = image_features.shape[0]
        if self.world.size == 1:
            per_image = logit_scale * image_features @ text_features.T
            per_text = logit_scale * text_features @ image_features.T
            labels = torch.arange(n, device=image_features.device)
        else:
            all_images, all_texts = gather_features(
                image_features,
                text_features,
                self.world,
                local_loss=self.local_loss,
                gather_with_grad=self.gather_with_grad,
            )
            if self.local_loss:
                per_image = logit_scale * image_features @ all_texts.T
                per_text = logit_scale * text_features @ all_images.T
                labels = torch.arange(n, device=image_features.device) + n * self.world.rank
            else:
                per_image = logit_scale * all_images @ all_texts.T
                per_text = per_image.T
                labels = torch.arange(per_image.shape[0], device=image_features.device)
        if logit_bias is not None:
            per_image, per_text = per_image + logit_bias, per_text + logit_bias
        return per_image, per_text, labels

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _check_features(image_features, text_features)
        per_image, per_text, labels = self.logits(image_features, text_features, logit_scale, logit_bias)
        return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2


# How SigLipLoss obtains the other ranks' captions. All give the same loss; they differ in communication.
SIGLIP_EXCHANGES = ("bidir", "shift", "reduce", "gather")


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss (OpenCLIP's `SigLipLoss`).

    Each rank scores its own images against every caption of the global batch: its own captions give the
    positives (the diagonal) and negatives, every other rank's captions only negatives. Those captions travel
    with gradient, by one of `SIGLIP_EXCHANGES`:
    - 'bidir' (default): around the ring, receiving from both neighbours at once, (world-1)/2 rounds;
    - 'shift': around the ring in one direction, world-1 rounds;
    - 'reduce': one masked all-reduce per rank; 'gather': one all-gather.
    """

    def __init__(self, exchange: str = "bidir", world: World | None = None) -> None:
        super().__init__()
        if exchange not in SIGLIP_EXCHANGES:
            raise ConfigError(
                f"SigLIP exchange {exchange!r} is unknown",
                fix=f"use one of {SIGLIP_EXCHANGES}",
            )
        self.exchange = exchange
        self.world = world or World.current()

    @property
    def tower_grad_copies(self) -> int:
        """Each rank's loss is its share; the batch loss is their mean (see ClipLoss.tower_grad_copies)."""
        return self.world.size

    @staticmethod
    def pair_loss(
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None,
        with_positives: bool,
    ) -> torch.Tensor:
        """-sum log sigmoid(sign * logit) / n_images; sign +1 on the diagonal if with_positives, else -1."""
        logits = logit_scale * image_features @ text_features.T
        if logit_bias is not None:
            logits = logits + logit_bias
        signs = torch.full_like(logits, -1.0, dtype=image_features.dtype)
        if with_positives:
            signs.diagonal().fill_(1.0)
        return -F.logsigmoid(signs * logits).sum() / image_features.shape[0]

    def _other_ranks_texts(self, text_features: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
        """(caption features, weight) for every other rank's captions, received differentiably.

        Weight 0 marks a copy that is not scored but must stay in the graph: with 'reduce', the all-reduce of
        this rank's own captions is, in backward, the collective that brings this rank the gradient of its
        captions from everyone else. Every rank's graph must have the same shape, or the collectives that
        autograd runs in backward would pair up in a different order on different ranks; so that copy is
        scored like the others and weighted 0 (as OpenCLIP does).
        """
        world, others = self.world, []
        if self.exchange == "gather":  # one collective: every rank's captions at once
            everyone = all_gather_with_grad(text_features)
            others = [(t, 1.0) for rank, t in enumerate(everyone) if rank != world.rank]
        elif self.exchange == "reduce":
            for rank in range(world.size):
                # Everyone contributes zeros except `rank`: the sum is rank's captions, on every rank.
                # The zeros are a product with our features, not a fresh tensor, so that every rank's copy
                # is in the graph and every rank runs this all-reduce's backward (a collective), in the
                # same order.
                mine = text_features * float(rank == world.rank)
                received = all_reduce_with_grad(mine)
                others.append((received, 0.0 if rank == world.rank else 1.0))
        elif self.exchange == "shift":
            passing = text_features
            for _ in range(world.size - 1):
                (passing,) = exchange([passing], [world.right], [world.left])
                others.append((passing, 1.0))
        else:  # bidir: pass to both neighbours at once; an odd remaining hop goes one way
            to_left = to_right = text_features
            rounds, one_more = divmod(world.size - 1, 2)
            for _ in range(rounds):
                from_right, from_left = exchange(
                    [to_left, to_right], [world.left, world.right], [world.right, world.left]
                )
                others += [(from_right, 1.0), (from_left, 1.0)]
                to_left, to_right = from_right, from_left
            if one_more:
                (from_left,) = exchange([to_right], [world.right], [world.left])
                others.append((from_left, 1.0))
        return others

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _check_features(image_features, text_features)
        loss = self.pair_loss(image_features, text_features, logit_scale, logit_bias, with_positives=True)
        if self.world.size > 1:
            for texts, weight in self._other_ranks_texts(text_features):
                negatives = self.pair_loss(
                    image_features, texts, logit_scale, logit_bias, with_positives=False
                )
                loss = loss + weight * negatives
        return loss


LOSSES = ("clip", "siglip")


def make_loss(
    kind: str = "clip",
    *,
    local_loss: bool = False,
    gather_with_grad: bool = False,
    siglip_exchange: str = "bidir",
    world: World | None = None,
) -> ClipLoss | SigLipLoss:
    """The loss by name: 'clip' (softmax, OpenAI/OpenCLIP) or 'siglip' (sigmoid; needs a logit_bias)."""
    if kind == "clip":
        return ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad, world=world)
    if kind == "siglip":
        return SigLipLoss(exchange=siglip_exchange, world=world)
    raise ConfigError(f"loss {kind!r} is unknown", fix=f"use one of {LOSSES}")
