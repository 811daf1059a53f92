"""Order estimation for the studies: :func:`expsolver.convergence.fit_order` and its :class:`OrderFit`.

The fit (an automatically chosen asymptotic window, a Student-t confidence interval with a Bonferroni correction
over the windows searched, a reason that says what was seen when no window qualifies) is part of the library,
:mod:`expsolver.convergence`; this module registers its result type for :func:`analysis.results.load_result`.
"""

from __future__ import annotations

from expsolver.convergence import OrderFit, fit_order

from .results import result_type

__all__ = ["OrderFit", "fit_order"]

result_type(OrderFit)
