"""Two and four CPU processes ('gloo'): the losses against OpenCLIP rank by rank, and the gathered result
against one process on the concatenated batch (loss, feature gradients, model gradients, whole runs).

Each world size is one launch (`clipcore.train.launch`) that runs everything and returns plain tensors;
the comparisons happen here.
"""

from __future__ import annotations

import pytest
import torch

from clipcore.train import World, latest_checkpoint, launch
from conformance.train_cases import GRADIENT_OPTIONS, distributed_suite, loss_cases

PER_RANK, DIM, SEED = 4, 8, 0
WORLD_SIZES = (2, 4)
CASES = loss_cases()


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = ours.double(), theirs.double()
    return float((ours - theirs).norm() / theirs.norm().clamp_min(1e-12))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """world size -> (each rank's results, one process's results on the concatenated batch, the shared
    checkpoint folder)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for size in WORLD_SIZES:
            folder = tmp_path_factory.mktemp(f"world{size}")
            ranks = launch(
                distributed_suite,
                size,
                PER_RANK,
                DIM,
                SEED,
                str(folder),
                timeout_s=300,
                threads_per_process=1,
            )
            one = str(tmp_path_factory.mktemp("one"))
            out[size] = (ranks, distributed_suite(World(), PER_RANK * size, DIM, SEED, one), folder)
        return out
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("size", WORLD_SIZES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_each_rank_matches_reference(runs, size, case):
    ranks, _, _ = runs[size]
    for rank in ranks:
        result = rank["losses"][case["name"]]
        for key, expected in result["ref"].items():
            if expected is None:
                assert result["ours"][key] is None
            elif key == "bias" and case["name"].startswith("clip"):
                # Softmax ignores a constant added to every logit: the exact gradient is 0 and both sides
                # hold rounding noise. (OpenCLIP even adds the bias twice when local_loss is off.)
                assert result["ours"][key].abs() < 1e-6 and expected.abs() < 1e-6
            else:
                assert relative_error(result["ours"][key], expected) <= 1e-5, key


@pytest.mark.parametrize("size", WORLD_SIZES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_gathered_equals_one_process(runs, size, case):
    """The mean loss over ranks is the whole-batch loss; gradients are the whole-batch gradients."""
    ranks, single, _ = runs[size]
    whole = single["losses"][case["name"]]["ours"]
    mine = [rank["losses"][case["name"]]["ours"] for rank in ranks]
    assert relative_error(sum(r["loss"] for r in mine) / size, whole["loss"]) <= 1e-5
    if not case["exact"]:
        return  # local_loss without gather_with_grad: the reference's approximate gradient (checked above)
    # The feature gradient a rank receives is `tower_grad_copies` times its slice of the whole-batch one.
    loss = case["ours"](World(0, size))
    for key in ("image", "text"):
        gathered = torch.cat([r[key] for r in mine]) / loss.tower_grad_copies
        assert relative_error(gathered, whole[key]) <= 1e-5, key
    # The logit scale and bias enter after the gather: their whole-batch gradient is the mean over ranks.
    for key in ("scale", "bias"):
        if whole[key] is not None and not (key == "bias" and case["name"].startswith("clip")):
            assert relative_error(sum(r[key] for r in mine) / size, whole[key]) <= 1e-5, key


@pytest.mark.parametrize("size", WORLD_SIZES)
@pytest.mark.parametrize("options", GRADIENT_OPTIONS)
def test_reduced_model_gradients_equal_one_process(runs, size, options):
    """A tiny CLIP's parameter gradients after the loop's gradient reduction, against one process with
    the whole batch and no accumulation: the same on every rank, and equal to the single-process ones."""
    ranks, single, _ = runs[size]
    # The single-process reference runs the same options; compare to its plain (no-accumulation) twin.
    plain = {"clip-accum2": "clip", "siglip-gather-accum2": "siglip-bidir"}.get(options, options)
    expected = single["gradients"][plain]
    first = ranks[0]["gradients"][options]
    assert set(first) == set(expected)
    for rank in ranks[1:]:
        assert all(torch.equal(rank["gradients"][options][name], first[name]) for name in first)
    errors = {name: relative_error(first[name], expected[name]) for name in expected}
    assert max(errors.values()) <= 1e-5, sorted(errors.items(), key=lambda kv: -kv[1])[:3]


@pytest.mark.parametrize("size", WORLD_SIZES)
def test_training_run_equals_one_process(runs, size):
    """Three optimizer steps with sharded data: every step's loss, and the final weights, as in one process
    with the whole batch."""
    ranks, single, _ = runs[size]
    for rank in ranks:
        losses = rank["train"]["losses"]
        assert len(losses) == 3
        assert all(
            abs(a - b) <= 1e-5 * abs(b) for a, b in zip(losses, single["train"]["losses"], strict=True)
        )
    state, expected = ranks[0]["train"]["state"], single["train"]["state"]
    for rank in ranks[1:]:
        assert all(torch.equal(rank["train"]["state"][k], state[k]) for k in state)  # ranks stay in step
    # Elementwise, with an absolute floor: attention's key bias has an exact gradient of 0 (softmax ignores
    # it), so both runs hold rounding noise there, which AdamW scales up to ~1e-7 steps (eps = 1e-3, see
    # train_run). Weights move by ~3e-3 in these three steps.
    for k in expected:
        assert torch.allclose(state[k], expected[k], rtol=1e-5, atol=1e-6), k
    # and the run did move the weights
    assert any(relative_error(state[k], ranks[0]["train"]["initial"][k]) > 1e-3 for k in state)


@pytest.mark.parametrize("size", WORLD_SIZES)
def test_multi_process_resume_is_exact(runs, size):
    """Stopped after step 2 (every rank's random state saved next to the shared weights), resumed by fresh
    trainers with other initial weights: the same weights as the uninterrupted run, bit for bit."""
    ranks, _, folder = runs[size]
    newest = latest_checkpoint(folder)
    assert newest.name == "step_00000003"
    assert {p.name for p in newest.glob("rng_rank*.json")} == {f"rng_rank{r}.json" for r in range(size)}
    for rank in ranks:
        state = rank["train"]["state"]
        assert all(torch.equal(rank["resumed"][k], state[k]) for k in state)


def test_a_failing_rank_is_reported():
    with pytest.raises(ZeroDivisionError):
        launch(_fail_on_rank_one, 2, timeout_s=60, threads_per_process=1)


def _fail_on_rank_one(world: World) -> int:
    return 1 // (1 - world.rank)


def test_a_hanging_run_times_out():
    with pytest.raises(TimeoutError, match="did not finish in 1"):
        launch(_sleep, 2, 30.0, timeout_s=1, threads_per_process=1)


def _sleep(world: World, seconds: float) -> None:
    import time

    time.sleep(seconds)
