"""Noise sources for the stochastic samplers, and coupled Brownian paths with exponentially weighted increments.

Where the noise enters
----------------------
The reverse SDE (Song et al. 2021 eq. (6)) ``dx = [f x + g^2/sigma_t eps] dt + g(t) dw_bar`` has additive noise. Since
``g^2 = -2 sigma_t^2 dlam/dt``, the time change ``t -> lam`` turns it into

    g(t) dw_bar_t = sqrt(2) sigma(lam) dB_lam,                 B a standard Brownian motion in lam,

(both sides are Gaussian with variance ``g^2 |dt| = 2 sigma^2 dlam``). Variation of constants over a step
``lam_s -> lam_t = lam_s + h`` (see :mod:`expsolver.solvers.sde`) then gives the noise term of the exact solution

* data form (SDE-DPM-Solver++): ``(sigma_t/sigma_tau) e^{-(lam_t - lam_tau)} sqrt(2) sigma_tau dB`` integrated, i.e.
  ``sqrt(2) sigma_t I_{-1}(lam_s, lam_t)``;
* noise form (SDE-DPM-Solver): ``(alpha_t/alpha_tau) sqrt(2) sigma_tau dB`` integrated, i.e.
  ``sqrt(2) sigma_t I_{+1}(lam_s, lam_t)``;

with the exponentially weighted Ito integral (``u`` the elapsed integration variable, ``kappa`` its *rate*)

    I_kappa(a, b) = int_a^b e^{kappa (b - u)} dB_u,     Var = v_kappa(b - a),
    v_kappa(delta) = int_0^delta e^{2 kappa u} du = delta phi_1(2 kappa delta)               (Ito isometry).

So ``sqrt(2) sigma_t sqrt(v_{-1}(h)) = sigma_t sqrt(1 - e^{-2h})`` and ``sigma_t sqrt(e^{2h} - 1)``: the noise
amplitudes of the two methods. Euler-Maruyama in ``t`` uses the plain increment ``I_0 = W_t - W_s`` (rate 0, in
the variable ``t``).

Exact aggregation (coupled paths)
---------------------------------
For a fine partition ``a = u_0 < u_1 < ... < u_m = b`` split the integral and factor the kernel,
``e^{kappa (b - u)} = e^{kappa (b - u_{i+1})} e^{kappa (u_{i+1} - u)}``:

    I_kappa(a, b) = sum_i e^{kappa (b - u_{i+1})} I_kappa(u_i, u_{i+1}).                    (A)

This is an identity between random variables of one path, not an approximation: the coarse noise is a weighted sum
of the fine noises with *exponential* weights. A plain sum ``sum_i I_kappa(u_i, u_{i+1})`` has the wrong variance
(``sum_i v_kappa(delta_i) != v_kappa(b - a)`` unless ``kappa = 0``) and the wrong correlation with the path. The
fine increments of different rates over the same interval are jointly Gaussian with

    Cov(I_kappa(u_i, u_{i+1}), I_mu(u_i, u_{i+1})) = int_0^delta e^{(kappa + mu) u} du = delta phi_1((kappa + mu) delta),

and independent across disjoint intervals, so :class:`BrownianPath` draws them exactly once at the finest
resolution (for every rate it will be asked for, jointly) and (A) serves every coarser grid contained in the fine
one. Two samplers on different grids of the same path see the same Brownian motion: the basis of strong-error
measurements (Kloeden & Platen 1992, Sec. 9.3; the exponential weights are those of the stochastic exponential
Euler scheme, Jentzen & Kloeden 2009).

Noise sources
-------------
A stochastic step rule asks its noise source for a *standard normal* ``z`` per step,
``source.normal(index, variable, a, b, rate, like)`` (step ``index`` from ``a`` to ``b`` in ``variable``), and scales
it itself. Sources: :class:`GeneratorNoise` (fresh ``torch.randn`` per step from a ``torch.Generator``, or one
generator per sample), :class:`TensorNoise` (an explicit tensor ``(n_steps, *x.shape)``), :class:`BrownianPath`
(``I_kappa(a, b) / sqrt(v_kappa(b - a))`` from a path). :func:`noise_source` validates the user's ``noise=`` /
``generator=`` arguments and builds one.

Determinism: with one ``torch.Generator`` the draws for the whole batch come from one stream, so sample ``b``'s
noise depends on the batch size and on the samples before it. With a *list* of generators (one per sample, like
diffusers and EDM's stacked generator) sample ``b``'s noise comes only from ``generator[b]``, so its trajectory
does not depend on the batch it is in (as long as the model treats samples independently).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._validation import check_finite_array, check_float, check_int
from .phi_functions import phis

__all__ = ["NoiseSource", "GeneratorNoise", "TensorNoise", "BrownianPath", "noise_source", "check_generator",
           "exp_weighted_variance", "refine", "VARIABLES"]

#: Variables a noise integral can be taken in: the half log-SNR (exponential integrators) or the time (Euler-Maruyama).
VARIABLES = ("lam", "t")


def exp_weighted_variance(rate: float, delta: float) -> float:
    """``v_rate(delta) = int_0^delta e^{2 rate u} du = delta phi_1(2 rate delta)`` (float64, stable for small
    ``rate * delta``): the variance of ``I_rate`` over an interval of length ``delta >= 0``."""
    return delta * phis(1, 2.0 * rate * delta)[1]


def _exp_weighted_covariance(rates, delta: float) -> np.ndarray:
    """Covariance matrix of ``(I_{rate_j}(0, delta))_j``: ``C[j, k] = delta phi_1((rate_j + rate_k) delta)``."""
    r = len(rates)
    c = np.empty((r, r))
    for j in range(r):
        for k in range(r):
            c[j, k] = delta * phis(1, (rates[j] + rates[k]) * delta)[1]
    return c


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric square root ``A`` with ``A A^T = C`` for a positive semi-definite ``C`` (rounding clipped)."""
    w, u = np.linalg.eigh(0.5 * (c + c.T))
    return (u * np.sqrt(np.clip(w, 0.0, None))) @ u.T


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index is None or b.index is None or a.index == b.index


def check_generator(generator, x: torch.Tensor, name: str = "generator"):
    """Validate ``generator`` for a state ``x``: ``None``, a :class:`torch.Generator` on ``x``'s device, or a list or
    tuple of ``x.shape[0]`` such generators (one per sample). Returns ``None``, the generator or a tuple."""
    if generator is None:
        return None
    gens = tuple(generator) if isinstance(generator, (list, tuple)) else (generator,)
    for k, g in enumerate(gens):
        where = name if len(gens) == 1 and not isinstance(generator, (list, tuple)) else f"{name}[{k}]"
        if not isinstance(g, torch.Generator):
            raise TypeError(f"{where} must be a torch.Generator (or a list of them, one per sample), "
                            f"got {type(g).__name__}")
        if not _same_device(torch.device(g.device), x.device):
            raise TypeError(f"{where} is on device {g.device}, but x is on {x.device}; create the generator "
                            f"with torch.Generator(device={str(x.device)!r})")
    if isinstance(generator, (list, tuple)):
        if len(gens) != x.shape[0]:
            raise ValueError(f"{name} must hold one generator per sample: got {len(gens)} generators for a "
                             f"batch of {x.shape[0]}")
        return gens
    return generator


class NoiseSource:
    """Interface: ``normal(index, variable, a, b, rate, like)`` returns a standard normal tensor shaped like
    ``like`` (its dtype and device) for step ``index`` from ``a`` to ``b`` in ``variable``, whose noise integral has
    kernel rate ``rate`` (only a :class:`BrownianPath` uses ``variable``, ``a``, ``b`` and ``rate``)."""

    def normal(self, index: int, variable: str, a: float, b: float, rate: float, like: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GeneratorNoise(NoiseSource):
    """Fresh independent ``N(0, I)`` draws per step (the exact law of normalised increments over disjoint steps).

    Parameters
    ----------
    generator : torch.Generator, sequence of torch.Generator, or None
        One generator for the whole batch (``torch.randn(x.shape)`` per step), one per sample
        (``torch.randn(x.shape[1:])`` from ``generator[b]`` for sample ``b``: independent of the batch), or
        ``None`` (torch's global generator). Draws are made in the state's dtype on the state's device.
    """

    def __init__(self, generator=None):
        self.generator = generator

    def normal(self, index, variable, a, b, rate, like):
        g = self.generator
        if isinstance(g, tuple):
            return torch.stack([torch.randn(like.shape[1:], generator=gb, dtype=like.dtype, device=like.device)
                                for gb in g])
        return torch.randn(like.shape, generator=g, dtype=like.dtype, device=like.device)


class TensorNoise(NoiseSource):
    """Explicit standard normals: step ``index`` uses ``noise[index]`` (shape ``(n_steps, *x.shape)``)."""

    def __init__(self, noise: torch.Tensor):
        self.noise = noise

    def normal(self, index, variable, a, b, rate, like):
        return self.noise[index].to(dtype=like.dtype, device=like.device)


def refine(nodes, factor: int) -> np.ndarray:
    """Subdivide every interval of a monotone grid ``nodes`` (any variable) into ``factor`` equal parts.

    The result contains ``nodes`` exactly (the original points are copied, not recomputed), so a
    :class:`BrownianPath` on it serves the grid ``nodes`` and every grid made of its points.
    """
    v = check_finite_array(nodes, "nodes")
    factor = check_int(factor, "factor", minimum=1)
    if v.shape[0] < 2 or not (np.all(np.diff(v) > 0) or np.all(np.diff(v) < 0)):
        raise ValueError(f"nodes must be strictly monotone with at least 2 points, got {v.tolist()!r}")
    frac = np.arange(factor) / factor
    out = (v[:-1, None] + frac[None, :] * np.diff(v)[:, None]).reshape(-1)
    out[::factor] = v[:-1]
    return np.concatenate([out, v[-1:]])


class BrownianPath(NoiseSource):
    """A Brownian motion sampled once on a fine grid, with exact exponentially weighted increments.

    For every fine interval ``[u_i, u_{i+1}]`` and every rate ``kappa`` in ``rates`` the path holds
    ``I_kappa(u_i, u_{i+1}) = int e^{kappa (u_{i+1} - u)} dB_u``, drawn jointly with their exact covariance (module
    docstring). Any interval ``[a, b]`` whose end points are grid nodes is then served exactly by the aggregation
    (A), ``I_kappa(a, b) = sum_i e^{kappa (b - u_{i+1})} I_kappa(u_i, u_{i+1})``.

    Parameters
    ----------
    nodes : array-like, shape (M + 1,)
        Strictly monotone grid of the path's variable, in the order the sampler traverses it (increasing ``lam``
        for the exponential integrators, decreasing ``t`` for Euler-Maruyama). The elapsed integration variable is
        ``u = |node - nodes[0]|``.
    shape : tuple of int
        Shape of the state, ``(batch, *dims)``; each entry has its own independent path.
    variable : {"lam", "t"}
        The variable of ``nodes``; a step rule asking for another one gets a ``ValueError``.
    rates : sequence of float
        Kernel rates to hold (``-1`` for SDE-DPM-Solver++ and the DDPM ancestral step, ``+1`` for SDE-DPM-Solver,
        ``0`` for plain increments). All come from the same Brownian motion ``B``.
    generator : torch.Generator, sequence of torch.Generator, or None
        One generator for the whole path, or one per sample (sample ``b``'s path then depends only on
        ``generator[b]``). Draws are made in float64 on the generator's device (CPU by default).
    dtype : torch.dtype
        Storage dtype of the increments (float64 by default); ``normal`` casts to the state's dtype.
    device : torch.device or str, optional
        Storage device (default: the generator's device).

    Notes
    -----
    Memory: ``M * len(rates) * prod(shape)`` numbers. Aggregating one step over ``m`` fine intervals costs
    ``O(m * prod(shape))``, so a pass over a coarse grid costs one pass over the fine increments.
    """

    def __init__(self, nodes, shape, *, variable: str = "lam", rates=(-1.0,), generator=None,
                 dtype: torch.dtype = torch.float64, device=None):
        v = check_finite_array(nodes, "nodes")
        if v.shape[0] < 2:
            raise ValueError(f"nodes must hold at least 2 points, got {v.shape[0]}")
        diffs = np.diff(v)
        if not (np.all(diffs > 0) or np.all(diffs < 0)):
            raise ValueError("nodes must be strictly monotone (increasing lam or decreasing t)")
        if variable not in VARIABLES:
            raise ValueError(f"variable must be one of {', '.join(map(repr, VARIABLES))}; got {variable!r}")
        if isinstance(shape, torch.Size):
            shape = tuple(shape)
        if not isinstance(shape, tuple) or len(shape) < 1 or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape):
            raise ValueError(f"shape must be a tuple of positive ints (batch, *dims), got {shape!r}")
        rates = tuple(check_float(r, "rates") for r in (rates if isinstance(rates, (list, tuple)) else (rates,)))
        if not rates or len(set(rates)) != len(rates):
            raise ValueError(f"rates must be a non-empty sequence of distinct numbers, got {rates!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        per_sample = isinstance(generator, (list, tuple))
        gens = None if generator is None else (tuple(generator) if per_sample else (generator,))
        for g in gens or ():
            if not isinstance(g, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(g).__name__}")
        if per_sample:
            if len(gens) != shape[0]:
                raise ValueError(f"generator must hold one generator per sample: got {len(gens)} for a batch of "
                                 f"{shape[0]}")
            if len({str(torch.device(g.device)) for g in gens}) != 1:
                raise ValueError("all generators in the generator list must be on one device")
        gen_device = torch.device(gens[0].device) if gens else torch.device("cpu")
        device = gen_device if device is None else torch.device(device)

        self.variable = variable
        self.nodes = v
        self.shape = shape
        self.rates = rates
        self._direction = 1.0 if diffs[0] > 0 else -1.0
        self._elapsed = self._direction * (v - v[0])  # u_i, increasing from 0
        self._scale = max(1.0, float(np.max(np.abs(v))))
        deltas = np.diff(self._elapsed)
        n_int, n_rates = deltas.shape[0], len(rates)

        # z: (M, R, *shape) standard normals; per-sample generators fill their own slice only.
        if per_sample:
            z = torch.stack([torch.randn((n_int, n_rates) + shape[1:], generator=g, dtype=torch.float64,
                                         device=gen_device) for g in gens], dim=2)
        else:
            z = torch.randn((n_int, n_rates) + shape, generator=None if gens is None else gens[0],
                            dtype=torch.float64, device=gen_device)
        if n_rates == 1:
            amp = torch.tensor(np.sqrt([exp_weighted_variance(rates[0], d) for d in deltas]), dtype=torch.float64,
                               device=gen_device)
            inc = z * amp.view((n_int, 1) + (1,) * len(shape))
        else:
            amp = torch.tensor(np.stack([_psd_sqrt(_exp_weighted_covariance(rates, d)) for d in deltas]),
                               dtype=torch.float64, device=gen_device)  # (M, R, R)
            inc = torch.einsum("mjk,mk...->mj...", amp, z)
        self._increments = inc.to(dtype=dtype, device=device)

    @classmethod
    def from_times(cls, schedule, ts, shape, *, variable: str = "lam", **kwargs) -> "BrownianPath":
        """A path whose nodes are the times ``ts`` (decreasing) expressed in ``variable``:
        ``schedule.lams_of(ts)`` for ``"lam"``, ``ts`` itself for ``"t"``."""
        ts = check_finite_array(ts, "ts")
        nodes = schedule.lams_of(ts) if variable == "lam" else ts
        return cls(nodes, shape, variable=variable, **kwargs)

    def __repr__(self):
        return (f"BrownianPath(variable={self.variable!r}, n_intervals={len(self.nodes) - 1}, shape={self.shape}, "
                f"rates={self.rates})")

    def index(self, value: float, name: str = "value") -> int:
        """The index of the node equal to ``value`` (to 1e-9 relative); ``ValueError`` if there is none."""
        value = float(value)
        j = int(np.searchsorted(self._elapsed, self._direction * (value - self.nodes[0])))
        i = min(range(max(0, j - 1), min(len(self.nodes), j + 1)), key=lambda k: abs(self.nodes[k] - value))
        if abs(self.nodes[i] - value) > 1e-9 * self._scale:
            raise ValueError(f"noise: the BrownianPath has no node at {self.variable}={value!r} ({name}); build it "
                             f"on a refinement of the sampler's grid (see expsolver.brownian.refine)")
        return i

    def increment(self, a: float, b: float, rate: float) -> torch.Tensor:
        """``I_rate(a, b)`` (float64 unless the path stores another dtype), by the exact aggregation (A)."""
        if rate not in self.rates:
            raise ValueError(f"noise: the BrownianPath holds rates {self.rates}, not {rate!r}; create it with "
                             f"rates=(..., {rate!r})")
        j = self.rates.index(rate)
        ia, ib = self.index(a, "step start"), self.index(b, "step end")
        if ib <= ia:
            raise ValueError(f"noise: the step {self.variable}: {a!r} -> {b!r} runs against the path's direction")
        weights = np.exp(rate * (self._elapsed[ib] - self._elapsed[ia + 1: ib + 1]))
        w = torch.as_tensor(weights, dtype=self._increments.dtype, device=self._increments.device)
        block = self._increments[ia:ib, j]
        return torch.tensordot(w, block, dims=([0], [0]))

    def normal(self, index, variable, a, b, rate, like):
        if variable != self.variable:
            raise ValueError(f"noise: this step rule integrates its noise in {variable!r}, but the BrownianPath is "
                             f"in {self.variable!r}")
        if tuple(like.shape) != self.shape:
            raise ValueError(f"noise: the BrownianPath has shape {self.shape}, the state {tuple(like.shape)}")
        delta = self._direction * (float(b) - float(a))
        z = self.increment(a, b, rate) / math.sqrt(exp_weighted_variance(rate, delta))
        return z.to(dtype=like.dtype, device=like.device)


def noise_source(noise, generator, x: torch.Tensor, n_steps: int) -> NoiseSource:
    """Validate the ``noise=`` / ``generator=`` arguments of a stochastic sampler and build its noise source.

    Parameters
    ----------
    noise : None, torch.Tensor of shape (n_steps, *x.shape), or BrownianPath
        Explicit standard normals (one per step) or a Brownian path of ``x``'s shape.
    generator : None, torch.Generator, or a sequence of ``x.shape[0]`` generators
        Used when ``noise`` is None; must be on ``x``'s device.
    x : torch.Tensor
        The initial state.
    n_steps : int
        Steps the sampler will take.

    Raises
    ------
    TypeError
        ``noise`` of another type; a generator that is not a ``torch.Generator`` or is on another device.
    ValueError
        Both given; ``noise`` of the wrong shape or not finite; a generator list of the wrong length.
    """
    if noise is not None and generator is not None:
        raise ValueError("give either noise= or generator=, not both (noise fixes every random number)")
    if noise is None:
        return GeneratorNoise(check_generator(generator, x))
    if isinstance(noise, BrownianPath):
        if noise.shape != tuple(x.shape):
            raise ValueError(f"noise: the BrownianPath has shape {noise.shape}, but x has shape {tuple(x.shape)}")
        return noise
    if isinstance(noise, torch.Tensor):
        expected = (n_steps,) + tuple(x.shape)
        if tuple(noise.shape) != expected:
            raise ValueError(f"noise must have shape (steps, *x.shape) = {expected}, got {tuple(noise.shape)}")
        if not noise.is_floating_point():
            raise TypeError(f"noise must be a floating-point tensor, got dtype {noise.dtype}")
        if not bool(torch.isfinite(noise).all()):
            raise ValueError("noise contains NaN or Inf entries")
        return TensorNoise(noise)
    raise TypeError(f"noise must be None, a torch.Tensor of shape (steps, *x.shape) or a BrownianPath, "
                    f"got {type(noise).__name__}")
