"""Shared set-up for the conformance suite: hypothesis profiles and the reference implementations."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# `ci`: fixed seed, bounded work, so a CI run is reproducible and fast. `thorough`: a deeper search for
# local runs (HYPOTHESIS_PROFILE=thorough pytest conformance).
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=40,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=1000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for modules of tiny tensors: thread start-up costs more than the work there (a lot
    on a busy machine). Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
