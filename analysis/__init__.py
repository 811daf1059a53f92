"""Studies that produce data: local and global error, order estimation, work-precision, results I/O.

Layering (docs/design.md): ``expsolver`` <- ``analysis`` <- ``paper_figs``. Nothing here plots except
:mod:`analysis.style` (``from analysis.style import style``), which imports matplotlib lazily.
"""

from .order import OrderFit, fit_order
from .targets import T_END, T_START, TARGETS, get_target, standard_schedule, target_16d, target_2d

__all__ = ["OrderFit", "fit_order", "target_2d", "target_16d", "standard_schedule", "TARGETS",
           "get_target", "T_START", "T_END"]
