"""Shared fixtures: float64 mixtures and seeded generators. Nothing here changes torch's global state."""

import numpy as np
import pytest
import torch

from expsolver import GaussianMixture, VPCosine, VPDiscrete, VPLinear


def pytest_configure(config):
    # The tests evaluate small batches, where intra-op threads only add synchronisation cost (and oversubscribe a
    # loaded 2-core machine badly); one thread also makes reductions reproducible across machines.
    torch.set_num_threads(1)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


def make_mixture_2d():
    """Three well-separated, fairly sharp components in 2-D (not a single Gaussian: the leading error terms of
    every solver are non-zero)."""
    return GaussianMixture([0.5, 0.3, 0.2], [[1.0, 0.5], [-1.0, -0.5], [0.3, -1.2]], [0.05, 0.1, 0.08])


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
