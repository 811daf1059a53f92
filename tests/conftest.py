"""Shared fixtures: float64 mixtures and seeded generators. Nothing here changes torch's global state."""

import numpy as np
import pytest
import torch

from analysis.targets import verification_target
from expsolver import VPCosine, VPDiscrete, VPLinear


def pytest_configure(config):
    # The tests evaluate small batches, where intra-op threads only add synchronisation cost (and oversubscribe a
    # loaded 2-core machine badly); one thread also makes reductions reproducible across machines.
    torch.set_num_threads(1)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


def make_mixture_2d():
    """Three separated components in 2-D (not a single Gaussian: the leading error terms of every solver are
    non-zero): the order-verification target of :mod:`analysis.verification`."""
    return verification_target()


@pytest.fixture
def mixture_2d():
    return make_mixture_2d()


SCHEDULES = {
    "linear": VPLinear,
    "cosine": VPCosine,
    "discrete": lambda: VPDiscrete(betas=np.linspace(1e-4, 0.02, 1000)),
}


@pytest.fixture(params=sorted(SCHEDULES))
def schedule(request):
    return SCHEDULES[request.param]()
