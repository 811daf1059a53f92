"""Two stiff semi-linear test problems with dense linear parts (finite differences on 64 points), float64.

* :func:`allen_cahn`: ``u_t = D u_xx + u - u^3`` on ``[0, 1]``, homogeneous Neumann conditions, cell-centred
  second differences (a symmetric ``L``: eigenvalues from ``-4 D / dx^2 = -1.31e3`` to 0, so ``L`` is singular);
  initial states a few smooth cosine modes.
* :func:`advection_diffusion`: ``u_t = nu u_xx - a u_x + u cos(t) - u^3`` on ``[0, 1]``, homogeneous Dirichlet
  conditions, first-order upwind advection: a non-normal ``L`` (Toeplitz, not symmetric; eigenvalues down to about
  -460); initial states a few sine modes.
"""

import math

import numpy as np
import torch

from expsolver.problems import SemiLinearODE

N_POINTS = 64


def allen_cahn_matrix(n: int = N_POINTS, diffusion: float = 0.08) -> torch.Tensor:
    dx = 1.0 / n
    L = np.diag(np.full(n, -2.0)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    L[0, 0] = L[-1, -1] = -1.0  # cell-centred Neumann: the ghost value equals the boundary cell
    return torch.tensor(L * diffusion / dx**2)


def allen_cahn() -> SemiLinearODE:
    return SemiLinearODE(allen_cahn_matrix(), lambda u, t: u - u**3)


def allen_cahn_states(batch: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = (torch.arange(N_POINTS, dtype=torch.float64) + 0.5) / N_POINTS
    c = torch.randn(batch, 3, dtype=torch.float64, generator=g)
    return 0.5 * c[:, :1] * torch.cos(math.pi * x) + 0.3 * c[:, 1:2] * torch.cos(2 * math.pi * x) + 0.2 * c[:, 2:]


def advection_diffusion_matrix(n: int = N_POINTS, nu: float = 0.02, a: float = 1.0) -> torch.Tensor:
    dx = 1.0 / (n + 1)
    L = (np.diag(np.full(n, -2.0 * nu / dx**2 - a / dx)) + np.diag(np.full(n - 1, nu / dx**2), 1)
         + np.diag(np.full(n - 1, nu / dx**2 + a / dx), -1))
    return torch.tensor(L)


def advection_diffusion() -> SemiLinearODE:
    return SemiLinearODE(advection_diffusion_matrix(), lambda u, t: u * math.cos(t) - u**3)


def advection_diffusion_states(batch: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(1, N_POINTS + 1, dtype=torch.float64) / (N_POINTS + 1)
    c = torch.randn(batch, 2, dtype=torch.float64, generator=g)
    return c[:, :1] * torch.sin(math.pi * x) + 0.5 * c[:, 1:] * torch.sin(2 * math.pi * x)


PROBLEMS = {"allen-cahn": (allen_cahn, allen_cahn_states),
            "advection-diffusion": (advection_diffusion, advection_diffusion_states)}
