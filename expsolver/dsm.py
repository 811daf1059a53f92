"""Denoising score matching (Vincent 2011; Ho et al. 2020 eq. (14)): Monte-Carlo losses, the irreducible value, a small MLP.

The losses
----------
With ``x_t = alpha_t x_0 + sigma_t eps``, ``x_0 ~ q_0``, ``eps ~ N(0, I)`` and ``t ~ U[t_min, t_max]``:

    (6)  L_eps(theta)   = E ||eps_theta(x_t, t) - eps||^2                      (noise form, the one trained)
    (5)  L_score(theta) = E ||s_theta(x_t, t) + eps / sigma_t||^2              (score form)

For ``s_theta = -eps_theta / sigma_t`` the integrand of (5) is that of (6) divided by ``sigma_t^2``.

The irreducible value
---------------------
``E[eps | x_t] = -sigma_t grad log q_t(x_t) = eps*(x_t, t)`` is the exact noise prediction. Since
``E[(eps - eps*) . g(x_t)] = 0`` for every ``g``, Pythagoras gives for any model

    L_eps(theta) = E ||eps_theta - eps*||^2 + E ||eps - eps*||^2,

so the exact predictor minimises (6) and its loss is the irreducible value

    L_eps* = E ||eps - eps*||^2 = E ||eps||^2 - E ||eps*||^2 = d - E_t E_{x_t ~ q_t} ||eps*(x_t, t)||^2,

and likewise ``L_score* = E_t [(d - E ||eps*(x_t, t)||^2) / sigma_t^2]``. :func:`irreducible_dsm_loss` estimates the
right-hand side from *independent* draws ``x_t ~ q_t`` (no ``(x_0, eps)`` pairs), so comparing it with
:func:`dsm_loss` of the exact model is a genuine check of both.

Every estimate is a :class:`MCEstimate` (mean and standard error ``std / sqrt(n)`` of the per-sample terms).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ._validation import check_choice, check_int, check_positive_float, check_state, reject_unknown_kwargs
from .gmm import GaussianMixture
from .models import ModelOutputError
from .schedules import VPSchedule

__all__ = ["MCEstimate", "dsm_loss", "irreducible_dsm_loss", "excess_dsm_loss", "NoisePredictorMLP", "TrainResult",
           "train_noise_predictor", "LOSS_FORMS"]

LOSS_FORMS = ("noise", "score")
_MODEL_TYPES = ("noise", "score")


@dataclass(frozen=True)
class MCEstimate:
    """A Monte-Carlo estimate: ``value`` (sample mean), ``stderr`` (sample standard deviation / sqrt(n)), ``n``."""

    value: float
    stderr: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def _mc(terms: torch.Tensor) -> MCEstimate:
    terms = terms.detach().to(torch.float64)
    n = terms.shape[0]
    sd = float(terms.std(unbiased=True)) if n > 1 else math.inf
    return MCEstimate(float(terms.mean()), sd / math.sqrt(n), int(n))


def _t_range(schedule, t_range):
    if t_range is None:
        return 1e-3 if schedule.t_min < 1e-3 else schedule.t_min, schedule.T
    if not isinstance(t_range, (tuple, list)) or len(t_range) != 2:
        raise TypeError(f"t_range must be a pair (t_min, t_max), got {t_range!r}")
    lo, hi = schedule.check_time(t_range[0], "t_range[0]"), schedule.check_time(t_range[1], "t_range[1]")
    if not lo < hi:
        raise ValueError(f"t_range must have t_range[0] < t_range[1], got {t_range!r}")
    return lo, hi


def _check_generator(generator):
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _check_data(data):
    """``data`` is a GaussianMixture or a finite floating-point tensor of shape (N, d) on a data-holding device."""
    if isinstance(data, GaussianMixture):
        return data
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"data must be a GaussianMixture or a floating-point torch.Tensor of shape (N, d), got "
                        f"{type(data).__name__}")
    check_state(data, "data")  # floating point, N >= 1, not a meta tensor, no NaN or Inf rows
    if data.ndim != 2:
        raise ValueError(f"data must have shape (N, d), got {tuple(data.shape)}")
    return data


def _check_dtype(dtype):
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def _draw_x0(data, n, generator, dtype):
    if isinstance(data, GaussianMixture):
        return data.sample(n, generator, dtype=dtype)
    idx = torch.randint(0, data.shape[0], (n,), generator=generator)
    return data[idx].to(dtype)


def _noised(schedule, x0, lo, hi, generator):
    n = x0.shape[0]
    t = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64).to(x0.dtype)
    alpha, sigma = schedule.alpha(t).to(x0.dtype), schedule.sigma(t).to(x0.dtype)
    xt = alpha[:, None] * x0 + sigma[:, None] * eps
    return t.to(x0.dtype), eps, xt, sigma


def _model_output(model, xt, t):
    """``model(xt, t)``, checked: a tensor of ``xt``'s shape with finite entries (:class:`ModelOutputError`)."""
    out = model(xt, t)
    if not isinstance(out, torch.Tensor) or out.shape != xt.shape:
        raise ModelOutputError(f"model output must have shape {tuple(xt.shape)}, got "
                               f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    if not bool(torch.isfinite(out).all()):
        raise ModelOutputError("model output contains NaN or Inf entries")
    return out


def _terms(model, xt, t, eps, sigma, form, model_type):
    out = _model_output(model, xt, t)
    s = sigma[:, None]
    eps_hat = out if model_type == "noise" else -s * out
    sq = ((eps_hat - eps) ** 2).sum(dim=1)
    return sq if form == "noise" else sq / (sigma * sigma)


def dsm_loss(model, schedule, data, *, n: int | None = None, form: str = "noise", model_type: str = "noise",
             t_range=None, generator=None, batch_size: int = 65536, dtype=torch.float64, **kwargs) -> MCEstimate:
    """Monte-Carlo estimate of the DSM loss (6) (``form="noise"``) or (5) (``form="score"``).

    Parameters
    ----------
    model : callable
        ``model(x, t)`` with ``x`` of shape ``(batch, d)`` and per-sample times ``t`` of shape ``(batch,)``,
        returning the noise prediction (``model_type="noise"``) or the score (``"score"``).
    schedule : VPSchedule
    data : GaussianMixture or torch.Tensor of shape (N, d)
        ``x_0`` is drawn from the mixture, or uniformly with replacement from the tensor.
    n : int, optional
        Number of ``(x_0, eps, t)`` draws (default ``len(data)`` for a tensor, required for a mixture).
    form : {"noise", "score"}
    model_type : {"noise", "score"}
    t_range : (float, float), optional
        ``t ~ U[t_range]``; default ``[1e-3, schedule.T]``.
    generator : torch.Generator, optional
    batch_size : int
        Model calls are made on chunks of this size (no gradients).
    dtype : torch.dtype

    Returns
    -------
    MCEstimate
        Mean of the per-sample ``||eps_theta - eps||^2`` (or ``||s_theta + eps/sigma||^2``) and its standard error.
    """
    reject_unknown_kwargs(kwargs, "dsm_loss")
    if not isinstance(schedule, VPSchedule):
        raise TypeError(f"schedule must be a VPSchedule, got {type(schedule).__name__}")
    form = check_choice(form, "form", LOSS_FORMS)
    model_type = check_choice(model_type, "model_type", _MODEL_TYPES)
    generator = _check_generator(generator)
    data = _check_data(data)
    _check_dtype(dtype)
    if n is None:
        if not isinstance(data, torch.Tensor):
            raise TypeError("n is required when data is a GaussianMixture")
        n = data.shape[0]
    n = check_int(n, "n", minimum=2)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    lo, hi = _t_range(schedule, t_range)

    def batch(m):
        t, eps, xt, sigma = _noised(schedule, _draw_x0(data, m, generator, dtype), lo, hi, generator)
        return _terms(model, xt, t, eps, sigma, form, model_type)

    return _batched_mc(n, batch_size, batch)


def irreducible_dsm_loss(mixture: GaussianMixture, schedule, *, n: int, form: str = "noise", t_range=None,
                         generator=None, batch_size: int = 65536, **kwargs) -> MCEstimate:
    """The minimum of (6) (or (5)) over all models, estimated independently of :func:`dsm_loss`.

    ``L_eps* = d - E_t E_{x_t ~ q_t} ||eps*(x_t, t)||^2`` and ``L_score* = E_t [(d - E ||eps*||^2)/sigma_t^2]``
    (module docstring), with ``t ~ U[t_range]`` and ``x_t`` drawn directly from the marginal ``q_t`` (float64).

    Parameters
    ----------
    mixture : GaussianMixture
    schedule : VPSchedule
    n : int
        Number of ``(t, x_t)`` draws.
    form : {"noise", "score"}
    t_range : (float, float), optional
        Must match the one given to :func:`dsm_loss` (default ``[1e-3, schedule.T]``).
    generator : torch.Generator, optional
    batch_size : int

    Returns
    -------
    MCEstimate
    """
    reject_unknown_kwargs(kwargs, "irreducible_dsm_loss")
    form = check_choice(form, "form", LOSS_FORMS)
    generator, n, batch_size, lo, hi = _check_marginal_draws(mixture, schedule, n, batch_size, t_range, generator)

    def batch(m):
        t, xt = _draw_marginal(mixture, schedule, m, lo, hi, generator)
        e = mixture.eps(xt, t, schedule)
        term = mixture.d - (e * e).sum(dim=1)
        return term / schedule.sigma(t) ** 2 if form == "score" else term

    return _batched_mc(n, batch_size, batch)


def excess_dsm_loss(model, mixture: GaussianMixture, schedule, *, n: int, t_range=None, generator=None,
                    batch_size: int = 65536, **kwargs) -> MCEstimate:
    """``E_t E_{x_t ~ q_t} ||eps_theta(x_t, t) - eps*(x_t, t)||^2``: by the Pythagoras identity (module docstring)
    the exact amount by which the loss (6) of a noise-prediction ``model`` exceeds the irreducible value, estimated
    without the noise of the ``eps`` draws (so with a much smaller standard error than a difference of losses)."""
    reject_unknown_kwargs(kwargs, "excess_dsm_loss")
    generator, n, batch_size, lo, hi = _check_marginal_draws(mixture, schedule, n, batch_size, t_range, generator)

    def batch(m):
        t, xt = _draw_marginal(mixture, schedule, m, lo, hi, generator)
        diff = _model_output(model, xt, t) - mixture.eps(xt, t, schedule)
        return (diff * diff).sum(dim=1)

    return _batched_mc(n, batch_size, batch)


def _check_marginal_draws(mixture, schedule, n, batch_size, t_range, generator) -> tuple:
    """Validate the arguments of the estimators that draw ``x_t`` from the mixture's marginal; returns
    ``(generator, n, batch_size, t_lo, t_hi)``."""
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    generator = _check_generator(generator)
    n = check_int(n, "n", minimum=2)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    return (generator, n, batch_size) + tuple(_t_range(schedule, t_range))


def _draw_marginal(mixture, schedule, m: int, lo: float, hi: float, generator) -> tuple:
    """``t ~ U[lo, hi]`` (float64) and ``x_t ~ q_t`` drawn directly from the mixture's marginal."""
    t = lo + (hi - lo) * torch.rand(m, generator=generator, dtype=torch.float64)
    return t, mixture.sample(m, generator, t=t, schedule=schedule)


def _batched_mc(n: int, batch_size: int, batch) -> MCEstimate:
    """Mean and standard error of ``n`` per-sample terms, computed by ``batch(m)`` (a tensor of ``m`` terms) in
    consecutive batches of at most ``batch_size``, without autograd."""
    with torch.no_grad():
        return _mc(torch.cat([batch(min(batch_size, n - start)) for start in range(0, n, batch_size)]))


class NoisePredictorMLP(torch.nn.Module):
    """A small noise-prediction network ``eps_theta(x, t)`` for low-dimensional data.

    ``eps_theta(x, t) = MLP([x, gamma(t)])`` with the Fourier time embedding
    ``gamma(t) = (t, sin(pi k t), cos(pi k t))_{k = 1..n_frequencies}`` (Tancik et al. 2020; ``t`` in ``[0, 1]``),
    ``depth`` hidden layers of width ``hidden`` with SiLU activations, a linear output layer. Parameters are
    float64 by default so that the samplers' float64 studies see no float32 rounding; inputs are cast to the
    parameter dtype and outputs back to the input dtype.

    Parameters
    ----------
    dim : int
    hidden : int
    depth : int
    n_frequencies : int
    dtype : torch.dtype
    """

    def __init__(self, dim: int, *, hidden: int = 128, depth: int = 3, n_frequencies: int = 8,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        self.dim = check_int(dim, "dim", minimum=1)
        hidden = check_int(hidden, "hidden", minimum=1)
        depth = check_int(depth, "depth", minimum=1)
        self.n_frequencies = check_int(n_frequencies, "n_frequencies", minimum=0)
        self.config = dict(dim=self.dim, hidden=hidden, depth=depth, n_frequencies=self.n_frequencies,
                           dtype=str(dtype).replace("torch.", ""))
        layers, width = [], self.dim + 1 + 2 * self.n_frequencies
        for _ in range(depth):
            layers += [torch.nn.Linear(width, hidden, dtype=dtype), torch.nn.SiLU()]
            width = hidden
        layers.append(torch.nn.Linear(width, self.dim, dtype=dtype))
        self.net = torch.nn.Sequential(*layers)
        self.register_buffer("freqs", math.pi * torch.arange(1, self.n_frequencies + 1, dtype=dtype))

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        p_dtype = self.freqs.dtype
        xin = x.to(p_dtype)
        t = torch.as_tensor(t, dtype=p_dtype, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        t = t.reshape(-1, 1)
        angles = t * self.freqs
        feats = torch.cat([xin, t, torch.sin(angles), torch.cos(angles)], dim=1)
        return self.net(feats).to(x.dtype)


@dataclass
class TrainResult:
    """Result of :func:`train_noise_predictor`: the trained ``model`` (in eval mode), the per-step training
    ``losses`` (float64 numpy), the ``config`` (all arguments, seed included) and the wall-clock ``seconds``."""

    model: NoisePredictorMLP
    losses: np.ndarray
    config: dict
    seconds: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready summary (the weights go through ``model.state_dict()``)."""
        return dict(config=self.config, seconds=self.seconds, losses=self.losses.tolist(), extra=self.extra)


def train_noise_predictor(data, schedule, *, steps: int = 3000, batch_size: int = 512, lr: float = 2e-3,
                          seed: int = 0, t_range=None, hidden: int = 128, depth: int = 3, n_frequencies: int = 8,
                          dtype: torch.dtype = torch.float64, **kwargs) -> TrainResult:
    """Train a :class:`NoisePredictorMLP` by minimising the DSM loss (6) with Adam.

    Each step draws a fresh batch ``x_0`` (from the mixture, or with replacement from a data tensor),
    ``t ~ U[t_range]`` and ``eps ~ N(0, I)``, and takes one Adam step on the batch mean of
    ``||eps_theta(x_t, t) - eps||^2``; the learning rate decays as a half cosine from ``lr`` to ``lr/20``.
    Reproducible: the initial weights come from ``torch.manual_seed(seed)`` inside
    :func:`torch.random.fork_rng` (torch's global generator is restored afterwards) and every draw from a
    ``torch.Generator`` seeded with ``seed``; CPU runs with the same thread count give identical weights.

    Parameters
    ----------
    data : GaussianMixture or torch.Tensor of shape (N, d)
    schedule : VPSchedule
    steps : int
        Optimiser steps, ``>= 1``.
    batch_size : int
        ``>= 1``.
    lr : float
        Peak learning rate, ``> 0``.
    seed : int
    t_range : (float, float), optional
        Default ``[1e-3, schedule.T]``.
    hidden, depth, n_frequencies, dtype
        Architecture (:class:`NoisePredictorMLP`).

    Returns
    -------
    TrainResult

    Raises
    ------
    TypeError
        ``steps``, ``batch_size`` or ``seed`` not an int; ``lr`` not a number; unknown keyword.
    ValueError
        ``steps``, ``batch_size`` or ``lr`` not positive.
    """
    reject_unknown_kwargs(kwargs, "train_noise_predictor")
    steps = check_int(steps, "steps", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    lr = check_positive_float(lr, "lr")
    seed = check_int(seed, "seed")
    if not isinstance(schedule, VPSchedule):
        raise TypeError(f"schedule must be a VPSchedule, got {type(schedule).__name__}")
    lo, hi = _t_range(schedule, t_range)
    data = _check_data(data)
    _check_dtype(dtype)
    dim = data.d if isinstance(data, GaussianMixture) else data.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NoisePredictorMLP(dim, hidden=hidden, depth=depth, n_frequencies=n_frequencies, dtype=dtype)
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = np.empty(steps)
    start = time.perf_counter()
    model.train()
    for k in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * k / steps)))
        x0 = _draw_x0(data, batch_size, generator, dtype)
        t, eps, xt, _ = _noised(schedule, x0, lo, hi, generator)
        loss = ((model(xt, t) - eps) ** 2).sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[k] = float(loss.detach())
    model.eval()
    seconds = time.perf_counter() - start
    config = dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed, t_range=[lo, hi], **model.config,
                  schedule=repr(schedule), data=repr(data) if isinstance(data, GaussianMixture) else "tensor",
                  torch_version=torch.__version__)
    return TrainResult(model=model, losses=losses, config=config, seconds=seconds)
