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
        # pytest_collection_modifyitems (--dist loadgroup), here and in the workers (pytest_configure_node), in
        # the order of the collection (not xdist's default of the groups with most tests first).
        config.option.dist = "loadgroup"
        config.option.loadscopereorder = False
    if getattr(config, "workerinput", {}).get("group_by_file"):
        config.option.loadgroup = True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    node.workerinput["group_by_file"] = node.config.getoption("dist") == "loadgroup"


#: Files of many independent tests without costly shared fixtures: under pytest-xdist their tests are spread over
#: the workers one by one (and handed out last, filling the gaps at the end of the run). Every other file runs on
#: one worker, so that its module-scoped fixtures (reference solves, trained models, quick figure runs, a Dask
#: cluster) are computed once; a test with its own ``xdist_group`` marker runs apart from its file.
SPREAD_FILES = ("test_orders.py", "test_stress.py")
#: The groups that take longest on one worker (``pytest -n 2 --durations=0`` on a 2-core machine), longest first:
#: handed out before all others, so that none of them starts near the end of the run.
LONGEST_FIRST = ("test_sde.py::weak_order", "test_paper_figs.py", "test_tasks.py", "test_optimize.py::race",
                 "test_sde.py", "test_convergence.py", "test_optimize.py", "test_grid_orders.py")


def _group(item) -> str:
    """The test's own ``xdist_group`` (named ``"FILE::PART"``), else its file's name."""
    marker = item.get_closest_marker("xdist_group")
    return item.path.name if marker is None else marker.args[0]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    if getattr(config.option, "loadgroup", False):
        for item in items:
            if item.path.name not in SPREAD_FILES and item.get_closest_marker("xdist_group") is None:
                item.add_marker(pytest.mark.xdist_group(item.path.name))

        def rank(item):
            if item.path.name in SPREAD_FILES:
                return len(LONGEST_FIRST) + 1
            group = _group(item)
            return LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST)

        items.sort(key=rank)  # stable: the order of the tests within a group is kept


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
