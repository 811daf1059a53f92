"""expsolver: exponential integrators for diffusion ODEs, verified on exact Gaussian-mixture targets.

Public surface: noise schedules (:class:`VPLinear`, :class:`VPCosine`, :class:`VPDiscrete`), analytic targets
(:class:`GaussianMixture`), the sampler front door :func:`sample`, reference solutions :func:`reference_solve`,
the semi-linear problem layer and the registry of named solver configurations.
"""

from .gmm import GaussianMixture
from .grids import SKIP_TYPES, check_grid, time_grid
from .models import ModelWrapper
from .phi_functions import phi, phis
from . import convergence
from .problems import (BernoulliETDProblem, DiffusionODE, LamDiffusionODE, SemiLinearODE, SemiLinearProblem,
                       StepCoefficients)
from .optimize import OptimizedGrid, optimize_timesteps
from .reference import ReferenceResult, reference_solve
from .driver import Solution, integrate
from .stepsize import AdaptiveController
from .sampling import SampleResult, sample
from .schedules import VPCosine, VPDiscrete, VPLinear, VPSchedule
from .brownian import BrownianPath
from .sde_sampling import reverse_sde_sample
from .solvers.sde import SDE_REGISTRY, ReverseDiffusionSDE
from .solvers import REGISTRY, SolverConfig
from .solvers.base import MultistepSolver, Solver, Step

__all__ = [
    "VPSchedule", "VPLinear", "VPCosine", "VPDiscrete",
    "GaussianMixture",
    "sample", "SampleResult", "integrate", "Solution", "AdaptiveController", "Solver", "MultistepSolver", "Step",
    "reference_solve", "ReferenceResult",
    "ModelWrapper", "SemiLinearProblem", "SemiLinearODE", "DiffusionODE", "LamDiffusionODE", "BernoulliETDProblem", "StepCoefficients",
    "phi", "phis", "time_grid", "check_grid", "SKIP_TYPES",
    "REGISTRY", "SolverConfig",
    "optimize_timesteps", "OptimizedGrid",
    "reverse_sde_sample", "BrownianPath", "SDE_REGISTRY", "ReverseDiffusionSDE", "convergence",
]
