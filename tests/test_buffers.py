"""The sampler's recycled work tensors (expsolver._buffers.BufferPool) never overwrite a tensor someone still holds.

Runtime: under 1 s.
"""

import numpy as np
import pytest
import torch

from expsolver import VPLinear, sample
from expsolver._buffers import BufferPool


def test_take_reuses_only_unreferenced_buffers():
    pool = BufferPool()
    like = torch.zeros(4, 3, dtype=torch.float64)
    with torch.no_grad():
        a = pool.take(like)
        b = pool.take(like)
        assert a is not b and a.shape == like.shape and a.dtype == like.dtype
        a_id = id(a)
        del a
        c = pool.take(like)
        assert id(c) == a_id  # the free one comes back
        view = c.view(-1)  # a view keeps the storage in use even without the original object
        c_id = id(c)
        del c
        assert id(pool.take(like)) != c_id
        del view
        kept = [pool.take(like)]  # a reference held in a list also protects it
        assert pool.take(like) is not kept[0]
        assert pool.take(torch.zeros(4, 3, dtype=torch.float32)).dtype == torch.float32  # never a dtype mix-up


def test_reference_count_calibration_is_active_and_its_absence_disables_recycling(monkeypatch):
    import expsolver._buffers as buffers

    assert buffers._FREE_REFCOUNT is not None  # on this interpreter the recycling (tested above) is on
    monkeypatch.setattr(buffers, "_FREE_REFCOUNT", None)
    with torch.no_grad():
        assert BufferPool().take(torch.zeros(3)) is None  # callers then allocate fresh tensors


def test_pool_is_bypassed_while_autograd_records():
    pool = BufferPool()
    with torch.enable_grad():
        assert pool.take(torch.zeros(3)) is None


def _sample_kwargs(method):
    return dict(steps=8, order=3, method=method, skip_type="logSNR", t_end=1e-3)


@pytest.mark.parametrize("method", ["multistep", "singlestep", "adaptive"])
def test_inputs_and_intermediates_are_never_overwritten(mixture_2d, method):
    schedule = VPLinear()
    exact = mixture_2d.as_model(schedule)
    seen = []  # (object, view, value at call time) of every model input

    def model(x, t):
        seen.append((x, x.view(-1), x.clone()))
        return exact(x, t)

    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x0_copy = x0.clone()
    kwargs = dict(method=method, order=3) if method == "adaptive" else _sample_kwargs(method)
    result = sample(model, schedule, x0, return_intermediates=True, **kwargs)
    assert torch.equal(x0, x0_copy)
    for obj, view, value in seen:
        assert torch.equal(obj, value) and torch.equal(view, value.view(-1))
    ids = {id(s) for s in result.intermediates}
    assert len(ids) == len(result.intermediates)
    # the same run without keeping anything gives the same final state (recycling changes no value)
    again = sample(exact, schedule, x0, **kwargs)
    assert torch.equal(again.x, result.x) and torch.equal(result.intermediates[-1], result.x)


def test_recycling_changes_no_value(mixture_2d):
    """A long multistep run (buffers recycled many times) equals the same run on a grid-for-grid loop of
    fresh single steps driven with autograd on (where the pool is off)."""
    schedule = VPLinear()
    model = mixture_2d.as_model(schedule)
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    pooled = sample(model, schedule, x0, steps=30, order=3, skip_type="time_uniform")
    from expsolver.models import ModelWrapper
    from expsolver.problems import DiffusionODE
    from expsolver import integrate, time_grid
    from expsolver.solvers import DPMSolverMultistep

    grid = time_grid(schedule, "time_uniform", 1.0, 1e-3, 30)
    problem = DiffusionODE(schedule, ModelWrapper(model, schedule), "data")
    with torch.enable_grad():  # pool bypassed: every tensor fresh
        fresh = integrate(problem, DPMSolverMultistep(3), x0, grid).x
    assert np.array_equal(pooled.x.numpy(), fresh.detach().numpy())
