"""The race's switch analysis (analysis/race.py): the boundary sensitivity of a state and the switch budget.

Fast checks on a symmetric two-component mixture whose basin boundary is known: the plane ``x_1 = 0`` is
invariant under the exact flow (the mixture is symmetric under ``x_1 -> -x_1``), so a state on it is a fifty-fifty
case and a state far from it never changes mode under a small perturbation.
"""

import math

import numpy as np
import pytest
import torch

from analysis.race import RaceConfig, boundary_sensitivity, switch_analysis
from analysis.targets import T_END, T_START
from expsolver import GaussianMixture, VPLinear, reference_solve


@pytest.fixture(scope="module")
def symmetric():
    mixture = GaussianMixture([0.5, 0.5], [[1.0, 0.0], [-1.0, 0.0]], [0.05, 0.05])
    schedule = VPLinear()
    x = torch.tensor([[0.0, 0.3], [2.5, -0.4], [-0.002, 0.1]], dtype=torch.float64)
    ref = reference_solve(mixture.as_model(schedule), schedule, x, T_START, T_END, rtol=1e-10, atol=1e-10).x
    return mixture, schedule, x, ref


def test_boundary_sensitivity(symmetric):
    mixture, schedule, x, ref = symmetric
    comp = mixture.component(ref, T_END, schedule)
    flips = boundary_sensitivity(mixture, schedule, x, comp, radius=1e-2, n_perturbations=64, seed=3)
    assert 0.3 <= flips[0] <= 0.7  # on the invariant plane: half of the perturbations go to each mode
    assert flips[1] == 0.0  # deep inside a basin
    # 0.002 from the boundary: perturbations of size 0.01 cross it when u_1 > 0.2, with probability
    # acos(0.2) / pi = 0.44 for u uniform on the circle
    assert 0.25 <= flips[2] <= 0.65
    far = boundary_sensitivity(mixture, schedule, x[2:], comp[2:], radius=1e-4, n_perturbations=16)
    assert far[0] == 0.0  # ... but none of size 1e-4
    assert boundary_sensitivity(mixture, schedule, x[:0], comp[:0]).shape == (0,)


def test_switch_analysis_counts_and_budget(symmetric):
    mixture, schedule, x, ref = symmetric
    cfg = RaceConfig(target="2d", boundary_perturbations=8)
    ours = ref + 0.01  # no switch, error 0.01 * sqrt(2) per state
    official = ref.clone()
    official[1, 0] = -ref[1, 0]  # the second state ends in the other mode
    out = switch_analysis(mixture, schedule, x, ref, ours, official, allowed_rms=0.5, cfg=cfg)
    assert out["ours"] == [] and out["official"] == [1]
    assert set(out["flip_fraction"]) == {"1"} and out["flip_fraction"]["1"] == 0.0
    switch_error = float(torch.linalg.norm(official[1] - ref[1]))
    assert out["switch_error"] == pytest.approx(switch_error)
    room = 3 * 0.5**2 - 3 * 2 * 0.01**2
    assert out["allowed_switches"] == math.floor(room / switch_error**2)
    # Our own switches set the per-switch error, and they leave the budget.
    out = switch_analysis(mixture, schedule, x, ref, official, official, allowed_rms=0.5, cfg=cfg)
    assert out["ours"] == [1] and out["allowed_switches"] == math.floor(3 * 0.25 / switch_error**2)
    assert np.isclose(out["switch_error"], switch_error)
