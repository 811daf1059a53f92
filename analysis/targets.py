"""The project's standard targets and schedule: every study, test and figure uses these.

All parameters are fixed here (numbers written out, or drawn from a ``numpy`` generator with a fixed seed), so a
target is the same object on every machine and in every run. Each function builds a fresh
:class:`~expsolver.GaussianMixture` (they are cheap).

* :func:`target_2d`: a sharp 2-D mixture of 6 components with small diagonal covariances (standard deviations
  0.08-0.2) and unequal weights: five modes on a ring of radius about 2 and one at the centre. The modes are well
  separated compared with their widths, so the exact noise prediction changes quickly across the boundaries
  between them: this is where few-step samplers send samples to the wrong mode.
* :func:`target_16d`: a 16-D mixture of 4 components with full, anisotropic covariances (eigenvalues spread over
  about two decades) and means at distance about 3 from the origin.
* :func:`verification_target`: a 2-D mixture of 3 separated components (isotropic variances 0.05-0.1) on
  which every solver's declared order is reached above the error floor (:mod:`analysis.verification`; the order
  tests and the orders of ``summary.json``).
* :func:`standard_schedule`: ``VPLinear()`` (``beta_0 = 0.1``, ``beta_1 = 20``, ``T = 1``).
* :data:`T_START`, :data:`T_END`: the integration interval ``[1e-3, 1]`` (the official defaults for the linear
  schedule).
"""

from __future__ import annotations

import numpy as np

from expsolver import GaussianMixture, VPLinear

__all__ = ["target_2d", "target_16d", "verification_target", "standard_schedule", "TARGETS", "get_target",
           "T_START", "T_END"]

T_START = 1.0
T_END = 1e-3

#: Seed of the numpy generator that draws :func:`target_16d`'s parameters.
TARGET_16D_SEED = 20240416


def standard_schedule() -> VPLinear:
    """The standard schedule: the linear VP schedule ``VPLinear(beta_0=0.1, beta_1=20.0)`` on ``(0, 1]``."""
    return VPLinear()


def target_2d() -> GaussianMixture:
    """A sharp 2-D Gaussian mixture with 6 components and diagonal covariances.

    Five components sit on a ring of radius 2 (angles 90, 162, 234, 306 and 18 degrees, the last one pulled in
    to radius 1.6), one at the origin. Standard deviations per axis are between 0.08 and 0.2, weights between
    0.10 and 0.25, so the density has narrow, unequal modes with sharp boundaries between their basins.

    Returns
    -------
    GaussianMixture
        ``K = 6``, ``d = 2``, ``cov_type == "diag"``.
    """
    angles = np.deg2rad([90.0, 162.0, 234.0, 306.0, 18.0])
    radii = np.array([2.0, 2.0, 2.0, 2.0, 1.6])
    ring = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    means = np.concatenate([ring, [[0.0, 0.0]]], axis=0)
    stds = np.array([
        [0.10, 0.20],
        [0.15, 0.08],
        [0.12, 0.12],
        [0.20, 0.10],
        [0.08, 0.15],
        [0.15, 0.15],
    ])
    weights = np.array([0.20, 0.15, 0.10, 0.20, 0.10, 0.25])
    return GaussianMixture(weights, means, stds**2)


def target_16d() -> GaussianMixture:
    """A 16-D Gaussian mixture with 4 components and full covariances (parameters drawn with a fixed seed).

    With ``rng = numpy.random.default_rng(TARGET_16D_SEED)``: means ``mu_k = 3 u_k`` for unit vectors ``u_k``
    drawn uniformly on the sphere; covariances ``Sigma_k = Q_k diag(s_k) Q_k^T`` with ``Q_k`` a random orthogonal
    matrix (QR of a Gaussian matrix) and ``s_k`` log-uniform in ``[0.01, 1]`` (standard deviations 0.1-1);
    weights ``(0.4, 0.3, 0.2, 0.1)``.

    Returns
    -------
    GaussianMixture
        ``K = 4``, ``d = 16``, ``cov_type == "full"``.
    """
    rng = np.random.default_rng(TARGET_16D_SEED)
    d, k = 16, 4
    u = rng.standard_normal((k, d))
    means = 3.0 * u / np.linalg.norm(u, axis=1, keepdims=True)
    covs = np.empty((k, d, d))
    for i in range(k):
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        q = q * np.sign(np.diag(r))  # Haar-distributed orthogonal matrix
        s = np.exp(rng.uniform(np.log(0.01), np.log(1.0), size=d))
        covs[i] = (q * s) @ q.T
        covs[i] = 0.5 * (covs[i] + covs[i].T)
    weights = np.array([0.4, 0.3, 0.2, 0.1])
    return GaussianMixture(weights, means, covs)


def verification_target() -> GaussianMixture:
    """The order-verification mixture: three components in 2-D, weights ``(0.5, 0.3, 0.2)``, means ``(1, 0.5)``,
    ``(-1, -0.5)``, ``(0.3, -1.2)``, isotropic variances ``0.05``, ``0.1``, ``0.08``
    (standard deviations 0.22-0.32).

    Not a single Gaussian (so no leading error term vanishes), yet mild enough that the fourth-order methods reach
    their asymptotic range at a few hundred steps (:mod:`analysis.verification`).
    """
    return GaussianMixture([0.5, 0.3, 0.2], [[1.0, 0.5], [-1.0, -0.5], [0.3, -1.2]], [0.05, 0.1, 0.08])


#: Name -> constructor of the standard targets.
TARGETS = {"2d": target_2d, "16d": target_16d}


def get_target(name: str) -> GaussianMixture:
    """The standard target called ``name`` (a key of :data:`TARGETS`)."""
    if name not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(map(repr, TARGETS))}, got {name!r}")
    return TARGETS[name]()
