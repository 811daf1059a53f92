"""One colour, marker and line style per solver, shared by every figure; Agg-backend helpers to save figures.

:func:`style` needs no matplotlib; the plotting helpers import it lazily and select the non-interactive ``Agg``
backend, so importing this module never changes global state.

Conventions: a solver keeps its colour and marker in every figure. The prediction type is shown by the line
style: data prediction (DPM-Solver++, ``algorithm_type="dpmsolver++"``) solid, noise prediction (DPM-Solver,
``"dpmsolver"``) dotted, with hollow markers. Dashed lines are reserved for reference slopes.
"""

from __future__ import annotations

import hashlib
import os

from .local_error import ALGORITHM_TYPES

__all__ = ["style", "label", "SOLVER_STYLES", "use_agg", "save_figure", "reference_slope", "log_log_axes",
           "ALGORITHM_TYPES"]

# Colour-blind-friendly base palette (Okabe-Ito and Tableau), assigned by hand to the known solvers.
SOLVER_STYLES: dict[str, dict] = {
    "DPM-Solver-1": dict(color="#000000", marker="o"),  # = DDIM
    "DDIM": dict(color="#000000", marker="o"),
    "DPM-Solver-2S": dict(color="#0072B2", marker="s"),
    "DPM-Solver-2S-taylor": dict(color="#56B4E9", marker="s"),
    "DPM-Solver-3S": dict(color="#D55E00", marker="^"),
    "DPM-Solver-3S-taylor": dict(color="#E69F00", marker="^"),
    "DPM-Solver-2M": dict(color="#009E73", marker="D"),
    "DPM-Solver-2M-taylor": dict(color="#8CD17D", marker="D"),
    "DPM-Solver-3M": dict(color="#CC79A7", marker="v"),
    "DPM-Solver-3M-official": dict(color="#D62728", marker="X"),
    "DPM-Solver-4M": dict(color="#6A3D9A", marker="P"),
    "RK45": dict(color="#7F7F7F", marker="<"),
    "DOP853": dict(color="#4D4D4D", marker=">"),
    "dopri5": dict(color="#A0522D", marker="h"),
    "rk4": dict(color="#BCBD22", marker="*"),
    "reference": dict(color="#999999", marker="."),
}

_FALLBACK_COLORS = ("#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#17BECF",
                    "#393B79", "#637939", "#8C6D31", "#843C39")
_FALLBACK_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "h", "<", ">", "p", "*")


def _base_style(name: str) -> dict:
    if name in SOLVER_STYLES:
        return dict(SOLVER_STYLES[name])
    digest = int(hashlib.sha256(name.encode("utf-8")).hexdigest(), 16)
    return dict(color=_FALLBACK_COLORS[digest % len(_FALLBACK_COLORS)],
                marker=_FALLBACK_MARKERS[(digest // len(_FALLBACK_COLORS)) % len(_FALLBACK_MARKERS)])


def style(name: str, algorithm_type: str | None = None) -> dict:
    """Plot keywords for a solver: ``dict(color=..., marker=..., linestyle=..., markerfacecolor=...)``.

    Parameters
    ----------
    name : str
        A :data:`expsolver.REGISTRY` name, a classical method (``"RK45"``, ``"DOP853"``, ``"dopri5"``, ``"rk4"``)
        or any other string (an unknown name gets a colour and marker derived deterministically from its hash).
    algorithm_type : {None, "dpmsolver++", "dpmsolver"}
        ``"dpmsolver"`` (noise prediction) draws a dotted line with hollow markers; otherwise solid and filled.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if algorithm_type not in (None,) + ALGORITHM_TYPES:
        raise ValueError(f"algorithm_type must be None, 'dpmsolver++' or 'dpmsolver', got {algorithm_type!r}")
    out = _base_style(name)
    noise = algorithm_type == "dpmsolver"
    out["linestyle"] = ":" if noise else "-"
    out["markerfacecolor"] = "white" if noise else out["color"]
    return out


def label(name: str, algorithm_type: str | None = None) -> str:
    """Legend text: the registry name, with DPM-Solver++ (data) / DPM-Solver (noise) when it matters."""
    if algorithm_type is None:
        return name
    return f"{name} ({'data' if algorithm_type == 'dpmsolver++' else 'noise'})"


def use_agg():
    """Select the non-interactive Agg backend (if pyplot is not in use with another one yet) and return pyplot."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_dir, stem: str, *, dpi: int = 150, close: bool = True) -> list[str]:
    """Save ``fig`` as ``out_dir/stem.pdf`` and ``out_dir/stem.png``; returns both paths.

    The PDF is reproducible (no creation date in its metadata). Each file is written to a uniquely named
    temporary file in the same folder and moved into place (:func:`analysis.results.atomic_output`), so an
    interrupted run never leaves a half-written figure and two runs writing one folder never collide.
    """
    from .results import atomic_output

    paths = []
    for ext, extra in (("pdf", dict(metadata={"CreationDate": None, "Producer": None})), ("png", dict(dpi=dpi))):
        path = os.path.join(out_dir, f"{stem}.{ext}")
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight", pad_inches=0.08, **extra)
        paths.append(path)
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return paths


def reference_slope(ax, x_min: float, x_max: float, slope: float, anchor_x: float, anchor_y: float, *,
                    label_text: str | None = None, color: str = "0.35", label_at: str | None = None, **kwargs):
    """Draw the dashed reference line ``y = anchor_y (x / anchor_x)^slope`` on ``[x_min, x_max]`` of a log-log
    axis and label it (default ``"slope {slope}"``).

    The label goes at the end of the line away from the anchor (where a fan of lines through one anchor spreads
    out), unless ``label_at`` is ``"min"`` or ``"max"``.
    """
    import numpy as np

    xs = np.geomspace(x_min, x_max, 2)
    ys = anchor_y * (xs / anchor_x) ** slope
    (line,) = ax.plot(xs, ys, linestyle="--", color=color, linewidth=1.0, zorder=1, **kwargs)
    text = label_text if label_text is not None else f"slope {slope:g}"
    if label_at is None:
        label_at = "min" if abs(np.log(anchor_x / x_min)) > abs(np.log(anchor_x / x_max)) else "max"
    i = 0 if label_at == "min" else 1
    # Inside the line's extent (never over the tick labels), just below its end.
    ax.annotate(text, xy=(xs[i], ys[i]), xytext=(2 if i == 0 else -2, -2), textcoords="offset points",
                ha="left" if i == 0 else "right", va="top", fontsize=7, color=color)
    return line


def log_log_axes(ax, xlabel: str, ylabel: str, title: str | None = None, *, title_size: float | None = None,
                 legend: dict | None = None):
    """The convergence figures' common axis finish: log scales on both axes (no minor tick labels on x), axis
    labels, an optional title, a light grid and, when ``legend`` is given (a dict of ``ax.legend`` keyword
    arguments, possibly empty), a legend in the lower left."""
    import matplotlib.ticker

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, fontsize=title_size)
    ax.grid(alpha=0.3)
    if legend is not None:
        ax.legend(**dict(dict(loc="lower left", fontsize=7.5, framealpha=0.9), **legend))
