"""Shared fixtures: float64 mixtures and seeded generators; how pytest-xdist groups the tests. Nothing here changes
torch's global state."""

import numpy as np
import pytest
import torch

from analysis.targets import verification_target
from expsolver import VPCosine, VPDiscrete, VPLinear


def pytest_configure(config):
    # The tests evaluate small batches, where intra-op threads only add synchronisation cost (and oversubscribe a
    # loaded 2-core machine badly); one thread also makes reductions reproducible across machines.
    torch.set_num_threads(1)
    if getattr(config.option, "numprocesses", None) and config.getoption("dist") == "load":
        # pytest-xdist (-n N, whose default is --dist load): distribute by the groups of
        # pytest_collection_modifyitems (--dist loadgroup), here and in the workers (pytest_configure_node).
        config.option.dist = "loadgroup"
    if getattr(config, "workerinput", {}).get("group_by_file"):
        config.option.loadgroup = True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput["group_by_file"] = node.config.getoption("dist") == "loadgroup"


#: Files of many independent tests without costly shared fixtures: under pytest-xdist their tests are spread over
#: the workers one by one. Every other file runs on one worker, so that its module-scoped fixtures (reference
#: solves, trained models, quick figure runs, a Dask cluster) are computed once.
SPREAD_FILES = ("test_orders.py", "test_stress.py")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    if getattr(config.option, "loadgroup", False):
        for item in items:
            if item.path.name not in SPREAD_FILES:
                item.add_marker(pytest.mark.xdist_group(item.path.name))


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
