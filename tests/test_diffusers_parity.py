"""ExpSolverScheduler(compat="diffusers") against diffusers' DPMSolverMultistepScheduler and UniPCMultistepScheduler on
a random UNet (float64): every case of expsolver.integrations.diffusers_parity agrees with diffusers to
PARITY_RTOL_PER_CALL per model call (two float32 ulps: diffusers' stored noise levels and coefficients are float32),
or is refused exactly where diffusers returns NaN. Each case runs at one of its two numbers of steps (alternately
below and at or above diffusers' lower_order_final threshold of 15); the table of docs/diffusers.md, made by the
module's command line, runs both. ~15 s.
"""

import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import DPMSolverMultistepScheduler  # noqa: E402

from expsolver.integrations.diffusers import ExpSolverScheduler  # noqa: E402
from expsolver.integrations.diffusers_parity import (PARITY_RTOL_PER_CALL, TABLE_END, TABLE_START,  # noqa: E402
                                                     initial_noise, parity_cases, run_case, tiny_unet)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

CASES = parity_cases()
DOC = Path(__file__).resolve().parents[1] / "docs" / "diffusers.md"


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    return tiny_unet(), initial_noise()


@pytest.mark.parametrize("index", range(len(CASES)),
                         ids=[f"{c.scheduler[:-18]}:{c.label}" for c in CASES])
def test_expsolver_reproduces_diffusers_or_refuses_where_diffusers_returns_nan(setup, index):
    case = CASES[index]
    steps = case.steps[index % 2]
    (row,) = run_case(case, *setup, steps=(steps,))
    if row["refused"] is not None:
        assert not row["diffusers_finite"], f"refused although diffusers is finite: {row['refused']}"
        return
    assert row["diffusers_finite"] and row["nfe"] == steps
    assert row["rel_error"] <= steps * PARITY_RTOL_PER_CALL


def test_the_comparison_resolves_a_departure(setup):
    # The same case run with a different lower_order_final rule (expsolver's own, compat=None) is far outside the
    # tolerance: the test can fail.
    unet, x = setup
    dpm = DPMSolverMultistepScheduler(solver_order=3)
    results = []
    for scheduler in (dpm, ExpSolverScheduler.from_config(dpm.config, order=3, lower_order_final=True)):
        scheduler.set_timesteps(9)
        y = x
        with torch.no_grad():
            for t in scheduler.timesteps:
                y = scheduler.step(unet(y, t).sample, t, y).prev_sample
        results.append(y)
    assert float((results[1] - results[0]).norm() / results[0].norm()) > 1000 * 9 * PARITY_RTOL_PER_CALL


def test_the_documented_table_lists_the_cases_of_the_sweep():
    text = DOC.read_text(encoding="utf-8")
    table = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    rows = set(re.findall(r"^\| (\w+) \| ([^|]*) \| (\d+) \|", table, flags=re.M))
    expected = {(c.scheduler.replace("MultistepScheduler", ""), c.label, str(n)) for c in CASES for n in c.steps}
    assert rows == expected
