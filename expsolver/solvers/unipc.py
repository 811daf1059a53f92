"""UniPC: the unified predictor (UniP-p) and corrector (UniC-p) of Zhao et al. (2023).

Written once against the semi-linear form of :mod:`expsolver.problems` (``z = 1`` noise prediction, ``z = -1``
data prediction, ``z = L`` classical exponential time differencing),

    x_t = linear * x_s + scale * int_0^h e^{z (h - u)} N(rho_s + u) du,      I_j = h^{j+1} phi_{j+1}(z h).

With the current value ``N_0 = N(rho_s)`` and difference points ``r_m = (rho_m - rho_s) / h`` (``m = 1..K``), UniPC
replaces the integral by

    I_0 N_0 + beta * sum_m a_m D_m,        D_m = (N_m - N_0) / r_m,                                          (1)

(Zhao et al. 2023, Sec. 3: UniC-p, Theorem 3.1, order p + 1; UniP-p, Corollary 3.2, order p; noise and data
prediction differ by ``hh = h`` or ``hh = -h``; coefficient system as in the official code). Here
``beta = B(z h) / z`` maps the paper's ``B(h)`` into this form: in the noise form ``beta = B(h)`` and the paper's
update is ``x_t = ... - sigma_t B(h) sum a_m D_m``; in the data form ``beta = -B(-h)`` and the paper's update is
``x_t = ... - alpha_t B(-h) sum a_m D_m`` (its ``hh = -h``). The variants are

* ``"bh1"``: ``B(h) = h``, so ``beta = h``;
* ``"bh2"``: ``B(h) = e^h - 1``, so ``beta = (e^{z h} - 1) / z = I_0``.

**Order conditions.** Expanding ``D_m = sum_{k>=1} r_m^{k-1} h^k / k! N^{(k)}(rho_s)`` and matching the exact
``sum_k I_k N^{(k)}`` gives, for ``k = 1..K``,

    sum_m a_m r_m^{k-1} = k! I_k / (beta h^k)     (= k! hh phi_{k+1}(hh) / B(hh), hh = z h: the paper's R_p a_p = b),

a ``K x K`` Vandermonde system ``R[k-1, m] = r_m^{k-1}``. It is square, so ``beta`` cancels from (1): the update is
the exact integral of the polynomial through the ``K + 1`` points, whatever ``B``. ``B`` matters only where the
paper replaces the one-unknown system by ``a_1 = 1/2`` (Zhao et al. 2023, Sec. 3 and the official code): the
order-2 predictor and the order-1 corrector, whose coefficient is then ``beta / 2`` (``bh2`` gives DPM-Solver-2M,
``I_0 / 2``; ``bh1`` gives ``h / 2``). ``a_1 = 1/2`` matches the condition ``I_1 / (beta h) = 1/2 + O(h)`` to leading
order, which is all the order of those steps needs.

* **UniP-p** (predictor, order ``p``): the current value and ``p - 1`` previous ones, ``K = p - 1`` (past points,
  ``r_m < 0``). Local error ``O(h^{p+1})``.
* **UniC-p** (corrector): the same ``p`` values plus the model value ``N_t`` at the *predicted* state at ``t``
  (``r = 1``), ``K = p``; it recomputes ``x_t`` from ``x_s``. ``N_t`` is also the next step's ``N_0``, so the
  corrector costs no model call: NFE = steps. Local error ``O(h^{p+2})``: the pair is of global order ``p + 1``.

As a :class:`~expsolver.solvers.base.Solver` each step evaluates the model once, at its start: that value first corrects the previous
step (whose predicted state the driver passed in) and then serves the predictor. There is no corrector after the
last step (nothing evaluates the model there), so the final state is a predictor output, as in the paper and the
official code. States the driver records at interior grid points (``return_intermediates``) are therefore the
predicted, not yet corrected, states.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._validation import check_bool, check_choice, check_int
from ..problems import combine
from .base import MultistepSolver, Step

__all__ = ["UNIPC_VARIANTS", "UniPC", "unipc_terms", "UNIPC_MAX_ORDER"]

UNIPC_VARIANTS = ("bh1", "bh2")
UNIPC_MAX_ORDER = 6


def unipc_terms(c, variant: str, n_0, rks, values) -> list:
    """Terms ``[(w, N)]`` of the UniPC update (1) for :func:`expsolver.problems.combine`.

    Parameters
    ----------
    c : StepCoefficients
        The step ``s -> t`` (``h`` and ``z`` may be tensors: diagonal linear parts, differentiable grids).
    variant : {"bh1", "bh2"}
    n_0 : tensor
        ``N`` at ``rho_s``.
    rks : sequence of float or 0-dim tensors
        ``r_m = (rho_m - rho_s) / h`` of the difference points (``< 0`` for past points, ``1`` for the corrector's
        point at ``t``); empty for the first-order update.
    values : sequence of tensors
        ``N_m`` at those points.

    Returns
    -------
    list of (weight, tensor)
        ``[(I_0 - sum_m w_m / r_m, N_0), (w_1 / r_1, N_1), ...]`` with ``w_m = beta a_m`` the weight of ``D_m``.
    """
    check_choice(variant, "variant", UNIPC_VARIANTS)
    K = len(rks)
    if K != len(values):
        raise ValueError(f"rks and values must have the same length, got {K} and {len(values)}")
    integrals = c.integrals(K + 1)
    if K == 0:
        return [(integrals[0], n_0)]
    if K == 1:
        beta = c.h if variant == "bh1" else integrals[0]
        weights = [0.5 * beta]  # a_1 = 1/2 (Zhao et al. 2023; the official implementation)
    else:
        targets = [math.factorial(k) * integrals[k] / c.h**k for k in range(1, K + 1)]  # beta * b_k
        weights = _solve_vandermonde(rks, targets)
    head = integrals[0]
    for w, r in zip(weights, rks):
        head = head - w / r
    return [(head, n_0)] + [(w / r, n) for w, r, n in zip(weights, rks, values)]


def _solve_vandermonde(rks, targets) -> list:
    """``w = R^{-1} targets`` with ``R[k, m] = rks[m]^k`` (``k, m < K``): float64 numpy for float nodes, torch for
    tensor nodes (so gradients flow to the grid); ``targets`` may be floats or tensors (diagonal ``z``)."""
    K = len(rks)
    if any(isinstance(r, torch.Tensor) for r in rks):
        r = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in rks])
        R_inv = torch.linalg.inv(torch.stack([r**k for k in range(K)]))
    else:
        r = np.asarray(rks, dtype=np.float64)
        R_inv = np.linalg.inv(np.vander(r, K, increasing=True).T)
    out = []
    for m in range(K):
        w = 0.0
        for k in range(K):
            coef = R_inv[m, k] if isinstance(R_inv, torch.Tensor) else float(R_inv[m, k])
            w = w + coef * targets[k]
        out.append(w)
    return out


class _History(list):
    """``[(rho, N), ...]`` (most recent last) plus the correction pending from the previous step."""

    pending = None


class UniPC(MultistepSolver):
    """Multistep UniP-p predictor with the UniC-p corrector (Zhao et al. 2023, Sec. 3), one NFE per step.

    Parameters
    ----------
    order : int
        Predictor order ``p`` (1 to :data:`UNIPC_MAX_ORDER`), kept as :attr:`predictor_order` (the order of the
        plan's steps). The declared global order :attr:`order` is ``p`` for UniP-p alone, ``p + 1`` with the corrector.
    variant : {"bh1", "bh2"}
        ``B(h) = h`` or ``B(h) = e^h - 1`` (see the module docstring: only the one-unknown updates depend on it).
    use_corrector : bool
        Apply UniC after every step but the last.
    lower_order_final, lower_order_final_below
        See :class:`~expsolver.solvers.base.MultistepSolver`.

    Notes
    -----
    ``step`` (the driver's path) defers each correction to the start of the next step, where the model value it
    needs is evaluated anyway. ``update`` takes one whole step from a given history (local-error studies): the
    predictor, then, with ``use_corrector``, one model call at the predicted state and the corrector.
    """

    def __init__(self, order: int = 2, variant: str = "bh1", use_corrector: bool = True, *,
                 lower_order_final: bool = True, lower_order_final_below: int | None = None):
        self.predictor_order = check_int(order, "order", minimum=1, maximum=UNIPC_MAX_ORDER)
        self.variant = check_choice(variant, "variant", UNIPC_VARIANTS)
        self.use_corrector = check_bool(use_corrector, "use_corrector")
        self.order = self.predictor_order + 1 if self.use_corrector else self.predictor_order
        self._set_final(lower_order_final, lower_order_final_below)
        self.name = f"UniP-{order}" + (" + UniC" if use_corrector else "") + f" ({variant})"

    @property
    def steps_order(self) -> int:
        return self.predictor_order

    def init(self, problem, x):
        return _History()

    # -- the two halves, no model calls ----------------------------------------------------------------------
    def predict(self, problem, x, step: Step, history):
        """UniP-``step.order`` from ``x`` at ``step.s`` given ``history`` (``N`` at ``step.s`` last)."""
        c, n_0, rks, values = self._points(problem, step, history)
        return combine(c, x, unipc_terms(c, self.variant, n_0, rks, values))

    def correct(self, problem, x, step: Step, history, n_t):
        """UniC-``step.order``: ``x_t`` recomputed from ``x`` at ``step.s`` with ``n_t``, the model value at the
        predicted state at ``step.t`` (``r = 1``)."""
        c, n_0, rks, values = self._points(problem, step, history)
        return combine(c, x, unipc_terms(c, self.variant, n_0, rks + [1.0], values + [n_t]))

    def _points(self, problem, step, history):
        order = step.order
        if not 1 <= order <= len(history):
            raise ValueError(f"step {step.index}: order {order} needs {order} history values, have {len(history)}")
        c = problem.coefficients(step.s, step.t)
        recent = history[-order:]
        rho_0, n_0 = recent[-1]
        past = recent[:-1][::-1]  # most recent past point first
        rks = [(rho - rho_0) / c.h for rho, _ in past]
        return c, n_0, rks, [n for _, n in past]

    # -- Solver interface ---------------------------------------------------------------------------------------
    def step(self, problem, x, step: Step, state):
        history = state
        n_s = problem.nonlinear(x, step.s)
        pending = history.pending
        if pending is not None:
            x_prev, prev_step, prev_recent = pending
            x = self.correct(problem, x_prev, prev_step, prev_recent, n_s)
        history.append((problem.rho(step.s), n_s))
        del history[: max(0, len(history) - self.steps_order)]
        x_pred = self.predict(problem, x, step, history)
        history.pending = (x, step, list(history[-step.order:])) if self.use_corrector else None
        return x_pred

    def update(self, problem, x, step: Step, history):
        """One full step from ``x`` at ``step.s`` with the given history ``[(rho_i, N_i)]`` (``N`` at ``step.s``
        last): the predictor and, with ``use_corrector``, the corrector with one model call at the predicted
        state. Its local error is ``O(h^{order + 1})`` for the declared order of either configuration."""
        x_pred = self.predict(problem, x, step, history)
        if not self.use_corrector:
            return x_pred
        return self.correct(problem, x, step, history, problem.nonlinear(x_pred, step.t))
