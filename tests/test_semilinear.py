"""SemiLinearODE: scalar, diagonal and dense linear parts; the phi-functions of a matrix; the problem interface.

* ``phi_matrices`` (one exponential of an augmented block matrix) against a diagonalisation of the symmetric
  Allen-Cahn Laplacian and against ``scipy.linalg.expm`` of the augmented matrix for the non-normal
  advection-diffusion operator: 1e-12 relative (Frobenius norm), for step sizes from 1e-3 to 1 (``|h lambda|`` up to
  1.3e3, where the recurrence ``phi_{k+1} = (phi_k - 1/k!) / z`` would be useless: the Laplacian is singular).
* Every registered solver gives the same path with a diagonal ``L`` passed as a dense matrix as with the diagonal
  path, and the scalar and diagonal coefficients are exactly those of the closed forms (bitwise).
* The shapes a dense ``L`` acts on, the errors that name what is wrong, and the weight algebra that keeps a
  matrix from being applied entry by entry.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from expsolver import integrate, reference_solve
from expsolver.phi_functions import phi_matrices, phis
from expsolver.problems import (BernoulliETDProblem, MatrixCoefficient, PhiCombination, SemiLinearODE,
                                SemiLinearProblem, combine)
from expsolver.solvers import REGISTRY

from semilinear_problems import advection_diffusion_matrix, allen_cahn_matrix

HS = (1e-3, 0.05, 1.0)


def _relative(a: torch.Tensor, b) -> float:
    b = torch.as_tensor(b, dtype=torch.float64)
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


@pytest.mark.parametrize("h", HS)
def test_matrix_phis_agree_with_a_diagonalisation(h):
    L = allen_cahn_matrix()
    eigenvalues, vectors = np.linalg.eigh(h * L.numpy())
    assert eigenvalues.max() > -1e-9 and eigenvalues.min() < -1.3e3 * h  # singular, stiff
    values = phi_matrices(4, h * L)
    for k in range(5):
        diagonal = np.array([phis(k, float(z))[k] for z in eigenvalues])
        assert _relative(values[k], (vectors * diagonal) @ vectors.T) < 1e-12, k


@pytest.mark.parametrize("h", HS)
def test_matrix_phis_of_a_non_normal_matrix_agree_with_scipy_expm(h):
    L = advection_diffusion_matrix()
    assert float(torch.linalg.norm(L @ L.T - L.T @ L)) > 1e3  # non-normal
    d, k = L.shape[0], 4
    W = np.zeros(((k + 1) * d, (k + 1) * d))
    W[:d, :d] = h * L.numpy()
    for j in range(k):
        W[j * d:(j + 1) * d, (j + 1) * d:(j + 2) * d] = np.eye(d)
    expected = scipy.linalg.expm(W)[:d]
    values = phi_matrices(k, h * L)
    for j in range(k + 1):
        assert _relative(values[j], expected[:, j * d:(j + 1) * d]) < 1e-12, j


def test_matrix_phis_at_zero_and_argument_errors():
    values = phi_matrices(3, torch.zeros(2, 2, dtype=torch.float64))
    for k, v in enumerate(values):
        assert torch.allclose(v, torch.eye(2, dtype=torch.float64) / math.factorial(k), rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="square 2-D"):
        phi_matrices(2, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="max_k"):
        phi_matrices(-1, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="finite"):
        phi_matrices(1, torch.tensor([[0.0, float("nan")], [0.0, 0.0]]))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_dense_diagonal_matrix_gives_the_diagonal_path(name):
    diagonal = torch.linspace(-30.0, -0.5, 6, dtype=torch.float64)
    N = lambda x, t: torch.sin(x) + 0.1 * t  # noqa: E731
    x0 = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ts = np.linspace(0.0, 1.0, 13)
    a = integrate(SemiLinearODE(diagonal, N), REGISTRY[name].make(), x0, ts).x
    b = integrate(SemiLinearODE(torch.diag(diagonal), N), REGISTRY[name].make(), x0, ts).x
    assert a.shape == b.shape == x0.shape
    assert float((a - b).abs().max()) < 1e-13


def test_scalar_and_diagonal_coefficients_are_the_closed_forms():
    c = SemiLinearODE(-3.0, lambda x, t: x).coefficients(0.25, 0.5)
    assert (c.h, c.linear, c.scale, c.z) == (0.25, math.exp(-3.0 * 0.25), 1.0, -3.0)
    assert c.integrals(2) == [0.25 * phis(2, -0.75)[1], 0.25**2 * phis(2, -0.75)[2]]
    L = torch.tensor([-0.5, -50.0], dtype=torch.float64)
    for problem in (SemiLinearODE(L, lambda x, t: x), BernoulliETDProblem(L)):
        c = problem.coefficients(0.0, 0.1)
        assert torch.equal(c.linear, torch.exp(L * 0.1)) and c.scale == 1.0 and torch.equal(c.z, L)
        assert all(torch.equal(a, 0.1 ** (j + 1) * b) for j, (a, b) in enumerate(zip(c.integrals(2), phis(2, L * 0.1)[1:])))


def test_a_dense_linear_part_acts_on_the_last_dimension():
    """The reported case: a 2 x 2 L and a state of shape (1, 2) used to come back as (2, 2), about 50 times off."""
    L = torch.tensor([[-40.0, 5.0], [2.0, -1.0]], dtype=torch.float64)
    problem = SemiLinearODE(L, lambda x, t: torch.cos(x))
    x0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    x = integrate(problem, REGISTRY["DPM-Solver-3S"].make(), x0, np.linspace(0.0, 1.0, 65)).x
    ref = reference_solve(problem, x0, 0.0, 1.0, method="Radau", rtol=1e-12, atol=1e-12)
    assert x.shape == (1, 2) and float((x - ref.x).abs().max()) < 1e-5
    with pytest.raises(ValueError, match=r"shape \(batch, \.\.\., 2\) to match the dense L of size 2"):
        integrate(problem, REGISTRY["DPM-Solver-2M"].make(), torch.zeros(1, 3, dtype=torch.float64), [0.0, 1.0])
    batched = integrate(problem, REGISTRY["DPM-Solver-3S"].make(), x0.expand(3, 4, 2), np.linspace(0.0, 1.0, 65)).x
    assert torch.allclose(batched[2, 3], x[0], rtol=1e-14, atol=0)


@pytest.mark.parametrize("linear, nonlinear, exc, words", [
    ("abc", lambda x, t: x, TypeError, "linear must be a real number"),
    (True, lambda x, t: x, TypeError, "linear must be a real number"),
    (torch.zeros(2, 3), lambda x, t: x, ValueError, "square 2-D tensor"),
    (torch.zeros(2, 2, 2), lambda x, t: x, ValueError, "got shape \\(2, 2, 2\\)"),
    (torch.zeros(0), lambda x, t: x, ValueError, "non-empty"),
    (torch.tensor([[0.0, float("inf")], [0.0, 0.0]]), lambda x, t: x, ValueError, "linear must be finite"),
    (torch.tensor([1j, 2j]), lambda x, t: x, TypeError, "linear must be real"),
    (-1.0, "not callable", TypeError, "nonlinear must be callable"),
])
def test_bad_problems_name_the_argument(linear, nonlinear, exc, words):
    with pytest.raises(exc, match=words):
        SemiLinearODE(linear, nonlinear)


def test_a_nonlinear_term_of_another_shape_is_named():
    problem = SemiLinearODE(torch.eye(2, dtype=torch.float64), lambda x, t: x.sum(-1))
    with pytest.raises(ValueError, match=r"nonlinear\(x, t\) must return a tensor of the state's shape \(1, 2\)"):
        problem.nonlinear(torch.zeros(1, 2, dtype=torch.float64), 0.0)


def test_bernoulli_names_L():
    with pytest.raises(TypeError, match="^L must be a real number"):
        BernoulliETDProblem("abc")
    with pytest.raises(ValueError, match="L must be a 1-D tensor of finite, non-zero"):
        BernoulliETDProblem(torch.tensor([-1.0, 0.0]))


def test_a_problem_missing_methods_fails_at_construction_naming_them():
    class Incomplete(SemiLinearProblem):
        def rho(self, t):
            return t

        def nonlinear(self, x, t):
            return x

    with pytest.raises(TypeError, match="coefficients, nfe, t_of_rho"):
        Incomplete()


def test_phi_combination_algebra():
    problem = SemiLinearODE(advection_diffusion_matrix(8), lambda x, t: x)
    c = problem.coefficients(0.0, 0.1)
    i0, i1 = c.integrals(2)
    E, I0, I1 = problem.step_matrices(0.1, 2)[:3]
    eye = torch.eye(8, dtype=torch.float64)
    assert torch.allclose((i0 - 0.5 * i1 / 0.1 + 2.0).matrix(), I0 - 5.0 * I1 + 2.0 * eye, rtol=0, atol=1e-15)
    assert torch.allclose((1.0 - i0).matrix(), eye - I0, rtol=0, atol=1e-15)
    assert torch.equal(c.linear.matrix(), E) and torch.equal(sum([i0, i1]).matrix(), I0 + I1)
    x = torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    n = torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = combine(c, x, [(i0 - 0.25, n), (0.25, x)])
    assert torch.allclose(out, x @ E.T + n @ (I0 - 0.25 * eye).T + 0.25 * x, rtol=0, atol=1e-14)
    with pytest.raises(TypeError, match="multiplies real numbers only"):
        i0 * n
    with pytest.raises(TypeError, match="two different steps"):
        i0 + problem.coefficients(0.0, 0.2).integrals(1)[0]
    assert isinstance(-i0 / 2, PhiCombination)


def test_matrix_coefficient_algebra():
    A = torch.tensor([[0.0, 1.0], [-2.0, -3.0]], dtype=torch.float64).as_subclass(MatrixCoefficient)
    plain = A.as_subclass(torch.Tensor)
    assert torch.allclose(torch.exp(A).as_subclass(torch.Tensor), torch.linalg.matrix_exp(plain), rtol=0, atol=0)
    assert torch.equal((A + 1.0).as_subclass(torch.Tensor), plain + torch.eye(2, dtype=torch.float64))
    assert torch.equal((2.0 - A).as_subclass(torch.Tensor), 2.0 * torch.eye(2, dtype=torch.float64) - plain)
    assert torch.equal((0.5 * A / 2).as_subclass(torch.Tensor), plain / 4)
    # Operators turn the TypeError into Python's "unsupported operand"; the torch functions keep the message.
    with pytest.raises(TypeError, match="of two MatrixCoefficients"):
        torch.mul(A, A)
    with pytest.raises(TypeError, match="only scalars"):
        torch.mul(A, torch.ones(3, 2, dtype=torch.float64))
    for bad in (lambda: A * A, lambda: A * torch.ones(3, 2, dtype=torch.float64), lambda: 1.0 / A, lambda: A ** 2):
        with pytest.raises(TypeError):
            bad()
