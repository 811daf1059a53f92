"""Gaussian mixtures: exact targets whose every diffusion marginal, score and flow are closed-form.

For ``q_0 = sum_k w_k N(mu_k, Sigma_k)`` and a VP schedule ``x_t = alpha_t x_0 + sigma_t eps`` every marginal is
again a mixture,

    q_t = sum_k w_k N(alpha_t mu_k, C_k(t)),        C_k(t) = alpha_t^2 Sigma_k + sigma_t^2 I.

With the eigendecomposition ``Sigma_k = U_k diag(s_k) U_k^T`` (computed once) ``C_k(t) = U_k diag(c_k) U_k^T``,
``c_k = alpha_t^2 s_k + sigma_t^2``, so with ``y_k = U_k^T (x - alpha_t mu_k)``:

    log N_k(x)   = -1/2 sum_i y_ki^2 / c_ki - 1/2 sum_i log c_ki - d/2 log(2 pi)
    r_k(x)       = softmax_k(log w_k + log N_k(x))                         (responsibilities, log-sum-exp)
    score(x, t)  = grad_x log q_t(x) = -sum_k r_k U_k (y_k / c_k)
    eps(x, t)    = -sigma_t score(x, t)                                      (exact noise prediction)
    data(x, t)   = E[x_0 | x_t = x] = (x + sigma_t^2 score) / alpha_t        (Tweedie)
                 = sum_k r_k (mu_k + alpha_t U_k (s_k y_k / c_k))            (the form evaluated: no cancellation)

The second form of ``data`` follows from ``I - sigma_t^2 C_k^{-1} = alpha_t^2 Sigma_k C_k^{-1}`` and avoids
dividing a difference of O(1) terms by a small ``alpha_t`` near ``t = T``. For one component (K = 1) the
probability-flow ODE ``dx/dt = f(t) x + g^2(t) / (2 sigma_t) eps(x, t)`` is solved exactly by

    x_t = alpha_t mu + C_t^{1/2} C_s^{-1/2} (x_s - alpha_s mu)
        = alpha_t mu + U diag(sqrt(c_t / c_s)) U^T (x_s - alpha_s mu)

(the closed form the sampler tests compare against). Evaluations are batched over ``(K, batch, d)``: with one time for
the whole batch, ``C_k^{-1} = U_k diag(1/c_k) U_k^T`` is formed once per call and ``score``/``eps`` cost one batched
matrix product (full covariances) or none (diagonal, isotropic); per-sample times cost two.
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import numpy as np
import torch

from ._validation import check_finite_array, check_has_data, check_int, check_state

__all__ = ["GaussianMixture", "GaussianMixtureModel"]

_SYMMETRY_RTOL = 1e-10
_WORKSPACE_MAX_NUMEL = 2**24  # largest (K, batch, d) intermediate kept between calls (128 MiB in float64)


class _Params(NamedTuple):
    """The mixture's parameters in one (dtype, device): what every evaluation reads."""

    log_w: torch.Tensor  # (K,) always float64 (the log-sum-exp is done in float64)
    mu: torch.Tensor  # (K, d)
    s: torch.Tensor  # (K, d) eigenvalues of Sigma_k; (K, 1) for isotropic covariances
    u: torch.Tensor | None  # (K, d, d) eigenvectors (columns) of Sigma_k; None for diagonal/isotropic
    ut: torch.Tensor | None  # (K, d, d) transposes of u, contiguous
    cov: torch.Tensor | None  # (K, d, d) Sigma_k = U_k diag(s_k) U_k^T; None for diagonal/isotropic


class GaussianMixture:
    """Gaussian mixture ``q_0 = sum_k w_k N(mu_k, Sigma_k)`` with exact diffusion marginals (see module docstring).

    Parameters
    ----------
    weights : array-like, shape (K,)
        Non-negative, not all zero; normalised to sum to one. A zero weight keeps the component (it never wins).
    means : array-like, shape (K, d)
    covs : array-like, shape (K, d, d), (K, d) or (K,)
        Full symmetric positive-definite covariances, diagonal variances (positive) or isotropic variances
        ``Sigma_k = covs[k] I`` (positive). Numpy arrays, lists or torch tensors; stored in float64.

    Notes
    -----
    Evaluation methods take ``x`` of shape ``(batch, d)`` (float32 or float64, any device) and ``t`` a Python float
    or a tensor of shape ``()`` or ``(batch,)`` inside ``[schedule.t_min, schedule.T]``; they return tensors of
    ``x``'s dtype and device. The arithmetic runs in ``x``'s dtype (float64 for float64 inputs, float32
    otherwise) except the log-sum-exp over components, which is done in float64. Parameter copies are cached per
    ``(dtype, device)``; on CPU the large intermediates reuse per-thread buffers (outputs never alias them), so
    one mixture may be evaluated from several threads at once.
    """

    def __init__(self, weights, means, covs):
        w = check_finite_array(weights, "weights", ndim=1)
        if w.shape[0] == 0:
            raise ValueError("weights must have at least one entry (K >= 1), got shape (0,)")
        if np.any(w < 0):
            raise ValueError(f"weights must be non-negative, got minimum {w.min()!r}")
        total = w.sum()
        if not total > 0:
            raise ValueError("weights must not all be zero")
        n_comp = w.shape[0]

        mu = check_finite_array(means, "means", ndim=None)
        if mu.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got shape {mu.shape}")
        if mu.shape[0] != n_comp:
            raise ValueError(f"means has {mu.shape[0]} rows but weights has K={n_comp} entries")
        dim = mu.shape[1]
        if dim == 0:
            raise ValueError("means must have d >= 1 columns, got shape (K, 0)")

        cov = check_finite_array(covs, "covs", ndim=None)
        if cov.ndim not in (1, 2, 3):
            raise ValueError(f"covs must have shape (K, d, d), (K, d) or (K,), got shape {cov.shape}")
        if cov.shape[0] != n_comp:
            raise ValueError(f"covs has K={cov.shape[0]} components but weights has K={n_comp}")
        if cov.ndim == 3:
            if cov.shape[1:] != (dim, dim):
                raise ValueError(f"covs must have shape (K, d, d) = ({n_comp}, {dim}, {dim}), got {cov.shape}")
            asym = np.abs(cov - np.swapaxes(cov, 1, 2)).max(axis=(1, 2))
            scale = np.abs(cov).max(axis=(1, 2))
            bad = np.nonzero(asym > _SYMMETRY_RTOL * scale)[0]
            if bad.size:
                k = int(bad[0])
                raise ValueError(
                    f"covs[{k}] is not symmetric: max |S - S^T| = {asym[k]:.3g} exceeds "
                    f"{_SYMMETRY_RTOL:g} * max |S| = {_SYMMETRY_RTOL * scale[k]:.3g}"
                )
            cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
            s, u = np.linalg.eigh(cov)
            # Eigenvalues carry an absolute error ~ eps * ||S||; below that the matrix is not numerically PD.
            floor = dim * np.finfo(np.float64).eps * np.abs(s).max(axis=1)
            bad = np.nonzero(s.min(axis=1) <= floor)[0]
            if bad.size:
                k = int(bad[0])
                raise ValueError(
                    f"covs[{k}] is not (numerically) positive definite: smallest eigenvalue {s[k].min():.3g} "
                    f"<= {floor[k]:.3g}"
                )
            self._cov_type = "full"
            self._s = s
            self._u = u
            full = cov
        else:
            if cov.ndim == 2 and cov.shape[1] != dim:
                raise ValueError(f"diagonal covs must have shape (K, d) = ({n_comp}, {dim}), got {cov.shape}")
            if np.any(cov <= 0):
                kind = "diagonal" if cov.ndim == 2 else "isotropic"
                raise ValueError(f"{kind} covs must be positive, got minimum {cov.min()!r}")
            self._cov_type = "diag" if cov.ndim == 2 else "iso"
            self._s = cov if cov.ndim == 2 else cov[:, None]
            self._u = None
            full = np.einsum("kd,de->kde", np.broadcast_to(self._s, (n_comp, dim)), np.eye(dim))

        self._K, self._d = n_comp, dim
        self._w = w / total
        self._mu = mu
        self._full = full
        with np.errstate(divide="ignore"):
            self._log_w_np = np.log(self._w)
        self._cache: dict[tuple, _Params] = {}
        self._local = threading.local()

    # -- description --------------------------------------------------------------------------------------------
    @property
    def K(self) -> int:
        """Number of components."""
        return self._K

    @property
    def d(self) -> int:
        """Dimension of the data."""
        return self._d

    @property
    def cov_type(self) -> str:
        """``"full"``, ``"diag"`` or ``"iso"``: the form the covariances were given in."""
        return self._cov_type

    @property
    def weights(self) -> torch.Tensor:
        """Normalised weights, float64 tensor of shape (K,)."""
        return torch.tensor(self._w, dtype=torch.float64)

    @property
    def means(self) -> torch.Tensor:
        """Component means, float64 tensor of shape (K, d)."""
        return torch.tensor(self._mu, dtype=torch.float64)

    @property
    def covs(self) -> torch.Tensor:
        """Component covariances as full matrices, float64 tensor of shape (K, d, d)."""
        return torch.tensor(self._full, dtype=torch.float64)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self._K}, d={self._d}, covs={self._cov_type!r})"

    # -- moments ------------------------------------------------------------------------------------------------
    def mean(self, t=None, schedule=None) -> torch.Tensor:
        """Mean of ``q_0`` (``sum_k w_k mu_k``) or, given ``t`` and ``schedule``, of ``q_t`` (``alpha_t`` times it).

        Returns a float64 tensor of shape (d,).
        """
        alpha, _ = self._scalar_time(t, schedule)
        return torch.tensor(alpha * (self._w @ self._mu), dtype=torch.float64)

    def covariance(self, t=None, schedule=None) -> torch.Tensor:
        """Covariance of ``q_0`` or, given ``t`` and ``schedule``, of ``q_t``.

            Cov[q_0] = sum_k w_k (Sigma_k + (mu_k - m)(mu_k - m)^T),    Cov[q_t] = alpha_t^2 Cov[q_0] + sigma_t^2 I.

        Returns a float64 tensor of shape (d, d).
        """
        alpha, sigma = self._scalar_time(t, schedule)
        centred = self._mu - self._w @ self._mu
        cov0 = np.einsum("k,kde->de", self._w, self._full) + np.einsum("k,kd,ke->de", self._w, centred, centred)
        return torch.tensor(alpha**2 * cov0 + sigma**2 * np.eye(self._d), dtype=torch.float64)

    # -- exact predictions --------------------------------------------------------------------------------------
    def log_prob(self, x, t, schedule) -> torch.Tensor:
        """``log q_t(x)``, shape (batch,). Differentiable in ``x``."""
        ev = self._evaluate(x, t, schedule)
        return torch.logsumexp(ev.logits, dim=0).to(ev.x.dtype)

    def score(self, x, t, schedule) -> torch.Tensor:
        """``grad_x log q_t(x) = -sum_k r_k C_k^{-1} (x - alpha_t mu_k)``, shape (batch, d)."""
        ev = self._evaluate(x, t, schedule)
        return self._weighted_sum(ev).neg_().to(ev.x.dtype)

    def eps(self, x, t, schedule) -> torch.Tensor:
        """Exact noise prediction ``eps(x, t) = -sigma_t grad_x log q_t(x)``, shape (batch, d)."""
        ev = self._evaluate(x, t, schedule)
        return self._weighted_sum(ev).mul_(_col(ev.sigma, ev.g)).to(ev.x.dtype)

    def data(self, x, t, schedule) -> torch.Tensor:
        """Exact data prediction ``E[x_0 | x_t = x] = (x + sigma_t^2 score) / alpha_t``, shape (batch, d).

        Evaluated as ``sum_k r_k (mu_k + alpha_t Sigma_k C_k^{-1} (x - alpha_t mu_k))`` (module docstring), the
        same quantity without the cancellation of ``x + sigma_t^2 score`` at small ``alpha_t``.
        """
        ev = self._evaluate(x, t, schedule)
        p, r = ev.p, self._responsibilities(ev)
        mean_part = r.squeeze(-1).transpose(0, 1) @ p.mu  # (batch, d)
        rg = ev.g.mul_(r) if ev.in_place else ev.g * r
        if p.cov is None:
            spread = (rg.mul_(p.s.unsqueeze(1)) if ev.in_place else rg * p.s.unsqueeze(1)).sum(0)
        else:
            spread = torch.bmm(rg, p.cov, out=ev.spare).sum(0)  # Sigma_k symmetric
        return spread.mul_(_col(ev.alpha, rg)).add_(mean_part).to(ev.x.dtype)

    def component(self, x, t, schedule) -> torch.Tensor:
        """Index of the most responsible component, ``argmax_k r_k(x)``; int64 tensor of shape (batch,)."""
        return torch.argmax(self._evaluate(x, t, schedule).logits, dim=0)

    def as_model(self, schedule) -> "GaussianMixtureModel":
        """The exact noise-prediction model ``model(x, t) = self.eps(x, t, schedule)`` that samplers take."""
        _check_schedule(schedule)
        return GaussianMixtureModel(self, schedule)

    # -- exact flow ---------------------------------------------------------------------------------------------
    def flow(self, x, s, t, schedule) -> torch.Tensor:
        """Exact probability-flow ODE map ``x_s -> x_t`` (K = 1 only), shape (batch, d).

            x_t = alpha_t mu + U diag(sqrt(c_t / c_s)) U^T (x_s - alpha_s mu),    c_u = alpha_u^2 s + sigma_u^2,

        the solution of ``dx/dt = f(t) x + g^2(t) / (2 sigma_t) eps(x, t)`` for ``q_0 = N(mu, Sigma)``. ``s`` and
        ``t`` are each a float or a tensor of shape () or (batch,); either order of times is allowed.
        """
        if self._K != 1:
            raise ValueError(f"flow is exact only for a single Gaussian (K = 1); this mixture has K={self._K}")
        x = self._check_x(x)
        _check_schedule(schedule)
        p = self._params(x)
        a_s, sig_s = self._time_coeffs(s, schedule, x, "s")
        a_t, sig_t = self._time_coeffs(t, schedule, x, "t")
        xc = x.to(p.mu.dtype)
        mu, lam = p.mu[0], p.s[0]  # (d,), (d,) or (1,)
        a_s, sig_s, a_t, sig_t = (_col(v, mu) for v in (a_s, sig_s, a_t, sig_t))
        ratio = torch.sqrt((a_t * a_t * lam + sig_t * sig_t) / (a_s * a_s * lam + sig_s * sig_s))
        y = xc - a_s * mu
        if p.u is None:
            y = y * ratio
        else:
            y = ((y @ p.u[0]) * ratio) @ p.ut[0]
        return (a_t * mu + y).to(x.dtype)

    # -- sampling -----------------------------------------------------------------------------------------------
    def sample(self, n, generator=None, t=None, schedule=None, *, dtype=torch.float64, device=None) -> torch.Tensor:
        """Draw ``n`` samples from ``q_0`` (``t`` None) or from ``q_t`` (``t`` and ``schedule`` given).

        A component ``k ~ Categorical(w)`` and ``z ~ N(0, I)`` give ``alpha_t mu_k + U_k diag(sqrt(c_k)) z``
        (``alpha = 1``, ``c_k = s_k`` for ``q_0``), so with the same generator state the draws at different ``t``
        share ``k`` and ``z``. Random numbers are drawn in float64 on the generator's device (CPU by default).

        Parameters
        ----------
        n : int
            Number of samples, ``>= 1``.
        generator : torch.Generator, optional
        t : float or torch.Tensor of shape () or (n,), optional
        schedule : VPSchedule, optional
            Required with ``t``.
        dtype : torch.dtype, default float64
        device : torch.device or str, optional
            Defaults to the generator's device (CPU without a generator).

        Returns
        -------
        torch.Tensor of shape (n, d)
        """
        n = check_int(n, "n", minimum=1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        gen_device = generator.device if generator is not None else torch.device("cpu")
        device = gen_device if device is None else torch.device(device)
        p = self._params_for(torch.float64, gen_device)
        probe = torch.empty(n, 0, dtype=torch.float64, device=gen_device)  # carries batch size and device
        if t is None:
            if schedule is not None:
                raise ValueError("schedule was given without t; pass t= to sample from q_t, or neither for q_0")
            alpha, sigma = 1.0, 0.0
        else:
            if schedule is None:
                raise ValueError(f"schedule is required to sample from q_t (t={t!r}), got None")
            _check_schedule(schedule)
            alpha, sigma = self._time_coeffs(t, schedule, probe, "t")
        comp = torch.multinomial(torch.exp(p.log_w), n, replacement=True, generator=generator)
        z = torch.randn(n, self._d, dtype=torch.float64, device=gen_device, generator=generator)
        alpha, sigma = _col(alpha, z), _col(sigma, z)
        z = z * torch.sqrt(alpha * alpha * p.s[comp] + sigma * sigma)
        if p.u is not None:
            # A short loop over components (sampling is not the hot path) avoids a (n, d, d) gather.
            rotated = torch.empty_like(z)
            for k in range(self._K):
                rows = comp == k
                rotated[rows] = z[rows] @ p.ut[k]
            z = rotated
        return (alpha * p.mu[comp] + z).to(dtype=dtype, device=device)

    # -- internals ----------------------------------------------------------------------------------------------
    def _params_for(self, dtype: torch.dtype, device: torch.device) -> _Params:
        key = (dtype, device)
        cached = self._cache.get(key)
        if cached is None:
            def conv(a):
                return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64).to(dtype=dtype, device=device)

            u = None if self._u is None else conv(self._u)
            ut = None if self._u is None else conv(np.swapaxes(self._u, 1, 2))
            # Rebuilt from the eigendecomposition so that every formula sees the same Sigma_k to the last bit.
            cov = None if self._u is None else conv(np.einsum("kde,ke,kfe->kdf", self._u, self._s, self._u))
            log_w = torch.as_tensor(self._log_w_np, dtype=torch.float64).to(device)
            cached = _Params(log_w=log_w, mu=conv(self._mu), s=conv(self._s), u=u, ut=ut, cov=cov)
            self._cache[key] = cached
        return cached

    def _params(self, x: torch.Tensor) -> _Params:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        return self._params_for(dtype, x.device)

    def _check_x(self, x) -> torch.Tensor:
        x = check_state(x, "x")
        if x.ndim != 2 or x.shape[1] != self._d:
            raise ValueError(f"x must have shape (batch, d) with d={self._d}, got shape {tuple(x.shape)}")
        return x

    def _time_coeffs(self, t, schedule, x: torch.Tensor, name: str):
        """``(alpha_t, sigma_t)``: Python floats for a scalar time, float64 tensors of shape (batch,) otherwise."""
        if isinstance(t, torch.Tensor):
            if not t.is_floating_point():
                raise TypeError(f"{name} must be a float or a floating-point tensor, got dtype {t.dtype}")
            check_has_data(t, name)
            batch = x.shape[0]
            if t.ndim == 0 or (t.ndim == 1 and t.shape[0] == 1 and batch != 1):
                t = t.item()
            elif t.ndim != 1 or t.shape[0] != batch:
                raise ValueError(f"{name} must be a float or a tensor of shape () or ({batch},), got {tuple(t.shape)}")
            else:
                t64 = t.detach().to(dtype=torch.float64, device=x.device)
                lo, hi = schedule.t_min * (1 - 1e-12), schedule.T * (1 + 1e-12)
                bad = ~torch.isfinite(t64) | (t64 < lo) | (t64 > hi)
                # One host sync for both questions; a batch at one time (what samplers pass) takes the scalar path.
                any_bad, varies = torch.stack([bad.any(), (t64 != t64[0]).any()]).tolist()
                if any_bad:
                    worst = t64[bad][0].item()
                    raise ValueError(
                        f"{name} contains {worst!r}, outside the valid range [{schedule.t_min:g}, {schedule.T:g}] "
                        f"of {schedule!r}"
                    )
                if varies:
                    return schedule.alpha(t64), schedule.sigma(t64)
                t = t64[0].item()
        t = schedule.check_time(t, name)
        return schedule.alpha(t), schedule.sigma(t)

    def _scalar_time(self, t, schedule):
        if t is None and schedule is None:
            return 1.0, 0.0
        if t is None:
            raise ValueError("schedule was given without t; pass both for q_t or neither for q_0")
        if schedule is None:
            raise ValueError(f"schedule is required for the moments of q_t (t={t!r}), got None")
        _check_schedule(schedule)
        t = schedule.check_time(t, "t")
        return schedule.alpha(t), schedule.sigma(t)

    def _workspace(self, shape: tuple, dtype: torch.dtype, device: torch.device):
        """Three reusable (K, batch, d) buffers for CPU evaluations, or ``(None, None, None)``.

        On CPU each fresh multi-megabyte temporary costs page faults that can exceed the arithmetic several
        times over, so the big intermediates live in per-thread buffers kept for the last shape used (CUDA's
        caching allocator makes this unnecessary there). Returned tensors never alias them.
        """
        if device.type != "cpu" or math.prod(shape) > _WORKSPACE_MAX_NUMEL:
            return None, None, None
        store = self._local.__dict__.setdefault("buffers", {})
        key = (dtype, device)
        held = store.get(key)
        if held is None or held[0].shape != shape:
            held = tuple(torch.empty(shape, dtype=dtype, device=device) for _ in range(3))
            store[key] = held
        return held

    def _evaluate(self, x, t, schedule) -> "_Evaluation":
        """Validate, then ``g_k = C_k^{-1} (x - alpha_t mu_k)`` (K, batch, d) and float64 logits (K, batch).

        For a full covariance and one time for the whole batch ``C_k^{-1} = U_k diag(1/c_k) U_k^T`` is formed
        (K d^3 work, in float64) so that ``g`` costs one batched product; with per-sample times
        ``g = U_k ((U_k^T diff_k) / c_k)`` costs two. Without autograd the work is done in place in the
        workspace buffers.
        """
        x = self._check_x(x)
        _check_schedule(schedule)
        p = self._params(x)
        alpha, sigma = self._time_coeffs(t, schedule, x, "t")
        xc = x.to(p.mu.dtype)
        in_place = not (torch.is_grad_enabled() and xc.requires_grad)
        shape = (self._K, x.shape[0], self._d)
        buf_a, buf_b, buf_c = self._workspace(shape, xc.dtype, xc.device) if in_place else (None, None, None)

        a, sig = _kbd(alpha, p.mu), _kbd(sigma, p.mu)
        diff = torch.sub(xc.unsqueeze(0), (a * p.mu.unsqueeze(1)), out=buf_a)  # (K, batch, d)
        if p.u is None:
            c = a * a * p.s.unsqueeze(1) + sig * sig  # (K, 1 or batch, d or 1)
            g = torch.div(diff, c, out=buf_b)
            quad = (diff.mul_(g) if in_place else diff * g).sum(-1)
            log_det = torch.log(c).sum(-1) * (self._d if self._cov_type == "iso" else 1)  # (K, 1 or batch)
        elif isinstance(alpha, float):
            p64 = self._params_for(torch.float64, xc.device)
            c = (alpha * alpha) * p64.s + sigma * sigma  # (K, d), float64
            precision = torch.bmm(p64.u * c.reciprocal().unsqueeze(1), p64.ut).to(xc.dtype)
            g = torch.bmm(diff, precision, out=buf_b)  # precision symmetric: rows of diff_k P_k are P_k diff_k
            quad = (diff.mul_(g) if in_place else diff * g).sum(-1)
            log_det = torch.log(c).sum(-1).unsqueeze(1)  # (K, 1)
        else:
            c = torch.addcmul(sig * sig, a * a, p.s.unsqueeze(1), out=buf_c)  # (K, batch, d)
            y = torch.bmm(diff, p.u, out=buf_b)
            z = torch.div(y, c, out=buf_a)  # diff is no longer needed
            quad = (y.mul_(z) if in_place else y * z).sum(-1)
            g = torch.bmm(z, p.ut, out=buf_b)
            log_det = (c.log_() if in_place else torch.log(c)).sum(-1)  # (K, batch)
        logits = (
            p.log_w[:, None]
            - 0.5 * (quad.to(torch.float64) + log_det.to(torch.float64))
            - 0.5 * self._d * math.log(2.0 * math.pi)
        )
        return _Evaluation(x=x, p=p, alpha=alpha, sigma=sigma, g=g, logits=logits, in_place=in_place, spare=buf_c)

    @staticmethod
    def _responsibilities(ev: "_Evaluation") -> torch.Tensor:
        """``r_k = softmax_k(logits)`` in the compute dtype, shape (K, batch, 1)."""
        return torch.softmax(ev.logits, dim=0).to(ev.g.dtype).unsqueeze(-1)

    def _weighted_sum(self, ev: "_Evaluation") -> torch.Tensor:
        """``sum_k r_k g_k``, shape (batch, d)."""
        r = self._responsibilities(ev)
        return (ev.g.mul_(r) if ev.in_place else ev.g * r).sum(0)

    def __getstate__(self):
        # Device copies and thread-local buffers are rebuilt on demand.
        state = self.__dict__.copy()
        state["_cache"], state["_local"] = {}, None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()


class _Evaluation(NamedTuple):
    x: torch.Tensor
    p: _Params
    alpha: object  # float or (batch,) float64 tensor
    sigma: object
    g: torch.Tensor  # (K, batch, d): C_k^{-1} (x - alpha mu_k)
    logits: torch.Tensor  # (K, batch) float64
    in_place: bool  # g may be overwritten (no autograd)
    spare: torch.Tensor | None  # a free (K, batch, d) buffer, or None


class GaussianMixtureModel:
    """The exact noise prediction of a :class:`GaussianMixture` under a schedule, as a sampler's ``model(x, t)``.

    ``model(x, t)`` returns ``mixture.eps(x, t, schedule)``; ``t`` is a float or a tensor of shape () or (batch,).
    """

    def __init__(self, mixture: GaussianMixture, schedule):
        self.mixture = mixture
        self.schedule = schedule

    def __call__(self, x, t) -> torch.Tensor:
        return self.mixture.eps(x, t, self.schedule)

    def __repr__(self) -> str:
        return f"{self.mixture!r}.as_model({self.schedule!r})"


def _check_schedule(schedule) -> None:
    for attr in ("alpha", "sigma", "check_time", "t_min", "T"):
        if not hasattr(schedule, attr):
            raise TypeError(
                f"schedule must be a VP schedule (with alpha, sigma, check_time, t_min, T), "
                f"got {type(schedule).__name__} without {attr!r}"
            )


def _col(v, like: torch.Tensor):
    """A per-sample coefficient as a (batch, 1) column in ``like``'s dtype; a Python float unchanged."""
    return v.to(like.dtype).unsqueeze(-1) if isinstance(v, torch.Tensor) else v


def _kbd(v, like: torch.Tensor):
    """A per-sample coefficient broadcast against (K, batch, d) in ``like``'s dtype; a Python float unchanged."""
    if isinstance(v, torch.Tensor):
        return v.to(like.dtype).view(1, -1, 1)
    return v
