"""DPM-Solver and DPM-Solver++: singlestep and multistep exponential integrators in the half log-SNR.

All rules are written once against the semi-linear form (see :mod:`expsolver.problems`)

    x_t = linear * x_s + scale * sum_j I_j N^{(j)}(rho_s),     I_j = h^{j+1} phi_{j+1}(z h),

so the same code is DPM-Solver (noise prediction, ``z = 1``, ``scale = -sigma_t``) and DPM-Solver++ (data
prediction, ``z = -1``, ``scale = alpha_t``), and exponential time differencing on other semi-linear problems.
In the noise form ``I_0 = e^h - 1`` and ``I_1 / h = (e^h - 1)/h - 1``; in the data form ``I_0 = 1 - e^{-h}`` and
``I_1 / h = 1 - (1 - e^{-h})/h``: the coefficients of Lu et al. (2022a, Alg. 1-2 and App. B) and (2022b, Alg. 1-2).

Two ways to use the stage values exist in the literature (``solver_type``):

* ``"dpmsolver"``: the derivative term is ``I_0 / 2 * D1`` (DPM-Solver eq. (3.7)), second order but not exact
  for a linear ``N``;
* ``"taylor"``: the interpolating polynomial is integrated exactly (``I_1/h * D1 + I_2/h^2 * D2``), exact for ``N``
  polynomial of degree < order.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validation import check_choice, check_int
from ..grids import SKIP_TYPES, _grid_times
from ..problems import combine
from .base import MultistepSolver, Solver, Step, polynomial_terms

__all__ = ["SOLVER_TYPES", "DPMSolverSinglestep", "DPMSolverFast", "DPMSolverMultistep", "MULTISTEP_COEFFICIENTS",
           "singlestep_fast_orders", "official_rounding"]

SOLVER_TYPES = ("dpmsolver", "taylor")
MULTISTEP_COEFFICIENTS = ("corrected", "official")


def official_rounding(ts) -> np.ndarray:
    """A float64 grid rounded as the official implementation builds it, in torch's default dtype (float32
    unless changed): ``compat="official"`` grids, outer and inner."""
    return torch.tensor(np.asarray(ts, dtype=np.float64), dtype=torch.get_default_dtype()).to(torch.float64).numpy()


def _intermediate_ratios(problem, skip_type, official, s, t, k, index):
    """``r`` of a ``k``-stage step from ``s`` to ``t`` whose stages sit on a ``skip_type`` grid of the step (the
    official placement: ``"time_uniform"`` puts ``s1`` uniformly in t, not in lambda)."""
    schedule = getattr(problem, "schedule", None)
    if schedule is None:
        raise ValueError(f"intermediates={skip_type!r} places stages by a diffusion schedule; this problem "
                         f"({type(problem).__name__}) has none: use intermediates=None (uniform in rho)")
    ts = _grid_times(schedule, skip_type, s, t, k)
    lams = schedule.lams_of(official_rounding(ts) if official else ts)
    r = tuple(float((lams[j] - lams[0]) / (lams[-1] - lams[0])) for j in range(1, k))
    if not all(a < b for a, b in zip((0.0,) + r, r + (1.0,))):
        raise ValueError(f"step {index} from t={s!r} to t={t!r}: the intermediate points collapse in float64 "
                         f"(lambda ratios {r}); use fewer steps for this interval")
    return r


class DPMSolverSinglestep(Solver):
    """Singlestep DPM-Solver-k / DPM-Solver++(kS), k = 1, 2, 3 (Lu et al. 2022a Alg. 1-2; 2022b Alg. 1).

    NFE per step = order. Intermediate points ``s_i = t(rho_s + r_i h)``; defaults ``r1 = 1/2`` (order 2) and
    ``r1 = 1/3, r2 = 2/3`` (order 3); a :class:`Step` may carry its own ``r``.

    * order 1 (DDIM, DPM-Solver eq. (3.5)): ``x_t = linear x_s + scale I_0 N_s``;
    * order 2: ``u = `` first-order step to ``s1``; ``x_t = linear x_s + scale [I_0 N_s + c (N(u, s1) - N_s)]``,
      ``c = I_0 / (2 r1)`` ("dpmsolver") or ``I_1 / (r1 h)`` ("taylor");
    * order 3: ``u1`` as above; ``u2 = linear_2 x_s + scale_2 [I'_0 N_s + I'_1/(r1 h) (N_1 - N_s)]`` over
      ``s -> s2``; ``x_t = ... + I_1/(r2 h) (N_2 - N_s)`` ("dpmsolver") or the exact integral of the quadratic
      through ``(0, r1 h, r2 h)`` ("taylor").

    :meth:`embedded_step` returns this step with an embedded lower-order one sharing its model calls (the adaptive
    DPM-Solver-12/23, :class:`expsolver.AdaptiveController`).

    Parameters
    ----------
    order : {1, 2, 3}
    solver_type : {"dpmsolver", "taylor"}
    intermediates : {None, "logSNR", "time_uniform", "time_quadratic", "karras"}
        Where the stages of a step sit: ``None``, at the default ``r`` (uniform in ``rho``); a grid type, on a grid
        of that type inside each step, as the official code places them (diffusion problems only).
    official_grid : bool
        Round the grids the solver builds itself (the inner grids; :class:`DPMSolverFast`'s outer grid too) as the
        official code does (:func:`official_rounding`).

    """

    def __init__(self, order: int = 2, solver_type: str = "dpmsolver", *, intermediates: str | None = None,
                 official_grid: bool = False):
        self.order = check_int(order, "order", minimum=1, maximum=3)
        self.solver_type = check_choice(solver_type, "solver_type", SOLVER_TYPES)
        self.intermediates = None if intermediates is None else check_choice(intermediates, "intermediates", SKIP_TYPES)
        self.official_grid = bool(official_grid)
        self.name = f"singlestep DPM-Solver-{order} ({solver_type})"

    def nfe(self, order: int) -> int:
        return order

    def plan(self, timesteps, problem=None) -> list:
        """One step of order :attr:`order` per grid interval, its stages at the default ``r`` or on an
        ``intermediates`` grid of the interval."""
        return self._plan_orders([float(t) for t in timesteps], [self.order] * (len(timesteps) - 1), problem)

    def _plan_orders(self, ts, orders, problem):
        plan = []
        for i, k in enumerate(orders):
            s, t = ts[i], ts[i + 1]
            r = () if (k == 1 or self.intermediates is None) else _intermediate_ratios(
                problem, self.intermediates, self.official_grid, s, t, k, i)
            plan.append(Step(i, s, t, k, r))
        return plan

    def step(self, problem, x, step: Step, state=None):
        return self._step(problem, x, step, {})

    def embedded_step(self, problem, x, step: Step, state=None):
        """``(x_high, x_low)``: this step and the embedded step of one order lower, sharing model calls (the
        adaptive DPM-Solver-12 / -23 pairs, Lu et al. 2022a, Alg. 4 and App. C): order 2 pairs DPM-Solver-1 with
        DPM-Solver-2 (``r1 = 1/2``), order 3 pairs DPM-Solver-2 (``r1 = 1/3``) with DPM-Solver-3 (``r1 = 1/3,
        r2 = 2/3``). Its :meth:`nfe` is that of the higher-order step."""
        if step.order < 2:
            raise ValueError(f"an embedded pair needs order 2 or 3, got order {step.order}")
        cache = {}
        r_low = () if step.order == 2 else (1.0 / 3.0,)
        r_high = (0.5,) if step.order == 2 else (1.0 / 3.0, 2.0 / 3.0)
        x_low = self._step(problem, x, Step(step.index, step.s, step.t, step.order - 1, r_low), cache)
        x_high = self._step(problem, x, Step(step.index, step.s, step.t, step.order, r_high), cache)
        return x_high, x_low

    def _step(self, problem, x, step: Step, cache):
        """The step; ``cache`` stores and reuses stage values (keys ``"s"``, ``"s1"``) across calls."""
        s, t, order = step.s, step.t, step.order
        n_s = cache.get("s")
        if n_s is None:
            n_s = cache["s"] = problem.nonlinear(x, s)
        c = problem.coefficients(s, t)
        if order == 1:
            return combine(c, x, [(c.integrals(1)[0], n_s)])
        r1 = step.r[0] if step.r else (0.5 if order == 2 else 1.0 / 3.0)
        rho_s = problem.rho(s)
        s1 = problem.t_of_rho(rho_s + r1 * c.h)
        n_s1 = cache.get("s1")
        if n_s1 is None:
            c1 = problem.coefficients(s, s1)
            u1 = combine(c1, x, [(c1.integrals(1)[0], n_s)])
            n_s1 = cache["s1"] = problem.nonlinear(u1, s1)
        if order == 2:
            i0, i1 = c.integrals(2)
            w = i0 / (2.0 * r1) if self.solver_type == "dpmsolver" else i1 / (r1 * c.h)
            return combine(c, x, [(i0 - w, n_s), (w, n_s1)])
        r2 = step.r[1] if len(step.r) > 1 else 2.0 / 3.0
        s2 = problem.t_of_rho(rho_s + r2 * c.h)
        c2 = problem.coefficients(s, s2)
        j0, j1 = c2.integrals(2)
        w2 = j1 / (r1 * c.h)
        u2 = combine(c2, x, [(j0 - w2, n_s), (w2, n_s1)])
        n_s2 = problem.nonlinear(u2, s2)
        if self.solver_type == "dpmsolver":
            i0, i1 = c.integrals(2)
            w = i1 / (r2 * c.h)
            return combine(c, x, [(i0 - w, n_s), (w, n_s2)])
        return combine(c, x, polynomial_terms(c.integrals(3), c.h, (0.0, r1, r2), (n_s, n_s1, n_s2)))


class DPMSolverMultistep(MultistepSolver):
    """Multistep DPM-Solver-k / DPM-Solver++(kM) (Lu et al. 2022b Alg. 2 and App. B), one NFE per step.

    The step from ``rho_0`` (current) uses the history ``N_0, N_{-1}, ...`` at ``rho_0, rho_0 - h_0, ...``; with
    ``r_i = h_i / h``:

    * order 1: ``x_t = linear x_0 + scale I_0 N_0`` (DDIM);
    * order 2: ``D1 = (N_0 - N_{-1}) / r_0``; ``x_t = ... + scale [I_0 N_0 + c D1]`` with ``c = I_0/2``
      ("dpmsolver") or ``I_1/h`` ("taylor");
    * order >= 3 (``coefficients="corrected"``): the exact integral of the interpolating polynomial through the
      last ``order`` points (exponential Adams-Bashforth), global order ``order``;
    * order 3 with ``coefficients="official"``: the official code's update
      ``D1 = D1_0 + r_0/(r_0+r_1) (D1_0 - D1_1)``, ``D2 = (D1_0 - D1_1)/(r_0 + r_1)``,
      ``x_t = ... + scale [I_0 N_0 + I_1/h D1 + I_2/h^2 D2]``. ``D2`` estimates ``h^2 N''/2`` where the
      ``I_2`` term needs ``h^2 N''``, so its local error is ``O(h^3)`` and the method is only second order.

    Parameters
    ----------
    order : int
        1-4 (1-3 with ``coefficients="official"``), the order of its full steps (:attr:`steps_order`). The declared
        global order :attr:`order` is the same, except 2 for the official third-order update.
    solver_type : {"dpmsolver", "taylor"}
    coefficients : {"corrected", "official"}
    lower_order_final, lower_order_final_below
        See :class:`~expsolver.solvers.base.MultistepSolver`; the first ``order - 1`` steps are warm-up steps of
        increasing order.
    """

    def __init__(self, order: int = 2, solver_type: str = "dpmsolver", coefficients: str = "corrected", *,
                 lower_order_final: bool = True, lower_order_final_below: int | None = None):
        self.coefficients = check_choice(coefficients, "coefficients", MULTISTEP_COEFFICIENTS)
        self.nominal_order = check_int(order, "order", minimum=1, maximum=3 if coefficients == "official" else 4)
        # The official third-order update is only second order (class docstring): declare what it achieves.
        self.order = 2 if (coefficients == "official" and order == 3) else self.nominal_order
        self.solver_type = check_choice(solver_type, "solver_type", SOLVER_TYPES)
        self._set_final(lower_order_final, lower_order_final_below)
        suffix = ", official 3M" if coefficients == "official" and order == 3 else ""
        self.name = f"multistep DPM-Solver-{order} ({solver_type}{suffix})"

    @property
    def steps_order(self) -> int:
        """The order its full steps are planned with (3 for the official 3M, whose declared :attr:`order` is 2)."""
        return self.nominal_order

    def update(self, problem, x, step: Step, history):
        """The step given the history ``[(rho_i, N_i)]`` (most recent last, at ``step.s``); no model call."""
        order = step.order
        if order > len(history):
            raise ValueError(f"step {step.index}: order {order} needs {order} history values, have {len(history)}")
        c = problem.coefficients(step.s, step.t)
        rho_0, n_0 = history[-1]
        if order == 1:
            return combine(c, x, [(c.integrals(1)[0], n_0)])
        if order == 2 and self.solver_type == "dpmsolver":
            rho_1, n_1 = history[-2]
            r0 = (rho_0 - rho_1) / c.h
            i0 = c.integrals(1)[0]
            w = 0.5 * i0 / r0
            return combine(c, x, [(i0 + w, n_0), (-w, n_1)])
        if order == 3 and self.coefficients == "official":
            return combine(c, x, _official_third_order_terms(c, history))
        recent = history[-order:][::-1]
        nodes = tuple((rho - rho_0) / c.h for rho, _ in recent)
        return combine(c, x, polynomial_terms(c.integrals(order), c.h, nodes, [n for _, n in recent]))


def _official_third_order_terms(c, history):
    """The official multistep third-order weights (kept for ``compat="official"``; see the class docstring)."""
    (rho_2, n_2), (rho_1, n_1), (rho_0, n_0) = history[-3:]
    r0, r1 = (rho_0 - rho_1) / c.h, (rho_1 - rho_2) / c.h
    i0, i1, i2 = c.integrals(3)
    a, b = r0 / (r0 + r1), 1.0 / (r0 + r1)
    w_d10 = i1 / c.h * (1.0 + a) + i2 / c.h**2 * b  # weight of D1_0 = (N_0 - N_1)/r0
    w_d11 = -i1 / c.h * a - i2 / c.h**2 * b  # weight of D1_1 = (N_1 - N_2)/r1
    return [(i0 + w_d10 / r0, n_0), (-w_d10 / r0 + w_d11 / r1, n_1), (-w_d11 / r1, n_2)]


class DPMSolverFast(DPMSolverSinglestep):
    """DPM-Solver-fast (Lu et al. 2022a, Sec. 3.4 and App. D.4): singlestep steps whose orders spend exactly the
    NFE of the grid it is given (:func:`singlestep_fast_orders`), ``method="singlestep"`` of :func:`expsolver.sample`.

    Given a grid of ``n`` intervals (``n`` = the NFE budget), the outer steps are every ``order``-th point of it
    (the orders' partial sums), or, with ``outer="logSNR"``, a grid uniform in ``rho`` with one point per step (the
    official code's choice for logSNR grids). With ``official_grid`` the outer grid is rounded after it is chosen,
    so pass the unrounded grid. Parameters as :class:`DPMSolverSinglestep`.
    """

    def __init__(self, order: int = 3, solver_type: str = "dpmsolver", *, intermediates: str | None = None,
                 official_grid: bool = False, outer: str = "subset"):
        super().__init__(order, solver_type, intermediates=intermediates, official_grid=official_grid)
        self.outer = check_choice(outer, "outer", ("subset", "logSNR"))
        self.name = f"DPM-Solver-fast-{order} ({solver_type})"

    def plan(self, timesteps, problem=None) -> list:
        ts = np.asarray(timesteps, dtype=np.float64)
        orders = singlestep_fast_orders(len(ts) - 1, self.order)
        if self.outer == "subset":
            outer = ts[np.cumsum([0] + orders)]
        else:
            schedule = getattr(problem, "schedule", None)
            if schedule is None:
                raise ValueError("outer='logSNR' needs a diffusion problem (with a schedule)")
            outer = _grid_times(schedule, "logSNR", float(ts[0]), float(ts[-1]), len(orders))
        outer = official_rounding(outer) if self.official_grid else outer
        return self._plan_orders([float(t) for t in outer], orders, problem)


def singlestep_fast_orders(steps: int, order: int) -> list[int]:
    """DPM-Solver-fast order allocation (Lu et al. 2022a, Sec. 3.4 and App. D.4): spends exactly ``steps`` NFE."""
    if order == 3:
        k = steps // 3 + 1
        if steps % 3 == 0:
            return [3] * (k - 2) + [2, 1]
        if steps % 3 == 1:
            return [3] * (k - 1) + [1]
        return [3] * (k - 1) + [2]
    if order == 2:
        return [2] * (steps // 2) + [1] * (steps % 2)
    return [1] * steps

