"""UniPC (expsolver.solvers.unipc): coefficients against independent closed forms, the corrector's order
conditions (the test that catches an off-by-one in the Vandermonde system), the deferred correction in the
driver, NFE, option validation and fitted local orders.

Global orders of the registered UniPC configurations are measured by the registry-driven tests/test_orders.py.
Runtime ~10 s.
"""

import math

import numpy as np
import pytest
import torch

from analysis.local_error import one_step_errors
from analysis.order import fit_order
from analysis.verification import LOCAL_FLOOR, LOCAL_HS, VerificationProblem
from conftest import make_mixture_2d
from expsolver import VPLinear, sample
from expsolver.models import ModelWrapper
from expsolver.problems import BernoulliETDProblem, DiffusionODE, StepCoefficients
from expsolver.solvers import REGISTRY, Step, polynomial_terms
from expsolver.solvers.unipc import UniPC, unipc_terms

TOL = 0.15


def _gauss_legendre_integral(c, poly, n=40):
    """``int_0^h e^{z (h - u)} poly(u) du`` by Gauss-Legendre quadrature (independent of the phi-functions)."""
    x, w = np.polynomial.legendre.leggauss(n)
    u = 0.5 * c.h * (x + 1.0)
    return float(np.sum(0.5 * c.h * w * np.exp(c.z * (c.h - u)) * poly(u)))


def _apply(terms, values_of):
    """``sum_j w_j N_j`` for scalar stand-ins ``N_j = values_of[j]``."""
    return sum(float(w) * v for (w, _), v in zip(terms, values_of))


@pytest.mark.parametrize("z", [1.0, -1.0, -3.0])
@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_order2_predictor_is_the_paper_formula(z, variant):
    """UniP-2: ``x_t = linear x - scale (...)``; the paper writes ``- sigma_t B(h) a_1 D_1`` (noise) and
    ``- alpha_t B(-h) a_1 D_1`` (data) with ``a_1 = 1/2``: in this form the D_1 weight is ``B(z h) / z / 2``."""
    h, r = 0.37, -0.8
    c = StepCoefficients(h, 1.0, 1.0, z)
    B = {"bh1": lambda v: v, "bh2": math.expm1}[variant]
    terms = unipc_terms(c, variant, "n0", [r], ["n1"])
    n0, n1 = 0.3, -1.1
    i0 = math.expm1(z * h) / z
    expected = i0 * n0 + B(z * h) / z * 0.5 * (n1 - n0) / r
    assert _apply(terms, [n0, n1]) == pytest.approx(expected, rel=1e-14)


def test_bh2_order2_predictor_is_dpm_solver_2m():
    """With ``B(h) = e^h - 1`` and ``a_1 = 1/2`` UniP-2 is DPM-Solver-2M (``solver_type="dpmsolver"``)."""
    schedule = VPLinear()
    mixture = make_mixture_2d()
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for algorithm_type in ("dpmsolver", "dpmsolver++"):
        a = sample(mixture.as_model(schedule), schedule, x, steps=8, method="unipc", order=2, variant="bh2",
                   use_corrector=False, algorithm_type=algorithm_type, lower_order_final=False)
        b = sample(mixture.as_model(schedule), schedule, x, steps=8, method="multistep", order=2,
                   algorithm_type=algorithm_type, lower_order_final=False)
        assert torch.allclose(a.x, b.x, rtol=0, atol=1e-13)


@pytest.mark.parametrize("z", [1.0, -1.0, -4.0])
@pytest.mark.parametrize("K", [2, 3, 4])
def test_square_system_is_the_interpolating_polynomial(z, K):
    """For K >= 2 differences the system is square: UniPC integrates the polynomial through the K + 1 points
    exactly, whatever B(h) (compared with polynomial_terms, an independent inverse-Vandermonde construction)."""
    h = 0.6
    c = StepCoefficients(h, 1.0, 1.0, z)
    rks = [-0.7, -1.5, -2.1][:K - 1] + [1.0]  # K - 1 past points and the corrector's point
    values = [f"n{m}" for m in range(1, K + 1)]
    for variant in ("bh1", "bh2"):
        terms = unipc_terms(c, variant, "n0", rks, values)
        reference = polynomial_terms(c.integrals(K + 1), h, [0.0] + rks, ["n0"] + values)
        for (w, _), (w_ref, _) in zip(terms, reference):
            assert w == pytest.approx(w_ref, rel=1e-11, abs=1e-13)


@pytest.mark.parametrize("z", [1.0, -1.0])
@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_corrector_order_conditions(z, p):
    """UniC-p uses p + 1 values (the predictor's p and the new one at r = 1). It must integrate every polynomial
    of degree <= p exactly (p >= 2; the one-unknown p = 1 corrector uses a_1 = 1/2, exact to leading order) and
    must *not* be exact for degree p + 1. An indexing slip (the new point dropped from R, or b_k built from
    phi_k instead of phi_{k+1}) breaks the first assertion while everything still runs."""
    h = 0.45
    c = StepCoefficients(h, 1.0, 1.0, z)
    rks = [-(j + 1) * 0.8 for j in range(p - 1)] + [1.0]  # p - 1 past points and the new one
    points = [0.0] + [r * h for r in rks]
    terms = unipc_terms(c, "bh1", "n0", rks, [f"n{m}" for m in range(len(rks))])
    for degree in range(0, p + 2):
        poly = lambda u, d=degree: (u / h) ** d + 0.5
        approx = _apply(terms, [poly(u) for u in points])
        exact = _gauss_legendre_integral(c, poly)
        if degree <= p and (p >= 2 or degree == 0):
            assert approx == pytest.approx(exact, rel=1e-12), degree
        elif degree == p + 1:
            assert abs(approx - exact) > 1e-6 * abs(exact), degree


def test_predictor_order_conditions():
    """UniP-p (p >= 3: square system) is exact for polynomials of degree < p, not for degree p."""
    h, z = 0.5, -1.0
    c = StepCoefficients(h, 1.0, 1.0, z)
    for p in (3, 4):
        rks = [-(j + 1) * 0.9 for j in range(p - 1)]
        points = [0.0] + [r * h for r in rks]
        terms = unipc_terms(c, "bh2", "n0", rks, [f"n{m}" for m in range(p - 1)])
        for degree in range(p + 1):
            poly = lambda u, d=degree: (u / h) ** d
            approx, exact = _apply(terms, [poly(u) for u in points]), _gauss_legendre_integral(c, poly)
            if degree < p:
                assert approx == pytest.approx(exact, rel=1e-12, abs=1e-15)
            else:
                assert abs(approx - exact) > 1e-6 * abs(exact)


def test_diagonal_z_and_tensor_nodes():
    """A diagonal linear part (tensor z) and tensor nodes (differentiable grids) give the same weights."""
    h = 0.3
    zs = torch.tensor([-2.0, 0.5], dtype=torch.float64)
    c = StepCoefficients(h, 1.0, 1.0, zs)
    rks = [-1.0, -2.0]
    terms = unipc_terms(c, "bh1", "n0", rks, ["n1", "n2"])
    for i, z in enumerate(zs.tolist()):
        ci = StepCoefficients(h, 1.0, 1.0, z)
        for (w, _), (wi, _) in zip(terms, unipc_terms(ci, "bh1", "n0", rks, ["n1", "n2"])):
            assert float(w[i]) == pytest.approx(wi, rel=1e-13)
    ht = torch.tensor(h, dtype=torch.float64, requires_grad=True)
    ct = StepCoefficients(ht, 1.0, 1.0, -1.0)
    tensor_terms = unipc_terms(ct, "bh2", "n0", [torch.tensor(-1.0, dtype=torch.float64) * ht / ht], ["n1"])
    float_terms = unipc_terms(StepCoefficients(h, 1.0, 1.0, -1.0), "bh2", "n0", [-1.0], ["n1"])
    for (w, _), (wf, _) in zip(tensor_terms, float_terms):
        assert float(w.detach()) == pytest.approx(wf, rel=1e-13)
    sum(w for w, _ in tensor_terms).backward()
    assert ht.grad is not None and torch.isfinite(ht.grad)


@pytest.fixture(scope="module")
def problem_setup():
    mixture, schedule = make_mixture_2d(), VPLinear()
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return mixture, schedule, mixture.as_model(schedule), x


class _Counting:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.model(x, t)


@pytest.mark.parametrize("use_corrector", [True, False])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_nfe_equals_steps(problem_setup, order, use_corrector):
    _, schedule, model, x = problem_setup
    counting = _Counting(model)
    result = sample(counting, schedule, x, steps=7, method="unipc", order=order, use_corrector=use_corrector)
    assert result.nfe == counting.calls == 7
    assert result.options["variant"] == "bh1" and result.options["use_corrector"] is use_corrector


def test_deferred_correction_matches_the_algorithm(problem_setup):
    """The driver's deferred correction equals UniPC written out step by step: predict, evaluate the model at the
    predicted state, correct (that model value joins the history), ..., no corrector after the last step."""
    _, schedule, model, x = problem_setup
    for algorithm_type, prediction in (("dpmsolver", "noise"), ("dpmsolver++", "data")):
        result = sample(model, schedule, x, steps=5, method="unipc", order=3, variant="bh2",
                        algorithm_type=algorithm_type, skip_type="logSNR")
        problem = DiffusionODE(schedule, ModelWrapper(model, schedule), prediction)
        rule = UniPC(3, "bh2", True)
        ts = result.timesteps
        history, state = [], x
        for i, k in enumerate(result.orders):
            step = Step(i, float(ts[i]), float(ts[i + 1]), k)
            if i == 0:
                history.append((problem.rho(step.s), problem.nonlinear(state, step.s)))
            predicted = rule.predict(problem, state, step, history)
            if i == len(result.orders) - 1:
                state = predicted
                break
            n_t = problem.nonlinear(predicted, step.t)
            state = rule.correct(problem, state, step, history, n_t)
            history.append((problem.rho(step.t), n_t))
        assert result.orders == [1, 2, 3, 2, 1]
        assert torch.allclose(result.x, state, rtol=0, atol=1e-13)


def test_single_step_has_no_corrector(problem_setup):
    _, schedule, model, x = problem_setup
    a = sample(model, schedule, x, steps=1, method="unipc", order=1, use_corrector=True)
    b = sample(model, schedule, x, steps=1, method="unipc", order=1, use_corrector=False)
    assert torch.equal(a.x, b.x)


def test_explicit_grid(problem_setup):
    _, schedule, model, x = problem_setup
    a = sample(model, schedule, x, steps=6, method="unipc", order=2, skip_type="time_quadratic", t_end=1e-3)
    b = sample(model, schedule, x, timesteps=a.timesteps, method="unipc", order=2)
    assert torch.equal(a.x, b.x) and b.nfe == 6


def test_option_validation(problem_setup):
    _, schedule, model, x = problem_setup
    with pytest.raises(ValueError, match="'bh1', 'bh2'"):
        sample(model, schedule, x, method="unipc", variant="bh3")
    with pytest.raises(ValueError, match="only to method='unipc'"):
        sample(model, schedule, x, method="multistep", variant="bh1")
    with pytest.raises(ValueError, match="only to method='unipc'"):
        sample(model, schedule, x, method="singlestep", use_corrector=False)
    with pytest.raises(TypeError, match="use_corrector"):
        sample(model, schedule, x, method="unipc", use_corrector="yes")
    with pytest.raises(ValueError, match="compat"):
        sample(model, schedule, x, method="unipc", compat="official")
    with pytest.raises(ValueError, match="order"):
        sample(model, schedule, x, method="unipc", order=7)
    with pytest.raises(ValueError, match="steps must be >= order"):
        sample(model, schedule, x, method="unipc", order=3, steps=2)
    with pytest.raises(ValueError, match="variant"):
        UniPC(2, "bh0")


def test_registry_entries():
    names = [n for n in REGISTRY if n.startswith("UniP")]
    assert {"UniPC-2-bh1", "UniPC-3-bh2", "UniP-2-bh1"} <= set(names)
    for name in names:
        config = REGISTRY[name]
        p, corrector = config.options["order"], config.options["use_corrector"]
        assert config.order == p + (1 if corrector else 0)
        rule = config.make()
        assert isinstance(rule, UniPC) and rule.predictor_order == p and rule.use_corrector is corrector
        assert rule.order == config.order


def test_generic_semilinear_problem():
    """UniPC runs on the non-diffusion semi-linear problem with a diagonal linear part (tensor z)."""
    problem = BernoulliETDProblem(torch.tensor([-1.0, -6.0], dtype=torch.float64), c=1.0)
    x0 = torch.tensor([[0.4, 0.3]], dtype=torch.float64)
    rule = UniPC(2, "bh2", True)
    from expsolver import integrate
    ts = np.linspace(0.0, 1.0, 41)
    plan = [Step(i, float(ts[i]), float(ts[i + 1]), min(2, i + 1)) for i in range(40)]
    x = integrate(problem, rule, x0, plan).x
    assert torch.allclose(x, problem.exact(x0, 0.0, 1.0), rtol=0, atol=1e-4)


# -- fitted local orders ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vp():
    return VerificationProblem(n_samples=32)


@pytest.mark.parametrize("prediction", ["noise", "data"])
@pytest.mark.parametrize("p,variant,corrector", [(1, "bh1", False), (2, "bh1", False), (3, "bh2", False),
                                                 (1, "bh2", True), (2, "bh1", True), (2, "bh2", True),
                                                 (3, "bh1", True), (4, "bh2", True)])
def test_local_order(request, vp, prediction, p, variant, corrector):
    """One step from the exact history (the local protocol of :mod:`analysis.verification`): UniP-p has local
    order p + 1, UniP-p + UniC local order p + 2 (the corrector uses one model value at the predicted state,
    ``UniPC.update``)."""
    if p == 4 and prediction == "noise":
        # Local order 6: in the noise form the error is still pre-asymptotic (pair slopes < 5.8) where it meets the
        # reference's 1e-12 floor, so no window of >= 3 points has slope 6 +- 0.15 (measured 5.73). The data form
        # resolves it.
        request.applymarker(pytest.mark.xfail(strict=True, reason="order 6 not resolvable above the floor"))
    problem = vp.problem("dpmsolver" if prediction == "noise" else "dpmsolver++")
    hs, errors = one_step_errors(UniPC(p, variant, corrector), problem, vp.local_state, 0.0, LOCAL_HS)
    # RMS over the samples: one step from exact states has no mode switches, and RMS varies more smoothly with h
    # than the median (whose sample changes with h).
    rms = [float(np.sqrt(np.mean(e**2))) for e in errors]
    expected = p + 1 + (1 if corrector else 0)
    fit = fit_order(hs, rms, expected=expected, floor=LOCAL_FLOOR)
    assert fit.reliable, fit.reason
    assert abs(fit.slope - expected) <= TOL, (fit.slope, fit.window, rms)
