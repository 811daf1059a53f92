"""Two second-order exponential Runge-Kutta methods written against expsolver's public solver protocol only.

For a semi-linear problem in the form of :mod:`expsolver.problems`, one step from ``s`` to ``t`` (``h = rho_t -
rho_s``, ``I_j = h^{j+1} phi_{j+1}(z h)`` from ``StepCoefficients.integrals``) with one intermediate point at
``rho_s + c2 h`` is

    u   = linear(s -> s2) x_s + scale(s2) I_0(c2 h) N(x_s, s),                                   (stage, exponential Euler)
    x_t = linear(s -> t) x_s + scale(t) [(I_0 - b2) N(x_s, s) + b2 N(u, s2)],   b2 = I_1 / (c2 h),

the two-stage exponential Runge-Kutta family of Hochbruck & Ostermann (2005, SIAM J. Numer. Anal. 43, eq. (5.8)):
its weights satisfy the order conditions ``b1 + b2 = phi_1`` and ``b2 c2 = phi_2`` exactly, so every ``c2`` in
(0, 1] gives local error O(h^3) and global order 2. ``c2 = 1`` is the exponential Heun method, ``c2 = 2/3`` the
exponential Ralston method (the c2 that minimises the classical Ralston error bound); ``c2 = 1/2`` would be
DPM-Solver-2S with ``solver_type="taylor"``.

Run ``python examples/custom_solver.py`` to sample with them, measure their orders and optimise a grid for one.
"""

from expsolver.problems import combine
from expsolver.solvers import Solver


class ExponentialRK2(Solver):
    """Two-stage exponential Runge-Kutta of order 2 with intermediate point ``c2`` (module docstring)."""

    order = 2
    c2 = 0.5

    def nfe(self, order):
        return 2

    def step(self, problem, x, step, state):
        c = problem.coefficients(step.s, step.t)
        n_s = problem.nonlinear(x, step.s)
        s2 = problem.t_of_rho(problem.rho(step.s) + self.c2 * c.h)
        c_stage = problem.coefficients(step.s, s2)
        u = combine(c_stage, x, [(c_stage.integrals(1)[0], n_s)])
        i0, i1 = c.integrals(2)
        b2 = i1 / (self.c2 * c.h)
        return combine(c, x, [(i0 - b2, n_s), (b2, problem.nonlinear(u, s2))])


class ExponentialHeun(ExponentialRK2):
    """Exponential Heun: the stage at the end of the step (``c2 = 1``)."""

    c2 = 1.0
    name = "exponential Heun"


class ExponentialRalston(ExponentialRK2):
    """Exponential Ralston: the stage at two thirds of the step (``c2 = 2/3``)."""

    c2 = 2.0 / 3.0
    name = "exponential Ralston"


def main():
    import torch

    from analysis.targets import verification_target
    from expsolver import DiffusionODE, ModelWrapper, VPLinear, optimize_timesteps, sample
    from expsolver.convergence import global_order, local_order

    schedule = VPLinear()
    model = verification_target().as_model(schedule)
    x = torch.randn(512, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for solver in (ExponentialHeun(), ExponentialRalston()):
        out = sample(model, schedule, x, steps=10, skip_type="logSNR", solver=solver)
        print(f"{solver.name}: 10 steps, {out.nfe} model calls")
        for prediction in ("data", "noise"):
            problem = DiffusionODE(schedule, ModelWrapper(model, schedule), prediction)
            local = local_order(problem, solver, x[:64], 1.0, [0.8 * 2.0 ** (-k / 2) for k in range(17)],
                                t_step=schedule.lam_inverse_float(0.0))
            glob = global_order(problem, solver, x[:64], 1.0, 1e-3, [4, 8, 16, 32, 64, 128], stop_below=1e-10)
            print(f"  {prediction} prediction: {local.summary()}\n  {glob.summary()}")
    grid = optimize_timesteps(model, schedule, x, steps=6, t_start=1.0, t_end=1e-3, solver=ExponentialRalston(),
                              n_train=64, min_per_stratum=8, n_validation=32, max_iter=30, max_time=None)
    print(f"optimised 6-step grid for {grid.label}: test RMS {grid.errors['test']['rms']:.3g} "
          f"(from {grid.initial_skip_type}: {grid.initial_errors['test']['rms']:.3g})")


if __name__ == "__main__":
    main()
