"""The contrastive losses against OpenCLIP 3.3.0's ClipLoss and SigLipLoss, in one process.

(The multi-process comparisons are in test_train_distributed.py.) Values and the gradients of the image
features, text features, logit scale and logit bias must agree within a relative error of 1e-5.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from clipcore.errors import ConfigError, ShapeError
from clipcore.train import World, make_loss
from clipcore.train.loss import ClipLoss, SigLipLoss
from conformance.train_cases import loss_cases, random_features, reference_losses, run_loss


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """|ours - theirs| / |theirs| over the whole tensor (a zero reference compares absolutely)."""
    ours, theirs = ours.double(), theirs.double()
    return float((ours - theirs).norm() / theirs.norm().clamp_min(1e-12))


def assert_same(ours: dict, theirs: dict, tol: float = 1e-5) -> None:
    for key, expected in theirs.items():
        if expected is None:
            assert ours[key] is None, key
            continue
        assert relative_error(ours[key], expected) <= tol, (key, ours[key], expected)


# Tiny tensors: thread start-up would cost more than the work (and CI machines are shared).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("case", loss_cases(), ids=lambda c: c["name"])
def test_matches_reference_single_process(case):
    images, texts = random_features(seed=1, n=16, dim=24)
    world = World()
    ours = run_loss(case["ours"](world), images, texts, case["bias"])
    theirs = run_loss(case["ref"](world), images, texts, case["bias"])
    assert_same(ours, theirs)
    assert ours["image"].abs().sum() > 0 and ours["scale"].abs() > 0  # a real gradient was compared


@given(
    n=st.integers(1, 40),
    dim=st.integers(1, 64),
    scale=st.floats(0.0, math.log(100.0)),
    bias=st.one_of(st.none(), st.floats(-12.0, 5.0)),
    seed=st.integers(0, 2**31 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_random_shapes_and_parameters(n, dim, scale, bias, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(n, dim, generator=g, dtype=dtype), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(n, dim, generator=g, dtype=dtype), dim=-1)
    ref = reference_losses()
    for ours, theirs in ((ClipLoss(), ref.ClipLoss()), (SigLipLoss(), ref.SigLipLoss())):
        results = []
        for loss in (ours, theirs):
            im, tx = images.clone().requires_grad_(), texts.clone().requires_grad_()
            s = torch.tensor(scale, dtype=dtype, requires_grad=True)
            b = torch.tensor(bias, dtype=dtype, requires_grad=True) if bias is not None else None
            value = loss(im, tx, s.exp(), b)
            value.backward()
            results.append({"loss": value.detach(), "image": im.grad, "text": tx.grad, "scale": s.grad})
        # float32 sums of up to 40x40 terms: 1e-5 relative; the reference computes the same sums.
        assert_same(results[0], results[1], tol=1e-5)


def test_features_are_checked():
    images, texts = random_features(seed=0, n=4, dim=8)
    for loss in (ClipLoss(), SigLipLoss()):
        with pytest.raises(ShapeError, match=r"\(4, 8\) and \(3, 8\)"):
            loss(images, texts[:3], torch.tensor(10.0))


def test_unknown_options_are_refused():
    with pytest.raises(ConfigError, match="'ring'"):
        SigLipLoss("ring")
    with pytest.raises(ConfigError, match="'triplet'"):
        make_loss("triplet")


def test_tower_gradient_copies():
    """How the summed multi-rank feature gradient relates to the whole-batch gradient (see loss.py)."""
    four = World(rank=1, size=4)
    assert ClipLoss(world=four).tower_grad_copies == 1  # every rank computes the whole loss
    assert ClipLoss(gather_with_grad=True, world=four).tower_grad_copies == 4
    assert ClipLoss(local_loss=True, gather_with_grad=True, world=four).tower_grad_copies == 4
    assert SigLipLoss(world=four).tower_grad_copies == 4
    assert ClipLoss().tower_grad_copies == 1 and SigLipLoss().tower_grad_copies == 1
